//! How many agents one collector holds connected and pushing every 60 s, and what a
//! reconnect storm costs. A real `tps-collector` process (national registry or any
//! other) and N simulated agents in this process, each with its own gRPC connection
//! from one of several 127.0.0.x source addresses (past the ~28,000 ephemeral ports of
//! one address), enrolling and pushing through the agent's own `uplink` and `backoff`
//! code (no spool: that is each device's disk, not the collector's load).
//!
//! Reports collector RSS per connected agent, CPU, push latency; with `--storm`, SIGKILLs
//! the collector once every agent is pushing, restarts it on the same ports and reports
//! the seconds until every agent pushes again, the errors agents saw, the collector's
//! peak CPU and memory, and checks that every acknowledged measurement is stored.
//!
//! Both processes need an open file per agent: the agent count is capped by the hard
//! open-file limit (`ulimit -Hn`).
//!
//! `cargo build --release -p tps-collector -p tps-tests && target/release/bench-connections --collector-bin target/release/tps-collector --registry /tmp/national.csv --agents 100000`

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tonic::transport::{Channel, Endpoint, Uri};
use tps_agent::backoff::Backoff;
use tps_agent::uplink::{self, PushError, Uplink};
use tps_proto::v1 as pb;
use tps_tests::process::{CollectorProcess, cpu_seconds, status_mb};
use tps_tests::stats::percentile;
use tps_tests::{agent_status, measurement, now_ms, read_codes};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    collector_bin: PathBuf,
    #[arg(long)]
    registry: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    agents: usize,
    /// Source addresses 127.0.0.2 … 127.0.0.(1+N).
    #[arg(long, default_value_t = 8)]
    sources: u8,
    #[arg(long, default_value_t = 60)]
    push_interval_secs: u64,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 256)]
    enroll_concurrency: usize,
    /// How long to watch the steady state once every agent has pushed.
    #[arg(long, default_value_t = 180)]
    hold_secs: u64,
    /// SIGKILL the collector after the hold, restart it, and measure the storm.
    #[arg(long)]
    storm: bool,
    /// Give up waiting for a phase after this long.
    #[arg(long, default_value_t = 1800)]
    deadline_secs: u64,
}

/// What the simulated agents share with the watcher.
struct Shared {
    last_ok_ms: Vec<AtomicI64>,
    acked: Vec<AtomicU64>,
    agent_ids: Vec<AtomicI64>,
    enrolled: AtomicU64,
    pushes_ok: AtomicU64,
    errors_unavailable: AtomicU64, // transient: unavailable, connection refused, timeouts
    errors_other: AtomicU64,
    enroll_retries: AtomicU64,
    latencies_ms: Mutex<Vec<f64>>,
}

impl Shared {
    fn pushing_since(&self, t_ms: i64) -> usize {
        self.last_ok_ms
            .iter()
            .filter(|t| t.load(Ordering::Relaxed) >= t_ms)
            .count()
    }
    fn errors(&self) -> (u64, u64) {
        (
            self.errors_unavailable.load(Ordering::Relaxed),
            self.errors_other.load(Ordering::Relaxed),
        )
    }
}

/// A lazily connecting channel whose TCP connection leaves from `src`.
fn channel(src: IpAddr, dst: SocketAddr) -> anyhow::Result<Channel> {
    let connector = tower::service_fn(move |_: Uri| async move {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(src, 0))?;
        let stream = sock.connect(dst).await?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(TokioIo::new(stream))
    });
    Ok(Endpoint::from_shared(format!("http://{dst}"))?
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(60))
        .connect_with_connector_lazy(connector))
}

#[allow(clippy::too_many_arguments)]
async fn play(
    i: usize,
    tps: String,
    code: String,
    src: IpAddr,
    dst: SocketAddr,
    interval: Duration,
    enroll_gate: Arc<tokio::sync::Semaphore>,
    shared: Arc<Shared>,
) {
    let Ok(ch) = channel(src, dst) else { return };
    let url = format!("http://{dst}");
    let mut backoff = Backoff::default();
    let enrolled = {
        let _permit = enroll_gate.acquire().await;
        loop {
            let facts = pb::AgentFacts {
                hostname: format!("sim-{tps}"),
                os: "bench".into(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
            };
            match uplink::enroll(ch.clone(), &url, &tps, &code, facts).await {
                Ok(r) => break r,
                Err(_) => {
                    shared.enroll_retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff.wait()).await;
                }
            }
        }
    };
    backoff.reset();
    shared.enrolled.fetch_add(1, Ordering::Relaxed);
    shared.agent_ids[i].store(enrolled.agent_id as i64, Ordering::Relaxed);
    let mut up = Uplink::new(ch, enrolled.token);
    let base = now_ms() - 3_600_000;
    let mut seq = 0u64;
    let mut pending: Vec<pb::Measurement> = Vec::new();
    // Agents start pushing spread over one interval, as real ones do.
    let offset = interval.mul_f64(rand::rng().random());
    let mut next_round = tokio::time::Instant::now() + offset;
    tokio::time::sleep_until(next_round).await;
    loop {
        if tokio::time::Instant::now() >= next_round {
            // Two 30-second rounds of the primary target per push interval.
            for _ in 0..2 {
                seq += 1;
                pending.push(measurement(seq, base, "gateway"));
            }
            if pending.len() > 400 {
                pending.drain(..pending.len() - 400);
            }
            next_round += interval;
        }
        let started = Instant::now();
        match up
            .push(agent_status(pending.len() as u64), pending.clone())
            .await
        {
            Ok(r) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                if let Ok(mut l) = shared.latencies_ms.lock()
                    && l.len() < 2_000_000
                {
                    l.push(ms);
                }
                pending.retain(|m| m.seq > r.acked_seq);
                shared.acked[i].fetch_max(r.acked_seq, Ordering::Relaxed);
                shared.last_ok_ms[i].store(now_ms(), Ordering::Relaxed);
                shared.pushes_ok.fetch_add(1, Ordering::Relaxed);
                backoff.reset();
                tokio::time::sleep_until(next_round).await;
            }
            Err(e) => {
                match e {
                    PushError::Transient(_) => {
                        shared.errors_unavailable.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => shared.errors_other.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(backoff.wait()).await;
            }
        }
    }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Each agent is a socket here and one in the collector: both processes need room.
    let limit = tps_collector::limits::raise_open_files().unwrap_or(u64::MAX);
    anyhow::ensure!(
        args.agents as u64 + 500 <= limit,
        "{} agents need {} open files per process, but the hard limit here is {limit} (`ulimit -Hn`; raising it needs CAP_SYS_RESOURCE); use --agents {}",
        args.agents,
        args.agents + 500,
        limit.saturating_sub(500)
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let data = dir.path().join("data");
    let t = Instant::now();
    tps_collector::commands::import_stations(&data, &args.registry)?;
    let codes_file = dir.path().join("codes.csv");
    tps_collector::commands::enroll_codes(&data, None, &codes_file)?;
    let mut codes = read_codes(&codes_file)?;
    anyhow::ensure!(
        codes.len() >= args.agents,
        "the registry has only {} stations",
        codes.len()
    );
    // Spread the agents over the whole registry, as enrollment in the field would be.
    let step = codes.len() / args.agents;
    codes = codes
        .into_iter()
        .step_by(step.max(1))
        .take(args.agents)
        .collect();
    println!(
        "registry and {} codes ready in {:.0} s",
        codes.len(),
        t.elapsed().as_secs_f64()
    );

    let deadline = Duration::from_secs(args.deadline_secs);
    let collector =
        CollectorProcess::start(&args.collector_bin, &data, "warn", Duration::from_secs(300))?;
    let (grpc, http) = (collector.grpc.clone(), collector.http.clone());
    let dst: SocketAddr = grpc.trim_start_matches("http://").parse()?;
    let baseline_mb = status_mb(collector.pid, "VmRSS:");
    println!(
        "collector pid {} on {grpc}: {baseline_mb:.0} MB with the registry loaded",
        collector.pid
    );

    let n = codes.len();
    let shared = Arc::new(Shared {
        last_ok_ms: (0..n).map(|_| AtomicI64::new(0)).collect(),
        acked: (0..n).map(|_| AtomicU64::new(0)).collect(),
        agent_ids: (0..n).map(|_| AtomicI64::new(0)).collect(),
        enrolled: AtomicU64::new(0),
        pushes_ok: AtomicU64::new(0),
        errors_unavailable: AtomicU64::new(0),
        errors_other: AtomicU64::new(0),
        enroll_retries: AtomicU64::new(0),
        latencies_ms: Mutex::new(Vec::new()),
    });
    let gate = Arc::new(tokio::sync::Semaphore::new(args.enroll_concurrency));
    let interval = Duration::from_secs(args.push_interval_secs);
    let started_ms = now_ms();
    for (i, (tps, code)) in codes.into_iter().enumerate() {
        let src = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            2 + (i % usize::from(args.sources)) as u8,
        ));
        tokio::spawn(play(
            i,
            tps,
            code,
            src,
            dst,
            interval,
            gate.clone(),
            shared.clone(),
        ));
    }

    // Until every agent has pushed once.
    let t = Instant::now();
    let own = std::process::id();
    loop {
        let pushing = shared.pushing_since(started_ms);
        println!(
            "{:>5.0} s: enrolled {}, pushing {pushing}, collector {:.0} MB, {} fds; simulator {:.0} MB",
            t.elapsed().as_secs_f64(),
            shared.enrolled.load(Ordering::Relaxed),
            status_mb(collector.pid, "VmRSS:"),
            fds(collector.pid),
            status_mb(own, "VmRSS:"),
        );
        if pushing == n {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < deadline,
            "only {pushing} of {n} agents pushing after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    println!(
        "all {n} agents enrolled and pushing after {:.0} s",
        t.elapsed().as_secs_f64()
    );

    // Steady state.
    if let Ok(mut l) = shared.latencies_ms.lock() {
        l.clear();
    }
    let (cpu0, t0) = (cpu_seconds(collector.pid), Instant::now());
    let pushes0 = shared.pushes_ok.load(Ordering::Relaxed);
    let (mut peak_rss, mut rss_samples) = (0.0f64, Vec::new());
    while t0.elapsed() < Duration::from_secs(args.hold_secs) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss = status_mb(collector.pid, "VmRSS:");
        peak_rss = peak_rss.max(rss);
        rss_samples.push(rss);
    }
    let held = t0.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(collector.pid) - cpu0) / held * 100.0;
    let fresh = shared.pushing_since(now_ms() - (args.push_interval_secs as i64 + 30) * 1000);
    let rss = rss_samples.last().copied().unwrap_or(0.0);
    let mut lat = shared
        .latencies_ms
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    let (e_unavail, e_other) = shared.errors();
    println!("steady state over {held:.0} s:");
    println!(
        "  agents pushing within the last interval: {fresh} of {n}; collector sockets open: {}",
        fds(collector.pid)
    );
    println!(
        "  collector RSS {rss:.0} MB (peak {peak_rss:.0} MB; {baseline_mb:.0} MB before agents) = {:.1} KB per connected agent",
        (rss - baseline_mb) * 1024.0 / fresh.max(1) as f64
    );
    println!(
        "  collector CPU {cpu:.1} % of one core; {:.0} pushes/s; push latency p50 {:.2} ms, p99 {:.2} ms; simulator RSS {:.0} MB",
        (shared.pushes_ok.load(Ordering::Relaxed) - pushes0) as f64 / held,
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99),
        status_mb(own, "VmRSS:")
    );
    println!(
        "  errors so far: {e_unavail} unavailable, {e_other} other; enrollment retries {}",
        shared.enroll_retries.load(Ordering::Relaxed)
    );

    if !args.storm {
        drop(collector);
        return Ok(());
    }

    // The storm: SIGKILL, restart on the same ports, every agent back.
    println!("SIGKILL the collector with {n} agents connected");
    collector.kill();
    let acked_at_kill: Vec<u64> = shared
        .acked
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let (u0, o0) = shared.errors();
    let killed = Instant::now();
    let collector = CollectorProcess::start_on(
        &args.collector_bin,
        &data,
        "warn",
        Duration::from_secs(300),
        &grpc.replace("http://", ""),
        &http.replace("http://", ""),
        "",
    )?;
    let up_after = killed.elapsed().as_secs_f64();
    let restarted_ms = now_ms();
    println!(
        "collector back (pid {}) {up_after:.1} s after the kill; waiting for every agent",
        collector.pid
    );
    let (mut peak_cpu, mut peak_mb) = (0.0f64, 0.0f64);
    let mut last_cpu = (cpu_seconds(collector.pid), Instant::now());
    let t = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c = cpu_seconds(collector.pid);
        peak_cpu = peak_cpu.max((c - last_cpu.0) / last_cpu.1.elapsed().as_secs_f64() * 100.0);
        last_cpu = (c, Instant::now());
        peak_mb = peak_mb.max(status_mb(collector.pid, "VmRSS:"));
        let back = shared.pushing_since(restarted_ms);
        if t.elapsed().as_secs().is_multiple_of(10) {
            println!(
                "{:>5.0} s after restart: {back} of {n} pushing again",
                t.elapsed().as_secs_f64()
            );
        }
        if back == n {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < deadline,
            "only {back} of {n} agents back after {deadline:?}"
        );
    }
    let (u1, o1) = shared.errors();
    println!("storm:");
    println!(
        "  every agent pushing again {:.1} s after the restart ({:.1} s after the kill)",
        t.elapsed().as_secs_f64() + (now_ms() - restarted_ms) as f64 / 1000.0
            - t.elapsed().as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    println!(
        "  errors agents saw: {} unavailable, {} other",
        u1 - u0,
        o1 - o0
    );
    println!("  collector peak CPU {peak_cpu:.0} % of one core, peak RSS {peak_mb:.0} MB");
    drop(collector);

    // Nothing acknowledged before the kill is missing.
    let conn = rusqlite::Connection::open(tps_collector::store::db_path(&data))?;
    let mut stored = std::collections::HashMap::new();
    {
        let mut st = conn
            .prepare("SELECT agent_id, count(*), max(seq) FROM measurements GROUP BY agent_id")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            stored.insert(
                r.get::<_, i64>(0)?,
                (r.get::<_, u64>(1)?, r.get::<_, u64>(2)?),
            );
        }
    }
    let mut lost = 0u64;
    for (i, acked) in acked_at_kill.iter().enumerate() {
        let id = shared.agent_ids[i].load(Ordering::Relaxed);
        let (count, max) = stored.get(&id).copied().unwrap_or((0, 0));
        // Sequences start at 1 and are stored once each: count == max means no gap.
        if max < *acked || count < *acked {
            lost += acked - count.min(*acked);
        }
    }
    println!(
        "  acknowledged before the kill: {} measurements; missing after the restart: {lost}",
        acked_at_kill.iter().sum::<u64>()
    );
    anyhow::ensure!(lost == 0, "{lost} acknowledged measurements were lost");
    Ok(())
}
