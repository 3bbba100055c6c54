//! The SQL of the daily rollups: reading measurements after the rollup cursor, and
//! reading and writing one (day, agent, target) row. The folding is in
//! [`crate::sinks::rollup`].

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// What a rollup needs of one stored measurement.
#[derive(Debug, Clone)]
pub struct RoundRow {
    pub id: i64,
    pub agent_id: i64,
    pub target_name: String,
    pub start_ms: i64,
    pub sent: u32,
    pub received: u32,
    pub rtt_avg_ms: Option<f64>,
}

/// Calls `f` for up to `limit` measurements with an id above `after`, in id order.
pub fn rounds_after(
    conn: &Connection,
    after: i64,
    limit: usize,
    mut f: impl FnMut(RoundRow),
) -> Result<(), StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT id, agent_id, target_name, start_ms, sent, received, rtt_avg_ms
         FROM measurements WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut rows = st.query(params![after, limit as i64])?;
    while let Some(r) = rows.next()? {
        f(RoundRow {
            id: r.get(0)?,
            agent_id: r.get(1)?,
            target_name: r.get(2)?,
            start_ms: r.get(3)?,
            sent: r.get(4)?,
            received: r.get(5)?,
            rtt_avg_ms: r.get(6)?,
        });
    }
    Ok(())
}

/// A stored rollup: rounds and the encoded RTT and loss histograms.
pub type RollupRow = (u32, Vec<u8>, Vec<u8>);

pub fn get(
    conn: &Connection,
    day_ms: i64,
    agent_id: i64,
    target: &str,
) -> Result<Option<RollupRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT rounds, rtt_hist, loss_hist FROM daily_rollups
             WHERE day_ms = ?1 AND agent_id = ?2 AND target_name = ?3",
        )?
        .query_row(params![day_ms, agent_id, target], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?)
}

pub fn put(
    conn: &Connection,
    day_ms: i64,
    agent_id: i64,
    target: &str,
    row: &RollupRow,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO daily_rollups (day_ms, agent_id, target_name, rounds, rtt_hist, loss_hist)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![day_ms, agent_id, target, row.0, row.1, row.2])?;
    Ok(())
}
