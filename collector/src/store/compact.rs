//! The SQL of compaction and retention: moving an agent's hour of raw measurement rows
//! into blocks (with that hour's rollup) in one transaction, deleting blocks and rollups
//! past their retention in small slices, and reading measurements and rollups across raw
//! rows and blocks. The schedule is [`crate::retention`]'s.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::blocks::{self, Row};
use crate::domain::AgentId;
use crate::hist::{self, Hist};

pub const HOUR_MS: i64 = 3_600_000;

/// The start of the hour holding `ms`.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

fn damaged(e: blocks::BlockError) -> StoreError {
    StoreError::Block(e)
}

/// One hour of one agent and target, summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HourRollup {
    pub agent_id: i64,
    pub hour_ms: i64,
    pub target_name: String,
    pub rounds: u32,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub loss_sum: f64,
    pub rtt_rounds: u32,
    pub rtt_avg_sum_ms: f64,
    pub rtt_min_ms: Option<f64>,
    pub rtt_max_ms: Option<f64>,
    pub jitter_rounds: u32,
    pub jitter_sum_ms: f64,
    pub rtt_hist: Vec<u8>,
    pub last_received_ms: i64,
}

impl HourRollup {
    fn of(agent_id: i64, hour_ms: i64, target: &str, rows: &[Row]) -> HourRollup {
        let mut h = HourRollup {
            agent_id,
            hour_ms,
            target_name: target.to_string(),
            last_received_ms: i64::MIN,
            ..HourRollup::default()
        };
        let mut hist = Hist::default();
        for r in rows {
            let m = &r.m;
            h.rounds += 1;
            h.sent += u64::from(m.sent);
            h.received += u64::from(m.received);
            h.errors += u64::from(m.errors);
            h.loss_sum += m.loss();
            h.last_received_ms = h.last_received_ms.max(r.received_ms);
            if let Some(rtt) = m.rtt.as_ref().filter(|_| m.received > 0) {
                h.rtt_rounds += 1;
                h.rtt_avg_sum_ms += rtt.avg_ms;
                h.rtt_min_ms = Some(h.rtt_min_ms.map_or(rtt.min_ms, |v| v.min(rtt.min_ms)));
                h.rtt_max_ms = Some(h.rtt_max_ms.map_or(rtt.max_ms, |v| v.max(rtt.max_ms)));
                hist.add(hist::rtt_bucket(rtt.avg_ms), 1);
                if let Some(j) = rtt.jitter_ms {
                    h.jitter_rounds += 1;
                    h.jitter_sum_ms += j;
                }
            }
        }
        h.rtt_hist = hist.encode();
        h
    }
}

/// A block to store: one agent, hour and target, in parts.
#[derive(Debug, Clone)]
pub struct NewBlock {
    pub target_name: String,
    pub parts: Vec<blocks::Part>,
}

/// One compaction step: an agent's hour, built from its raw rows (ids up to `max_id`)
/// and the blocks already stored for that hour.
#[derive(Debug, Clone)]
pub struct HourMove {
    pub agent_id: i64,
    pub hour_ms: i64,
    pub max_id: i64,
    /// Raw rows this step deletes.
    pub moved: usize,
    pub blocks: Vec<NewBlock>,
    pub rollups: Vec<HourRollup>,
    pub max_seq: i64,
}

const MEASUREMENT_COLUMNS: &str = "seq, start_ms, target_name, target_address, method, sent, \
     received, rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms, errors";

/// Every agent ever enrolled.
pub fn agent_ids(conn: &Connection) -> Result<Vec<i64>, StoreError> {
    let mut st = conn.prepare_cached("SELECT agent_id FROM agents ORDER BY agent_id")?;
    let v = st.query_map([], |r| r.get(0))?;
    Ok(v.collect::<Result<_, _>>()?)
}

/// Lowest and highest rowid of the raw measurements (0, 0 when empty).
pub fn raw_id_range(conn: &Connection) -> Result<(i64, i64), StoreError> {
    Ok(conn.query_row(
        "SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM measurements",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// Plans the moves of up to `max_hours` of an agent's raw hours that end by `cutoff_ms`
/// (an hour boundary), using only rows with an id up to `id_limit`.
pub fn plan_agent(
    conn: &Connection,
    agent_id: i64,
    cutoff_ms: i64,
    id_limit: i64,
    max_hours: usize,
) -> Result<Vec<HourMove>, StoreError> {
    let mut next = conn.prepare_cached(
        "SELECT min(start_ms) FROM measurements
         WHERE agent_id = ?1 AND start_ms >= ?2 AND start_ms < ?3",
    )?;
    let mut out = Vec::new();
    let mut after = i64::MIN;
    while out.len() < max_hours {
        let first: Option<i64> =
            next.query_row(params![agent_id, after, cutoff_ms], |r| r.get(0))?;
        let Some(first) = first else { break };
        let hour = hour_of(first);
        after = hour + HOUR_MS;
        if let Some(m) = plan_hour(conn, agent_id, hour, id_limit)? {
            out.push(m);
        }
    }
    Ok(out)
}

/// The move of one agent's hour, or `None` when it has no raw row up to `id_limit`.
pub fn plan_hour(
    conn: &Connection,
    agent_id: i64,
    hour_ms: i64,
    id_limit: i64,
) -> Result<Option<HourMove>, StoreError> {
    let mut raw = conn.prepare_cached(&format!(
        "SELECT id, received_ms, {MEASUREMENT_COLUMNS} FROM measurements
         WHERE agent_id = ?1 AND start_ms >= ?2 AND start_ms < ?3 AND id <= ?4"
    ))?;
    let mut by_target: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let (mut max_id, mut moved) = (0i64, 0usize);
    let rows = raw.query_map(
        params![agent_id, hour_ms, hour_ms + HOUR_MS, id_limit],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                super::measurement_from_row(r, 2)?,
            ))
        },
    )?;
    for row in rows {
        let (id, received_ms, m) = row?;
        max_id = max_id.max(id);
        moved += 1;
        by_target
            .entry(m.target_name.clone())
            .or_default()
            .push(Row { m, received_ms });
    }
    if moved == 0 {
        return Ok(None);
    }
    let mut existing = conn.prepare_cached(
        "SELECT target_name, data FROM measurement_blocks WHERE agent_id = ?1 AND hour_ms = ?2",
    )?;
    let stored = existing.query_map(params![agent_id, hour_ms], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    for b in stored {
        let (target, data) = b?;
        let rows = by_target.entry(target).or_default();
        let old = blocks::decode(&data).map_err(damaged)?;
        // A raw row that is already in the block (it cannot be, the writer checks) would
        // still be stored once: the block's copy wins.
        let seen: std::collections::HashSet<u64> = old.iter().map(|r| r.m.seq).collect();
        rows.retain(|r| !seen.contains(&r.m.seq));
        rows.extend(old);
    }
    let mut mv = HourMove {
        agent_id,
        hour_ms,
        max_id,
        moved,
        blocks: Vec::new(),
        rollups: Vec::new(),
        max_seq: 0,
    };
    for (target, mut rows) in by_target {
        if rows.is_empty() {
            continue;
        }
        let parts = blocks::encode_parts(&mut rows, blocks::PART_BYTES);
        mv.max_seq = mv.max_seq.max(rows[rows.len() - 1].m.seq as i64);
        mv.rollups
            .push(HourRollup::of(agent_id, hour_ms, &target, &rows));
        mv.blocks.push(NewBlock {
            target_name: target,
            parts,
        });
    }
    Ok(Some(mv))
}

/// Stores a planned move in the caller's transaction: blocks and rollup in, raw rows out.
/// Fails (and changes nothing, under the writer's savepoint) if the raw rows are no
/// longer what was planned.
pub fn apply(tx: &Connection, mv: &HourMove) -> Result<(), StoreError> {
    let deleted = tx
        .prepare_cached(
            "DELETE FROM measurements
             WHERE agent_id = ?1 AND start_ms >= ?2 AND start_ms < ?3 AND id <= ?4",
        )?
        .execute(params![
            mv.agent_id,
            mv.hour_ms,
            mv.hour_ms + HOUR_MS,
            mv.max_id
        ])?;
    if deleted != mv.moved {
        return Err(StoreError::CommitFailed(format!(
            "compaction of agent {} at {}: planned {} rows, found {deleted}",
            mv.agent_id, mv.hour_ms, mv.moved
        )));
    }
    let mut put = tx.prepare_cached(
        "INSERT INTO measurement_blocks (agent_id, hour_ms, target_name, part, seq_min, seq_max,
             rows, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (agent_id, hour_ms, target_name, part) DO UPDATE SET
             seq_min = excluded.seq_min, seq_max = excluded.seq_max, rows = excluded.rows,
             data = excluded.data",
    )?;
    let mut drop_rest = tx.prepare_cached(
        "DELETE FROM measurement_blocks
         WHERE agent_id = ?1 AND hour_ms = ?2 AND target_name = ?3 AND part >= ?4",
    )?;
    for b in &mv.blocks {
        for (i, p) in b.parts.iter().enumerate() {
            put.execute(params![
                mv.agent_id,
                mv.hour_ms,
                b.target_name,
                i as i64,
                p.seq_min as i64,
                p.seq_max as i64,
                p.rows as i64,
                p.data
            ])?;
        }
        // A merged hour may need fewer parts than before.
        drop_rest.execute(params![
            mv.agent_id,
            mv.hour_ms,
            b.target_name,
            b.parts.len() as i64
        ])?;
    }
    for r in &mv.rollups {
        put_rollup(tx, r)?;
    }
    tx.prepare_cached(
        "UPDATE agents SET compacted_seq = max(compacted_seq, ?2) WHERE agent_id = ?1",
    )?
    .execute(params![mv.agent_id, mv.max_seq])?;
    Ok(())
}

fn put_rollup(tx: &Connection, r: &HourRollup) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO hourly_rollups (agent_id, hour_ms, target_name, rounds, sent,
             received, errors, loss_sum, rtt_rounds, rtt_avg_sum_ms, rtt_min_ms, rtt_max_ms,
             jitter_rounds, jitter_sum_ms, rtt_hist, last_received_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        r.agent_id,
        r.hour_ms,
        r.target_name,
        r.rounds,
        r.sent as i64,
        r.received as i64,
        r.errors as i64,
        r.loss_sum,
        r.rtt_rounds,
        r.rtt_avg_sum_ms,
        r.rtt_min_ms,
        r.rtt_max_ms,
        r.jitter_rounds,
        r.jitter_sum_ms,
        r.rtt_hist,
        r.last_received_ms
    ])?;
    Ok(())
}

/// Deletes up to `limit` blocks of hours before `before_ms`; returns how many.
pub fn delete_blocks_before(
    tx: &Connection,
    before_ms: i64,
    limit: usize,
) -> Result<usize, StoreError> {
    Ok(tx
        .prepare_cached(
            "DELETE FROM measurement_blocks WHERE id IN (
                 SELECT id FROM measurement_blocks WHERE hour_ms < ?1 ORDER BY hour_ms LIMIT ?2)",
        )?
        .execute(params![before_ms, limit as i64])?)
}

/// Deletes up to `limit` hourly rollups of hours before `before_ms`; returns how many.
pub fn delete_rollups_before(
    tx: &Connection,
    before_ms: i64,
    limit: usize,
) -> Result<usize, StoreError> {
    Ok(tx
        .prepare_cached(
            "DELETE FROM hourly_rollups WHERE (agent_id, hour_ms, target_name) IN (
                 SELECT agent_id, hour_ms, target_name FROM hourly_rollups
                 WHERE hour_ms < ?1 ORDER BY hour_ms LIMIT ?2)",
        )?
        .execute(params![before_ms, limit as i64])?)
}

/// The compacted rows of one agent with a start in `from_ms..to_ms` (all when `None`),
/// optionally of one target.
pub fn block_rows(
    conn: &Connection,
    agent_id: AgentId,
    target: Option<&str>,
    range: Option<(i64, i64)>,
) -> Result<Vec<Row>, StoreError> {
    let (from, to) = range.unwrap_or((i64::MIN, i64::MAX));
    let mut st = conn.prepare_cached(
        "SELECT data FROM measurement_blocks
         WHERE agent_id = ?1 AND hour_ms >= ?2 AND hour_ms < ?3
           AND (?4 IS NULL OR target_name = ?4)
         ORDER BY hour_ms",
    )?;
    let lo = if from == i64::MIN {
        from
    } else {
        hour_of(from)
    };
    let mut out = Vec::new();
    let blobs = st.query_map(params![agent_id as i64, lo, to, target], |r| {
        r.get::<_, Vec<u8>>(0)
    })?;
    for b in blobs {
        out.extend(
            blocks::decode(&b?)
                .map_err(damaged)?
                .into_iter()
                .filter(|r| (from..to).contains(&r.m.start_ms)),
        );
    }
    Ok(out)
}

/// The agent's highest sequence number moved into blocks (0 before any).
pub fn compacted_seq(conn: &Connection, agent_id: i64) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT compacted_seq FROM agents WHERE agent_id = ?1")?
        .query_row([agent_id], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Whether a block holds the agent's measurement `seq`.
pub fn in_blocks(conn: &Connection, agent_id: i64, seq: i64) -> Result<bool, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT data FROM measurement_blocks WHERE agent_id = ?1 AND seq_max >= ?2 AND seq_min <= ?2",
    )?;
    let blobs = st.query_map(params![agent_id, seq], |r| r.get::<_, Vec<u8>>(0))?;
    for b in blobs {
        if blocks::decode(&b?)
            .map_err(damaged)?
            .iter()
            .any(|r| r.m.seq as i64 == seq)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Hourly rollups of some agents with an hour in `from_ms..to_ms`, optionally of one
/// target, by hour.
pub fn hourly_between(
    conn: &Connection,
    agent_ids: &[AgentId],
    target: Option<&str>,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<HourRollup>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT agent_id, hour_ms, target_name, rounds, sent, received, errors, loss_sum,
                rtt_rounds, rtt_avg_sum_ms, rtt_min_ms, rtt_max_ms, jitter_rounds,
                jitter_sum_ms, rtt_hist, last_received_ms
         FROM hourly_rollups
         WHERE agent_id = ?1 AND hour_ms >= ?2 AND hour_ms < ?3 AND (?4 IS NULL OR target_name = ?4)",
    )?;
    let mut out = Vec::new();
    for id in agent_ids {
        let rows = st.query_map(params![*id as i64, from_ms, to_ms, target], |r| {
            Ok(HourRollup {
                agent_id: r.get(0)?,
                hour_ms: r.get(1)?,
                target_name: r.get(2)?,
                rounds: r.get(3)?,
                sent: r.get::<_, i64>(4)? as u64,
                received: r.get::<_, i64>(5)? as u64,
                errors: r.get::<_, i64>(6)? as u64,
                loss_sum: r.get(7)?,
                rtt_rounds: r.get(8)?,
                rtt_avg_sum_ms: r.get(9)?,
                rtt_min_ms: r.get(10)?,
                rtt_max_ms: r.get(11)?,
                jitter_rounds: r.get(12)?,
                jitter_sum_ms: r.get(13)?,
                rtt_hist: r.get(14)?,
                last_received_ms: r.get(15)?,
            })
        })?;
        for r in rows {
            out.push(r?);
        }
    }
    out.sort_by_key(|r| r.hour_ms);
    Ok(out)
}

/// When the newest round of `agent` that started and arrived before `until` arrived:
/// from its raw rows, its blocks, or (past the measurements' retention) its rollups.
pub fn last_received_before(
    conn: &Connection,
    agent_id: i64,
    until: i64,
) -> Result<Option<i64>, StoreError> {
    let newest_raw: Option<i64> = conn
        .prepare_cached(
            "SELECT received_ms FROM measurements WHERE agent_id = ?1 AND start_ms < ?2
             AND received_ms < ?2 ORDER BY start_ms DESC LIMIT 1",
        )?
        .query_row(params![agent_id, until], |r| r.get(0))
        .optional()?;
    let mut best = newest_raw;
    // The newest hours with blocks before `until` (a few, for the targets of one hour).
    let mut st = conn.prepare_cached(
        "SELECT data FROM measurement_blocks WHERE agent_id = ?1 AND hour_ms < ?2
         ORDER BY hour_ms DESC LIMIT 24",
    )?;
    let blobs = st.query_map(params![agent_id, until], |r| r.get::<_, Vec<u8>>(0))?;
    for b in blobs {
        for r in blocks::decode(&b?).map_err(damaged)? {
            if r.m.start_ms < until && r.received_ms < until {
                best = best.max(Some(r.received_ms));
            }
        }
    }
    if best.is_some() {
        return Ok(best);
    }
    let mut st = conn.prepare_cached(
        "SELECT last_received_ms FROM hourly_rollups WHERE agent_id = ?1 AND hour_ms < ?2
         ORDER BY hour_ms DESC LIMIT 8",
    )?;
    let v = st.query_map(params![agent_id, until], |r| r.get::<_, i64>(0))?;
    for t in v {
        let t = t?;
        if t < until {
            best = best.max(Some(t));
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_count(conn: &Connection) -> Result<u64, StoreError> {
        super::super::count(conn, "measurements")
    }

    fn block_row_count(conn: &Connection) -> Result<u64, StoreError> {
        Ok(conn.query_row(
            "SELECT coalesce(sum(rows), 0) FROM measurement_blocks",
            [],
            |r| r.get(0),
        )?)
    }

    /// A store with one agent (id 1) and `rows` raw rounds, one every 5 minutes from
    /// `start`, each received a minute after it started.
    fn store(start: i64, rows: i64) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(dir.path(), super::super::Synchronous::Normal).unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO agents (tps_code, token_hash, hostname, os, agent_version, enrolled_ms)
             VALUES ('2101011001001', x'00', 'h', 'Linux', 't', 0);",
        )
        .unwrap();
        for i in 0..rows {
            let at = start + i * 300_000;
            conn.execute(
                "INSERT INTO measurements (agent_id, seq, start_ms, target_name, target_address,
                     method, sent, received, rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms,
                     received_ms, errors)
                 VALUES (1, ?1, ?2, 'gateway', '192.0.2.1', 'icmp', 5, 5, 9.0, 10.0, 11.0, 0.5, ?3, 0)",
                params![i + 1, at, at + 60_000],
            )
            .unwrap();
        }
        (dir, conn)
    }

    fn compact_all(conn: &Connection, cutoff: i64) -> usize {
        let limit = raw_id_range(conn).unwrap().1 - 1;
        let moves = plan_agent(conn, 1, cutoff, limit, usize::MAX).unwrap();
        for m in &moves {
            apply(conn, m).unwrap();
        }
        moves.iter().map(|m| m.moved).sum()
    }

    #[test]
    fn a_round_is_a_row_or_in_a_block_and_the_last_arrival_is_found_in_either() {
        let h0 = 1_796_000_400_000 / HOUR_MS * HOUR_MS;
        // Ten hours of rounds, 12 an hour.
        let (_dir, conn) = store(h0, 120);
        let seqs = |c: &Connection| -> Vec<u64> {
            super::super::measurements_of(c, 1)
                .unwrap()
                .iter()
                .map(|m| m.seq)
                .collect()
        };
        let until = h0 + 5 * HOUR_MS + 1;
        let before = last_received_before(&conn, 1, until).unwrap();
        assert_eq!(before, Some(h0 + 5 * HOUR_MS - 300_000 + 60_000));

        // The first six hours move into blocks: every round once, the newest arrival
        // before `until` the same.
        let moved = compact_all(&conn, h0 + 6 * HOUR_MS);
        assert_eq!(moved, 72);
        assert_eq!(raw_count(&conn).unwrap(), 48);
        assert_eq!(block_row_count(&conn).unwrap(), 72);
        assert_eq!(seqs(&conn), (1..=120).collect::<Vec<_>>());
        assert_eq!(last_received_before(&conn, 1, until).unwrap(), before);
        assert!(in_blocks(&conn, 1, 5).unwrap() && !in_blocks(&conn, 1, 100).unwrap());

        // A late round for a moved hour is merged on the next pass; the hour's rollup
        // counts it.
        conn.execute(
            "INSERT INTO measurements (agent_id, seq, start_ms, target_name, target_address,
                 method, sent, received, received_ms, errors)
             VALUES (1, 500, ?1, 'gateway', '192.0.2.1', 'icmp', 5, 0, ?2, 0)",
            params![h0 + 30_000, h0 + 7 * HOUR_MS],
        )
        .unwrap();
        // (A newer row keeps it from being the newest, which always stays a row.)
        conn.execute(
            "INSERT INTO measurements (agent_id, seq, start_ms, target_name, target_address,
                 method, sent, received, received_ms, errors)
             VALUES (1, 501, ?1, 'gateway', '192.0.2.1', 'icmp', 5, 5, ?1, 0)",
            params![h0 + 10 * HOUR_MS],
        )
        .unwrap();
        assert_eq!(compact_all(&conn, h0 + 6 * HOUR_MS), 1);
        let r = hourly_between(&conn, &[1], None, h0, h0 + HOUR_MS).unwrap();
        assert_eq!((r.len(), r[0].rounds, r[0].received), (1, 13, 60));
        assert_eq!(raw_count(&conn).unwrap(), 49);

        // Past retention the blocks go; the rollups still say when the last round came.
        let gone = delete_blocks_before(&conn, h0 + 6 * HOUR_MS, 1000).unwrap();
        assert!(gone >= 6, "{gone}");
        assert_eq!(block_row_count(&conn).unwrap(), 0);
        assert_eq!(
            last_received_before(&conn, 1, h0 + 3 * HOUR_MS).unwrap(),
            Some(h0 + 3 * HOUR_MS - 300_000 + 60_000),
            "from the rollups"
        );
        assert_eq!(
            delete_rollups_before(&conn, h0 + 6 * HOUR_MS, 1000).unwrap(),
            6
        );
    }
}
