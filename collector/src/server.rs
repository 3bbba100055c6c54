//! Running the collector: opens the store, rebuilds the live view, starts the writer,
//! serves gRPC and HTTP on listeners it is given, and shuts down in order (stop taking
//! requests, finish in-flight pushes, let the writer commit what it holds).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tps_proto::v1::collector_server::CollectorServer;

use crate::auth::CodeKey;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::ingest::Ingest;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::store::{self, StoreError, writer::Writer};

/// How often revocations made from the command line are picked up.
const REVOCATION_POLL: Duration = Duration::from_secs(2);
/// Every this many revocation polls, look for stations imported while running.
const REGISTRY_POLL_ROUNDS: u64 = 15;
/// How long in-flight HTTP requests may take to finish at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// The two already-bound listeners the collector serves on.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
}

impl Listeners {
    /// Binds both addresses of a config.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen for {what} on {addr}: {e}"))
            })
        };
        Ok(Listeners {
            grpc: bind(config.grpc_listen, "gRPC").await?,
            http: bind(config.http_listen, "HTTP").await?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// Serves until `shutdown` completes, then drains and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Only ring is compiled in; installing it explicitly keeps rustls from guessing.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let data_dir = config.data_dir.clone();
    let sync = config.synchronous;
    let cov = config.coverage;
    let (write_conn, reader, live, code_key, monitor) = tokio::task::spawn_blocking(move || {
        let write_conn = store::open(&data_dir, sync)?;
        let reader = store::open(&data_dir, sync)?;
        let live = Live::load(store::load_agents(&reader)?, store::load_latest(&reader)?);
        let monitor = crate::monitor::load(&reader, &live, cov.rules, cov.flags)?;
        let code_key = CodeKey::load_or_create(&data_dir).map_err(|source| StoreError::Dir {
            path: data_dir.clone(),
            source,
        })?;
        Ok::<_, StoreError>((write_conn, reader, live, code_key, monitor))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    let live = Arc::new(live);
    let metrics = Arc::new(Metrics::new());
    metrics.enrolled_agents.set(live.active_agents() as i64);
    let (writer, writer_thread) = Writer::spawn(
        write_conn,
        config.ingest.queue_capacity,
        config.ingest.queue_timeout,
        metrics.clone(),
    )?;
    let reader = Arc::new(Mutex::new(reader));

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let revocations = tokio::spawn(poll_revocations(
        reader.clone(),
        live.clone(),
        monitor.clone(),
        writer.clone(),
        stopped(stop_rx.clone()),
    ));
    let timer = tokio::spawn(crate::monitor::run_timer(
        monitor.clone(),
        writer.clone(),
        cov.tick,
    ));
    let rollup = tokio::spawn(crate::rollup::run(
        writer.clone(),
        config.report.tz.clone(),
        config.report.rollup_every,
        metrics.clone(),
    ));
    let reports = config.report.schedule.then(|| {
        tokio::spawn(crate::report::schedule::run(
            writer.clone(),
            config.data_dir.clone(),
            config.report.clone(),
            metrics.clone(),
        ))
    });
    let influx = config.influx.clone().map(|ic| {
        let status = Arc::new(crate::influx::SinkStatus::default());
        tracing::info!(url = %ic.url, bucket = %ic.bucket, "InfluxDB sink on");
        let task = tokio::spawn(crate::influx::run(
            ic,
            config.data_dir.clone(),
            status.clone(),
            metrics.clone(),
        ));
        (status, task)
    });

    // gRPC: the collector service, health and reflection.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CollectorServer<Ingest>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tps_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let ingest = Ingest::new(
        writer.clone(),
        live.clone(),
        metrics.clone(),
        code_key,
        &config.ingest,
        &config.enroll,
        monitor.clone(),
    );
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = &config.tls {
        builder = builder
            .tls_config(
                ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem)),
            )
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    let grpc_addr = listeners.grpc.local_addr()?;
    let grpc_stop = stopped(stop_rx.clone());
    let health_on_stop = health.clone();
    let grpc = builder
        .add_service(CollectorServer::new(ingest))
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listeners.grpc), async move {
            grpc_stop.await;
            health_on_stop
                .set_not_serving::<CollectorServer<Ingest>>()
                .await;
        });

    // HTTP
    let http_addr = listeners.http.local_addr()?;
    let app = http::router(AppState {
        live,
        metrics,
        writer,
        reader,
        influx: influx.as_ref().map(|(status, _)| status.clone()),
        monitor: monitor.clone(),
        data_dir: config.data_dir.clone().into(),
        report: Arc::new(config.report.clone()),
    })
    .into_make_service_with_connect_info::<SocketAddr>();
    let http_stop = stopped(stop_rx.clone());
    let scheme = if config.tls.is_some() {
        "TLS"
    } else {
        "plaintext"
    };
    let http_tls = config.tls.clone();
    let http = async move {
        match &http_tls {
            None => axum::serve(listeners.http, app)
                .with_graceful_shutdown(http_stop)
                .await
                .map_err(ServeError::Io),
            Some(tls) => {
                let rustls = axum_server::tls_rustls::RustlsConfig::from_pem(
                    tls.cert_pem.clone(),
                    tls.key_pem.clone(),
                )
                .await
                .map_err(|e| ServeError::Tls(e.to_string()))?;
                let handle = axum_server::Handle::new();
                let h = handle.clone();
                tokio::spawn(async move {
                    http_stop.await;
                    h.graceful_shutdown(Some(HTTP_DRAIN));
                });
                axum_server::from_tcp_rustls(listeners.http.into_std()?, rustls)?
                    .handle(handle)
                    .serve(app)
                    .await
                    .map_err(ServeError::Io)
            }
        }
    };

    tracing::info!(%grpc_addr, %http_addr, scheme, "collector serving");
    let (grpc_result, http_result) = tokio::join!(grpc, http);
    revocations.abort();
    timer.abort();
    // Both hold a writer handle: wait until they are gone. A report being written in
    // the background finishes on its blocking thread (its files appear whole or not).
    rollup.abort();
    let _ = rollup.await;
    if let Some(task) = reports {
        task.abort();
        let _ = task.await;
    }
    if let Some((_, task)) = influx {
        // Its position is durable: what it had not written yet goes out at next start.
        task.abort();
    }
    // Every Writer handle is gone once the servers have returned; the writer then
    // finishes its queue and its thread ends.
    tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .map_err(|_| std::io::Error::other("the store writer panicked"))?;
    tracing::info!("collector stopped");
    grpc_result?;
    http_result?;
    Ok(())
}

/// Adds stations that `import-stations` wrote while the collector runs.
async fn pick_up_new_stations(
    reader: &Arc<Mutex<rusqlite::Connection>>,
    monitor: &crate::monitor::Shared,
) {
    let known = monitor.lock().coverage.station_count() as u64;
    let r = reader.clone();
    let new = tokio::task::spawn_blocking(move || {
        let conn = r.lock().unwrap_or_else(|p| p.into_inner());
        if store::count(&conn, "stations")? <= known {
            return Ok(Vec::new());
        }
        store::load_stations(&conn)
    })
    .await;
    match new {
        Ok(Ok(stations)) if !stations.is_empty() => {
            let n = monitor.add_stations(&stations, crate::domain::now_ms());
            tracing::info!(
                stations = n,
                "new stations from the registry are now monitored"
            );
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the station registry"),
        Err(e) => tracing::warn!(error = %e, "registry poll failed"),
    }
}

/// Picks up agents revoked from the command line (another process writing the store),
/// and stations imported while running.
async fn poll_revocations(
    reader: Arc<Mutex<rusqlite::Connection>>,
    live: Arc<Live>,
    monitor: crate::monitor::Shared,
    writer: Writer,
    stop: impl Future<Output = ()>,
) {
    let mut since = 0i64;
    let mut rounds = 0u64;
    let poll = async {
        loop {
            let r = reader.clone();
            let from = since;
            let now = crate::domain::now_ms();
            let found = tokio::task::spawn_blocking(move || {
                let conn = r.lock().unwrap_or_else(|p| p.into_inner());
                store::revoked_since(&conn, from)
            })
            .await;
            match found {
                Ok(Ok(ids)) => {
                    let n = live.revoke(&ids);
                    if n > 0 {
                        monitor.revoke(&writer, &ids).await;
                        tracing::info!(agents = n, "revoked agents picked up from the store");
                    }
                    // Overlap a little: a revocation committed while we queried is seen next time.
                    since = now - REVOCATION_POLL.as_millis() as i64;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot read revocations"),
                Err(e) => tracing::warn!(error = %e, "revocation poll failed"),
            }
            rounds += 1;
            if rounds.is_multiple_of(REGISTRY_POLL_ROUNDS) {
                pick_up_new_stations(&reader, &monitor).await;
            }
            tokio::time::sleep(REVOCATION_POLL).await;
        }
    };
    tokio::select! {
        () = poll => {}
        () = stop => {}
    }
}
