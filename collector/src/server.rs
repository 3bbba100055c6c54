//! Running the collector: opens the store, rebuilds the live view, starts the writer,
//! serves gRPC and HTTP on listeners it is given, and shuts down in order (stop taking
//! requests, finish in-flight pushes, let the writer commit what it holds).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tps_proto::v1::collector_server::CollectorServer;

use crate::auth::CodeKey;
use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::state::facts::{Fact, Facts};
use crate::state::live::Live;
use crate::state::owner;
use crate::store::readers::{READERS, Readers};
use crate::store::writer::{Mirror, Writer};
use crate::store::{self, StoreError};
use crate::web::{self, AppState};

/// How often revocations and registry imports made from the command line are picked up.
const STORE_POLL: Duration = Duration::from_secs(1);

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
    let metrics = Arc::new(Metrics::new());
    let (facts, facts_rx) = Facts::channel(metrics.clone());
    let (persist_tx, persist_rx) = tokio::sync::mpsc::unbounded_channel();
    let m = metrics.clone();
    let (write_conn, readers, live, code_key, owner, snapshot, registry_mark) =
        tokio::task::spawn_blocking(move || {
            let write_conn = store::open(&data_dir, sync)?;
            // The writer's transactions touch a page per agent in several indexes, and a
            // compaction step a page per row: 64 MB keeps them from spilling mid-commit.
            write_conn.pragma_update(None, "cache_size", -65_536)?;
            store::integrity::check_at_start(&write_conn, &data_dir)?;
            let readers = Readers::open(&data_dir, READERS)?;
            let (live, owner, snapshot, mark) = {
                let reader = store::open(&data_dir, sync)?;
                let live = Live::load(store::load_agents(&reader)?, store::load_latest(&reader)?);
                let (owner, snapshot) =
                    owner::load(&reader, &live, cov.rules, cov.flags, persist_tx, m)?;
                let mark = RegistryMark {
                    generation: store::registry_generation(&reader)?,
                    updated_ms: store::stations_updated_max(&reader)?,
                };
                let lockouts = store::enroll_lockouts(&reader, crate::domain::now_ms())?;
                (live, owner, snapshot, (mark, lockouts))
            };
            let code_key =
                CodeKey::load_or_create(&data_dir).map_err(|source| StoreError::Dir {
                    path: data_dir.clone(),
                    source,
                })?;
            Ok::<_, StoreError>((write_conn, readers, live, code_key, owner, snapshot, mark))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let (registry_mark, lockouts) = registry_mark;
    let live = Arc::new(live);
    metrics.enrolled_agents.set(live.active_agents() as i64);
    let (writer, writer_thread) = Writer::spawn(
        write_conn,
        config.ingest.queue_capacity,
        config.ingest.queue_timeout,
        metrics.clone(),
        Mirror {
            live: live.clone(),
            facts: facts.clone(),
        },
    )?;

    let space = store::space::Space::new(&config.data_dir, config.floor);
    if space.refusing() {
        tracing::warn!(
            "{}; the collector starts anyway and serves the API",
            space.refusal_message()
        );
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let (owner_stop_tx, owner_stop_rx) = watch::channel(false);
    let owner_task = tokio::spawn(owner.with_space(space.clone()).run(
        facts_rx,
        cov.tick,
        stopped(owner_stop_rx.clone()),
    ));
    let space_task = tokio::spawn(store::space::run(
        space.clone(),
        metrics.clone(),
        stopped(stop_rx.clone()),
    ));
    let persister = tokio::spawn(crate::state::persist::run(
        persist_rx,
        writer.clone(),
        metrics.clone(),
        owner_stop_rx,
    ));
    let pollers = tokio::spawn(poll_store(
        readers.clone(),
        live.clone(),
        facts.clone(),
        registry_mark,
        stopped(stop_rx.clone()),
    ));
    let rollup = tokio::spawn(crate::sinks::rollup::run(
        writer.clone(),
        config.report.tz.clone(),
        config.report.rollup_every,
        metrics.clone(),
    ));
    let retention = tokio::spawn(crate::retention::run(
        config.data_dir.clone(),
        config.synchronous,
        writer.clone(),
        config.retention,
        config.influx.is_some(),
        metrics.clone(),
        stopped(stop_rx.clone()),
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
        let status = Arc::new(crate::sinks::influx::SinkStatus::default());
        tracing::info!(url = %ic.url, bucket = %ic.bucket, "InfluxDB sink on");
        let task = tokio::spawn(crate::sinks::influx::run(
            ic,
            config.data_dir.clone(),
            status.clone(),
            metrics.clone(),
        ));
        (status, task)
    });

    let (notifier, notify_tasks) = crate::notify::start(
        config.notify.clone(),
        config.report.tz.clone(),
        writer.clone(),
        readers.clone(),
        snapshot.clone(),
        metrics.clone(),
    )
    .await?;

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
        &config,
        lockouts,
        space.clone(),
    );
    let (grpc_cap, http_cap) = crate::limits::connection_caps(crate::limits::open_files());
    let mut grpc_edge = config.grpc_edge;
    grpc_edge.max_connections.get_or_insert(grpc_cap);
    let mut http_edge = config.http_edge;
    http_edge.max_connections.get_or_insert(http_cap);
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .timeout(grpc_edge.request_timeout);
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
    let incoming = crate::edge::grpc_incoming(
        listeners.grpc,
        grpc_edge,
        metrics.clone(),
        stopped(stop_rx.clone()),
    );
    let grpc = builder
        .add_service(CollectorServer::new(ingest))
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, async move {
            grpc_stop.await;
            health_on_stop
                .set_not_serving::<CollectorServer<Ingest>>()
                .await;
        });

    // HTTP
    let http_addr = listeners.http.local_addr()?;
    let app = web::router(
        AppState {
            live,
            metrics: metrics.clone(),
            writer,
            readers,
            influx: influx.as_ref().map(|(status, _)| status.clone()),
            snapshot,
            facts,
            operators: Default::default(),
            data_dir: config.data_dir.clone().into(),
            report: Arc::new(config.report.clone()),
            space,
            report_links: Default::default(),
            notifier,
        },
        &http_edge,
    );
    let scheme = if config.tls.is_some() {
        "TLS"
    } else {
        "plaintext"
    };
    let acceptor = config
        .tls
        .as_ref()
        .map(|t| crate::edge::tls_acceptor(&t.cert_pem, &t.key_pem))
        .transpose()
        .map_err(ServeError::Tls)?;
    let http = crate::edge::serve_http(
        listeners.http,
        app,
        acceptor,
        http_edge,
        metrics.clone(),
        stopped(stop_rx.clone()),
    );
    let http = async move { http.await.map_err(ServeError::Io) };

    tracing::info!(%grpc_addr, %http_addr, scheme, "collector serving");
    let (grpc_result, http_result) = tokio::join!(grpc, http);
    pollers.abort();
    let _ = pollers.await;
    let _ = space_task.await;
    // The owner publishes its last picture and stops; the persister then stores what
    // it still holds, and lets go of its writer handle.
    let _ = owner_stop_tx.send(true);
    let _ = owner_task.await;
    let _ = persister.await;
    // Both hold a writer handle: wait until they are gone. A report being written in
    // the background finishes on its blocking thread (its files appear whole or not).
    rollup.abort();
    let _ = rollup.await;
    // A send under way finishes (up to 10 s); one cut off is marked as under way
    // in the outbox and goes out again, marked as a possible repeat, at the next start.
    notify_tasks.shutdown().await;
    // A step already queued still commits whole; the next start goes on from there.
    retention.abort();
    let _ = retention.await;
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

/// Where the registry stood when last read.
#[derive(Debug, Clone, Copy)]
struct RegistryMark {
    generation: i64,
    updated_ms: i64,
}

/// Picks up what other processes committed to the store: agents revoked and stations
/// imported from the command line.
async fn poll_store(
    readers: Readers,
    live: Arc<Live>,
    facts: Facts,
    mut mark: RegistryMark,
    stop: impl Future<Output = ()>,
) {
    let mut since = 0i64;
    let poll = async {
        loop {
            let from = since;
            let now = crate::domain::now_ms();
            match readers.read(move |c| store::revoked_since(c, from)).await {
                Ok(ids) => {
                    let n = live.revoke(&ids);
                    if n > 0 {
                        facts.publish(Fact::Revoked(ids)).await;
                        tracing::info!(agents = n, "revoked agents picked up from the store");
                    }
                    // Overlap a little: a revocation committed while we queried is seen next time.
                    since = now - STORE_POLL.as_millis() as i64;
                }
                Err(e) => tracing::warn!(error = %e, "cannot read revocations"),
            }
            let seen = mark;
            match readers
                .read(move |c| {
                    let generation = store::registry_generation(c)?;
                    if generation == seen.generation {
                        return Ok(None);
                    }
                    let changed = store::stations_updated_since(c, seen.updated_ms)?;
                    let updated_ms = store::stations_updated_max(c)?;
                    Ok(Some((
                        RegistryMark {
                            generation,
                            updated_ms,
                        },
                        changed,
                    )))
                })
                .await
            {
                Ok(Some((next, changed))) => {
                    mark = next;
                    if !changed.is_empty() {
                        tracing::info!(
                            stations = changed.len(),
                            "registry changes picked up from the store"
                        );
                        facts.publish(Fact::Stations(changed)).await;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the station registry"),
            }
            tokio::time::sleep(STORE_POLL).await;
        }
    };
    tokio::select! {
        () = poll => {}
        () = stop => {}
    }
}
