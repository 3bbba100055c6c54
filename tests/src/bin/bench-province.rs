//! Province scale: a real `tps-collector` process with the Kepri registry and a simulated
//! fleet of 3,327 agents at the default intervals (probe every 30 s, push every 60 s),
//! each over its own gRPC connection, for N minutes. Reports the collector's CPU share
//! and RSS, and push latency p50/p99 from its `tps_push_seconds` histogram.
//!
//! `cargo build --release -p tps-collector && cargo run --release -p tps-tests --bin bench-province -- --collector-bin target/release/tps-collector --minutes 10`

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use tps_tests::fleet::{Fleet, FleetConfig, Mix};
use tps_tests::{kepri_registry, read_codes};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    collector_bin: PathBuf,
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
}

fn proc_stat(pid: u32) -> (f64, f64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0;
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let f: Vec<String> = s
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .map(String::from)
                .collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .unwrap_or(0.0);
    (rss, ticks)
}

/// A quantile from a Prometheus histogram's cumulative buckets (linear within a bucket).
fn quantile(metrics: &str, name: &str, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                },
                v,
            ))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    let want = total * q;
    let mut prev = (0.0, 0.0);
    for (le, c) in buckets {
        if c >= want {
            if le.is_infinite() {
                return prev.0;
            }
            let frac = if c > prev.1 {
                (want - prev.1) / (c - prev.1)
            } else {
                0.0
            };
            return prev.0 + (le - prev.0) * frac;
        }
        prev = (le, c);
    }
    f64::NAN
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    tps_collector::commands::import_stations(&data, &kepri_registry())?;
    let codes_file = dir.path().join("codes.csv");
    tps_collector::commands::enroll_codes(&data, None, &codes_file)?;
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[grpc]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[tls]\nplaintext = true\n[store]\ndata_dir = {:?}\n",
            data.display().to_string()
        ),
    )?;
    let mut child = Command::new(&args.collector_bin)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn,tps_collector::server=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let (Some(g), Some(h)) = (
                line.split("grpc_addr=").nth(1),
                line.split("http_addr=").nth(1),
            ) {
                let first = |s: &str| s.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send((first(g), first(h)));
            }
        }
    });
    let (grpc, http) = rx.recv_timeout(Duration::from_secs(60))?;
    let ticks_per_sec: f64 =
        String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?
            .trim()
            .parse()?;

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
    let (_, t0) = proc_stat(pid);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.minutes * 60.0)).await;
    let secs = started.elapsed().as_secs_f64();
    let (rss, t1) = proc_stat(pid);
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
        (t1 - t0) / ticks_per_sec / secs * 100.0,
        rss,
        quantile(&metrics, "tps_push_seconds", 0.5) * 1000.0,
        quantile(&metrics, "tps_push_seconds", 0.99) * 1000.0,
    );
    fleet.stop().await;
    child.kill()?;
    child.wait()?;
    Ok(())
}
