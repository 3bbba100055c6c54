//! Pushes and API reads while coverage ticks, at national scale: a real `tps-collector`
//! process with the national registry (820,161 stations), `grace_mins = 1` so a minute after start one
//! tick opens a flag for every station without an agent (runs 2–3), agents pushing at full rate over
//! several connections, and one client cycling through the API's read endpoints. Prints
//! push and per-endpoint p50/p99 per run.
//!
//! `cargo build --release -p tps-collector && cargo run --release -p tps-tests --bin bench-contention -- --collector-bin target/release/tps-collector --registry /tmp/national.csv`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tps_proto::v1 as pb;
use tps_proto::v1::collector_client::CollectorClient;
use tps_tests::process::{CollectorProcess, prepare_store, status_mb};
use tps_tests::stats::percentile;
use tps_tests::{eventually, measurement, now_ms, push_request};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    collector_bin: PathBuf,
    #[arg(long)]
    registry: PathBuf,
    /// Agents that push during the runs.
    #[arg(long, default_value_t = 2000)]
    agents: usize,
    /// Concurrent pushing connections.
    #[arg(long, default_value_t = 8)]
    pushers: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 30)]
    secs: u64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const ENDPOINTS: [&str; 5] = [
    "/api/v1/summary",
    "/api/v1/regions?level=regency",
    "/api/v1/stations?q=tanjung&limit=50",
    "/api/v1/flags?limit=100",
    "series",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (token, codes) = prepare_store(&args.collector_bin, &data, &args.registry, "21")?;
    let collector = CollectorProcess::start_on(
        &args.collector_bin,
        &data,
        "warn",
        Duration::from_secs(300),
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[coverage]\ngrace_mins = 1\n",
    )?;
    let (pid, grpc, http) = (
        collector.pid,
        collector.grpc.clone(),
        collector.http.clone(),
    );

    // Enroll the agents.
    let mut client = CollectorClient::connect(format!("http://{grpc}")).await?;
    let mut tokens = Vec::new();
    for (tps, code) in codes.iter().take(args.agents) {
        let r = client
            .enroll(pb::EnrollRequest {
                tps_code: tps.clone(),
                enrollment_code: code.clone(),
                agent: None,
            })
            .await?
            .into_inner();
        tokens.push((tps.clone(), r.token));
    }
    let series_tps = tokens[0].0.clone();
    println!("{} agents enrolled", tokens.len());

    let http_client = reqwest::Client::new();
    let get = |path: String| {
        let req = http_client
            .get(format!("http://{http}{path}"))
            .bearer_auth(&token);
        async move { req.send().await?.error_for_status()?.bytes().await }
    };
    eventually(Duration::from_secs(30), "the API", || async {
        get("/api/v1/summary".into()).await.ok()
    })
    .await?;

    let tokens = Arc::new(tokens);
    let mut seq_base = 1u64;
    for r in 1..=args.runs {
        let stop = Arc::new(AtomicBool::new(false));
        let mut pushers = Vec::new();
        for p in 0..args.pushers {
            let (tokens, stop) = (tokens.clone(), stop.clone());
            let grpc = grpc.clone();
            pushers.push(tokio::spawn(async move {
                let mut client = CollectorClient::connect(format!("http://{grpc}")).await?;
                let mut lat = Vec::new();
                let mut seq = seq_base;
                let mine: Vec<_> = tokens
                    .iter()
                    .skip(p)
                    .step_by(args.pushers)
                    .map(|(_, t)| t.clone())
                    .collect();
                while !stop.load(Ordering::Relaxed) {
                    let base = now_ms() - 1000 - seq as i64 * 1000;
                    for t in &mine {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let started = Instant::now();
                        client
                            .push(push_request(t, vec![measurement(seq, base, "gateway")]))
                            .await?;
                        lat.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    seq += 1;
                }
                Ok::<_, anyhow::Error>((lat, seq))
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(args.secs);
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); ENDPOINTS.len()];
        while Instant::now() < deadline {
            for (i, e) in ENDPOINTS.iter().enumerate() {
                let path = if *e == "series" {
                    format!("/api/v1/stations/{series_tps}/series")
                } else {
                    e.to_string()
                };
                let started = Instant::now();
                get(path).await?;
                per[i].push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut pushes = Vec::new();
        let mut next = seq_base;
        for p in pushers {
            let (lat, seq) = p.await??;
            pushes.extend(lat);
            next = next.max(seq);
        }
        seq_base = next + 1;
        println!(
            "run {r}: push p50 {:.2} ms, p99 {:.2} ms ({} pushes in {} s)",
            percentile(&mut pushes, 0.5),
            percentile(&mut pushes, 0.99),
            pushes.len(),
            args.secs
        );
        for (i, e) in ENDPOINTS.iter().enumerate() {
            println!(
                "run {r}: {e}: p50 {:.2} ms, p99 {:.2} ms ({} requests)",
                percentile(&mut per[i], 0.5),
                percentile(&mut per[i], 0.99),
                per[i].len()
            );
        }
    }
    println!(
        "collector RSS at the end: {:.0} MB",
        status_mb(pid, "VmRSS:")
    );
    drop(collector);
    Ok(())
}
