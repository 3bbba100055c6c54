//! Shared pieces for end-to-end tests and benchmarks: start a real collector on
//! `127.0.0.1:0` with a real SQLite file, talk to it over real gRPC and HTTP.
//!
//! # Layout
//! - [`TestCollector`]: a collector running in this process on loopback.
//! - [`Agent`]: a minimal gRPC client that enrolls and pushes (the test's hands).
//! - [`measurement`]: builds a valid measurement.
//! - [`browser`]: a real headless Chromium through chromedriver.
//! - [`history`]: seeds weeks of status history, agents, rollups and flags.
//! - [`device`]: what the router and laptop tests share.
//! - [`fleet`]: the fleet simulator (the agent's own code, synthetic probes).
//! - [`process`]: a collector as its own process; RSS and CPU from `/proc`.
//! - [`links`]: round outcomes drawn like the Kepri link mix, for storage benchmarks.
//! - [`loopfs`]: an ext4 of its own on a loop device, to count what storage receives.
//! - [`router`]: a cross-built agent under qemu-user in a chroot with no libc.
//! - [`stats`]: medians and percentiles of benchmark samples.
//! - [`wine`]: a cross-built `tps-agent.exe` in a Wine prefix of its own.
//! - [`victoria`]: a real VictoriaMetrics server for the InfluxDB sink's tests.

pub mod browser;
pub mod device;
pub mod fleet;
pub mod history;
pub mod links;
pub mod loopfs;
pub mod process;
pub mod router;
pub mod stats;
pub mod victoria;
pub mod wine;

use std::path::Path;

use tonic::transport::Channel;
use tps_proto::v1 as pb;
use tps_proto::v1::collector_client::CollectorClient;

pub use tps_collector::testing::{
    TestCollector, deploy_file, eventually, kepri_registry, read_codes, wait_http_ok,
};

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
    let mut req = tonic::Request::new(pb::PushRequest {
        status: Some(agent_status(measurements.len() as u64)),
        measurements,
    });
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// A plausible agent status with `spool_depth` measurements waiting.
pub fn agent_status(spool_depth: u64) -> pb::AgentStatus {
    pb::AgentStatus {
        system_uptime_secs: 3600,
        boot_time_ms: boot_time_ms(),
        agent_uptime_secs: 600,
        agent_version: "test".into(),
        hostname: "laptop-test".into(),
        os: "Linux".into(),
        interfaces: vec![pb::NetInterface {
            name: "wlan0".into(),
            rx_bytes: 10,
            tx_bytes: 20,
        }],
        spool_depth,
        dropped: 0,
        agent_time_ms: now_ms(),
        primary_target: "gateway".into(),
        ..Default::default()
    }
}

/// The first `n` stations of the Kepri registry, as a registry file in `dir`.
pub fn small_registry(dir: &Path, n: usize) -> anyhow::Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(kepri_registry())?;
    let lines: Vec<&str> = text.lines().take(n + 1).collect();
    let file = dir.join(format!("registry-{n}.csv"));
    std::fs::write(&file, lines.join("\n") + "\n")?;
    Ok(file)
}

/// `/healthz`: its status code and body.
pub async fn healthz(c: &TestCollector) -> anyhow::Result<(u16, serde_json::Value)> {
    let r = reqwest::get(c.url("/healthz")).await?;
    let s = r.status().as_u16();
    Ok((s, r.json().await?))
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
        ..Default::default()
    }
}

/// The simulated device's boot time: one hour before this test process started, the
/// same for every push (a different one means a reboot to the collector).
pub fn boot_time_ms() -> i64 {
    static BOOT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| now_ms() - 3_600_000)
}

pub fn now_ms() -> i64 {
    tps_collector::domain::now_ms()
}

/// Opens the collector's SQLite file for assertions.
pub fn open_store(data_dir: &Path) -> anyhow::Result<rusqlite::Connection> {
    Ok(tps_collector::store::open(
        data_dir,
        tps_collector::store::Synchronous::Full,
    )?)
}
