//! The spool's footprint on disk at the agent's defaults (a round of 3 targets every
//! 30 s, 64 MB and 7 days of bounds): main file, write-ahead log and journal after an
//! outage of an hour, a day and a week, written round by round as the agent writes
//! them, with the link down (nothing acknowledged). Time is not waited for: the rounds
//! are appended back to back with their start times 30 s apart.
//!
//! With `--writes` (root) it also measures what a round costs the storage: the spool on
//! an ext4 of its own on a loop device (`tps_tests::loopfs`), flushed after every round
//! as the kernel's writeback does between rounds 30 s apart, with the link up (an
//! acknowledgement every second round, as pushes every 60 s bring) and down; 80 rounds
//! of warm-up, 320 measured (several checkpoints of the log).
//!
//! `cargo run --release -p tps-tests --bin bench-spool -- --runs 3 --writes`

use std::time::Duration;

use clap::Parser;
use tps_agent::config::Method;
use tps_agent::spool::{Limits, NewEntry, Spool};
use tps_agent::stats::summarize;
use tps_tests::stats::median;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also measure bytes written to the storage per round (root: mounts a loop device).
    #[arg(long)]
    writes: bool,
}

/// Bytes the storage receives per round, link up or down.
fn device_bytes_per_round(link_up: bool) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let fs = tps_tests::loopfs::LoopFs::mount(&dir.path().join("state"))?;
    let limits = Limits::new(
        Duration::from_secs(7 * 86_400),
        Duration::from_secs(30),
        3,
        64 << 20,
    );
    let mut spool = Spool::open(&fs.mnt, limits)?;
    let t0 = 1_796_000_000_000i64;
    let mut k = 0u64;
    let mut step = |spool: &mut Spool| -> anyhow::Result<()> {
        let seqs = spool.append(&round(t0 + k as i64 * ROUND_MS, k))?;
        if link_up && k % 2 == 1 {
            spool.ack(*seqs.last().unwrap_or(&0));
        }
        k += 1;
        Ok(())
    };
    for _ in 0..80 {
        step(&mut spool)?;
    }
    fs.flush();
    let before = fs.written()?;
    let n = 320;
    for _ in 0..n {
        step(&mut spool)?;
        fs.flush();
    }
    let after = fs.written()?;
    drop(spool);
    Ok((after - before) as f64 / f64::from(n))
}

const ROUND_MS: i64 = 30_000;

/// One round of the default targets as the agent spools them.
fn round(start_ms: i64, k: u64) -> Vec<NewEntry> {
    let rtt = |ms: u64| Some(Duration::from_micros(ms * 1000 + k % 997));
    [
        ("gateway", "192.168.8.1", Method::Icmp, 2),
        ("collector", "203.0.113.10:443", Method::Tcp, 40),
        ("anchor", "198.51.100.1", Method::Icmp, 35),
    ]
    .into_iter()
    .map(|(name, addr, method, base)| NewEntry {
        start_ms,
        offset_ms: Some(-1_250),
        clock_epoch: 7 << 16,
        target_name: name.into(),
        target_address: addr.into(),
        method,
        round: summarize(&[rtt(base), rtt(base + 1), None, rtt(base + 3), rtt(base)]),
    })
    .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let marks = [
        (120u64, "1-hour outage"),
        (2_880, "1 day"),
        (20_160, "7 days"),
    ];
    let mut results: Vec<Vec<(u64, u64)>> = vec![Vec::new(); marks.len()];
    for run in 0..args.runs {
        let dir = tempfile::tempdir()?;
        let limits = Limits::new(
            Duration::from_secs(7 * 86_400),
            Duration::from_secs(30),
            3,
            64 << 20,
        );
        let mut spool = Spool::open(dir.path(), limits)?;
        let t0 = 1_796_000_000_000i64;
        let mut done = 0u64;
        for (i, (rounds, _)) in marks.iter().enumerate() {
            while done < *rounds {
                spool.append(&round(t0 + done as i64 * ROUND_MS, done))?;
                done += 1;
            }
            results[i].push((spool.footprint_bytes(), spool.depth()?));
        }
        eprintln!("run {}/{} done", run + 1, args.runs);
    }
    if args.writes {
        println!(
            "| link | to the storage per round (runs) | median | **per day** (2,880 rounds) |\n|---|---|---|---|"
        );
        for link_up in [true, false] {
            let mut v = Vec::new();
            for _ in 0..args.runs {
                v.push(device_bytes_per_round(link_up)?);
            }
            let shown: Vec<String> = v.iter().map(|b| format!("{:.1} KB", b / 1e3)).collect();
            let m = median(&mut v);
            println!(
                "| {} | {} | {:.1} KB | **{:.1} MB** |",
                if link_up { "up" } else { "down" },
                shown.join(" · "),
                m / 1e3,
                m * 2_880.0 / 1e6
            );
        }
        println!();
    }
    println!(
        "| outage | measurements waiting | spool on disk (median of {}) | per measurement |\n|---|---|---|---|",
        args.runs
    );
    for (i, (_, what)) in marks.iter().enumerate() {
        let mut bytes: Vec<f64> = results[i].iter().map(|r| r.0 as f64).collect();
        let depth = results[i][0].1;
        let b = median(&mut bytes);
        println!(
            "| {what} | {depth} | {:.0} KB | {:.0} B |",
            b / 1e3,
            b / depth as f64
        );
    }
    Ok(())
}
