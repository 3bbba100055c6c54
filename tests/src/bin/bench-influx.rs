//! InfluxDB sink throughput: a store holding N measurements, then a collector started
//! with the sink on, timed until the sink has written everything to a real
//! VictoriaMetrics (lag 0). Reports points (lines of `link`) per second.
//!
//! `cargo run --release -p tps-tests --bin bench-influx -- --measurements 300000 --runs 3`

use std::time::{Duration, Instant};

use clap::Parser;
use tps_collector::sinks::influx::InfluxConfig;
use tps_proto::v1::collector_client::CollectorClient;
use tps_tests::stats::median;
use tps_tests::victoria::VictoriaMetrics;
use tps_tests::{
    Agent, TestCollector, eventually, kepri_registry, measurement, now_ms, push_request,
};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 300_000)]
    measurements: u64,
    #[arg(long, default_value_t = 5000)]
    batch_size: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

async fn one_run(args: &Args) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let vm = VictoriaMetrics::start(&dir.path().join("vm"), &[]).await?;
    let data = dir.path().join("collector");
    tps_collector::commands::import_stations(&data, &kepri_registry())?;

    // The backlog: N measurements from 8 agents, stored before the sink exists.
    let c = TestCollector::start(&data).await?;
    let codes = c.codes("21")?;
    let per_agent = args.measurements / 8;
    let mut tasks = Vec::new();
    for (tps, code) in codes.iter().take(8) {
        let token = Agent::enroll(&c, tps, code).await?.token;
        let endpoint = c.endpoint();
        tasks.push(tokio::spawn(async move {
            let mut client = CollectorClient::connect(endpoint).await?;
            let base = now_ms() - 30 * 86_400_000;
            let mut seq = 1;
            while seq <= per_agent {
                let ms = (seq..(seq + 500).min(per_agent + 1))
                    .map(|s| measurement(s, base, "gateway"))
                    .collect();
                client.push(push_request(&token, ms)).await?;
                seq += 500;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    c.stop().await?;

    let config = InfluxConfig {
        url: vm.url(),
        org: "kpu".into(),
        bucket: "tps".into(),
        token: "t".into(),
        batch_size: args.batch_size,
        flush_interval: Duration::from_millis(100),
    };
    let t0 = Instant::now();
    let c = TestCollector::start_with(&data, |cfg| cfg.influx = Some(config)).await?;
    eventually(Duration::from_secs(600), "the sink to catch up", || async {
        let (_, h) = c.get_json("/healthz").await.ok()?;
        (h["influx"]["state"] == "ok" && h["influx"]["lag_rows"] == 0).then_some(())
    })
    .await?;
    let secs = t0.elapsed().as_secs_f64();
    c.stop().await?;
    Ok((per_agent * 8) as f64 / secs)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rates = Vec::new();
    for run in 1..=args.runs {
        let r = one_run(&args).await?;
        println!("run {run}: {r:>9.0} points/s written to VictoriaMetrics");
        rates.push(r);
    }
    println!(
        "median of {}: {:.0} points/s ({} measurements backlog, batches of {})",
        args.runs,
        median(&mut rates),
        args.measurements,
        args.batch_size
    );
    Ok(())
}
