//! A real collector for tests, in this process on `127.0.0.1:0` with a real SQLite file
//! (feature `testing`): used by this workspace's end-to-end tests and benchmarks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tps_proto::v1::collector_client::CollectorClient;

use crate::config::Config;

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
    /// An admin operator's token, for the status API.
    pub token: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), crate::server::ServeError>>>,
}

impl TestCollector {
    /// The name of the test admin whose token this is.
    pub fn token_owner(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("test-admin.name")).unwrap_or_default()
    }

    /// Starts a plaintext collector on `data_dir`, adjusting its config with `tune`.
    pub async fn start_with(
        data_dir: &Path,
        tune: impl FnOnce(&mut Config),
    ) -> anyhow::Result<TestCollector> {
        let any: SocketAddr = "127.0.0.1:0".parse()?;
        Self::start_on(data_dir, any, any, tune).await
    }

    /// Starts on given addresses (port 0: any), so a restart can take the same ports.
    pub async fn start_on(
        data_dir: &Path,
        grpc: SocketAddr,
        http: SocketAddr,
        tune: impl FnOnce(&mut Config),
    ) -> anyhow::Result<TestCollector> {
        let mut config = Config::plaintext(data_dir);
        tune(&mut config);
        let token = admin_token(data_dir)?;
        let grpc_l = TcpListener::bind(grpc).await?;
        let http_l = TcpListener::bind(http).await?;
        let grpc = grpc_l.local_addr()?;
        let http = http_l.local_addr()?;
        let (stop, rx) = oneshot::channel::<()>();
        let listeners = crate::Listeners {
            grpc: grpc_l,
            http: http_l,
        };
        let task = tokio::spawn(crate::run(config, listeners, async {
            let _ = rx.await;
        }));
        let c = TestCollector {
            grpc,
            http,
            data_dir: data_dir.to_path_buf(),
            token,
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
        wait_http_ok(
            &self.url("/healthz"),
            Duration::from_secs(20),
            "the collector to become healthy",
        )
        .await
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

    /// GETs a JSON document from the HTTP API as the test admin.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await?))
    }

    /// The value of one series of `/metrics` (`name` with its labels, as exposed, e.g.
    /// `tps_push_rejects_total{reason="busy"}`); 0 when absent.
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(self.url("/metrics")).await?.text().await?;
        Ok(crate::metrics::value_in(&text, series).unwrap_or(0.0))
    }

    /// Signals shutdown and waits until the collector has drained and stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.halt().await
    }

    /// Like `stop`, keeping the handle (its data directory and addresses) for a restart.
    pub async fn halt(&mut self) -> anyhow::Result<()> {
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
        crate::commands::import_stations(&self.data_dir, file)?;
        Ok(())
    }

    /// Issues enrollment codes for a region and returns (tps_code, code) pairs.
    pub fn codes(&self, region: &str) -> anyhow::Result<Vec<(String, String)>> {
        let out = self.data_dir.join(format!("codes-{region}.csv"));
        crate::commands::enroll_codes(&self.data_dir, Some(region), &out)?;
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

/// The test admin's token for a data directory (created once, kept beside the data).
fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let file = data_dir.join("test-admin.token");
    if let Ok(t) = std::fs::read_to_string(&file) {
        return Ok(t);
    }
    std::fs::create_dir_all(data_dir)?;
    let name = format!("test-admin-{}", std::process::id());
    let token = crate::commands::add_operator(data_dir, &name, "admin")?;
    std::fs::write(&file, &token)?;
    std::fs::write(data_dir.join("test-admin.name"), &name)?;
    Ok(token)
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

/// Polls `url` until it answers with a success status, up to `limit`.
pub async fn wait_http_ok(url: &str, limit: Duration, what: &str) -> anyhow::Result<()> {
    eventually(limit, what, || async {
        reqwest::get(url)
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await
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

/// (seq, start_ms) of every measurement stored for an agent, read from the store file.
pub fn stored_seqs(data_dir: &Path, agent_id: u64) -> anyhow::Result<Vec<(u64, i64)>> {
    Ok(stored_measurements(data_dir, agent_id)?
        .into_iter()
        .map(|m| (m.seq, m.start_ms))
        .collect())
}

/// Every measurement stored for an agent, in sequence order.
pub fn stored_measurements(
    data_dir: &Path,
    agent_id: u64,
) -> anyhow::Result<Vec<crate::domain::Measurement>> {
    let conn = crate::store::open(data_dir, crate::store::Synchronous::Full)?;
    Ok(crate::store::measurements_of(&conn, agent_id)?)
}

/// Every seq from 1 to `upto` stored once, in the order the rounds were taken.
pub fn assert_complete_and_ordered(rows: &[(u64, i64)], upto: u64) {
    let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
    assert!(
        seqs.len() as u64 >= upto && seqs.iter().take(upto as usize).copied().eq(1..=upto),
        "expected every seq 1..={upto}, got {} rows: {:?}…",
        seqs.len(),
        &seqs[..seqs.len().min(20)]
    );
    assert!(
        rows.windows(2).all(|w| w[0].1 <= w[1].1),
        "start times follow sequence order"
    );
}
