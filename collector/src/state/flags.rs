//! The follow-up queue: a flag for every station uncovered longer than the grace period,
//! worked by operators (acknowledge, assign, note, resolve) and closed by the system once
//! the station has been covered for the recovery period. Every change is an event with
//! who and when: the audit trail.

use std::collections::HashMap;

use serde::Serialize;

use crate::domain::TpsCode;
use crate::state::coverage::{Cause, Coverage, Reason, State};
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

impl Action {
    /// The station it is for.
    pub fn tps(&self) -> &TpsCode {
        match self {
            Action::Open { tps, .. } | Action::Close { tps, .. } | Action::Update { tps, .. } => {
                tps
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Method, Rtt};
    use crate::state::coverage::tests::station;
    use crate::state::coverage::{PushFacts, Rules};

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
            crate::state::coverage::Override {
                link_type: None,
                exempt_reason: Some("no signal".into()),
            },
        );
        index.by_station.remove(&b);
        assert!(run(&mut index, &c, T0 + 30 * MIN, &mut id).is_empty());
    }
}
