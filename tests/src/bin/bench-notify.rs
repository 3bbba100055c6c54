//! Notification figures: the time from a station going uncovered to its message at the
//! default route settings (stations of the Kepri registry becoming uncovered in batches
//! over five minutes, a collector in this process, a webhook receiver on loopback), the
//! planner's time for a storm of flags, and outbox delivery throughput.
//!
//! `cargo run --release -p tps-tests --bin bench-notify`

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::seq::SliceRandom;
use tps_collector::domain::{Station, now_ms};
use tps_collector::notify::config::{NotifyConfig, from_toml};
use tps_collector::state::coverage::Reason;
use tps_collector::state::flags::Action;
use tps_tests::stats::{median, percentile};
use tps_tests::{TestCollector, deploy_file};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds over which the registry's stations become uncovered.
    #[arg(long, default_value_t = 300)]
    spread_secs: u64,
    #[arg(long, default_value_t = 20)]
    batches: usize,
    /// Messages for the outbox throughput figure.
    #[arg(long, default_value_t = 3000)]
    outbox_messages: usize,
    /// Flags for the planner figure.
    #[arg(long, default_value_t = 100_000)]
    storm_flags: usize,
    #[arg(long)]
    skip_latency: bool,
}

/// A webhook receiver counting what it is sent.
async fn receiver() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let n = Arc::new(AtomicU64::new(0));
    let m = n.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let m = m.clone();
            async move {
                m.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", l.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok((url, n))
}

fn notify(text: &str) -> anyhow::Result<NotifyConfig> {
    let tz = jiff::tz::TimeZone::get("Asia/Jakarta")?;
    from_toml(text, Path::new("."), &tz).map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))
}

/// One latency run: returns per-flag (sent − uncovered since, sent − opened) in seconds
/// and the number of messages.
async fn latency_run(args: &Args) -> anyhow::Result<(Vec<f64>, Vec<f64>, i64)> {
    let dir = tempfile::tempdir()?;
    let (url, _) = receiver().await?;
    let cfg = notify(&format!(
        "[[receivers]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\n\
         [[routes]]\nname = \"kepri\"\nregion = \"21\"\nreceivers = [\"hook\"]\n"
    ))?;
    let c = TestCollector::start_with(dir.path(), |c| {
        // Everything at its default but the grace period (10 min), which only adds to
        // the time before a flag opens.
        c.coverage.flags.grace_ms = 1000;
        c.notify = cfg;
    })
    .await?;
    let file = std::fs::File::open(deploy_file("stations/kepri-3327.csv"))?;
    let mut lines = std::io::BufReader::new(file).lines();
    let header = lines.next().unwrap()?;
    let mut rows: Vec<String> = lines.collect::<Result<_, _>>()?;
    rows.shuffle(&mut rand::rng());
    let total = rows.len();
    let per = total.div_ceil(args.batches);
    let http = reqwest::Client::new();
    let every = Duration::from_secs(args.spread_secs) / args.batches as u32;
    let start = Instant::now();
    for (i, chunk) in rows.chunks(per).enumerate() {
        tokio::time::sleep_until((start + every * i as u32).into()).await;
        let body = format!("{header}\n{}\n", chunk.join("\n"));
        let r = http
            .put(c.url("/api/v1/stations"))
            .bearer_auth(&c.token)
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "import: {}", r.text().await?);
        eprintln!(
            "batch {}/{}: {} stations uncovered",
            i + 1,
            args.batches,
            chunk.len()
        );
    }
    // Until every flag was told and its message delivered.
    let db = tps_collector::store::db_path(&c.data_dir);
    let deadline = Instant::now() + Duration::from_secs(900);
    let sql = "SELECT o.sent_ms - f.since_ms, o.sent_ms - f.opened_ms FROM notify_told t
               JOIN notify_outbox o ON o.route = t.route AND o.created_ms = t.told_ms
               JOIN flags f ON f.id = t.flag_id WHERE o.state = 'sent'";
    loop {
        let conn = rusqlite::Connection::open(&db)?;
        let rows: Vec<(f64, f64)> = conn
            .prepare(sql)?
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as f64 / 1000.0,
                    r.get::<_, i64>(1)? as f64 / 1000.0,
                ))
            })?
            .collect::<Result<_, _>>()?;
        if rows.len() >= total {
            let messages: i64 =
                conn.query_row("SELECT count(*) FROM notify_outbox", [], |r| r.get(0))?;
            c.stop().await?;
            let (since, opened): (Vec<f64>, Vec<f64>) = rows.into_iter().unzip();
            return Ok((since, opened, messages));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {total} flags told",
            rows.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The planner's two steps for `n` flags opening at once in one regency: taking the
/// events in, and turning the group into the outbox message.
fn storm(n: usize) -> anyhow::Result<(f64, f64, i64)> {
    let dir = tempfile::tempdir()?;
    let mut conn = tps_collector::store::open(dir.path(), tps_collector::store::Synchronous::Full)?;
    let stations: Vec<Station> = (0..n)
        .map(|i| {
            let village = 1001 + i / 999;
            let code = format!("217101{village}{:03}", 1 + i % 999);
            Station {
                tps_code: code.parse().unwrap(),
                village_code: format!("21.71.01.{village}"),
                village: "Sungai Jodoh".into(),
                district: "Batu Ampar".into(),
                regency: "Kota Batam".into(),
                province: "Kepulauan Riau".into(),
                lat: None,
                lon: None,
                voters: 300,
            }
        })
        .collect();
    let now = now_ms();
    tps_collector::store::import_stations(&mut conn, &stations, now, |_| {})?;
    let actions: Vec<Action> = stations
        .iter()
        .map(|s| Action::Open {
            tps: s.tps_code,
            reason: Reason::Offline,
            cause: None,
            since_ms: now - 600_000,
        })
        .collect();
    let tx = conn.transaction()?;
    tps_collector::store::flags::apply(&tx, &actions, now)?;
    tx.commit()?;
    let cfg = notify(
        "[[receivers]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\
         [[routes]]\nname = \"kepri\"\nregion = \"21\"\nreceivers = [\"hook\"]\n",
    )?;
    let mut step = |at: i64| -> anyhow::Result<f64> {
        let t = Instant::now();
        let tx = conn.transaction()?;
        loop {
            let p = tps_collector::notify::plan::step(&tx, &cfg, at, true)?;
            if p.events == 0 {
                break;
            }
        }
        tx.commit()?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    let intake = step(now)?;
    let flush = step(now + 61_000)?;
    let messages: i64 = conn.query_row("SELECT count(*) FROM notify_outbox", [], |r| r.get(0))?;
    Ok((intake, flush, messages))
}

/// Messages a second the sender delivers to a webhook on loopback, from a full outbox.
async fn outbox(n: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    {
        let mut conn =
            tps_collector::store::open(dir.path(), tps_collector::store::Synchronous::Full)?;
        let body = serde_json::to_string(&tps_collector::notify::test_message("bench", now_ms()))?;
        let tx = conn.transaction()?;
        for _ in 0..n {
            tps_collector::store::notify::enqueue(
                &tx,
                "hook",
                "bench",
                "",
                now_ms(),
                &body,
                now_ms(),
            )?;
        }
        tx.commit()?;
    }
    let (url, count) = receiver().await?;
    let cfg = notify(&format!(
        "[[receivers]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\nper_minute = 60000\n"
    ))?;
    let t = Instant::now();
    let c = TestCollector::start_with(dir.path(), |c| c.notify = cfg).await?;
    while count.load(Ordering::Relaxed) < n as u64 {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(600), "outbox not drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    c.stop().await?;
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut intake = Vec::new();
    let mut flush = Vec::new();
    for run in 0..args.runs {
        let (i, f, m) = storm(args.storm_flags)?;
        eprintln!(
            "storm run {}: {} flags: intake {i:.0} ms, flush {f:.0} ms, {m} message(s)",
            run + 1,
            args.storm_flags
        );
        intake.push(i);
        flush.push(f);
    }
    let mut rates = Vec::new();
    for run in 0..args.runs {
        let r = outbox(args.outbox_messages).await?;
        eprintln!("outbox run {}: {r:.0} messages/s", run + 1);
        rates.push(r);
    }
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut n50s = Vec::new();
    let mut n99s = Vec::new();
    let mut msgs = Vec::new();
    if !args.skip_latency {
        for run in 0..args.runs {
            let (mut since, mut opened, m) = latency_run(&args).await?;
            let (p50, p99) = (percentile(&mut since, 0.5), percentile(&mut since, 0.99));
            let (n50, n99) = (percentile(&mut opened, 0.5), percentile(&mut opened, 0.99));
            eprintln!(
                "latency run {}: {} flags, {m} messages; uncovered→message p50 {p50:.1} s p99 {p99:.1} s; flag→message p50 {n50:.1} s p99 {n99:.1} s",
                run + 1,
                since.len()
            );
            p50s.push(p50);
            p99s.push(p99);
            n50s.push(n50);
            n99s.push(n99);
            msgs.push(m as f64);
        }
    }
    println!(
        "storm of {} flags in one regency: intake {:.0} ms, flush {:.0} ms (median of {} runs)",
        args.storm_flags,
        median(&mut intake),
        median(&mut flush),
        args.runs
    );
    println!(
        "outbox: {:.0} messages/s to a loopback webhook (median of {} runs)",
        median(&mut rates),
        args.runs
    );
    if !args.skip_latency {
        println!(
            "uncovered → message (grace 1 s, the rest default): p50 {:.1} s, p99 {:.1} s; flag → message p50 {:.1} s, p99 {:.1} s; {} messages for 3,327 stations (medians of {} runs)",
            median(&mut p50s),
            median(&mut p99s),
            median(&mut n50s),
            median(&mut n99s),
            median(&mut msgs),
            args.runs
        );
    }
    Ok(())
}
