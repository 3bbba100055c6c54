//! Flash wear on a router: the bytes the cross-built agent writes to its state
//! directory per day at the default cadence (a round of 3 targets every 30 s, a push
//! every 60 s), with the link up and with the link down (spool growing). The agent runs
//! as on a router (qemu-user, chroot, `tps_tests::router`) with its router defaults;
//! time is compressed (a round every second, a push every 2 s: the same two rounds per
//! push), so bytes per round are measured and scaled to a day's 2,880 rounds.
//! The state directory is an ext4 file system of its own on a loop device, mounted
//! `noatime` as OpenWrt mounts its overlay (the bench reads the spool to count rounds),
//! and the bench flushes it after every round, as the kernel's writeback does between rounds
//! 30 s apart (compressed time would otherwise let one flush cover several rounds).
//! Counters: the loop device's sectors written (what the storage receives, file-system
//! journal included), `/proc/PID/io` `write_bytes` (pages the agent dirtied) and
//! `wchar` (bytes passed to write calls). Root only (mount).
//!
//! `scripts/cross aarch64 && cargo run --release -p tps-tests --bin bench-router-flash -- --runs 3`
//! (`--agent PATH` measures another aarch64 build, e.g. an older one.)

use std::time::Duration;

use clap::Parser;
use tps_tests::device::{enroll_args, fixture};
use tps_tests::eventually;
use tps_tests::loopfs::LoopFs;
use tps_tests::router::{AARCH64, RouterRoot, built};
use tps_tests::stats::median;

#[derive(Parser)]
struct Args {
    /// Measurements per scenario; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Rounds measured in each run, after the warm-up: enough to span several of the
    /// spool log's checkpoints (one every ~32 rounds), or the figure is one phase of
    /// the log's cycle.
    #[arg(long, default_value_t = 100)]
    rounds: u64,
    /// Rounds before measuring: past the first checkpoint, where the log is still
    /// growing to its size.
    #[arg(long, default_value_t = 40)]
    warmup: u64,
    /// The aarch64 agent to measure (default: the one `scripts/cross` built).
    #[arg(long)]
    agent: Option<std::path::PathBuf>,
}

/// Bytes per round: (to the device, dirtied pages, written by calls).
struct PerRound {
    device: f64,
    write_bytes: f64,
    wchar: f64,
}

const ROUND_SECS: u64 = 1;
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

/// One run.
async fn run_once(
    link_up: bool,
    (warmup, rounds): (u64, u64),
    agent_bin: Option<&std::path::Path>,
) -> anyhow::Result<PerRound> {
    let bin = match agent_bin {
        Some(p) => p.to_path_buf(),
        None => {
            built(AARCH64)?.ok_or_else(|| anyhow::anyhow!("run scripts/cross aarch64 first"))?
        }
    };
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
    let state = router.path("/etc/tps-agent/state");
    // Enrolling wrote the token there: it moves onto the file system measured.
    let token = std::fs::read(state.join("credentials.toml"))?;
    std::fs::remove_dir_all(&state)?;
    let fs = LoopFs::mount(&state)?;
    std::fs::write(state.join("credentials.toml"), token)?;
    let mut collector = Some(collector);
    if !link_up && let Some(c) = collector.take() {
        c.stop().await?;
    }
    let mut agent = router
        .agent(&["run"], "", None)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
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
    eventually(
        Duration::from_secs(3 * warmup + 60),
        "warm-up rounds",
        || async { (last_seq() >= 3 * warmup).then_some(()) },
    )
    .await?;
    fs.flush();
    let (w0, c0) = io_counters(agent.id())?;
    let d0 = fs.written()?;
    let s0 = last_seq();
    let want = s0 + 3 * rounds;
    // Writeback between rounds, as 30 s apart.
    let flusher = {
        let mnt = fs.mnt.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(ROUND_SECS)).await;
                let _ = tokio::process::Command::new("sync")
                    .arg("-f")
                    .arg(&mnt)
                    .status()
                    .await;
            }
        })
    };
    eventually(
        Duration::from_secs(ROUND_SECS * rounds * 3 + 60),
        "the measured rounds",
        || async { (last_seq() >= want).then_some(()) },
    )
    .await?;
    flusher.abort();
    fs.flush();
    let (w1, c1) = io_counters(agent.id())?;
    let d1 = fs.written()?;
    let measured = (last_seq() - s0) as f64 / 3.0;
    agent.kill()?;
    agent.wait()?;
    if let Some(c) = collector {
        c.stop().await?;
    }
    drop(fs);
    Ok(PerRound {
        device: (d1 - d0) as f64 / measured,
        write_bytes: (w1 - w0) as f64 / measured,
        wchar: (c1 - c0) as f64 / measured,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "| link | to the device per round | **per day** | write_bytes per day | wchar per day |\n|---|---|---|---|---|"
    );
    let day = |v: f64| v * ROUNDS_PER_DAY / 1e6;
    for link_up in [true, false] {
        let (mut d, mut w, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..args.runs {
            let r = run_once(link_up, (args.warmup, args.rounds), args.agent.as_deref()).await?;
            eprintln!(
                "run {}/{} (link {}): {:.0} B/round to the device, {:.0} B/round dirtied, {:.0} B/round written",
                i + 1,
                args.runs,
                if link_up { "up" } else { "down" },
                r.device,
                r.write_bytes,
                r.wchar
            );
            d.push(r.device);
            w.push(r.write_bytes);
            c.push(r.wchar);
        }
        let (d, w, c) = (median(&mut d), median(&mut w), median(&mut c));
        println!(
            "| {} | {:.1} KB | **{:.1} MB** | {:.1} MB | {:.1} MB |",
            if link_up {
                "up (pushed and acknowledged)"
            } else {
                "down (spool grows)"
            },
            d / 1e3,
            day(d),
            day(w),
            day(c)
        );
    }
    Ok(())
}
