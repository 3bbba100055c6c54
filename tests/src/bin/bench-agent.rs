//! Agent footprint benchmark: runs real `tps-agent` processes at the default intervals
//! (probe every 30 s with 5 echoes, push every 60 s) against a collector on loopback,
//! each through a TCP proxy that counts every byte both ways (HTTP/2 framing and TLS
//! or not, as configured), then reports each agent's RSS, CPU share and bytes per day.
//!
//! `cargo build --release -p tps-agent && cargo run --release -p tps-tests --bin bench-agent -- --agent-bin target/release/tps-agent --minutes 10`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tps_tests::process::{cpu_seconds, status_mb};
use tps_tests::stats::median;
use tps_tests::{Agent, TestCollector, kepri_registry};

#[derive(Parser)]
struct Args {
    /// The agent binary to measure (build it first).
    #[arg(long)]
    agent_bin: PathBuf,
    /// How long the agents run.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Agents measured side by side (each its own station, spool and proxy).
    #[arg(long, default_value_t = 3)]
    agents: usize,
}

/// Forwards one direction, counting bytes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// A loopback proxy to `upstream`; returns its address and the (up, down) counters.
async fn counting_proxy(
    upstream: std::net::SocketAddr,
) -> anyhow::Result<(std::net::SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (u, d) = (up.clone(), down.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, u.clone()));
            tokio::spawn(pump(sr, cw, d.clone()));
        }
    });
    Ok((addr, up, down))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("collector");
    tps_collector::commands::import_stations(&data, &kepri_registry())?;
    let collector = TestCollector::start(&data).await?;
    let codes = collector.codes("21.71.01.1002")?;

    let mut runs = Vec::new();
    for (i, (tps, code)) in codes.iter().take(args.agents).enumerate() {
        let (proxy, up, down) = counting_proxy(collector.grpc).await?;
        let enrolled = Agent::enroll(&collector, tps, code).await?;
        let state = dir.path().join(format!("agent{i}"));
        tps_agent::credentials::save(
            &state,
            &tps_agent::credentials::Credentials {
                agent_id: enrolled.agent_id,
                token: enrolled.token,
                tps_code: tps.clone(),
                collector: format!("http://{proxy}"),
            },
        )?;
        // Three loopback targets: test traffic stays on this machine.
        let config = dir.path().join(format!("agent{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "collector = \"http://{proxy}\"\nstate_dir = {:?}\n\
                 [[target]]\nname = \"gateway\"\naddress = \"127.0.0.1\"\n\
                 [[target]]\nname = \"collector\"\naddress = \"127.0.0.2\"\n\
                 [[target]]\nname = \"anchor\"\naddress = \"::1\"\n",
                state.display().to_string()
            ),
        )?;
        let child = tokio::process::Command::new(&args.agent_bin)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()?;
        runs.push((child, up, down));
    }
    let started = Instant::now();
    println!(
        "{} agents running for {} minutes…",
        runs.len(),
        args.minutes
    );
    tokio::time::sleep(Duration::from_secs_f64(args.minutes * 60.0)).await;
    let secs = started.elapsed().as_secs_f64();

    let mut rss = Vec::new();
    let mut cpu = Vec::new();
    let mut wire = Vec::new();
    for (i, (child, up, down)) in runs.iter_mut().enumerate() {
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("agent {i} exited early"))?;
        let rss_mb = status_mb(pid, "VmRSS:");
        let hwm_mb = status_mb(pid, "VmHWM:");
        let cpu_pct = cpu_seconds(pid) / secs * 100.0;
        let (u, d) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
        let per_day = (u + d) as f64 * 86_400.0 / secs;
        println!(
            "agent {i}: RSS {:.1} MB (peak {:.1} MB), CPU {:.3}% of one core, wire {u} B up + {d} B down in {secs:.0} s = {:.2} MB/day",
            rss_mb,
            hwm_mb,
            cpu_pct,
            per_day / 1e6
        );
        rss.push(rss_mb);
        cpu.push(cpu_pct);
        wire.push(per_day / 1e6);
        child.kill().await?;
    }
    println!(
        "median: RSS {:.1} MB, CPU {:.3}% of one core, {:.2} MB/day on the wire",
        median(&mut rss),
        median(&mut cpu),
        median(&mut wire)
    );
    collector.stop().await
}
