//! Flash wear on a router: the bytes the cross-built agent writes to its state
//! directory per day at the default cadence (a round of 3 targets every 30 s, a push
//! every 60 s), with the link up and with the link down (spool growing). The agent runs
//! as on a router (qemu-user, chroot, `tps_tests::router`) with its router defaults;
//! time is compressed (a round every 2 s, a push every 4 s: the same two rounds per
//! push), so bytes per round are measured and scaled to a day's 2,880 rounds.
//! Counters: `/proc/PID/io` `write_bytes` (bytes sent towards the block device, which
//! on a router is the flash) and `wchar` (bytes passed to write calls).
//!
//! `scripts/cross aarch64 && cargo run --release -p tps-tests --bin bench-router-flash -- --runs 3 --rounds 60`

use std::time::Duration;

use clap::Parser;
use tps_tests::device::{enroll_args, fixture};
use tps_tests::eventually;
use tps_tests::router::{AARCH64, RouterRoot, built};
use tps_tests::stats::median;

#[derive(Parser)]
struct Args {
    /// Measurements per scenario; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Rounds measured in each run (after a warm-up of 5 rounds).
    #[arg(long, default_value_t = 60)]
    rounds: u64,
}

const ROUND_SECS: u64 = 2;
const ROUNDS_PER_DAY: f64 = 86_400.0 / 30.0;

fn io_counters(pid: u32) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    let get = |k: &str| -> anyhow::Result<u64> {
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .ok_or_else(|| anyhow::anyhow!("no {k} in /proc/{pid}/io"))?
            .trim()
            .parse()?)
    };
    Ok((get("write_bytes:")?, get("wchar:")?))
}

/// One run: (write_bytes, wchar) per round.
async fn run_once(link_up: bool, rounds: u64) -> anyhow::Result<(f64, f64)> {
    let bin = built(AARCH64)?.ok_or_else(|| anyhow::anyhow!("run scripts/cross aarch64 first"))?;
    let f = fixture("21.71.01.1002", |c| {
        c.ingest.push_interval_secs = (2 * ROUND_SECS) as u32;
    })
    .await?;
    let (collector, tps, code) = (f.collector, f.tps, f.code);
    let router = RouterRoot::new(
        AARCH64,
        &bin,
        "127.0.0.1 localhost\n127.0.0.1 collector.tps.test\n",
    )?;
    let port = collector.grpc.port();
    let url = format!("http://collector.tps.test:{port}");
    let out = router
        .agent(&enroll_args(&url, &tps, &code), "", None)
        .output()?;
    anyhow::ensure!(out.status.success(), "enroll failed: {out:?}");
    // The defaults but the cadence; three loopback targets stand for gateway,
    // collector and anchor (test traffic stays on this machine).
    std::fs::write(
        router.path("/etc/tps-agent/agent.toml"),
        format!(
            "collector = \"{url}\"\nprobe_interval_secs = {ROUND_SECS}\necho_timeout_ms = 300\n\
             push_interval_secs = {}\n\n\
             [[target]]\nname = \"gateway\"\naddress = \"127.0.0.1\"\n\n\
             [[target]]\nname = \"collector\"\naddress = \"collector\"\nmethod = \"tcp\"\nport = {port}\n\n\
             [[target]]\nname = \"anchor\"\naddress = \"127.0.0.2\"\n",
            2 * ROUND_SECS
        ),
    )?;
    let mut collector = Some(collector);
    if !link_up && let Some(c) = collector.take() {
        c.stop().await?;
    }
    let mut agent = router
        .agent(&["run"], "", None)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let state = router.path("/etc/tps-agent/state");
    // Opened only once the agent made the file, so the agent decides its page size.
    let last_seq = || {
        if !state.join("spool.sqlite").exists() {
            return 0;
        }
        tps_agent::spool::Spool::snapshot(&state)
            .map(|s| s.last_seq)
            .unwrap_or(0)
    };
    // Warm-up: the spool file exists and 5 rounds (15 measurements) went through.
    eventually(Duration::from_secs(60), "warm-up rounds", || async {
        (last_seq() >= 15).then_some(())
    })
    .await?;
    let (w0, c0) = io_counters(agent.id())?;
    let s0 = last_seq();
    let want = s0 + 3 * rounds;
    eventually(
        Duration::from_secs(ROUND_SECS * rounds * 3 + 60),
        "the measured rounds",
        || async { (last_seq() >= want).then_some(()) },
    )
    .await?;
    let (w1, c1) = io_counters(agent.id())?;
    let measured = (last_seq() - s0) as f64 / 3.0;
    agent.kill()?;
    agent.wait()?;
    if let Some(c) = collector {
        c.stop().await?;
    }
    Ok(((w1 - w0) as f64 / measured, (c1 - c0) as f64 / measured))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "| link | write_bytes per round | per day | wchar per round | per day |\n|---|---|---|---|---|"
    );
    for link_up in [true, false] {
        let mut w = Vec::new();
        let mut c = Vec::new();
        for i in 0..args.runs {
            let (wb, wc) = run_once(link_up, args.rounds).await?;
            eprintln!(
                "run {}/{} (link {}): {wb:.0} B/round to the device, {wc:.0} B/round written",
                i + 1,
                args.runs,
                if link_up { "up" } else { "down" }
            );
            w.push(wb);
            c.push(wc);
        }
        let (wb, wc) = (median(&mut w), median(&mut c));
        println!(
            "| {} | {:.1} KB | **{:.1} MB** | {:.1} KB | {:.1} MB |",
            if link_up {
                "up (pushed and acknowledged)"
            } else {
                "down (spool grows)"
            },
            wb / 1e3,
            wb * ROUNDS_PER_DAY / 1e6,
            wc / 1e3,
            wc * ROUNDS_PER_DAY / 1e6
        );
    }
    Ok(())
}
