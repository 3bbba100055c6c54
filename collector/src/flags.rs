//! The follow-up queue: a flag for every station uncovered longer than the grace period,
//! worked by operators (acknowledge, assign, note, resolve) and closed by the system once
//! the station has been covered for the recovery period. Every change is an event with
//! who and when: the audit trail.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::coverage::{Cause, Coverage, Reason, State};
use crate::domain::TpsCode;
use crate::store::StoreError;

/// Where a flag is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagStatus {
    Open,
    Acknowledged,
    /// A person resolved it, with a resolution text.
    Resolved,
    /// The station recovered and stayed covered for the recovery period.
    Closed,
}

impl FlagStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagStatus::Open => "open",
            FlagStatus::Acknowledged => "acknowledged",
            FlagStatus::Resolved => "resolved",
            FlagStatus::Closed => "closed",
        }
    }
    pub fn parse(s: &str) -> Option<FlagStatus> {
        [
            FlagStatus::Open,
            FlagStatus::Acknowledged,
            FlagStatus::Resolved,
            FlagStatus::Closed,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
    pub fn active(self) -> bool {
        matches!(self, FlagStatus::Open | FlagStatus::Acknowledged)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FlagRules {
    /// Uncovered this long before a flag opens.
    pub grace_ms: i64,
    /// Covered this long before an active flag closes itself.
    pub recovery_ms: i64,
}

impl Default for FlagRules {
    fn default() -> Self {
        FlagRules {
            grace_ms: 10 * 60_000,
            recovery_ms: 30 * 60_000,
        }
    }
}

/// A flag as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Flag {
    pub id: i64,
    pub tps_code: String,
    pub reason: String,
    pub cause: Option<String>,
    /// When the station became uncovered.
    pub since_ms: i64,
    pub opened_ms: i64,
    pub status: FlagStatus,
    pub assignee: Option<String>,
    pub resolution: Option<String>,
    pub ended_ms: Option<i64>,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlagEvent {
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub detail: Option<String>,
}

/// What the engine keeps in memory of a station's newest flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Brief {
    pub id: i64,
    pub status: FlagStatus,
    pub ended_ms: Option<i64>,
    /// Reason and cause as stored, so only real changes are written.
    pub reason: Reason,
    pub cause: Option<Cause>,
}

/// The newest flag of every station that has one.
#[derive(Debug, Default)]
pub struct FlagIndex {
    pub by_station: HashMap<TpsCode, Brief>,
}

/// A change the clock asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Open {
        tps: TpsCode,
        reason: Reason,
        cause: Option<Cause>,
        since_ms: i64,
    },
    Close {
        tps: TpsCode,
        brief: Brief,
    },
    Update {
        tps: TpsCode,
        brief: Brief,
        reason: Reason,
        cause: Option<Cause>,
    },
}

/// Decides which flags to open, update and close, given coverage now.
pub fn plan(index: &FlagIndex, coverage: &Coverage, rules: &FlagRules, now_ms: i64) -> Vec<Action> {
    let mut out = Vec::new();
    for st in coverage.stations() {
        let brief = index.by_station.get(&st.tps_code);
        let uncovered = st.state != State::Covered;
        match brief {
            Some(b) if b.status.active() => {
                if !uncovered && now_ms - st.since_ms >= rules.recovery_ms {
                    out.push(Action::Close {
                        tps: st.tps_code,
                        brief: *b,
                    });
                } else if uncovered
                    && (b.reason != st.reason || (st.cause.is_some() && b.cause != st.cause))
                {
                    out.push(Action::Update {
                        tps: st.tps_code,
                        brief: *b,
                        reason: st.reason,
                        cause: st.cause,
                    });
                } else if !uncovered && st.cause.is_some() && b.cause != st.cause {
                    // Back, and now the outage's cause is known: keep it on the flag.
                    out.push(Action::Update {
                        tps: st.tps_code,
                        brief: *b,
                        reason: b.reason,
                        cause: st.cause,
                    });
                }
            }
            _ => {
                let exempt = st.overrides.exempt_reason.is_some();
                // A flag that ended after this state began already covered this episode.
                let handled = brief.is_some_and(|b| b.ended_ms.is_some_and(|e| e >= st.since_ms));
                if uncovered && !exempt && !handled && now_ms - st.since_ms >= rules.grace_ms {
                    out.push(Action::Open {
                        tps: st.tps_code,
                        reason: st.reason,
                        cause: st.cause,
                        since_ms: st.since_ms,
                    });
                }
            }
        }
    }
    out
}

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
    let wanted: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    let placeholders = (0..wanted.len())
        .map(|i| format!("?{}", i + 3))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT {FLAG_COLUMNS} FROM flags
         WHERE tps_code >= ?1 AND tps_code < ?1 || ':' AND status IN ({placeholders})
         ORDER BY CASE WHEN reason IN ('no_agent', 'offline') THEN 0 ELSE 1 END, since_ms, id
         LIMIT ?2"
    );
    let mut st = conn.prepare(&sql)?;
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(prefix), Box::new(limit as i64)];
    for w in wanted {
        args.push(Box::new(w.to_string()));
    }
    let rows = st.query_map(rusqlite::params_from_iter(args.iter()), flag_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
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

/// The newest flag of a station.
pub fn latest_of(conn: &Connection, tps: &str) -> Result<Option<Flag>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {FLAG_COLUMNS} FROM flags WHERE tps_code = ?1 ORDER BY id DESC LIMIT 1"
        ))?
        .query_row([tps], flag_from_row)
        .optional()?)
}

/// What an operator does to a flag.
#[derive(Debug, Clone)]
pub enum OperatorAction {
    Acknowledge,
    Assign(String),
    Note(String),
    Resolve(String),
}

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("no flag with id {0}")]
    NotFound(i64),
    #[error("flag {id} is {status}; only open or acknowledged flags can be {what}")]
    Conflict {
        id: i64,
        status: &'static str,
        what: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
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
    use crate::coverage::tests::station;
    use crate::coverage::{PushFacts, Rules};
    use crate::domain::{Method, Rtt};

    const MIN: i64 = 60_000;
    const T0: i64 = 1_790_000_000_000;

    fn setup() -> (Coverage, TpsCode, TpsCode) {
        let a = station("2171011002001");
        let b = station("2171011002002");
        let mut c = Coverage::new(Rules::default(), &[a.clone(), b.clone()], T0);
        c.add_agent(1, &a.tps_code, None, None, false);
        (c, a.tps_code, b.tps_code)
    }

    fn push(c: &mut Coverage, at: i64) {
        let m = crate::domain::Measurement {
            seq: 1,
            start_ms: at - 1000,
            target_name: "gw".into(),
            target_address: "x".into(),
            method: Method::Icmp,
            sent: 5,
            received: 5,
            errors: 0,
            rtt: Some(Rtt {
                min_ms: 1.0,
                avg_ms: 1.0,
                max_ms: 1.0,
                jitter_ms: None,
            }),
        };
        c.on_push(&PushFacts {
            agent_id: 1,
            received_ms: at,
            boot_time_ms: T0,
            newest_start_ms: Some(m.start_ms),
            rounds: std::slice::from_ref(&m),
            primary_problem: false,
        });
    }

    /// Applies a plan to the index as the store would.
    fn run(index: &mut FlagIndex, c: &Coverage, now: i64, next_id: &mut i64) -> Vec<Action> {
        let plan = plan(index, c, &FlagRules::default(), now);
        for a in &plan {
            match a {
                Action::Open {
                    tps, reason, cause, ..
                } => {
                    *next_id += 1;
                    let b = Brief {
                        id: *next_id,
                        status: FlagStatus::Open,
                        ended_ms: None,
                        reason: *reason,
                        cause: *cause,
                    };
                    index.by_station.insert(*tps, b);
                }
                Action::Close { tps, brief } => {
                    let b = Brief {
                        status: FlagStatus::Closed,
                        ended_ms: Some(now),
                        ..*brief
                    };
                    index.by_station.insert(*tps, b);
                }
                Action::Update {
                    tps,
                    brief,
                    reason,
                    cause,
                } => {
                    index.by_station.insert(
                        *tps,
                        Brief {
                            reason: *reason,
                            cause: *cause,
                            ..*brief
                        },
                    );
                }
            }
        }
        plan
    }

    #[test]
    fn flags_open_after_grace_close_after_recovery_and_reopen_as_new() {
        let (mut c, a, b) = setup();
        let mut index = FlagIndex::default();
        let mut id = 0;
        assert!(
            run(&mut index, &c, T0 + 9 * MIN, &mut id).is_empty(),
            "within the grace period"
        );
        let opened = run(&mut index, &c, T0 + 10 * MIN, &mut id);
        assert_eq!(
            opened.len(),
            2,
            "both stations never had an agent: {opened:?}"
        );
        assert!(matches!(
            &opened[0],
            Action::Open {
                reason: Reason::NoAgent,
                ..
            }
        ));

        // Station a gets covered; its flag closes only after 30 covered minutes.
        for k in 11..=45 {
            push(&mut c, T0 + k * MIN);
            let plan = run(&mut index, &c, T0 + k * MIN, &mut id);
            let closes = plan
                .iter()
                .filter(|x| matches!(x, Action::Close { .. }))
                .count();
            assert_eq!(closes, usize::from(k == 41), "minute {k}: {plan:?}");
            assert!(
                plan.iter().all(|x| !matches!(x, Action::Update { .. })),
                "nothing changed to write: {plan:?}"
            );
        }
        assert_eq!(index.by_station[&a].status, FlagStatus::Closed);
        assert_eq!(index.by_station[&b].status, FlagStatus::Open);

        // It drops again: a new flag after the grace period, with the new reason.
        c.tick(T0 + 49 * MIN);
        assert_eq!(c.station(&a).unwrap().state, State::Offline);
        assert!(
            run(&mut index, &c, T0 + 58 * MIN, &mut id)
                .iter()
                .all(|x| !matches!(x, Action::Open { .. }))
        );
        let plan = run(&mut index, &c, T0 + 59 * MIN, &mut id);
        assert!(
            matches!(&plan[..], [Action::Open { tps, reason: Reason::Offline, .. }, ..] if *tps == a),
            "{plan:?}"
        );
        assert_eq!(
            index.by_station[&a].id, 3,
            "a new flag, not the old one reopened"
        );
    }

    #[test]
    fn a_resolved_flag_is_not_reopened_for_the_same_episode_and_exempt_stations_are_not_flagged() {
        let (mut c, a, b) = setup();
        let mut index = FlagIndex::default();
        let mut id = 0;
        run(&mut index, &c, T0 + 10 * MIN, &mut id);
        let b1 = index.by_station[&a];
        index.by_station.insert(
            a,
            Brief {
                status: FlagStatus::Resolved,
                ended_ms: Some(T0 + 11 * MIN),
                ..b1
            },
        );
        assert!(
            run(&mut index, &c, T0 + 20 * MIN, &mut id)
                .iter()
                .all(|x| !matches!(x, Action::Open { tps, .. } if *tps == a))
        );
        c.set_override(
            &b,
            crate::coverage::Override {
                link_type: None,
                exempt_reason: Some("no signal".into()),
            },
        );
        index.by_station.remove(&b);
        assert!(run(&mut index, &c, T0 + 30 * MIN, &mut id).is_empty());
    }
}
