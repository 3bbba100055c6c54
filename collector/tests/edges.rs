//! A real `tps-collector` process under two faults of its own: stopped with SIGSTOP for
//! longer than a freshness window (its stall must not be blamed on the stations), and
//! started with only 300 file descriptors while hundreds of clients connect and say
//! nothing (they must not stop either port).

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;
use tps_proto::v1 as pb;
use tps_proto::v1::collector_client::CollectorClient;

mod support;

const WAIT: Duration = Duration::from_secs(30);

struct Proc {
    child: Child,
    grpc: String,
    http: String,
    token: String,
    codes: Vec<(String, String)>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> i64 {
    tps_collector::domain::now_ms()
}

/// Imports five stations, issues their codes, adds an operator, and starts the binary
/// (under `prlimit` when `nofile` is given); `edge` goes into both port sections,
/// `extra` at the end.
fn start(dir: &Path, edge: &str, extra: &str, nofile: Option<u32>) -> anyhow::Result<Proc> {
    let registry = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/stations/kepri-3327.csv");
    let text = std::fs::read_to_string(registry)?;
    let small = dir.join("five.csv");
    std::fs::write(
        &small,
        text.lines().take(6).collect::<Vec<_>>().join("\n") + "\n",
    )?;
    let data = dir.join("data");
    tps_collector::commands::import_stations(&data, &small)?;
    let out = dir.join("codes.csv");
    tps_collector::commands::enroll_codes(&data, None, &out)?;
    let codes = csv::Reader::from_path(&out)?
        .records()
        .map(|r| r.map(|r| (r[0].to_string(), r[1].to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let token = tps_collector::commands::add_operator(&data, "watcher", "viewer")?;
    let cfg = dir.join("collector.toml");
    std::fs::write(
        &cfg,
        format!(
            "[grpc]\nlisten = \"127.0.0.1:0\"\n{edge}[http]\nlisten = \"127.0.0.1:0\"\n{edge}[tls]\nplaintext = true\n[store]\ndata_dir = \"data\"\n{extra}"
        ),
    )?;
    let bin = env!("CARGO_BIN_EXE_tps-collector");
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["serve", "--config"]).arg(&cfg);
    let (child, grpc, http) = support::spawn(cmd)?;
    Ok(Proc {
        child,
        grpc,
        http,
        token,
        codes,
    })
}

fn round(seq: u64) -> pb::Measurement {
    pb::Measurement {
        seq,
        start_ms: now_ms() - 500,
        target_name: "gateway".into(),
        target_address: "192.0.2.1".into(),
        method: pb::Method::Icmp as i32,
        sent: 5,
        received: 5,
        rtt_min_ms: Some(1.0),
        rtt_avg_ms: Some(2.0),
        rtt_max_ms: Some(3.0),
        jitter_ms: Some(0.1),
        ..Default::default()
    }
}

fn push_req(token: &str, seq: u64) -> tonic::Request<pb::PushRequest> {
    let mut r = tonic::Request::new(pb::PushRequest {
        measurements: vec![round(seq)],
        status: Some(pb::AgentStatus {
            primary_target: "gateway".into(),
            agent_time_ms: now_ms(),
            ..Default::default()
        }),
    });
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    r
}

async fn enroll(grpc: &str, tps: &str, code: &str) -> anyhow::Result<String> {
    let mut c = CollectorClient::connect(format!("http://{grpc}")).await?;
    Ok(c.enroll(pb::EnrollRequest {
        tps_code: tps.into(),
        enrollment_code: code.into(),
        agent: None,
    })
    .await?
    .into_inner()
    .token)
}

async fn get(p: &Proc, path: &str) -> anyhow::Result<(u16, Value)> {
    let r = reqwest::Client::new()
        .get(format!("http://{}{path}", p.http))
        .bearer_auth(&p.token)
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let s = r.status().as_u16();
    Ok((s, r.json().await.unwrap_or(Value::Null)))
}

async fn metric(p: &Proc, series: &str) -> f64 {
    let Ok(r) = reqwest::get(format!("http://{}/metrics", p.http)).await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    tps_collector::metrics::value_in(&text, series).unwrap_or(0.0)
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill {sig} {pid} failed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_collector_does_not_blame_the_stations() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = start(
        dir.path(),
        "",
        "[coverage]\nfresh_secs = 2\ntick_secs = 1\ngrace_mins = 10080\n",
        None,
    )?;
    let (tps, code) = p.codes[0].clone();
    let token = enroll(&p.grpc, &tps, &code).await?;
    let mut c = CollectorClient::connect(format!("http://{}", p.grpc)).await?;
    c.push(push_req(&token, 1)).await?;
    eventually("the station covered", || async {
        let (_, s) = get(&p, &format!("/api/v1/stations/{tps}")).await.ok()?;
        (s["coverage"]["state"] == "covered").then_some(())
    })
    .await?;

    // The collector is stopped (as by a debugger, a frozen VM, an overloaded host) for
    // longer than its stall limit (tick + 10 s) and many freshness windows. The pause
    // itself is the fault, not a wait for something.
    let pid = p.child.id();
    signal(pid, "-STOP")?;
    tokio::time::sleep(Duration::from_secs(14)).await;
    signal(pid, "-CONT")?;
    // The agent, which never stopped, pushes again as soon as it can.
    c.push(push_req(&token, 2)).await?;
    eventually("the stall noticed", || async {
        (metric(&p, "tps_collector_away_total{kind=\"stalled\"}").await >= 1.0).then_some(())
    })
    .await?;
    // Keep the agent fresh for a few ticks after the stall (each push followed by a
    // coverage evaluation), then look at the record.
    for seq in 3..6 {
        c.push(push_req(&token, seq)).await?;
        let pushed = tps_collector::domain::now_ms() as f64 / 1000.0;
        eventually("coverage evaluated after the push", || async {
            (metric(&p, "tps_coverage_evaluated_timestamp_seconds").await > pushed).then_some(())
        })
        .await?;
    }
    let (_, s) = get(&p, &format!("/api/v1/stations/{tps}")).await?;
    assert_eq!(s["coverage"]["state"], "covered", "{s}");
    let offline: Vec<&Value> = s["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "offline")
        .collect();
    assert!(
        offline.is_empty(),
        "the collector's own stall was recorded as an outage: {offline:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_stop_either_port() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = start(dir.path(), "start_timeout_secs = 2\n", "", Some(300))?;
    // 400 silent connections to each port: more than the process has descriptors.
    let mut idle = Vec::new();
    for addr in [&p.grpc, &p.http] {
        for _ in 0..400 {
            idle.push(std::net::TcpStream::connect(addr.as_str())?);
        }
    }
    // A real agent still enrolls and pushes, and /healthz still answers.
    let (tps, code) = p.codes[0].clone();
    let token = eventually("an agent to enroll", || async {
        tokio::time::timeout(Duration::from_secs(3), enroll(&p.grpc, &tps, &code))
            .await
            .ok()?
            .ok()
    })
    .await?;
    eventually("a push to be stored", || async {
        let mut c = tokio::time::timeout(
            Duration::from_secs(3),
            CollectorClient::connect(format!("http://{}", p.grpc)),
        )
        .await
        .ok()?
        .ok()?;
        c.push(push_req(&token, 1)).await.ok()
    })
    .await?;
    eventually("/healthz to answer", || async {
        (get(&p, "/healthz").await.ok()?.0 == 200).then_some(())
    })
    .await?;
    // Connections over the cap were closed at once; HTTP ones were told why.
    assert!(
        metric(
            &p,
            "tps_connections_closed_total{port=\"http\",why=\"cap\"}"
        )
        .await
            > 0.0
    );
    assert!(
        metric(
            &p,
            "tps_connections_closed_total{port=\"grpc\",why=\"cap\"}"
        )
        .await
            > 0.0
    );
    assert!(
        metric(
            &p,
            "tps_connections_closed_total{port=\"grpc\",why=\"slow_start\"}"
        )
        .await
            > 0.0
    );
    let mut told = String::new();
    let last_http = idle.last_mut().unwrap();
    last_http.set_read_timeout(Some(Duration::from_secs(5)))?;
    let _ = last_http.read_to_string(&mut told);
    assert!(told.starts_with("HTTP/1.1 503"), "{told:?}");
    assert!(told.to_lowercase().contains("retry-after"), "{told}");
    Ok(())
}
