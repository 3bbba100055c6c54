//! Soak benchmark: the province (3,327 agents, a round every 30 s on three targets) for
//! days of campaign time, accelerated, against one collector; does the store plateau,
//! does memory stay flat, do pushes stay quick?
//!
//! The collector runs in this process (so its clock for compaction and retention can be
//! the accelerated one; nothing else here uses the process's memory), with
//! `raw_days = 1`, `rollup_days = 1`, `compact_after_hours = 1`. The agents run in a
//! child process of their own, each over its own gRPC connection: every `--push-secs`
//! real seconds an agent pushes the rounds its stations measured in the campaign time
//! that passed, with link outcomes drawn like the Kepri mix. Every `--sample-secs` a
//! line: campaign time, store size, pages free for reuse, bytes per measurement held,
//! RSS, push p99 on both sides, ingest and compaction rates.
//!
//! `cargo run --release -p tps-tests --bin bench-soak -- --minutes 65 --speed 48`

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, OpenFlags};
use tps_collector::config::Timeline;
use tps_proto::v1 as pb;
use tps_proto::v1::collector_client::CollectorClient;
use tps_tests::stats::{median, percentile};
use tps_tests::{TestCollector, kepri_registry, links, now_ms, push_request};

#[derive(Parser)]
struct Args {
    /// Real minutes to run.
    #[arg(long, default_value_t = 65)]
    minutes: u64,
    /// Campaign time runs this many times as fast as the wall clock.
    #[arg(long, default_value_t = 48)]
    speed: u32,
    /// Stations (from the Kepri registry).
    #[arg(long, default_value_t = 3327)]
    stations: usize,
    /// Real seconds between one agent's pushes.
    #[arg(long, default_value_t = 5)]
    push_secs: u64,
    /// Real seconds between samples.
    #[arg(long, default_value_t = 60)]
    sample_secs: u64,
    /// Where the samples are written as CSV.
    #[arg(long, default_value = "target/tmp/soak.csv")]
    csv: PathBuf,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand)]
enum Role {
    /// The agents' side (started by the benchmark itself).
    Agents {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        codes: PathBuf,
        #[arg(long)]
        wall_ms: i64,
        #[arg(long)]
        from_ms: i64,
        #[arg(long)]
        until_wall_ms: i64,
    },
}

const ROUND_MS: i64 = 30_000;

/// Client-side push latencies (ms) and errors since the last report.
#[derive(Default)]
struct Window {
    latencies: Vec<f64>,
    errors: u64,
}

/// What every simulated agent shares.
struct Plan {
    endpoint: String,
    tl: Timeline,
    until_wall: i64,
    push_every: Duration,
    window: Mutex<Window>,
    /// Enrollments under way at once: the collector counts an attempt against its
    /// address from when it begins, and every agent here shares 127.0.0.1.
    enrolling: tokio::sync::Semaphore,
}

/// One agent: enrolls, then pushes what its station measured since the last push.
async fn agent(plan: Arc<Plan>, tps: String, code: String, seed: u64) -> anyhow::Result<()> {
    let Plan {
        ref endpoint,
        tl,
        until_wall,
        push_every,
        ref window,
        ref enrolling,
    } = *plan;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Connect only when it is this agent's turn: an idle new connection is closed.
    let permit = enrolling.acquire().await?;
    let mut client = loop {
        match CollectorClient::connect(endpoint.clone()).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(rng.random_range(200..2000))).await,
        }
    };
    let token = loop {
        let req = pb::EnrollRequest {
            tps_code: tps.clone(),
            enrollment_code: code.clone(),
            agent: Some(pb::AgentFacts {
                hostname: format!("soak-{tps}"),
                os: "Linux".into(),
                agent_version: "soak".into(),
            }),
        };
        match client.enroll(req).await {
            Ok(r) => break r.into_inner().token,
            // Refusals end the run; a busy collector or a dropped connection is retried.
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::PermissionDenied
                        | tonic::Code::NotFound
                        | tonic::Code::InvalidArgument
                        | tonic::Code::ResourceExhausted
                ) =>
            {
                anyhow::bail!("{tps}: enrollment refused: {}", s.message())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(rng.random_range(200..2000))).await,
        }
    };
    drop(permit);
    let base = links::base_rtts(&mut rng);
    let phase = rng.random_range(0..ROUND_MS);
    let mut next_round = tl.from_ms + phase;
    let mut seq = 0u64;
    let mut pending: Vec<pb::Measurement> = Vec::new();
    tokio::time::sleep(push_every.mul_f64(rng.random())).await;
    let mut tick = tokio::time::interval(push_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let wall = now_ms();
        if wall >= until_wall {
            return Ok(());
        }
        let now = tl.at(wall);
        while next_round <= now {
            for (t, (name, addr)) in links::TARGETS.iter().enumerate() {
                seq += 1;
                let o = links::draw(&mut rng, base[t]);
                pending.push(pb::Measurement {
                    seq,
                    start_ms: next_round + rng.random_range(0..40),
                    target_name: (*name).into(),
                    target_address: (*addr).into(),
                    method: pb::Method::Icmp as i32,
                    sent: 5,
                    received: o.received,
                    rtt_min_ms: o.rtt_min_ms,
                    rtt_avg_ms: o.rtt_avg_ms,
                    rtt_max_ms: o.rtt_max_ms,
                    jitter_ms: o.jitter_ms,
                    ..Default::default()
                });
            }
            next_round += ROUND_MS;
        }
        if pending.is_empty() {
            continue;
        }
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            client.push(push_request(&token, pending.clone())),
        )
        .await;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let mut w = window.lock().expect("window");
        match r {
            Ok(Ok(ack)) => {
                let acked = ack.into_inner().acked_seq;
                pending.retain(|m| m.seq > acked);
                w.latencies.push(ms);
            }
            // Kept and sent again with the next push, as the agent's spool does.
            _ => w.errors += 1,
        }
    }
}

/// The agents' process: prints `client <pushes> <p50 ms> <p99 ms> <errors>` every 10 s.
async fn agents(
    args: &Args,
    endpoint: String,
    codes: &Path,
    tl: Timeline,
    until_wall: i64,
) -> anyhow::Result<()> {
    let codes = tps_tests::read_codes(codes)?;
    let plan = Arc::new(Plan {
        endpoint,
        tl,
        until_wall,
        push_every: Duration::from_secs(args.push_secs),
        window: Mutex::default(),
        enrolling: tokio::sync::Semaphore::new(8),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (tps, code)) in codes.into_iter().enumerate() {
        tasks.spawn(agent(plan.clone(), tps, code, i as u64 * 7919 + 1));
    }
    let report = {
        let plan = plan.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut w = std::mem::take(&mut *plan.window.lock().expect("window"));
                let n = w.latencies.len();
                println!(
                    "client {n} {:.2} {:.2} {}",
                    percentile(&mut w.latencies, 0.5),
                    percentile(&mut w.latencies, 0.99),
                    w.errors
                );
                let _ = std::io::stdout().flush();
            }
        })
    };
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    report.abort();
    Ok(())
}

/// What the store holds: measurements in rows and in blocks, pages in use and free.
fn store_counts(conn: &Connection) -> anyhow::Result<(i64, i64, i64, i64)> {
    let raw: i64 = conn.query_row("SELECT count(*) FROM measurements", [], |r| r.get(0))?;
    let blocks: i64 = conn.query_row(
        "SELECT coalesce(sum(rows), 0) FROM measurement_blocks",
        [],
        |r| r.get(0),
    )?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok((raw, blocks, pages, free))
}

/// The cumulative buckets of a histogram in a `/metrics` text, by upper bound.
fn buckets(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket")))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            Some((series.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The `q` quantile of what a histogram counted between two `/metrics` texts.
fn window_quantile(before: &str, after: &str, name: &str, q: f64) -> f64 {
    let old = buckets(before, name);
    let text: String = buckets(after, name)
        .into_iter()
        .map(|(series, v)| {
            let was = old
                .iter()
                .find(|(s, _)| *s == series)
                .map_or(0.0, |(_, v)| *v);
            format!("{series} {}\n", v - was)
        })
        .collect();
    tps_tests::stats::histogram_quantile(&text, name, q)
}

fn rss_mb() -> f64 {
    tps_tests::process::status_mb(std::process::id(), "VmRSS")
}

struct Sample {
    real_min: f64,
    campaign_h: f64,
    store_mb: f64,
    free_mb: f64,
    bytes_per_m: f64,
    held: i64,
    rss_mb: f64,
    push_p99_ms: f64,
    ingest: f64,
    moved: f64,
}

async fn soak(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(std::env::current_dir()?.join("target"))?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let registry = if args.stations < 3327 {
        tps_tests::small_registry(dir.path(), args.stations)?
    } else {
        kepri_registry()
    };
    tps_collector::commands::import_stations(&data, &registry)?;
    let codes = data.join("codes-21.csv");
    tps_collector::commands::enroll_codes(&data, Some("21"), &codes)?;
    let wall_ms = now_ms();
    let tl = Timeline {
        wall_ms,
        from_ms: wall_ms - (args.minutes * 60_000) as i64 * i64::from(args.speed),
        speed: args.speed,
    };
    let c = TestCollector::start_with(&data, |cfg| {
        cfg.retention.raw = Duration::from_secs(86_400);
        cfg.retention.rollups = Duration::from_secs(86_400);
        cfg.retention.compact_after = Duration::from_secs(3600);
        cfg.retention.every = Duration::from_secs(5);
        cfg.retention.timeline = Some(tl);
    })
    .await?;
    let until_wall = wall_ms + (args.minutes * 60_000) as i64;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["--push-secs", &args.push_secs.to_string()])
        .args(["--speed", &args.speed.to_string(), "agents"])
        .args(["--endpoint", &c.endpoint()])
        .arg("--codes")
        .arg(&codes)
        .args(["--wall-ms", &tl.wall_ms.to_string()])
        .args(["--from-ms", &tl.from_ms.to_string()])
        .args(["--until-wall-ms", &until_wall.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let client_p99: Arc<Mutex<Vec<f64>>> = Arc::default();
    let client_errors = Arc::new(AtomicU64::new(0));
    let reader = {
        let out = child.stdout.take().expect("piped");
        let (client_p99, client_errors) = (client_p99.clone(), client_errors.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let f: Vec<&str> = line.split(' ').collect();
                if f.len() == 5 && f[0] == "client" {
                    if let Ok(p99) = f[3].parse::<f64>()
                        && p99.is_finite()
                    {
                        client_p99.lock().expect("p99").push(p99);
                    }
                    client_errors.fetch_add(f[4].parse().unwrap_or(0), Ordering::Relaxed);
                }
            }
        })
    };
    let ro = Connection::open_with_flags(
        tps_collector::store::db_path(&data),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    ro.busy_timeout(Duration::from_secs(10))?;
    if let Some(p) = args.csv.parent() {
        std::fs::create_dir_all(p)?;
    }
    let mut csv = std::fs::File::create(&args.csv)?;
    writeln!(
        csv,
        "real_min,campaign_h,store_mb,free_pages_mb,bytes_per_measurement,measurements_held,rss_mb,push_p99_ms,client_p99_ms,ingest_per_s,compacted_per_s"
    )?;
    println!(
        "{:>5} {:>7} {:>9} {:>8} {:>7} {:>11} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "min",
        "camp h",
        "store MB",
        "free MB",
        "B/meas",
        "held",
        "RSS MB",
        "push p99",
        "agent p99",
        "ingest/s",
        "moved/s"
    );
    let metrics = || async { anyhow::Ok(reqwest::get(c.url("/metrics")).await?.text().await?) };
    let value = |t: &str, s: &str| tps_collector::metrics::value_in(t, s).unwrap_or(0.0);
    let start = Instant::now();
    let mut last = metrics().await?;
    let mut last_at = Instant::now();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(args.sample_secs));
    tick.tick().await;
    while now_ms() < until_wall {
        tick.tick().await;
        let m = metrics().await?;
        let secs = last_at.elapsed().as_secs_f64();
        last_at = Instant::now();
        let (raw, blocks, pages, free) = store_counts(&ro)?;
        let page = 4096.0;
        let store = value(&m, "tps_store_bytes");
        let held = raw + blocks;
        let c99 = client_p99
            .lock()
            .expect("p99")
            .last()
            .copied()
            .unwrap_or(f64::NAN);
        let s = Sample {
            real_min: start.elapsed().as_secs_f64() / 60.0,
            campaign_h: (tl.at(now_ms()) - tl.from_ms) as f64 / 3_600_000.0,
            store_mb: store / 1e6,
            free_mb: free as f64 * page / 1e6,
            bytes_per_m: (pages - free) as f64 * page / held.max(1) as f64,
            held,
            rss_mb: rss_mb(),
            push_p99_ms: window_quantile(&last, &m, "tps_push_seconds", 0.99) * 1000.0,
            ingest: (value(&m, "tps_measurements_stored_total")
                - value(&last, "tps_measurements_stored_total"))
                / secs,
            moved: (value(&m, "tps_compaction_moved_measurements_total")
                - value(&last, "tps_compaction_moved_measurements_total"))
                / secs,
        };
        // (value, width on screen, decimals): one list for the screen and the CSV.
        let cols = [
            (s.real_min, 5, 1),
            (s.campaign_h, 7, 1),
            (s.store_mb, 9, 1),
            (s.free_mb, 8, 1),
            (s.bytes_per_m, 7, 1),
            (s.held as f64, 11, 0),
            (s.rss_mb, 7, 1),
            (s.push_p99_ms, 9, 1),
            (c99, 9, 1),
            (s.ingest, 9, 0),
            (s.moved, 9, 0),
        ];
        let line: Vec<String> = cols
            .iter()
            .map(|&(v, w, d)| format!("{v:>w$.d$}"))
            .collect();
        println!("{}", line.join(" "));
        let row: Vec<String> = cols.iter().map(|&(v, _, d)| format!("{v:.d$}")).collect();
        writeln!(csv, "{}", row.join(","))?;
        samples.push(s);
        last = m;
        if child.try_wait()?.is_some() {
            break;
        }
    }
    let status = child.wait()?;
    let _ = reader.join();
    anyhow::ensure!(status.success(), "the agents' process failed: {status}");
    let stored = value(&last, "tps_measurements_stored_total");
    let dup = value(&last, "tps_measurements_duplicate_total");
    c.stop().await?;
    // The last third against the middle third: a plateau grows little between them.
    let n = samples.len();
    anyhow::ensure!(n >= 6, "too few samples for a summary");
    let third = |k: usize| &samples[k * n / 3..(k + 1) * n / 3];
    let med =
        |xs: &[Sample], f: fn(&Sample) -> f64| median(&mut xs.iter().map(f).collect::<Vec<_>>());
    let (mid, end) = (third(1), third(2));
    let max_store = |xs: &[Sample]| xs.iter().map(|s| s.store_mb).fold(0.0, f64::max);
    println!(
        "campaign {:.1} h in {:.0} min; {stored:.0} measurements stored, {dup:.0} duplicates acknowledged, {} agent push errors",
        samples[n - 1].campaign_h,
        samples[n - 1].real_min,
        client_errors.load(Ordering::Relaxed)
    );
    for (name, xs) in [("middle third", mid), ("last third", end)] {
        println!(
            "{name}: store max {:.0} MB, {:.1} B a measurement held, RSS median {:.0} MB (max {:.0}), push p99 median {:.1} ms (max {:.1}), ingest {:.0}/s, compaction {:.0}/s",
            max_store(xs),
            med(xs, |s| s.bytes_per_m),
            med(xs, |s| s.rss_mb),
            xs.iter().map(|s| s.rss_mb).fold(0.0, f64::max),
            med(xs, |s| s.push_p99_ms),
            xs.iter().map(|s| s.push_p99_ms).fold(0.0, f64::max),
            med(xs, |s| s.ingest),
            med(xs, |s| s.moved),
        );
    }
    let c99 = client_p99.lock().expect("p99").clone();
    println!(
        "agent-side push p99 per 10 s: median {:.1} ms, max {:.1} ms; samples in {}",
        median(&mut c99.clone()),
        c99.iter().copied().fold(0.0, f64::max),
        args.csv.display()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    match &args.role {
        None => rt.block_on(soak(&args)),
        Some(Role::Agents {
            endpoint,
            codes,
            wall_ms,
            from_ms,
            until_wall_ms,
        }) => {
            let tl = Timeline {
                wall_ms: *wall_ms,
                from_ms: *from_ms,
                speed: args.speed,
            };
            rt.block_on(agents(&args, endpoint.clone(), codes, tl, *until_wall_ms))
        }
    }
}
