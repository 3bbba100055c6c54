//! Durable ingest benchmark: measurements/s committed to SQLite, pushed over real gRPC
//! on loopback by N concurrent connections, each sending B-measurement pushes one after
//! another (each waits for its acknowledgement, as agents do).
//!
//! `cargo run --release -p tps-tests --bin bench-ingest -- --runs 5`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tps_collector::store::Synchronous;
use tps_proto::v1::collector_client::CollectorClient;
use tps_tests::stats::median;
use tps_tests::{TestCollector, kepri_registry, measurement, now_ms, push_request};

#[derive(Parser)]
struct Args {
    /// Concurrent gRPC connections (one agent each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Measurements per push.
    #[arg(long, default_value_t = 50)]
    batch: u64,
    /// Seconds measured per run (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// SQLite synchronous level: full or normal.
    #[arg(long, default_value = "full")]
    synchronous: String,
}

async fn one_run(args: &Args, sync: Synchronous) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    tps_collector::commands::import_stations(dir.path(), &kepri_registry())?;
    let c = TestCollector::start_with(dir.path(), |cfg| {
        cfg.synchronous = sync;
        cfg.ingest.max_batch = args.batch as usize;
    })
    .await?;
    let codes = c.codes("21")?;
    let mut tokens = Vec::new();
    for (tps, code) in codes.iter().take(args.connections) {
        tokens.push(tps_tests::Agent::enroll(&c, tps, code).await?.token);
    }
    let stored = Arc::new(AtomicU64::new(0));
    let pushes = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_at = Instant::now() + Duration::from_secs(1 + args.seconds);
    let mut tasks = Vec::new();
    for token in tokens {
        let (stored, pushes, measuring) = (stored.clone(), pushes.clone(), measuring.clone());
        let endpoint = c.endpoint();
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let mut client = CollectorClient::connect(endpoint).await?;
            // One second per seq: 30 days of room for a run.
            let base = now_ms() - 30 * 86_400_000;
            let mut seq = 1u64;
            while Instant::now() < stop_at {
                let ms = (seq..seq + batch)
                    .map(|s| measurement(s, base, "gateway"))
                    .collect();
                let r = client.push(push_request(&token, ms)).await?.into_inner();
                anyhow::ensure!(r.acked_seq == seq + batch - 1, "short acknowledgement");
                seq += batch;
                if measuring.load(Ordering::Relaxed) {
                    stored.fetch_add(batch, Ordering::Relaxed);
                    pushes.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    for t in tasks {
        t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let rate = stored.load(Ordering::Relaxed) as f64 / secs;
    let push_rate = pushes.load(Ordering::Relaxed) as f64 / secs;
    c.stop().await?;
    Ok((rate, push_rate))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sync = match args.synchronous.as_str() {
        "full" => Synchronous::Full,
        "normal" => Synchronous::Normal,
        other => anyhow::bail!("--synchronous {other:?}: use full or normal"),
    };
    let mut rates = Vec::new();
    for run in 1..=args.runs {
        let (rate, push_rate) = one_run(&args, sync).await?;
        println!("run {run}: {rate:>10.0} measurements/s durable ({push_rate:.0} pushes/s)");
        rates.push(rate);
    }
    println!(
        "median of {} runs: {:.0} measurements/s ({} connections x {}-measurement pushes, synchronous={})",
        args.runs,
        median(&mut rates),
        args.connections,
        args.batch,
        args.synchronous
    );
    Ok(())
}
