//! Storage benchmark: what a measurement costs on disk raw and compacted, how fast a real
//! `tps-collector` compacts a backlog, and how durable ingest fares while it does.
//!
//! Each run builds a store with `--agents` agents × `--hours` hours of raw rounds (three
//! targets, a round every 30 s, RTTs and losses drawn like the Kepri link mix), written
//! straight into the tables as a collector without compaction left them. The collector
//! then starts with `compact_after_hours = 1` while `--connections` agents push current
//! rounds as fast as they are acknowledged; once compaction is done they push on alone
//! for as long again. Sizes come from SQLite's `dbstat`, indexes included.
//!
//! `cargo build --release -p tps-collector && cargo run --release -p tps-tests --bin bench-storage -- --collector-bin target/release/tps-collector`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, params};
use tps_proto::v1 as pb;
use tps_proto::v1::collector_client::CollectorClient;
use tps_tests::process::{CollectorProcess, prepare_store};
use tps_tests::stats::{histogram_quantile, median};
use tps_tests::{kepri_registry, links, now_ms, push_request};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    collector_bin: PathBuf,
    /// Agents with a backlog.
    #[arg(long, default_value_t = 333)]
    agents: usize,
    /// Hours of backlog per agent.
    #[arg(long, default_value_t = 26)]
    hours: i64,
    /// Connections pushing current rounds meanwhile (0: compaction alone).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Measurements per push.
    #[arg(long, default_value_t = 50)]
    batch: u64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const HOUR: i64 = 3_600_000;

/// Writes the backlog; returns how many rounds.
fn backlog(data: &Path, agents: usize, hours: i64, now: i64) -> anyhow::Result<u64> {
    let mut conn = tps_collector::store::open(data, tps_collector::store::Synchronous::Normal)?;
    let tx = conn.transaction()?;
    let codes: Vec<String> = tx
        .prepare("SELECT tps_code FROM stations ORDER BY tps_code LIMIT ?1")?
        .query_map([agents as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let start = now - hours * HOUR;
    let rounds = hours * 120;
    let mut n = 0u64;
    {
        let mut agent = tx.prepare(
            "INSERT INTO agents (tps_code, token_hash, hostname, os, agent_version, enrolled_ms, acked_seq)
             VALUES (?1, ?2, 'h', 'Linux', 'bench', ?3, ?4)",
        )?;
        let mut m = tx.prepare(
            "INSERT INTO measurements (agent_id, seq, start_ms, target_name, target_address, method,
                 sent, received, rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms, received_ms, errors)
             VALUES (?1, ?2, ?3, ?4, ?5, 'icmp', 5, ?6, ?7, ?8, ?9, ?10, ?11, 0)",
        )?;
        let first_id: i64 = tx.query_row(
            "SELECT coalesce(max(agent_id), 0) + 1 FROM agents",
            [],
            |r| r.get(0),
        )?;
        // Per agent and target, a base RTT from the link mix: fixed, cellular, satellite.
        let mut base = Vec::new();
        for (i, code) in codes.iter().enumerate() {
            agent.execute(params![
                code,
                format!("bench-{i}").into_bytes(),
                start,
                rounds * 3
            ])?;
            base.push(links::base_rtts(&mut rng));
        }
        for r in 0..rounds {
            for (a, b) in base.iter().enumerate() {
                let at = start + r * 30_000 + rng.random_range(0..40);
                let received_ms = (at / 60_000 + 1) * 60_000 + rng.random_range(100..400);
                for (t, (name, addr)) in links::TARGETS.iter().enumerate() {
                    let seq = r * 3 + t as i64 + 1;
                    let o = links::draw(&mut rng, b[t]);
                    m.execute(params![
                        first_id + a as i64,
                        seq,
                        at,
                        name,
                        addr,
                        o.received,
                        o.rtt_min_ms,
                        o.rtt_avg_ms,
                        o.rtt_max_ms,
                        o.jitter_ms,
                        received_ms,
                    ])?;
                    n += 1;
                }
            }
        }
    }
    // The daily rollup had folded everything in.
    tx.execute(
        "INSERT OR REPLACE INTO sink_cursors (name, last_id) SELECT 'rollup', max(id) FROM measurements",
        [],
    )?;
    tx.commit()?;
    Ok(n)
}

/// Bytes on disk of some tables and indexes (pages, as `dbstat` counts them).
fn bytes_of(conn: &Connection, names: &[&str]) -> anyhow::Result<u64> {
    let mut total = 0;
    for n in names {
        total += conn.query_row(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = ?1",
            [n],
            |r| r.get::<_, i64>(0),
        )? as u64;
    }
    Ok(total)
}

async fn metrics(http: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("http://{http}/metrics"))
        .await?
        .text()
        .await?)
}

fn metric(text: &str, series: &str) -> f64 {
    tps_collector::metrics::value_in(text, series).unwrap_or(0.0)
}

struct Run {
    raw_b: f64,
    block_b: f64,
    rollup_b: f64,
    compact_rate: f64,
    step_p99_ms: f64,
    ingest_during: f64,
    ingest_after: f64,
    push_p99_ms: f64,
}

async fn one_run(args: &Args) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (_, codes) = prepare_store(&args.collector_bin, &data, &kepri_registry(), "21")?;
    let now = now_ms();
    let t = Instant::now();
    let rows = backlog(&data, args.agents, args.hours, now)?;
    println!(
        "  backlog: {rows} rounds written in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let raw_b = {
        let conn = Connection::open(tps_collector::store::db_path(&data))?;
        bytes_of(
            &conn,
            &[
                "measurements",
                "sqlite_autoindex_measurements_1",
                "measurements_agent_time",
            ],
        )? as f64
            / rows as f64
    };
    let cutoff = (now - HOUR).div_euclid(HOUR) * HOUR;
    let to_move = {
        let conn = Connection::open(tps_collector::store::db_path(&data))?;
        conn.query_row(
            "SELECT count(*) FROM measurements WHERE start_ms < ?1",
            [cutoff],
            |r| r.get::<_, i64>(0),
        )? as f64
    };

    let collector = CollectorProcess::start_on(
        &args.collector_bin,
        &data,
        "info",
        Duration::from_secs(300),
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[retention]\ncompact_after_hours = 1\nevery_secs = 1\n",
    )?;
    let endpoint = format!("http://{}", collector.grpc);
    let mut tokens = Vec::new();
    for (tps, code) in codes.iter().rev().take(args.connections) {
        let mut c = CollectorClient::connect(endpoint.clone()).await?;
        let r = c
            .enroll(pb::EnrollRequest {
                tps_code: tps.clone(),
                enrollment_code: code.clone(),
                agent: Some(pb::AgentFacts {
                    hostname: "bench".into(),
                    os: "Linux".into(),
                    agent_version: "bench".into(),
                }),
            })
            .await?
            .into_inner();
        tokens.push(r.token);
    }
    let stored = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for token in tokens {
        let (stored, stop, endpoint, batch) =
            (stored.clone(), stop.clone(), endpoint.clone(), args.batch);
        tasks.push(tokio::spawn(async move {
            let mut client = CollectorClient::connect(endpoint).await?;
            let mut seq = 1u64;
            while !stop.load(Ordering::Relaxed) {
                let at = now_ms() - 60_000;
                let ms = (seq..seq + batch)
                    .map(|s| {
                        let mut m = tps_tests::measurement(s, 0, "gateway");
                        m.start_ms = at;
                        m
                    })
                    .collect();
                let r = client.push(push_request(&token, ms)).await?.into_inner();
                anyhow::ensure!(r.acked_seq == seq + batch - 1, "short acknowledgement");
                seq += batch;
                stored.fetch_add(batch, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let t0 = Instant::now();
    let moved_at = loop {
        let m = metrics(&collector.http).await?;
        if metric(&m, "tps_compaction_moved_measurements_total") >= to_move {
            break m;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(3600),
            "compaction did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let during_secs = t0.elapsed().as_secs_f64();
    let during = stored.load(Ordering::Relaxed);
    let step_p99_ms = histogram_quantile(&moved_at, "tps_compaction_step_seconds", 0.99) * 1000.0;
    println!(
        "  compaction steps: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
        histogram_quantile(&moved_at, "tps_compaction_step_seconds", 0.5) * 1000.0,
        histogram_quantile(&moved_at, "tps_compaction_step_seconds", 0.9) * 1000.0,
        step_p99_ms
    );
    let push_p99_ms = histogram_quantile(&moved_at, "tps_push_seconds", 0.99) * 1000.0;
    let t1 = Instant::now();
    let after_from = stored.load(Ordering::Relaxed);
    while t1.elapsed().as_secs_f64() < during_secs.min(30.0) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = stored.load(Ordering::Relaxed) - after_from;
    let after_secs = t1.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    collector.kill();
    let conn = Connection::open(tps_collector::store::db_path(&data))?;
    let (block_rows, payload): (i64, i64) = conn.query_row(
        "SELECT sum(rows), sum(length(data)) FROM measurement_blocks",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    println!(
        "  block payload {:.2} B a measurement (the rest is pages and indexes)",
        payload as f64 / block_rows as f64
    );
    let block_b = bytes_of(
        &conn,
        &[
            "measurement_blocks",
            "sqlite_autoindex_measurement_blocks_1",
            "measurement_blocks_seq",
            "measurement_blocks_hour",
        ],
    )? as f64
        / block_rows as f64;
    let rollup_b =
        bytes_of(&conn, &["hourly_rollups", "hourly_rollups_hour"])? as f64 / block_rows as f64;
    Ok(Run {
        raw_b,
        block_b,
        rollup_b,
        compact_rate: to_move / during_secs,
        step_p99_ms,
        ingest_during: during as f64 / during_secs,
        ingest_after: after as f64 / after_secs,
        push_p99_ms,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        let r = one_run(&args).await?;
        println!(
            "run {i}: raw {:.1} B, blocks {:.2} B, hourly rollups {:.2} B a measurement; compaction {:.0}/s (step p99 {:.1} ms); ingest {:.0}/s during, {:.0}/s after; push p99 {:.1} ms",
            r.raw_b,
            r.block_b,
            r.rollup_b,
            r.compact_rate,
            r.step_p99_ms,
            r.ingest_during,
            r.ingest_after,
            r.push_p99_ms
        );
        runs.push(r);
    }
    let med = |f: fn(&Run) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    println!(
        "median of {} runs: raw {:.1} B, blocks {:.2} B, rollups {:.2} B a measurement; compaction {:.0}/s, step p99 {:.1} ms; ingest {:.0}/s during compaction, {:.0}/s after; push p99 {:.1} ms",
        runs.len(),
        med(|r| r.raw_b),
        med(|r| r.block_b),
        med(|r| r.rollup_b),
        med(|r| r.compact_rate),
        med(|r| r.step_p99_ms),
        med(|r| r.ingest_during),
        med(|r| r.ingest_after),
        med(|r| r.push_p99_ms),
    );
    Ok(())
}
