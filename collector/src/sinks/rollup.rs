//! Daily rollups of measurements (rounds, RTT and loss histograms per agent, target and
//! day in the report time zone), kept from a durable cursor over the measurements table
//! so the weekly report reads a few rows per station instead of every round.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::Connection;

use crate::domain::midnight_ms;
use crate::hist::{self, Hist};
use crate::store::{self, StoreError, writer::Writer};

/// The cursor's name in `sink_cursors`.
pub const CURSOR: &str = "rollup";
/// Measurements folded in per transaction.
pub const BATCH: usize = 20_000;

#[derive(Default)]
struct Acc {
    rounds: u32,
    rtt: Hist,
    loss: Hist,
}

/// Day boundaries of the last instant looked up, since consecutive rows share a day.
struct Days {
    tz: TimeZone,
    cached: (i64, i64, i64),
}

impl Days {
    fn new(tz: &TimeZone) -> Days {
        Days {
            tz: tz.clone(),
            cached: (0, 0, 0),
        }
    }
    fn day_of(&mut self, ms: i64) -> i64 {
        let (lo, hi, day) = self.cached;
        if (lo..hi).contains(&ms) {
            return day;
        }
        let date = Timestamp::from_millisecond(ms)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone())
            .date();
        let start = midnight_ms(date, &self.tz);
        let end = midnight_ms(date.tomorrow().unwrap_or(date), &self.tz);
        self.cached = (start, end, start);
        start
    }
}

/// Folds up to `limit` measurements after the cursor into the rollups and moves the
/// cursor, all in the caller's transaction; returns how many were folded in.
pub fn catch_up(conn: &Connection, tz: &TimeZone, limit: usize) -> Result<usize, StoreError> {
    let after = store::sink_cursor(conn, CURSOR)?;
    let mut acc: HashMap<(i64, i64, String), Acc> = HashMap::new();
    let mut days = Days::new(tz);
    let mut last = after;
    let mut n = 0;
    store::rollups::rounds_after(conn, after, limit, |r| {
        last = r.id;
        n += 1;
        let day = days.day_of(r.start_ms);
        let a = acc.entry((day, r.agent_id, r.target_name)).or_default();
        a.rounds += 1;
        a.loss.add(hist::loss_bucket(r.sent, r.received), 1);
        if let Some(rtt) = r.rtt_avg_ms.filter(|_| r.received > 0) {
            a.rtt.add(hist::rtt_bucket(rtt), 1);
        }
    })?;
    if n == 0 {
        return Ok(0);
    }
    for ((day, agent, target), mut a) in acc {
        if let Some((rounds, rtt, loss)) = store::rollups::get(conn, day, agent, &target)? {
            a.rounds += rounds;
            a.rtt.merge_encoded(&rtt);
            a.loss.merge_encoded(&loss);
        }
        store::rollups::put(
            conn,
            day,
            agent,
            &target,
            &(a.rounds, a.rtt.encode(), a.loss.encode()),
        )?;
    }
    store::set_sink_cursor(conn, CURSOR, last)?;
    Ok(n)
}

/// Brings the rollups up to date on a connection of its own (the command line).
pub fn catch_up_all(conn: &mut Connection, tz: &TimeZone) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = catch_up(&tx, tz, BATCH)?;
        tx.commit()?;
        total += n;
        if n < BATCH {
            return Ok(total);
        }
    }
}

/// Brings the rollups up to date through the running collector's writer.
pub async fn catch_up_via(writer: &Writer, tz: &TimeZone) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let tz = tz.clone();
        let n = writer
            .exec(move |tx| catch_up(tx, &tz, BATCH))
            .await
            .map_err(|e| StoreError::CommitFailed(e.to_string()))?;
        total += n;
        if n < BATCH {
            return Ok(total);
        }
    }
}

/// Measurements stored but not folded in yet.
pub fn lag(conn: &Connection) -> Result<i64, StoreError> {
    Ok(store::max_id(conn, "measurements")? - store::sink_cursor(conn, CURSOR)?)
}

/// Keeps the rollups current in the running collector, every `every`.
pub async fn run(
    writer: Writer,
    tz: TimeZone,
    every: Duration,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = catch_up_via(&writer, &tz).await {
            tracing::warn!(error = %e, "measurement rollup failed; retrying");
        }
        match writer.exec(|tx| lag(tx)).await {
            Ok(n) => {
                metrics.rollup_lag.set(n);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the rollup position"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Synchronous;

    #[test]
    fn rollups_fold_each_measurement_once_by_day_in_the_time_zone() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = store::open(dir.path(), Synchronous::Normal).unwrap();
        let tz = TimeZone::get("Asia/Jakarta").unwrap();
        // 2026-11-23 00:00 WIB; rounds at 23:59 the day before, and on the day.
        let midnight = 1_795_366_800_000i64;
        let insert = |conn: &Connection, seq: i64, start: i64, received: u32, rtt: f64| {
            conn.execute(
                "INSERT INTO measurements (agent_id, seq, start_ms, target_name, target_address,
                 method, sent, received, rtt_avg_ms, received_ms)
                 VALUES (1, ?1, ?2, 'gw', '10.0.0.1', 'icmp', 10, ?3, ?4, ?2)",
                rusqlite::params![seq, start, received, rtt],
            )
            .unwrap();
        };
        insert(&conn, 1, midnight - 60_000, 10, 20.0);
        insert(&conn, 2, midnight, 10, 20.0);
        insert(&conn, 3, midnight + 60_000, 5, 40.0);
        assert_eq!(catch_up_all(&mut conn, &tz).unwrap(), 3);
        insert(&conn, 4, midnight + 120_000, 0, 0.0);
        assert_eq!(catch_up_all(&mut conn, &tz).unwrap(), 1);
        assert_eq!(catch_up_all(&mut conn, &tz).unwrap(), 0);
        let rows: Vec<(i64, u32, Vec<u8>, Vec<u8>)> = conn
            .prepare(
                "SELECT day_ms, rounds, rtt_hist, loss_hist FROM daily_rollups ORDER BY day_ms",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].0, rows[0].1), (midnight - 86_400_000, 1));
        assert_eq!((rows[1].0, rows[1].1), (midnight, 3));
        let (mut rtt, mut loss) = (Hist::default(), Hist::default());
        rtt.merge_encoded(&rows[1].2);
        loss.merge_encoded(&rows[1].3);
        // The round that lost everything has no RTT.
        assert_eq!(rtt.count(), 2);
        assert_eq!(loss.quantile_bucket(1.0), Some(1000));
        assert_eq!(loss.quantile_bucket(0.33), Some(0));
    }
}
