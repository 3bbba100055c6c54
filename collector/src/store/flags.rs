//! The follow-up queue in SQLite: flags and their events — storing what the planner
//! decided, loading the index at start, reading lists for the API, and operators' actions.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::StoreError;
use crate::domain::TpsCode;
use crate::state::coverage::{Cause, Reason};
use crate::state::flags::{
    ActError, Action, Brief, Flag, FlagEvent, FlagIndex, FlagStatus, OperatorAction,
};

fn event(
    tx: &Transaction<'_>,
    flag: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO flag_events (flag_id, at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![flag, at_ms, actor, action, detail])?;
    Ok(())
}

/// Stores the planned actions; returns the new briefs to put in the index. Updates that
/// change nothing write nothing.
pub fn apply(
    tx: &Transaction<'_>,
    actions: &[Action],
    now_ms: i64,
) -> Result<Vec<(TpsCode, Brief)>, StoreError> {
    let mut out = Vec::new();
    for a in actions {
        match a {
            Action::Open {
                tps,
                reason,
                cause,
                since_ms,
            } => {
                tx.prepare_cached(
                    "INSERT INTO flags (tps_code, reason, cause, since_ms, opened_ms, status, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?5)",
                )?
                .execute(params![tps.as_str(), reason.as_str(), cause.map(Cause::as_str), since_ms, now_ms])?;
                let id = tx.last_insert_rowid();
                event(tx, id, now_ms, "system", "opened", Some(reason.as_str()))?;
                let brief = Brief {
                    id,
                    status: FlagStatus::Open,
                    ended_ms: None,
                    reason: *reason,
                    cause: *cause,
                };
                out.push((*tps, brief));
            }
            Action::Close { tps, brief } => {
                tx.prepare_cached(
                    "UPDATE flags SET status = 'closed', ended_ms = ?2, updated_ms = ?2
                     WHERE id = ?1 AND status IN ('open', 'acknowledged')",
                )?
                .execute(params![brief.id, now_ms])?;
                event(
                    tx,
                    brief.id,
                    now_ms,
                    "system",
                    "closed",
                    Some("station covered for the recovery period"),
                )?;
                out.push((
                    *tps,
                    Brief {
                        status: FlagStatus::Closed,
                        ended_ms: Some(now_ms),
                        ..*brief
                    },
                ));
            }
            Action::Update {
                tps,
                brief,
                reason,
                cause,
            } => {
                tx.prepare_cached(
                    "UPDATE flags SET reason = ?2, cause = coalesce(?3, cause), updated_ms = ?4
                     WHERE id = ?1 AND status IN ('open', 'acknowledged')",
                )?
                .execute(params![
                    brief.id,
                    reason.as_str(),
                    cause.map(Cause::as_str),
                    now_ms
                ])?;
                let detail = match cause {
                    Some(c) => format!("{} ({})", reason.as_str(), c.as_str()),
                    None => reason.as_str().to_string(),
                };
                event(tx, brief.id, now_ms, "system", "updated", Some(&detail))?;
                out.push((
                    *tps,
                    Brief {
                        reason: *reason,
                        cause: cause.or(brief.cause),
                        ..*brief
                    },
                ));
            }
        }
    }
    Ok(out)
}

/// Loads the newest flag of every station.
pub fn load_index(conn: &Connection) -> Result<FlagIndex, StoreError> {
    let mut st = conn.prepare(
        "SELECT tps_code, id, status, ended_ms, reason, cause FROM flags
         WHERE id IN (SELECT max(id) FROM flags GROUP BY tps_code)",
    )?;
    let rows = st.query_map([], |r| {
        let code: String = r.get(0)?;
        let status: String = r.get(2)?;
        let reason: String = r.get(4)?;
        let cause: Option<String> = r.get(5)?;
        Ok((
            code,
            r.get::<_, i64>(1)?,
            status,
            r.get::<_, Option<i64>>(3)?,
            reason,
            cause,
        ))
    })?;
    let mut index = FlagIndex::default();
    for row in rows {
        let (code, id, status, ended_ms, reason, cause) = row?;
        if let (Ok(tps), Some(status)) = (code.parse::<TpsCode>(), FlagStatus::parse(&status)) {
            let brief = Brief {
                id,
                status,
                ended_ms,
                reason: Reason::parse(&reason).unwrap_or(Reason::Offline),
                cause: cause.as_deref().and_then(Cause::parse),
            };
            index.by_station.insert(tps, brief);
        }
    }
    Ok(index)
}

fn flag_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Flag> {
    let status: String = r.get(6)?;
    Ok(Flag {
        id: r.get(0)?,
        tps_code: r.get(1)?,
        reason: r.get(2)?,
        cause: r.get(3)?,
        since_ms: r.get(4)?,
        opened_ms: r.get(5)?,
        status: FlagStatus::parse(&status).unwrap_or(FlagStatus::Open),
        assignee: r.get(7)?,
        resolution: r.get(8)?,
        ended_ms: r.get(9)?,
        updated_ms: r.get(10)?,
    })
}

const FLAG_COLUMNS: &str = "id, tps_code, reason, cause, since_ms, opened_ms, status, assignee, resolution, ended_ms, updated_ms";

pub fn get(conn: &Connection, id: i64) -> Result<Option<Flag>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {FLAG_COLUMNS} FROM flags WHERE id = ?1"))?
        .query_row([id], flag_from_row)
        .optional()?)
}

/// Flags in a status set under a region prefix, most urgent first: no_agent and offline
/// before degraded, then the longest uncovered.
pub fn list(
    conn: &Connection,
    statuses: &[FlagStatus],
    region: Option<&str>,
    limit: usize,
) -> Result<Vec<Flag>, StoreError> {
    let prefix = region.map(|r| r.replace('.', "")).unwrap_or_default();
    let (sql, wanted) = list_sql(statuses, prefix.is_empty());
    let mut st = conn.prepare(&sql)?;
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(prefix), Box::new(limit as i64)];
    for w in wanted {
        args.push(Box::new(w.to_string()));
    }
    let rows = st.query_map(rusqlite::params_from_iter(args.iter()), flag_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The list query (`?1` region prefix, `?2` limit, then the statuses it returns).
fn list_sql(statuses: &[FlagStatus], everywhere: bool) -> (String, Vec<&'static str>) {
    let mut wanted: Vec<&'static str> = statuses.iter().map(|s| s.as_str()).collect();
    // The active queue names its statuses literally, so the partial index `flags_queue`
    // (already in queue order) can serve it.
    let active = {
        let mut w = wanted.clone();
        w.sort_unstable();
        w == ["acknowledged", "open"]
    };
    let filter = if active {
        wanted.clear();
        "status IN ('open', 'acknowledged')".to_string()
    } else {
        let placeholders = (0..wanted.len())
            .map(|i| format!("?{}", i + 3))
            .collect::<Vec<_>>()
            .join(",");
        format!("status IN ({placeholders})")
    };
    // Without a region, no range on the code: the queue index then serves the order.
    let range = if everywhere {
        "?1 = ''"
    } else {
        "tps_code >= ?1 AND tps_code < ?1 || ':'"
    };
    // The planner prefers the status index and a sort of every active flag (130 ms at
    // national scale); the queue index gives the first page in order.
    let index = if active && everywhere {
        " INDEXED BY flags_queue"
    } else {
        ""
    };
    (
        format!(
            "SELECT {FLAG_COLUMNS} FROM flags{index}
             WHERE {range} AND {filter}
             ORDER BY CASE WHEN reason IN ('no_agent', 'offline') THEN 0 ELSE 1 END, since_ms, id
             LIMIT ?2"
        ),
        wanted,
    )
}

/// How many flags are in a status set under a region prefix.
pub fn count(
    conn: &Connection,
    statuses: &[FlagStatus],
    region: Option<&str>,
) -> Result<u64, StoreError> {
    let prefix = region.map(|r| r.replace('.', "")).unwrap_or_default();
    let placeholders = (0..statuses.len())
        .map(|i| format!("?{}", i + 2))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT count(*) FROM flags WHERE tps_code >= ?1 AND tps_code < ?1 || ':' AND status IN ({placeholders})"
    );
    let mut args: Vec<String> = vec![prefix];
    args.extend(statuses.iter().map(|s| s.as_str().to_string()));
    Ok(
        conn.query_row(&sql, rusqlite::params_from_iter(args.iter()), |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}

/// The newest note of each of these flags, in one query.
pub fn latest_notes(conn: &Connection, ids: &[i64]) -> Result<HashMap<i64, String>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let sql = format!(
        "SELECT flag_id, detail FROM flag_events WHERE id IN (
             SELECT max(id) FROM flag_events WHERE action = 'note' AND flag_id IN ({list}) GROUP BY flag_id)"
    );
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        let (id, detail) = row?;
        if let Some(d) = detail {
            out.insert(id, d);
        }
    }
    Ok(out)
}

pub fn events(conn: &Connection, id: i64) -> Result<Vec<FlagEvent>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT at_ms, actor, action, detail FROM flag_events WHERE flag_id = ?1 ORDER BY id",
    )?;
    let rows = st.query_map([id], |r| {
        Ok(FlagEvent {
            at_ms: r.get(0)?,
            actor: r.get(1)?,
            action: r.get(2)?,
            detail: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Flags under a region prefix (digits) that ended at or after `since_ms`.
pub fn ended_since(
    conn: &Connection,
    prefix: &str,
    since_ms: i64,
) -> Result<Vec<Flag>, StoreError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {FLAG_COLUMNS} FROM flags
         WHERE status IN ('closed', 'resolved') AND ended_ms >= ?2
           AND tps_code >= ?1 AND tps_code < ?1 || ':'"
    ))?;
    let rows = st.query_map(params![prefix, since_ms], flag_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The newest flag of a station.
pub fn latest_of(conn: &Connection, tps: &str) -> Result<Option<Flag>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {FLAG_COLUMNS} FROM flags WHERE tps_code = ?1 ORDER BY id DESC LIMIT 1"
        ))?
        .query_row([tps], flag_from_row)
        .optional()?)
}

/// Applies an operator's action, recording who did it; returns the flag after it.
pub fn act(
    tx: &Transaction<'_>,
    id: i64,
    actor: &str,
    action: &OperatorAction,
    now_ms: i64,
) -> Result<Flag, ActError> {
    let flag = tx
        .prepare_cached(&format!("SELECT {FLAG_COLUMNS} FROM flags WHERE id = ?1"))
        .map_err(StoreError::from)?
        .query_row([id], flag_from_row)
        .optional()
        .map_err(StoreError::from)?
        .ok_or(ActError::NotFound(id))?;
    let need_active = |what: &'static str| {
        if flag.status.active() {
            Ok(())
        } else {
            Err(ActError::Conflict {
                id,
                status: flag.status.as_str(),
                what,
            })
        }
    };
    let run = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<(), ActError> {
        tx.execute(sql, p).map_err(StoreError::from)?;
        Ok(())
    };
    match action {
        OperatorAction::Acknowledge => {
            need_active("acknowledged")?;
            run(
                "UPDATE flags SET status = 'acknowledged', updated_ms = ?2 WHERE id = ?1",
                &[&id, &now_ms],
            )?;
            event(tx, id, now_ms, actor, "acknowledged", None)?;
        }
        OperatorAction::Assign(who) => {
            need_active("assigned")?;
            run(
                "UPDATE flags SET assignee = ?2, updated_ms = ?3 WHERE id = ?1",
                &[&id, who, &now_ms],
            )?;
            event(tx, id, now_ms, actor, "assigned", Some(who))?;
        }
        OperatorAction::Note(text) => {
            run(
                "UPDATE flags SET updated_ms = ?2 WHERE id = ?1",
                &[&id, &now_ms],
            )?;
            event(tx, id, now_ms, actor, "note", Some(text))?;
        }
        OperatorAction::Resolve(text) => {
            need_active("resolved")?;
            run(
                "UPDATE flags SET status = 'resolved', resolution = ?2, ended_ms = ?3, updated_ms = ?3 WHERE id = ?1",
                &[&id, text, &now_ms],
            )?;
            event(tx, id, now_ms, actor, "resolved", Some(text))?;
        }
    }
    Ok(tx
        .prepare_cached(&format!("SELECT {FLAG_COLUMNS} FROM flags WHERE id = ?1"))
        .map_err(StoreError::from)?
        .query_row([id], flag_from_row)
        .map_err(StoreError::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_page_of_the_active_queue_is_read_from_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::open(dir.path(), super::super::Synchronous::Normal).unwrap();
        let (sql, _) = list_sql(&[FlagStatus::Open, FlagStatus::Acknowledged], true);
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params!["", 100], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("flags_queue"), "{plan}");
        assert!(
            !plan.contains("TEMP B-TREE"),
            "no sort of every active flag: {plan}"
        );
    }
}
