//! Compacting a store that holds days of raw measurements (as one written before
//! compaction existed): a real `tps-collector` process is SIGKILLed in the middle of the
//! work, restarted, and finishes it; at every point each measurement is stored exactly
//! once, as a raw row or in a block.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

mod support;

const AGENTS: i64 = 60;
const DAYS: i64 = 8;
const HOUR: i64 = 3_600_000;
/// Rounds per agent: every 5 minutes on two targets.
const PER_AGENT: i64 = DAYS * 24 * 12 * 2;

fn now_ms() -> i64 {
    tps_collector::domain::now_ms()
}

/// A store with `AGENTS` agents and `DAYS` days of their raw rounds, written straight
/// into the tables as an older collector would have left them.
fn old_store(data: &Path, now: i64) -> anyhow::Result<()> {
    let registry = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/stations/kepri-3327.csv");
    tps_collector::commands::import_stations(data, &registry)?;
    let mut conn = tps_collector::store::open(data, tps_collector::store::Synchronous::Normal)?;
    let tx = conn.transaction()?;
    let codes: Vec<String> = tx
        .prepare("SELECT tps_code FROM stations ORDER BY tps_code LIMIT ?1")?
        .query_map([AGENTS], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    {
        let mut agent = tx.prepare(
            "INSERT INTO agents (tps_code, token_hash, hostname, os, agent_version, enrolled_ms, acked_seq)
             VALUES (?1, ?2, 'h', 'Linux', 'old', ?3, ?4)",
        )?;
        let mut m = tx.prepare(
            "INSERT INTO measurements (agent_id, seq, start_ms, target_name, target_address, method,
                 sent, received, rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms, received_ms, errors)
             VALUES (?1, ?2, ?3, ?4, '192.0.2.1', 'icmp', 5, 5, ?5, ?6, ?7, 0.5, ?8, 0)",
        )?;
        let start = now - DAYS * 24 * HOUR;
        for (i, code) in codes.iter().enumerate() {
            agent.execute(params![
                code,
                format!("token-{i}").into_bytes(),
                start,
                PER_AGENT
            ])?;
        }
        // Interleaved as pushes arrive: every agent's round i, then round i + 1.
        for round in 0..PER_AGENT / 2 {
            for a in 1..=AGENTS {
                for t in 0..2 {
                    let seq = round * 2 + t + 1;
                    let at = start + round * 300_000 + a;
                    let rtt = 20.0 + (seq % 17) as f64 * 0.25;
                    m.execute(params![
                        a,
                        seq,
                        at,
                        if t == 0 { "gateway" } else { "anchor" },
                        rtt - 1.0,
                        rtt,
                        rtt + 1.0,
                        at + 60_000
                    ])?;
                }
            }
        }
    }
    // The daily rollup had folded everything in.
    tx.execute(
        "INSERT INTO sink_cursors (name, last_id) SELECT 'rollup', max(id) FROM measurements",
        [],
    )?;
    tx.commit()?;
    Ok(())
}

fn start(dir: &Path) -> anyhow::Result<(Child, String)> {
    let (child, _, http) = support::serve(
        dir,
        "min_free_mb = 0\nmin_free_pct = 0\n[retention]\ncompact_after_hours = 1\nevery_secs = 1\n",
    )?;
    Ok((child, format!("http://{http}")))
}

async fn moved(http: &str) -> Option<f64> {
    let text = reqwest::get(format!("{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    tps_collector::metrics::value_in(&text, "tps_compaction_moved_measurements_total")
}

/// Every agent's sequence numbers, raw rows and blocks together, must be 1..=PER_AGENT
/// once each. Returns how many are still raw.
fn each_once(data: &Path) -> anyhow::Result<u64> {
    let conn = Connection::open(tps_collector::store::db_path(data))?;
    for a in 1..=AGENTS as u64 {
        let seqs: Vec<u64> = tps_collector::store::measurements_of(&conn, a)?
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(
            seqs.len() as i64,
            PER_AGENT,
            "agent {a}: every round, none twice"
        );
        assert!(
            seqs.iter().zip(1..).all(|(s, want)| *s == want),
            "agent {a}: each sequence number once"
        );
    }
    Ok(conn.query_row("SELECT count(*) FROM measurements", [], |r| r.get(0))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_in_the_middle_of_compaction_loses_nothing_and_the_restart_finishes_it()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let now = now_ms();
    old_store(&data, now)?;
    let total = (AGENTS * PER_AGENT) as u64;

    let (mut child, http) = start(dir.path())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let seen = loop {
        if let Some(m) = moved(&http).await.filter(|m| *m > 0.0) {
            break m;
        }
        anyhow::ensure!(Instant::now() < deadline, "compaction never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    child.kill()?; // SIGKILL, mid-pass
    child.wait()?;
    let raw = each_once(&data)?;
    assert!(
        raw > 0 && (seen as u64) < total,
        "killed in the middle: {seen} of {total} moved, {raw} still raw"
    );

    // Restarted, it goes on from where the store is and finishes.
    let (mut child, _) = start(dir.path())?;
    let cutoff = (now - HOUR).div_euclid(HOUR) * HOUR - HOUR;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let conn = Connection::open(tps_collector::store::db_path(&data))?;
        let old: u64 = conn.query_row(
            "SELECT count(*) FROM measurements WHERE start_ms < ?1",
            [cutoff],
            |r| r.get(0),
        )?;
        if old == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{old} old rows still raw");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill()?;
    child.wait()?;
    let raw = each_once(&data)?;
    assert!(raw < total / 50, "only the last hours stay raw: {raw}");
    Ok(())
}
