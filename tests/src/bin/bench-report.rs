//! The weekly report at province and national scale: a store with the registry and two
//! weeks of seeded history (status changes, agents, daily rollups of two targets, flags),
//! then `tps-collector report weekly` as its own process for each format: wall time and
//! peak RSS (VmHWM), median of several runs. Also how fast the rollup folds measurements.
//!
//! `cargo build --release -p tps-collector && cargo run --release -p tps-tests --bin bench-report -- --collector-bin target/release/tps-collector --registry deploy/stations/kepri-3327.csv`

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use rusqlite::params;
use tps_collector::report::schedule::ReportConfig;
use tps_tests::process::status_mb;
use tps_tests::stats::median;
use tps_tests::{history, now_ms, open_store};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    collector_bin: PathBuf,
    #[arg(long)]
    registry: PathBuf,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measurements to fold for the rollup figure (0: skip).
    #[arg(long, default_value_t = 2_000_000)]
    rollup_measurements: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let data = dir.path().join("data");
    let t = Instant::now();
    tps_collector::commands::import_stations(&data, &args.registry)?;
    let cfg = ReportConfig::default();
    let week = cfg.due_week(now_ms());
    let seeded = {
        let mut conn = open_store(&data)?;
        history::seed(&mut conn, &[week.previous(), week], &cfg.tz, 7)?
    };
    println!(
        "seeded in {:.0} s: {} stations, {} agents, {} status changes, {} rollup rows, {} flags (weeks {} and {week})",
        t.elapsed().as_secs_f64(),
        seeded.stations,
        seeded.agents,
        seeded.changes,
        seeded.rollups,
        seeded.flags,
        week.previous()
    );
    let db_mb = std::fs::metadata(tps_collector::store::db_path(&data))?.len() as f64 / 1e6;
    println!("store: {db_mb:.0} MB");

    for format in ["json", "csv", "html"] {
        let (mut secs, mut peaks, mut bytes) = (Vec::new(), Vec::new(), 0);
        for _ in 0..args.runs {
            let out = dir.path().join(format!("report.{format}"));
            let started = Instant::now();
            let mut child = Command::new(&args.collector_bin)
                .args([
                    "report",
                    "weekly",
                    "--week",
                    &week.to_string(),
                    "--format",
                    format,
                ])
                .arg("--data-dir")
                .arg(&data)
                .arg("--out")
                .arg(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let pid = child.id();
            let mut peak: f64 = 0.0;
            let status = loop {
                peak = peak.max(status_mb(pid, "VmHWM:"));
                if let Some(s) = child.try_wait()? {
                    break s;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            anyhow::ensure!(status.success(), "report weekly failed: {status}");
            secs.push(started.elapsed().as_secs_f64());
            peaks.push(peak);
            bytes = std::fs::metadata(&out)?.len();
        }
        println!(
            "{format:>4}: median {:.2} s, peak RSS {:.0} MB, {:.1} MB written ({} runs: {:?} s)",
            median(&mut secs.clone()),
            median(&mut peaks),
            bytes as f64 / 1e6,
            args.runs,
            secs.iter()
                .map(|s| (s * 100.0).round() / 100.0)
                .collect::<Vec<_>>()
        );
    }

    if args.rollup_measurements > 0 {
        // Rounds of 30 s for as many agents as needed, through the rollup's own code.
        let mut conn = open_store(&data)?;
        let (start, _) = week.bounds(&cfg.tz);
        tps_collector::sinks::rollup::catch_up_all(&mut conn, &cfg.tz)?;
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare(
                "INSERT INTO measurements (agent_id, seq, start_ms, target_name, target_address, method,
                 sent, received, rtt_avg_ms, received_ms) VALUES (?1, ?2, ?3, ?4, '10.0.0.1', 'icmp', 5, ?5, ?6, ?3)",
            )?;
            for i in 0..args.rollup_measurements {
                let agent = (i % 3000) as i64 + 1;
                let seq = (i / 3000) as i64 + 1_000_000;
                let target = if i % 2 == 0 { "gateway" } else { "dns" };
                st.execute(params![
                    agent,
                    seq,
                    start + seq * 30_000 % (7 * 86_400_000),
                    target,
                    5 - (i % 7 == 0) as i64,
                    20.0 + (i % 50) as f64
                ])?;
            }
        }
        tx.commit()?;
        let t = Instant::now();
        let n = tps_collector::sinks::rollup::catch_up_all(&mut conn, &cfg.tz)?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "rollup: {n} measurements folded in {s:.2} s = {:.0} measurements/s",
            n as f64 / s
        );
    }
    Ok(())
}
