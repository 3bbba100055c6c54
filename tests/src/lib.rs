//! Shared pieces for end-to-end tests and benchmarks: start a real collector on
//! `127.0.0.1:0` with a real SQLite file, talk to it over real gRPC and HTTP.
//!
//! # Layout
//! - [`TestCollector`]: a collector running in this process on loopback.
//! - [`Agent`]: a minimal gRPC client that enrolls and pushes (the test's hands).
//! - [`measurement`]: builds a valid measurement.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tps_collector::config::Config;
use tps_proto::v1 as pb;
use tps_proto::v1::collector_client::CollectorClient;

/// The bundled synthetic Kepulauan Riau registry (3,327 stations).
pub fn kepri_registry() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/stations/kepri-3327.csv")
}

/// Path of a file in `deploy/`.
pub fn deploy_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

/// A collector running in this process on loopback ports.
#[derive(Debug)]
pub struct TestCollector {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tps_collector::server::ServeError>>>,
}

impl TestCollector {
    /// Starts a plaintext collector on `data_dir`, adjusting its config with `tune`.
    pub async fn start_with(
        data_dir: &Path,
        tune: impl FnOnce(&mut Config),
    ) -> anyhow::Result<TestCollector> {
        let mut config = Config::plaintext(data_dir);
        tune(&mut config);
        let grpc_l = TcpListener::bind("127.0.0.1:0").await?;
        let http_l = TcpListener::bind("127.0.0.1:0").await?;
        let grpc = grpc_l.local_addr()?;
        let http = http_l.local_addr()?;
        let (stop, rx) = oneshot::channel::<()>();
        let listeners = tps_collector::Listeners {
            grpc: grpc_l,
            http: http_l,
        };
        let task = tokio::spawn(tps_collector::run(config, listeners, async {
            let _ = rx.await;
        }));
        let c = TestCollector {
            grpc,
            http,
            data_dir: data_dir.to_path_buf(),
            stop: Some(stop),
            task: Some(task),
        };
        c.wait_healthy().await?;
        Ok(c)
    }

    pub async fn start(data_dir: &Path) -> anyhow::Result<TestCollector> {
        Self::start_with(data_dir, |_| {}).await
    }

    /// Polls `/healthz` until it answers, with a deadline.
    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(self.url("/healthz")).await
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("collector did not become healthy within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub async fn client(&self) -> anyhow::Result<CollectorClient<Channel>> {
        Ok(CollectorClient::connect(self.endpoint()).await?)
    }

    /// GETs a JSON document from the HTTP API.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = reqwest::get(self.url(path)).await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await?))
    }

    /// Signals shutdown and waits until the collector has drained and stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await??;
        }
        Ok(())
    }

    /// Imports a registry file into this collector's store.
    pub fn import(&self, file: &Path) -> anyhow::Result<()> {
        tps_collector::commands::import_stations(&self.data_dir, file)?;
        Ok(())
    }

    /// Issues enrollment codes for a region and returns (tps_code, code) pairs.
    pub fn codes(&self, region: &str) -> anyhow::Result<Vec<(String, String)>> {
        let out = self.data_dir.join(format!("codes-{region}.csv"));
        tps_collector::commands::enroll_codes(&self.data_dir, Some(region), &out)?;
        read_codes(&out)
    }
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Reads a codes CSV written by `enroll-codes`.
pub fn read_codes(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut rdr = csv::Reader::from_path(path)?;
    let mut out = Vec::new();
    for r in rdr.records() {
        let r = r?;
        out.push((r[0].to_string(), r[1].to_string()));
    }
    Ok(out)
}

/// An enrolled agent as the tests see it: a gRPC client and its bearer token.
#[derive(Debug, Clone)]
pub struct Agent {
    pub client: CollectorClient<Channel>,
    pub agent_id: u64,
    pub token: String,
    pub tps_code: String,
}

impl Agent {
    pub async fn enroll(
        collector: &TestCollector,
        tps_code: &str,
        code: &str,
    ) -> anyhow::Result<Agent> {
        let mut client = collector.client().await?;
        let r = client
            .enroll(pb::EnrollRequest {
                tps_code: tps_code.into(),
                enrollment_code: code.into(),
                agent: Some(pb::AgentFacts {
                    hostname: "laptop-test".into(),
                    os: "Linux".into(),
                    agent_version: "test".into(),
                }),
            })
            .await?
            .into_inner();
        Ok(Agent {
            client,
            agent_id: r.agent_id,
            token: r.token,
            tps_code: tps_code.into(),
        })
    }

    /// Pushes measurements with this agent's token.
    pub async fn push(
        &mut self,
        measurements: Vec<pb::Measurement>,
    ) -> Result<pb::PushResponse, tonic::Status> {
        let req = push_request(&self.token, measurements);
        self.client.push(req).await.map(|r| r.into_inner())
    }
}

/// A Push request carrying a token and a plausible status.
pub fn push_request(
    token: &str,
    measurements: Vec<pb::Measurement>,
) -> tonic::Request<pb::PushRequest> {
    let now = now_ms();
    let mut req = tonic::Request::new(pb::PushRequest {
        status: Some(pb::AgentStatus {
            system_uptime_secs: 3600,
            boot_time_ms: now - 3_600_000,
            agent_uptime_secs: 600,
            agent_version: "test".into(),
            hostname: "laptop-test".into(),
            os: "Linux".into(),
            interfaces: vec![pb::NetInterface {
                name: "wlan0".into(),
                rx_bytes: 10,
                tx_bytes: 20,
            }],
            spool_depth: measurements.len() as u64,
            dropped: 0,
            agent_time_ms: now,
        }),
        measurements,
    });
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// A valid ICMP measurement with sequence `seq`, started `seq` seconds after `base_ms`.
pub fn measurement(seq: u64, base_ms: i64, target: &str) -> pb::Measurement {
    let rtt = 20.0 + (seq % 7) as f64;
    pb::Measurement {
        seq,
        start_ms: base_ms + seq as i64 * 1000,
        target_name: target.into(),
        target_address: "192.0.2.1".into(),
        method: pb::Method::Icmp as i32,
        sent: 5,
        received: 5 - (seq % 2) as u32,
        rtt_min_ms: Some(rtt - 1.0),
        rtt_avg_ms: Some(rtt),
        rtt_max_ms: Some(rtt + 2.0),
        jitter_ms: Some(0.7),
    }
}

pub fn now_ms() -> i64 {
    tps_collector::domain::now_ms()
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens the collector's SQLite file for assertions.
pub fn open_store(data_dir: &Path) -> anyhow::Result<rusqlite::Connection> {
    Ok(tps_collector::store::open(
        data_dir,
        tps_collector::store::Synchronous::Full,
    )?)
}
