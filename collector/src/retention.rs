//! Keeps the store's size flat over a campaign: every pass moves raw measurements older
//! than `compact_after` into compact blocks (with their hourly rollups), agent by agent,
//! and deletes blocks and rollups past their retention. Each step is one short job in
//! the writer's queue, so pushes wait for it at most a few tens of milliseconds, and
//! steps are spaced so compaction takes at most a quarter of the writer's time; a step
//! is one transaction, so a crash in the middle of a pass loses nothing and the next
//! pass goes on from where the store is. An existing store with months of raw rows is
//! compacted the same way, with progress in the log.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::config::RetentionConfig;
use crate::domain::now_ms;
use crate::metrics::Metrics;
use crate::store::compact::{self, HourMove, hour_of};
use crate::store::writer::Writer;
use crate::store::{self, StoreError, Synchronous};

/// Raw rows moved per writer job. Deleting an agent's hour touches a table page per row
/// (rows lie in arrival order, every agent's interleaved), about 50 µs each: a step
/// of this many stays within ~50 ms of the writer's time (p99 measured: docs/BENCHMARKS.md).
const STEP_ROWS: usize = 300;
/// After each step the pass waits this many times as long as the step held the writer,
/// so compaction of a backlog takes at most a quarter of the writer's time and pushes
/// keep the rest.
const PACE: u32 = 3;
/// Hours of one agent planned at a time.
const STEP_HOURS: usize = 24;
/// Blocks and rollups deleted per writer job.
const DELETE_BLOCKS: usize = 400;
const DELETE_ROLLUPS: usize = 4000;
/// How often a long pass logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassStats {
    pub moved: u64,
    pub hours: u64,
    pub blocks_deleted: u64,
    pub rollups_deleted: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store writer refused a step: {0}")]
    Write(#[from] crate::store::writer::WriteError),
    #[error("a compaction read failed: {0}")]
    Join(String),
}

/// Compaction and retention over one store.
#[derive(Debug, Clone)]
pub struct Retention {
    conn: Arc<Mutex<Connection>>,
    writer: Writer,
    config: RetentionConfig,
    /// Sink cursors the raw rows must stay for (the daily rollup always; InfluxDB when on).
    cursors: Vec<&'static str>,
    metrics: Arc<Metrics>,
}

impl Retention {
    /// Opens its own read connection, so planning never takes an API reader.
    pub fn open(
        data_dir: &std::path::Path,
        sync: Synchronous,
        writer: Writer,
        config: RetentionConfig,
        influx_on: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Retention, StoreError> {
        let conn = store::open(data_dir, sync)?;
        let mut cursors = vec![crate::sinks::rollup::CURSOR];
        if influx_on {
            cursors.push(crate::sinks::influx::CURSOR_MEASUREMENTS);
        }
        Ok(Retention {
            conn: Arc::new(Mutex::new(conn)),
            writer,
            config,
            cursors,
            metrics,
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, RetentionError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&c)
        })
        .await
        .map_err(|e| RetentionError::Join(e.to_string()))?
        .map_err(Into::into)
    }

    /// One pass at `now_ms`: compaction of everything older than `compact_after`, then
    /// deletion of what is past retention.
    pub async fn pass(&self, now_ms: i64) -> Result<PassStats, RetentionError> {
        let cutoff = hour_of(now_ms - self.config.compact_after.as_millis() as i64);
        let cursors = self.cursors.clone();
        let (agents, id_limit) = self
            .read(move |c| {
                // Never the newest row: SQLite gives a new row the highest rowid + 1, so
                // deleting it would hand its id out again, behind the sinks' cursors.
                let mut limit = compact::raw_id_range(c)?.1 - 1;
                for name in cursors {
                    limit = limit.min(store::sink_cursor(c, name)?);
                }
                Ok((compact::agent_ids(c)?, limit))
            })
            .await?;
        let mut stats = PassStats::default();
        let mut i = 0;
        let (started, mut logged) = (Instant::now(), Instant::now());
        while i < agents.len() {
            let from = i;
            let list = agents.clone();
            let (moves, next) = self
                .read(move |c| {
                    let (mut moves, mut rows, mut j) = (Vec::<HourMove>::new(), 0, from);
                    while j < list.len() && rows < STEP_ROWS {
                        let planned =
                            compact::plan_agent(c, list[j], cutoff, id_limit, STEP_HOURS)?;
                        let full = planned.len() == STEP_HOURS;
                        rows += planned.iter().map(|m| m.moved).sum::<usize>();
                        moves.extend(planned);
                        if full {
                            // More hours of this agent: plan them after these are stored.
                            break;
                        }
                        j += 1;
                    }
                    Ok((moves, j))
                })
                .await?;
            i = next;
            if moves.is_empty() {
                continue;
            }
            let n: usize = moves.iter().map(|m| m.moved).sum();
            let hours = moves.len();
            let metrics = self.metrics.clone();
            let held = self
                .writer
                .exec(move |tx| {
                    let t = Instant::now();
                    for mv in &moves {
                        compact::apply(tx, mv)?;
                    }
                    let held = t.elapsed();
                    metrics.compaction_step_seconds.observe(held.as_secs_f64());
                    Ok(held)
                })
                .await?;
            tokio::time::sleep(held * PACE).await;
            self.metrics.compaction_moved.inc_by(n as u64);
            stats.moved += n as u64;
            stats.hours += hours as u64;
            if logged.elapsed() >= PROGRESS_EVERY {
                logged = Instant::now();
                tracing::info!(
                    agents_done = i,
                    agents = agents.len(),
                    moved = stats.moved,
                    seconds = started.elapsed().as_secs(),
                    "compacting measurements older than {} h",
                    self.config.compact_after.as_secs() / 3600
                );
            }
        }
        let raw_before = hour_of(now_ms - self.config.raw.as_millis() as i64);
        stats.blocks_deleted = self
            .delete_in_steps(move |tx| compact::delete_blocks_before(tx, raw_before, DELETE_BLOCKS))
            .await?;
        let rollups_before = hour_of(now_ms - self.config.rollups.as_millis() as i64);
        stats.rollups_deleted = self
            .delete_in_steps(move |tx| {
                compact::delete_rollups_before(tx, rollups_before, DELETE_ROLLUPS)
            })
            .await?;
        self.metrics
            .retention_deleted("blocks", stats.blocks_deleted);
        self.metrics
            .retention_deleted("hourly_rollups", stats.rollups_deleted);
        self.metrics
            .compaction_last_pass
            .set(crate::domain::now_ms() as f64 / 1000.0);
        if stats != PassStats::default() {
            tracing::info!(
                moved = stats.moved,
                hours = stats.hours,
                blocks_deleted = stats.blocks_deleted,
                rollups_deleted = stats.rollups_deleted,
                seconds = started.elapsed().as_secs(),
                "compaction and retention pass done"
            );
        }
        Ok(stats)
    }

    async fn delete_in_steps(
        &self,
        step: impl Fn(&Connection) -> Result<usize, StoreError> + Send + Sync + Clone + 'static,
    ) -> Result<u64, RetentionError> {
        let mut total = 0u64;
        loop {
            let step = step.clone();
            let metrics = self.metrics.clone();
            let (n, held) = self
                .writer
                .exec(move |tx| {
                    let t = Instant::now();
                    let n = step(tx)?;
                    let held = t.elapsed();
                    metrics.compaction_step_seconds.observe(held.as_secs_f64());
                    Ok((n, held))
                })
                .await?;
            tokio::time::sleep(held * PACE).await;
            total += n as u64;
            if n == 0 {
                return Ok(total);
            }
        }
    }
}

/// Runs a pass every `config.every` until `stop`.
pub async fn run(
    data_dir: PathBuf,
    sync: Synchronous,
    writer: Writer,
    config: RetentionConfig,
    influx_on: bool,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()>,
) {
    let r = match Retention::open(&data_dir, sync, writer, config, influx_on, metrics) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "compaction cannot open the store; measurements are kept raw");
            return;
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(config.every) => {}
        }
        let now = config.timeline.map_or_else(now_ms, |t| t.at(now_ms()));
        if let Err(e) = r.pass(now).await {
            tracing::warn!(error = %e, "compaction pass stopped; the next pass goes on from here");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::facts::Facts;
    use crate::state::live::Live;
    use crate::store::writer::Mirror;
    use rusqlite::params;

    const DAY: i64 = 24 * HOUR;
    const HOUR: i64 = compact::HOUR_MS;

    /// One day of rounds of agent 1 on three targets, every 5 minutes, as pushes store them.
    fn a_day(conn: &Connection, day: i64, seq: &mut i64) {
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..288 {
            for t in ["gateway", "collector", "anchor"] {
                *seq += 1;
                let at = day + i * 300_000 + *seq % 13;
                let rtt = 20.0 + (*seq % 29) as f64 * 0.731;
                tx.execute(
                    "INSERT INTO measurements (agent_id, seq, start_ms, target_name, target_address,
                         method, sent, received, rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms,
                         received_ms, errors)
                     VALUES (1, ?1, ?2, ?3, '192.0.2.1', 'icmp', 5, 5, ?4, ?5, ?6, 0.5, ?7, 0)",
                    params![*seq, at, t, rtt - 1.0, rtt, rtt + 3.0, at + 60_000],
                )
                .unwrap();
            }
        }
        // Every sink has read it.
        tx.execute(
            "INSERT OR REPLACE INTO sink_cursors (name, last_id) SELECT 'rollup', max(id) FROM measurements",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
    }

    #[tokio::test]
    async fn with_a_clock_we_control_the_store_plateaus_and_keeps_what_retention_says() {
        let dir = tempfile::tempdir().unwrap();
        let conn = store::open(dir.path(), Synchronous::Normal).unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO agents (tps_code, token_hash, hostname, os, agent_version, enrolled_ms)
             VALUES ('2101011001001', x'00', 'h', 'Linux', 't', 0);",
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let (facts, _rx) = Facts::channel(metrics.clone());
        let mirror = Mirror {
            live: Arc::new(Live::load(Vec::new(), Vec::new())),
            facts,
        };
        let wconn = store::open(dir.path(), Synchronous::Normal).unwrap();
        let (writer, _thread) =
            Writer::spawn(wconn, 64, Duration::from_secs(5), metrics.clone(), mirror).unwrap();
        let config = RetentionConfig {
            raw: Duration::from_secs(3 * 86_400),
            rollups: Duration::from_secs(6 * 86_400),
            compact_after: Duration::from_secs(86_400),
            every: Duration::from_secs(3600),
            timeline: None,
        };
        let r = Retention::open(
            dir.path(),
            Synchronous::Normal,
            writer,
            config,
            false,
            metrics,
        )
        .unwrap();
        let day0 = 1_796_083_200_000 / DAY * DAY;
        let mut seq = 0;
        let mut pages = Vec::new();
        for d in 0..14 {
            a_day(&conn, day0 + d * DAY, &mut seq);
            let now = day0 + (d + 1) * DAY + 2 * HOUR;
            let stats = r.pass(now).await.unwrap();
            if d >= 1 {
                assert_eq!(stats.moved, 864, "day {d}: a day of rounds compacted");
            }
            let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
            pages.push(count("PRAGMA page_count") - count("PRAGMA freelist_count"));
            // Rows only for the last ~26 h, blocks for 3 days, rollups for 6.
            let oldest =
                |sql: &str| -> Option<i64> { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
            let raw = oldest("SELECT min(start_ms) FROM measurements").unwrap();
            assert!(
                raw >= compact::hour_of(now - DAY),
                "day {d}: rows only for a day"
            );
            if let Some(b) = oldest("SELECT min(hour_ms) FROM measurement_blocks") {
                assert!(
                    b >= compact::hour_of(now - 3 * DAY),
                    "day {d}: blocks past retention"
                );
            }
            if d >= 7 {
                let h = oldest("SELECT min(hour_ms) FROM hourly_rollups").unwrap();
                assert!(
                    h >= compact::hour_of(now - 6 * DAY),
                    "day {d}: rollups past retention"
                );
                assert!(
                    h < compact::hour_of(now - 5 * DAY),
                    "day {d}: rollups kept 6 days"
                );
            }
        }
        // Once retention deletes as much as arrives, the pages in use stop growing.
        let (at7, at13) = (pages[7], pages[13]);
        assert!(
            at13 <= at7 + at7 / 20,
            "pages in use over 14 days: {pages:?}"
        );
        let file = |_: ()| std::fs::metadata(store::db_path(dir.path())).unwrap().len();
        let before = file(());
        a_day(&conn, day0 + 14 * DAY, &mut seq);
        r.pass(day0 + 15 * DAY + 2 * HOUR).await.unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        assert!(
            file(()) <= before + before / 20,
            "the file reuses freed pages: {before} → {}",
            file(())
        );
    }
}
