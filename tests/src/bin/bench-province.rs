//! Province scale: a real `tps-collector` process with the Kepri registry and a simulated
//! fleet of 3,327 agents at the default intervals (probe every 30 s, push every 60 s),
//! each over its own gRPC connection, for N minutes. Reports the collector's CPU share
//! and RSS, and push latency p50/p99 from its `tps_push_seconds` histogram.
//!
//! `cargo build --release -p tps-collector && cargo run --release -p tps-tests --bin bench-province -- --collector-bin target/release/tps-collector --minutes 10`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use tps_tests::fleet::{Fleet, FleetConfig, Mix};
use tps_tests::process::{CollectorProcess, cpu_seconds, status_mb};
use tps_tests::{kepri_registry, read_codes};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    collector_bin: PathBuf,
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
}

/// A quantile from a Prometheus histogram's cumulative buckets (linear within a bucket).
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    tps_collector::commands::import_stations(&data, &kepri_registry())?;
    let codes_file = dir.path().join("codes.csv");
    tps_collector::commands::enroll_codes(&data, None, &codes_file)?;
    let collector =
        CollectorProcess::start(&args.collector_bin, &data, "warn", Duration::from_secs(60))?;
    let (pid, grpc, http) = (
        collector.pid,
        collector.grpc.clone(),
        collector.http.clone(),
    );

    let fleet = Fleet::start(
        FleetConfig {
            collector: format!("http://{grpc}"),
            probe_interval: Duration::from_secs(30),
            push_interval: Duration::from_secs(60),
            state_root: dir.path().join("fleet"),
            seed: 1,
            outage: (Duration::from_secs(120), Duration::from_secs(600)),
            up: (Duration::from_secs(300), Duration::from_secs(1800)),
        },
        read_codes(&codes_file)?,
        &Mix::kepri(),
    );
    // Let every agent enroll and settle (first pushes are spread over one interval).
    tokio::time::sleep(Duration::from_secs(90)).await;
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.minutes * 60.0)).await;
    let secs = started.elapsed().as_secs_f64();
    let (rss, cpu1) = (status_mb(pid, "VmRSS:"), cpu_seconds(pid));
    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await?
        .text()
        .await?;
    let pushes = metrics
        .lines()
        .find(|l| l.starts_with("tps_pushes_total"))
        .unwrap_or("")
        .to_string();
    println!(
        "{} agents, {:.0} s measured: collector CPU {:.1} % of one core, RSS {:.0} MB, push latency p50 {:.2} ms, p99 {:.2} ms ({pushes})",
        fleet.profiles.len(),
        secs,
        (cpu1 - cpu0) / secs * 100.0,
        rss,
        tps_tests::stats::histogram_quantile(&metrics, "tps_push_seconds", 0.5) * 1000.0,
        tps_tests::stats::histogram_quantile(&metrics, "tps_push_seconds", 0.99) * 1000.0,
    );
    fleet.stop().await;
    drop(collector);
    Ok(())
}
