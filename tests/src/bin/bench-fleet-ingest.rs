//! The ingest ceiling end to end through the fleet simulator: a real `tps-collector`
//! process; N simulated agents (the agent's own enrollment, SQLite spool and push loop)
//! come back from an outage each with a backlog of rounds in its spool and push it as
//! fast as the collector acknowledges. Measurements durably stored per second, from the
//! first push to the last spool emptied; median of several runs (a fresh store each).
//!
//! `cargo build --release -p tps-collector && cargo run --release -p tps-tests --bin bench-fleet-ingest -- --collector-bin target/release/tps-collector`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tps_tests::fleet::{FleetConfig, drain_backlog};
use tps_tests::process::{CollectorProcess, cpu_seconds};
use tps_tests::stats::median;
use tps_tests::{kepri_registry, read_codes};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    collector_bin: PathBuf,
    #[arg(long, default_value_t = 200)]
    agents: usize,
    /// Rounds per agent in its spool (three targets each: three measurements per round).
    #[arg(long, default_value_t = 2000)]
    backlog: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    let mut rates = Vec::new();
    for run in 1..=args.runs {
        let dir = tempfile::tempdir_in(std::env::temp_dir())?;
        let data = dir.path().join("data");
        tps_collector::commands::import_stations(&data, &kepri_registry())?;
        let codes_file = dir.path().join("codes.csv");
        tps_collector::commands::enroll_codes(&data, None, &codes_file)?;
        let codes: Vec<_> = read_codes(&codes_file)?
            .into_iter()
            .take(args.agents)
            .collect();
        // Agents take their push interval from the collector: 1 s, so a spool that is not
        // a whole batch is not left waiting a minute.
        let collector = CollectorProcess::start_on(
            &args.collector_bin,
            &data,
            "warn",
            Duration::from_secs(60),
            "127.0.0.1:0",
            "127.0.0.1:0",
            "[ingest]\npush_interval_secs = 1\n",
        )?;
        let f = Arc::new(FleetConfig {
            collector: format!("http://{}", collector.grpc),
            probe_interval: Duration::from_secs(30),
            push_interval: Duration::from_secs(1),
            state_root: dir.path().join("fleet"),
            seed: run as u64,
            outage: (Duration::ZERO, Duration::ZERO),
            up: (Duration::ZERO, Duration::ZERO),
        });
        let (stored, secs, cpu) = rt.block_on(async {
            // Everyone enrolls and fills its spool; then all start pushing together.
            let go = Arc::new(tokio::sync::Barrier::new(codes.len() + 1));
            let mut tasks = tokio::task::JoinSet::new();
            for (tps, code) in codes.iter().cloned() {
                tasks.spawn(drain_backlog(
                    f.clone(),
                    tps,
                    code,
                    args.backlog,
                    go.clone(),
                ));
            }
            go.wait().await;
            let (t, cpu0) = (Instant::now(), cpu_seconds(collector.pid));
            while let Some(r) = tasks.join_next().await {
                r?.map_err(|e| anyhow::anyhow!(e))?;
            }
            let secs = t.elapsed().as_secs_f64();
            let cpu = (cpu_seconds(collector.pid) - cpu0) / secs * 100.0;
            let conn = rusqlite::Connection::open(tps_collector::store::db_path(&data))?;
            let stored: u64 =
                conn.query_row("SELECT count(*) FROM measurements", [], |r| r.get(0))?;
            anyhow::Ok((stored, secs, cpu))
        })?;
        let expected = (args.agents * args.backlog * 3) as u64;
        anyhow::ensure!(stored == expected, "stored {stored} of {expected}");
        let rate = stored as f64 / secs;
        println!(
            "run {run}: {stored} measurements from {} agents in {secs:.1} s = {rate:.0}/s (collector CPU {cpu:.0} % of one core)",
            codes.len()
        );
        rates.push(rate);
        drop(collector);
    }
    println!("median {:.0} measurements/s durable", median(&mut rates));
    Ok(())
}
