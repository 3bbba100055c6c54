//! Status API at national scale: a real `tps-collector` process with the national
//! registry (820,161 stations) loaded, some agents reporting, then latency of
//! `/api/v1/summary` and `/api/v1/regions?level=regency` (sequential requests over
//! keep-alive, p50/p99) and the collector's RSS.
//!
//! `cargo build --release -p tps-collector && cargo run --release -p tps-tests --bin bench-status -- --collector-bin target/release/tps-collector --registry /tmp/national.csv`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use tps_proto::v1 as pb;
use tps_proto::v1::collector_client::CollectorClient;
use tps_tests::process::{CollectorProcess, prepare_store, status_mb};
use tps_tests::stats::{median, percentile};
use tps_tests::{eventually, measurement, now_ms, push_request};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    collector_bin: PathBuf,
    #[arg(long)]
    registry: PathBuf,
    /// Agents that report before measuring.
    #[arg(long, default_value_t = 2000)]
    agents: usize,
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (token, codes) = prepare_store(&args.collector_bin, &data, &args.registry, "21")?;

    let started = Instant::now();
    let collector =
        CollectorProcess::start(&args.collector_bin, &data, "info", Duration::from_secs(300))?;
    let (pid, grpc, http) = (
        collector.pid,
        collector.grpc.clone(),
        collector.http.clone(),
    );
    println!(
        "collector serving after {:.1} s; RSS {:.0} MB with every station loaded",
        started.elapsed().as_secs_f64(),
        status_mb(pid, "VmRSS:")
    );

    // Some agents report, so states vary.
    let mut client = CollectorClient::connect(format!("http://{grpc}")).await?;
    let base = now_ms() - 60_000;
    for (tps, code) in codes.iter().take(args.agents) {
        let r = client
            .enroll(pb::EnrollRequest {
                tps_code: tps.clone(),
                enrollment_code: code.clone(),
                agent: None,
            })
            .await?
            .into_inner();
        client
            .push(push_request(
                &r.token,
                vec![measurement(1, base, "gateway")],
            ))
            .await?;
    }
    println!(
        "{} agents reported; RSS {:.0} MB",
        args.agents,
        status_mb(pid, "VmRSS:")
    );

    let http_client = reqwest::Client::new();
    let get = |path: &str| {
        let req = http_client
            .get(format!("http://{http}{path}"))
            .bearer_auth(&token);
        async move { req.send().await?.error_for_status()?.bytes().await }
    };
    eventually(Duration::from_secs(30), "the API", || async {
        get("/api/v1/summary").await.ok()
    })
    .await?;
    for path in ["/api/v1/summary", "/api/v1/regions?level=regency"] {
        let mut p99s = Vec::new();
        for r in 1..=args.runs {
            let mut lat = Vec::with_capacity(args.requests);
            for _ in 0..args.requests {
                let t = Instant::now();
                get(path).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
            println!(
                "{path} run {r}: p50 {p50:.2} ms, p99 {p99:.2} ms ({} requests)",
                args.requests
            );
            p99s.push(p99);
        }
        println!("{path}: median p99 {:.2} ms", median(&mut p99s));
    }
    println!(
        "collector RSS at the end: {:.0} MB",
        status_mb(pid, "VmRSS:")
    );
    drop(collector);
    Ok(())
}
