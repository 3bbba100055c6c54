//! The notification tables: flag events taken off the log (`notify_pending`), what each
//! route has told (`notify_told`, `notify_groups`) and the outbox the senders deliver.

use rusqlite::{Connection, Transaction, params};
use serde::Serialize;

use super::StoreError;

/// The cursor over `flag_events` in `sink_cursors`.
pub const CURSOR: &str = "notify";

/// A flag event with its flag and station, as the planner reads it.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: i64,
    pub flag_id: i64,
    pub at_ms: i64,
    pub action: String,
    pub tps_code: String,
    pub reason: String,
}

/// Events after `after` that notifications care about, and the highest event id looked
/// at (the new cursor).
pub fn events_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<(Vec<EventRow>, i64), StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT e.id, e.flag_id, e.at_ms, e.action, f.tps_code, f.reason
         FROM flag_events e JOIN flags f ON f.id = e.flag_id
         WHERE e.id > ?1 ORDER BY e.id LIMIT ?2",
    )?;
    let rows = st
        .query_map(params![after, limit as i64], |r| {
            Ok(EventRow {
                id: r.get(0)?,
                flag_id: r.get(1)?,
                at_ms: r.get(2)?,
                action: r.get(3)?,
                tps_code: r.get(4)?,
                reason: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let last = rows.last().map_or(after, |r| r.id);
    Ok((rows, last))
}

pub fn add_pending(
    tx: &Transaction<'_>,
    route: &str,
    group_key: &str,
    kind: &str,
    flag_id: i64,
    at_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO notify_pending (route, group_key, kind, flag_id, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![route, group_key, kind, flag_id, at_ms])?;
    Ok(())
}

/// A flag was acknowledged: no more reminders or escalation for it.
pub fn acknowledged(tx: &Transaction<'_>, flag_id: i64) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE notify_told SET acked = 1 WHERE flag_id = ?1")?
        .execute([flag_id])?;
    tx.prepare_cached(
        "DELETE FROM notify_pending WHERE flag_id = ?1 AND kind IN ('reminder', 'escalation')",
    )?
    .execute([flag_id])?;
    Ok(())
}

/// A flag ended: drops what was still pending for it and returns the routes that had
/// told of it (they owe a recovery message); forgets it.
pub fn ended(tx: &Transaction<'_>, flag_id: i64) -> Result<Vec<String>, StoreError> {
    tx.prepare_cached("DELETE FROM notify_pending WHERE flag_id = ?1")?
        .execute([flag_id])?;
    let routes = tx
        .prepare_cached("DELETE FROM notify_told WHERE flag_id = ?1 RETURNING route")?
        .query_map([flag_id], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(routes)
}

/// Told flags of a route still open and unacknowledged whose last message is at or
/// before `before_ms`; their `last_ms` becomes `now_ms`.
pub fn due_reminders(
    tx: &Transaction<'_>,
    route: &str,
    before_ms: i64,
    now_ms: i64,
) -> Result<Vec<(i64, String)>, StoreError> {
    let rows = tx
        .prepare_cached(
            "SELECT t.flag_id, f.tps_code FROM notify_told t JOIN flags f ON f.id = t.flag_id
             WHERE t.route = ?1 AND t.acked = 0 AND f.status = 'open' AND t.last_ms <= ?2",
        )?
        .query_map(params![route, before_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<(i64, String)>, _>>()?;
    let mut up =
        tx.prepare_cached("UPDATE notify_told SET last_ms = ?3 WHERE route = ?1 AND flag_id = ?2")?;
    for (id, _) in &rows {
        up.execute(params![route, id, now_ms])?;
    }
    Ok(rows)
}

/// Told flags of a route open and unacknowledged since at or before `before_ms`, not
/// escalated yet; marked escalated.
pub fn due_escalations(
    tx: &Transaction<'_>,
    route: &str,
    before_ms: i64,
) -> Result<Vec<(i64, String)>, StoreError> {
    let rows = tx
        .prepare_cached(
            "SELECT t.flag_id, f.tps_code FROM notify_told t JOIN flags f ON f.id = t.flag_id
             WHERE t.route = ?1 AND t.acked = 0 AND t.escalated = 0 AND f.status = 'open'
               AND t.told_ms <= ?2",
        )?
        .query_map(params![route, before_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<(i64, String)>, _>>()?;
    let mut up = tx
        .prepare_cached("UPDATE notify_told SET escalated = 1 WHERE route = ?1 AND flag_id = ?2")?;
    for (id, _) in &rows {
        up.execute(params![route, id])?;
    }
    Ok(rows)
}

/// A group of a route with something pending.
#[derive(Debug, Clone)]
pub struct PendingGroup {
    pub group_key: String,
    pub first_ms: i64,
    pub last_sent_ms: Option<i64>,
}

pub fn pending_groups(conn: &Connection, route: &str) -> Result<Vec<PendingGroup>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT p.group_key, min(p.at_ms), g.sent_ms FROM notify_pending p
             LEFT JOIN notify_groups g ON g.route = p.route AND g.group_key = p.group_key
             WHERE p.route = ?1 GROUP BY p.group_key ORDER BY p.group_key",
        )?
        .query_map([route], |r| {
            Ok(PendingGroup {
                group_key: r.get(0)?,
                first_ms: r.get(1)?,
                last_sent_ms: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?)
}

/// A pending station with what a message says about it.
#[derive(Debug, Clone)]
pub struct PendingItem {
    pub kind: String,
    pub flag_id: i64,
    pub at_ms: i64,
    pub tps_code: String,
    pub reason: String,
    pub cause: Option<String>,
    pub since_ms: i64,
    pub village: String,
    pub district: String,
    pub regency: String,
    pub province: String,
}

/// Takes a group's pending rows off the list; returns them oldest first.
pub fn take_group(
    tx: &Transaction<'_>,
    route: &str,
    group_key: &str,
    now_ms: i64,
) -> Result<Vec<PendingItem>, StoreError> {
    let items = tx
        .prepare_cached(
            "SELECT p.kind, p.flag_id, p.at_ms, f.tps_code, f.reason, f.cause, f.since_ms,
                    coalesce(s.village, ''), coalesce(s.district, ''), coalesce(s.regency, ''),
                    coalesce(s.province, '')
             FROM notify_pending p JOIN flags f ON f.id = p.flag_id
             LEFT JOIN stations s ON s.tps_code = f.tps_code
             WHERE p.route = ?1 AND p.group_key = ?2 ORDER BY p.id",
        )?
        .query_map(params![route, group_key], |r| {
            Ok(PendingItem {
                kind: r.get(0)?,
                flag_id: r.get(1)?,
                at_ms: r.get(2)?,
                tps_code: r.get(3)?,
                reason: r.get(4)?,
                cause: r.get(5)?,
                since_ms: r.get(6)?,
                village: r.get(7)?,
                district: r.get(8)?,
                regency: r.get(9)?,
                province: r.get(10)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    tx.prepare_cached("DELETE FROM notify_pending WHERE route = ?1 AND group_key = ?2")?
        .execute(params![route, group_key])?;
    tx.prepare_cached(
        "INSERT INTO notify_groups (route, group_key, sent_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (route, group_key) DO UPDATE SET sent_ms = excluded.sent_ms",
    )?
    .execute(params![route, group_key, now_ms])?;
    Ok(items)
}

/// The route has now told of this flag.
pub fn told(
    tx: &Transaction<'_>,
    route: &str,
    flag_id: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO notify_told (route, flag_id, told_ms, last_ms) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (route, flag_id) DO NOTHING",
    )?
    .execute(params![route, flag_id, now_ms])?;
    Ok(())
}

/// Puts a message for a receiver in the outbox; returns its id.
pub fn enqueue(
    tx: &Transaction<'_>,
    receiver: &str,
    route: &str,
    scope: &str,
    first_event_ms: i64,
    body: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO notify_outbox (receiver, route, scope, created_ms, first_event_ms, due_ms, state, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?4, 'queued', ?6)",
    )?
    .execute(params![receiver, route, scope, now_ms, first_event_ms, body])?;
    Ok(tx.last_insert_rowid())
}

/// An outbox row as the sender reads it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub receiver: String,
    pub first_event_ms: i64,
    pub attempts: u32,
    pub maybe_sent: bool,
    pub created_ms: i64,
    pub due_ms: i64,
    pub body: String,
}

/// A receiver's waiting messages in order (due or not: they go out in order).
pub fn waiting(
    conn: &Connection,
    receiver: &str,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, receiver, first_event_ms, attempts, maybe_sent, created_ms, due_ms, body
             FROM notify_outbox WHERE receiver = ?1 AND state IN ('queued', 'sending')
             ORDER BY id LIMIT ?2",
        )?
        .query_map(params![receiver, limit as i64], |r| {
            Ok(Delivery {
                id: r.get(0)?,
                receiver: r.get(1)?,
                first_event_ms: r.get(2)?,
                attempts: r.get(3)?,
                maybe_sent: r.get(4)?,
                created_ms: r.get(5)?,
                due_ms: r.get(6)?,
                body: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?)
}

/// Before a send: durably "under way", so a crash during it is known at the next start.
pub fn sending(tx: &Transaction<'_>, id: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE notify_outbox SET state = 'sending', attempts = attempts + 1 WHERE id = ?1",
    )?
    .execute([id])?;
    Ok(())
}

pub fn sent(
    tx: &Transaction<'_>,
    id: i64,
    now_ms: i64,
    remote_id: Option<&str>,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE notify_outbox SET state = 'sent', sent_ms = ?2, remote_id = ?3, last_error = NULL WHERE id = ?1",
    )?
    .execute(params![id, now_ms, remote_id])?;
    Ok(())
}

/// A failed attempt: tried again at `due_ms`, or given up (`due_ms` `None`).
pub fn failed(
    tx: &Transaction<'_>,
    id: i64,
    due_ms: Option<i64>,
    error: &str,
) -> Result<(), StoreError> {
    match due_ms {
        Some(due) => tx
            .prepare_cached(
                "UPDATE notify_outbox SET state = 'queued', due_ms = ?2, last_error = ?3 WHERE id = ?1",
            )?
            .execute(params![id, due, error])?,
        None => tx
            .prepare_cached("UPDATE notify_outbox SET state = 'failed', last_error = ?2 WHERE id = ?1")?
            .execute(params![id, error])?,
    };
    Ok(())
}

/// At start: sends that were under way when the collector stopped are sent again,
/// marked as possibly arrived.
pub fn recover(tx: &Transaction<'_>) -> Result<usize, StoreError> {
    Ok(tx.execute(
        "UPDATE notify_outbox SET state = 'queued', maybe_sent = 1 WHERE state = 'sending'",
        [],
    )?)
}

/// Sent and failed messages older than `before_ms` are deleted (a campaign keeps weeks).
pub fn prune(tx: &Transaction<'_>, before_ms: i64) -> Result<usize, StoreError> {
    Ok(tx.execute(
        "DELETE FROM notify_outbox WHERE state IN ('sent', 'failed') AND created_ms < ?1",
        [before_ms],
    )?)
}

/// A row of `GET /api/v1/notifications`.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxView {
    pub id: i64,
    pub receiver: String,
    pub route: String,
    pub scope: String,
    pub state: String,
    pub attempts: u32,
    pub maybe_sent: bool,
    pub created_ms: i64,
    pub due_ms: i64,
    pub sent_ms: Option<i64>,
    pub last_error: Option<String>,
    pub remote_id: Option<String>,
    pub body: serde_json::Value,
}

pub fn list(
    conn: &Connection,
    receiver: Option<&str>,
    state: Option<&str>,
    limit: usize,
) -> Result<Vec<OutboxView>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, receiver, route, scope, state, attempts, maybe_sent, created_ms, due_ms,
                    sent_ms, last_error, remote_id, body
             FROM notify_outbox WHERE (?1 IS NULL OR receiver = ?1) AND (?2 IS NULL OR state = ?2)
             ORDER BY id DESC LIMIT ?3",
        )?
        .query_map(params![receiver, state, limit as i64], |r| {
            let body: String = r.get(12)?;
            Ok(OutboxView {
                id: r.get(0)?,
                receiver: r.get(1)?,
                route: r.get(2)?,
                scope: r.get(3)?,
                state: r.get(4)?,
                attempts: r.get(5)?,
                maybe_sent: r.get(6)?,
                created_ms: r.get(7)?,
                due_ms: r.get(8)?,
                sent_ms: r.get(9)?,
                last_error: r.get(10)?,
                remote_id: r.get(11)?,
                body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?)
}

/// Per receiver: messages waiting, the oldest waiting one's age start, failed ones.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Backlog {
    pub queued: u64,
    pub oldest_queued_ms: Option<i64>,
    pub failed: u64,
    pub sent: u64,
}

pub fn backlog(conn: &Connection, receiver: &str) -> Result<Backlog, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FILTER (WHERE state IN ('queued', 'sending')),
                    min(created_ms) FILTER (WHERE state IN ('queued', 'sending')),
                    count(*) FILTER (WHERE state = 'failed'),
                    count(*) FILTER (WHERE state = 'sent')
             FROM notify_outbox WHERE receiver = ?1",
        )?
        .query_row([receiver], |r| {
            Ok(Backlog {
                queued: r.get(0)?,
                oldest_queued_ms: r.get(1)?,
                failed: r.get(2)?,
                sent: r.get(3)?,
            })
        })?)
}

/// At start: forgets what routes no longer in the config had pending or told, and gives
/// up messages for receivers no longer in it; returns how many messages were given up.
pub fn forget_unconfigured(
    tx: &Transaction<'_>,
    routes: &[String],
    receivers: &[String],
) -> Result<usize, StoreError> {
    let list = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    let (routes, receivers) = (list(routes), list(receivers));
    for table in ["notify_pending", "notify_told", "notify_groups"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE route NOT IN (SELECT value FROM json_each(?1))"),
            [&routes],
        )?;
    }
    Ok(tx.execute(
        "UPDATE notify_outbox SET state = 'failed', last_error = 'the receiver is no longer configured'
         WHERE state IN ('queued', 'sending') AND receiver NOT IN (SELECT value FROM json_each(?1))",
        [&receivers],
    )?)
}

/// Open flags under `prefix` (digits) whose opening the planner has read (event id at or
/// below the cursor) and that `route` has neither told of nor holds pending: what a
/// route added to the config (or a new team) has not heard of. `(flag id, TPS, reason)`.
pub fn untold_open_flags(
    conn: &Connection,
    route: &str,
    prefix: &str,
) -> Result<Vec<(i64, String, String)>, StoreError> {
    let cursor = super::sink_cursor(conn, CURSOR)?;
    Ok(conn
        .prepare(
            "SELECT f.id, f.tps_code, f.reason FROM flags f
             WHERE f.status = 'open' AND f.tps_code >= ?1 AND f.tps_code < ?1 || ':'
               AND NOT EXISTS (SELECT 1 FROM notify_told t WHERE t.route = ?2 AND t.flag_id = f.id)
               AND NOT EXISTS (SELECT 1 FROM notify_pending p WHERE p.flag_id = f.id AND p.route = ?2)
               AND EXISTS (SELECT 1 FROM flag_events e
                           WHERE e.flag_id = f.id AND e.action = 'opened' AND e.id <= ?3)",
        )?
        .query_map(params![prefix, route, cursor], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?)
}
