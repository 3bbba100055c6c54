//! The live view held in memory: which token belongs to which agent, and each agent's
//! last contact, status and newest measurement per target. Rebuilt from the store at
//! start; updated after every commit. Reads never touch SQLite.

use std::collections::HashMap;
use std::sync::RwLock;

use serde::Serialize;

use crate::auth::Digest32;
use crate::domain::{AgentId, AgentStatus, Measurement, TpsCode};
use crate::store::AgentRow;

/// What the collector knows about one agent right now.
#[derive(Debug, Clone, Serialize)]
pub struct AgentLive {
    pub agent_id: AgentId,
    pub tps_code: TpsCode,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub enrolled_ms: i64,
    pub revoked: bool,
    pub acked_seq: u64,
    pub last_seen_ms: Option<i64>,
    /// Server clock minus agent clock at the last push (positive: agent is behind).
    pub clock_skew_ms: Option<i64>,
    pub status: Option<AgentStatus>,
    /// Newest measurement per target name.
    pub latest: Vec<Measurement>,
}

#[derive(Debug, Default)]
struct Inner {
    agents: HashMap<AgentId, AgentLive>,
    by_token: HashMap<Digest32, AgentId>,
    by_station: HashMap<TpsCode, Vec<AgentId>>,
}

/// Shared live state; cheap reads under a read lock.
#[derive(Debug, Default)]
pub struct Live {
    inner: RwLock<Inner>,
}

/// What a committed push tells about its agent.
#[derive(Debug, Clone)]
pub struct Seen {
    pub agent_id: AgentId,
    pub received_ms: i64,
    pub clock_skew_ms: i64,
    pub acked_seq: u64,
    pub status: AgentStatus,
}

/// The agent a token authenticates, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    Valid {
        agent_id: AgentId,
        tps_code: TpsCode,
    },
    Revoked,
    Unknown,
}

impl Live {
    /// Builds the live view from stored agents and their newest measurements.
    pub fn load(agents: Vec<AgentRow>, latest: Vec<(AgentId, Measurement)>) -> Live {
        let mut inner = Inner::default();
        for a in agents {
            inner.by_token.insert(a.token_hash, a.agent_id);
            inner
                .by_station
                .entry(a.tps_code)
                .or_default()
                .push(a.agent_id);
            inner.agents.insert(
                a.agent_id,
                AgentLive {
                    agent_id: a.agent_id,
                    tps_code: a.tps_code,
                    hostname: a.hostname,
                    os: a.os,
                    agent_version: a.agent_version,
                    enrolled_ms: a.enrolled_ms,
                    revoked: a.revoked_ms.is_some(),
                    acked_seq: a.acked_seq,
                    last_seen_ms: a.last_seen_ms,
                    clock_skew_ms: a.clock_skew_ms,
                    status: a.status,
                    latest: Vec::new(),
                },
            );
        }
        for (id, m) in latest {
            if let Some(a) = inner.agents.get_mut(&id) {
                a.latest.push(m);
            }
        }
        for a in inner.agents.values_mut() {
            a.latest.sort_by(|x, y| x.target_name.cmp(&y.target_name));
        }
        Live {
            inner: RwLock::new(inner),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn check_token(&self, hash: &Digest32) -> TokenCheck {
        let inner = self.read();
        match inner.by_token.get(hash).and_then(|id| inner.agents.get(id)) {
            Some(a) if a.revoked => TokenCheck::Revoked,
            Some(a) => TokenCheck::Valid {
                agent_id: a.agent_id,
                tps_code: a.tps_code,
            },
            None => TokenCheck::Unknown,
        }
    }

    /// Records a newly enrolled agent.
    pub fn add_agent(&self, agent: AgentLive, token_hash: Digest32) {
        let mut inner = self.write();
        inner.by_token.insert(token_hash, agent.agent_id);
        inner
            .by_station
            .entry(agent.tps_code)
            .or_default()
            .push(agent.agent_id);
        inner.agents.insert(agent.agent_id, agent);
    }

    /// Marks agents revoked; returns how many were not revoked before.
    pub fn revoke(&self, ids: &[AgentId]) -> usize {
        let mut inner = self.write();
        let mut n = 0;
        for id in ids {
            if let Some(a) = inner.agents.get_mut(id)
                && !a.revoked
            {
                a.revoked = true;
                n += 1;
            }
        }
        n
    }

    /// Applies a committed push: its status and the newest measurement per target.
    /// Returns by how much the agent's drop counts grew since its last status, by reason.
    pub fn apply(&self, seen: &Seen, newest: Vec<Measurement>) -> Vec<(String, u64)> {
        let mut inner = self.write();
        let Some(a) = inner.agents.get_mut(&seen.agent_id) else {
            return Vec::new();
        };
        let grown = seen
            .status
            .dropped_by_reason
            .iter()
            .filter_map(|(reason, n)| {
                let before = a
                    .status
                    .as_ref()
                    .and_then(|s| s.dropped_by_reason.get(reason))
                    .copied()
                    .unwrap_or(0);
                (*n > before).then(|| (reason.clone(), n - before))
            })
            .collect();
        a.acked_seq = a.acked_seq.max(seen.acked_seq);
        a.last_seen_ms = Some(seen.received_ms);
        a.clock_skew_ms = Some(seen.clock_skew_ms);
        a.status = Some(seen.status.clone());
        for m in newest {
            match a.latest.iter_mut().find(|l| l.target_name == m.target_name) {
                Some(l) if l.start_ms <= m.start_ms => *l = m,
                Some(_) => {}
                None => {
                    a.latest.push(m);
                    a.latest.sort_by(|x, y| x.target_name.cmp(&y.target_name));
                }
            }
        }
        grown
    }

    /// Every agent of a station, revoked ones included, oldest first.
    pub fn agents_of(&self, code: &TpsCode) -> Vec<AgentLive> {
        let inner = self.read();
        inner
            .by_station
            .get(code)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| inner.agents.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every agent (revoked ones too), for building other views at start.
    pub fn all_agents(&self) -> Vec<AgentLive> {
        self.read().agents.values().cloned().collect()
    }

    pub fn agent(&self, id: AgentId) -> Option<AgentLive> {
        self.read().agents.get(&id).cloned()
    }

    /// Agents enrolled and not revoked.
    pub fn active_agents(&self) -> usize {
        self.read().agents.values().filter(|a| !a.revoked).count()
    }
}
