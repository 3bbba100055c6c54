//! Keeps coverage and the follow-up queue current inside the running collector: builds
//! them from the store at start, applies every committed push, re-evaluates on a timer
//! (silence is the signal), and stores transitions and flag changes through the writer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

use crate::coverage::{Cause, Coverage, PushFacts, Rules, State, Transition};
use crate::domain::{AgentId, RegionLevel, TpsCode, now_ms};
use crate::flags::{self, FlagIndex, FlagRules};
use crate::live::Live;
use crate::store::{self, StatusChange, StoreError, writer::Writer};

/// Coverage, flags, and the names of regions, under one lock.
#[derive(Debug)]
pub struct Monitor {
    pub coverage: Coverage,
    pub flags: FlagIndex,
    pub flag_rules: FlagRules,
    /// Region code → name (`21.71` → `Kota Batam`), from the registry.
    pub region_names: HashMap<String, String>,
    /// Village name per station, for search.
    pub villages: HashMap<TpsCode, String>,
}

/// Shared handle.
#[derive(Debug, Clone)]
pub struct Shared(Arc<Mutex<Monitor>>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Monitor> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn change(t: &Transition) -> StatusChange {
    StatusChange {
        id: 0,
        tps_code: t.tps_code.to_string(),
        at_ms: t.at_ms,
        state: t.to.as_str().into(),
        previous: Some(t.from.as_str().into()),
        reason: Some(t.reason.as_str().into()),
        cause: t.cause.map(|c| c.as_str().into()),
    }
}

/// Builds the monitor from the store: registry, last state of every station, agents
/// (from the live view), overrides and flags.
pub fn load(
    conn: &Connection,
    live: &Live,
    rules: Rules,
    flag_rules: FlagRules,
) -> Result<Shared, StoreError> {
    let started = now_ms();
    let stations = store::load_stations(conn)?;
    let mut region_names = HashMap::new();
    let mut villages = HashMap::with_capacity(stations.len());
    for st in &stations {
        region_names
            .entry(st.tps_code.region(RegionLevel::Province))
            .or_insert_with(|| st.province.clone());
        region_names
            .entry(st.tps_code.region(RegionLevel::Regency))
            .or_insert_with(|| st.regency.clone());
        region_names
            .entry(st.tps_code.region(RegionLevel::District))
            .or_insert_with(|| st.district.clone());
        villages.insert(st.tps_code, st.village.clone());
    }
    let mut coverage = Coverage::new(rules, &stations, started);
    drop(stations);
    for c in store::last_status_changes(conn)? {
        if let (Ok(tps), Some(state)) = (c.tps_code.parse::<TpsCode>(), State::parse(&c.state)) {
            coverage.restore(
                &tps,
                state,
                c.at_ms,
                c.cause.as_deref().and_then(Cause::parse),
            );
        }
    }
    for (code, o) in store::load_overrides(conn)? {
        if let Ok(tps) = code.parse::<TpsCode>() {
            coverage.set_override(&tps, o);
        }
    }
    for a in live.all_agents() {
        // The collector itself was away: give agents of stations that were not already
        // uncovered one freshness window from now, instead of judging its own downtime.
        let was_fine = coverage
            .station(&a.tps_code)
            .is_some_and(|s| matches!(s.state, State::Covered | State::Degraded));
        let last_seen = a
            .last_seen_ms
            .map(|t| if was_fine { t.max(started) } else { t });
        let boot = a.status.as_ref().map(|s| s.boot_time_ms);
        coverage.add_agent(a.agent_id, &a.tps_code, last_seen, boot, a.revoked);
    }
    let index = flags::load_index(conn)?;
    Ok(Shared(Arc::new(Mutex::new(Monitor {
        coverage,
        flags: index,
        flag_rules,
        region_names,
        villages,
    }))))
}

impl Shared {
    /// Applies a committed push; stores the station's transition if it changed.
    pub async fn on_push(&self, writer: &Writer, facts: &PushFacts<'_>) {
        let t = self.lock().coverage.on_push(facts);
        if let Some(t) = t {
            store_transitions(writer, vec![t]).await;
        }
    }

    /// Stations added to the registry while running (they start as `no_agent`).
    pub fn add_stations(&self, stations: &[crate::domain::Station], now: i64) -> usize {
        let mut m = self.lock();
        for st in stations {
            for level in [
                RegionLevel::Province,
                RegionLevel::Regency,
                RegionLevel::District,
            ] {
                let name = match level {
                    RegionLevel::Province => &st.province,
                    RegionLevel::Regency => &st.regency,
                    RegionLevel::District => &st.district,
                };
                m.region_names
                    .entry(st.tps_code.region(level))
                    .or_insert_with(|| name.clone());
            }
            m.villages
                .entry(st.tps_code)
                .or_insert_with(|| st.village.clone());
        }
        m.coverage.add_new_stations(stations, now)
    }

    /// A newly enrolled agent.
    pub fn add_agent(&self, agent_id: AgentId, tps: &TpsCode) {
        self.lock()
            .coverage
            .add_agent(agent_id, tps, None, None, false);
    }

    /// Agents revoked (picked up from the store).
    pub async fn revoke(&self, writer: &Writer, ids: &[AgentId]) {
        let now = now_ms();
        let ts: Vec<Transition> = {
            let mut m = self.lock();
            ids.iter()
                .filter_map(|id| m.coverage.revoke(*id, now))
                .collect()
        };
        store_transitions(writer, ts).await;
    }

    /// One timer round: staleness, then flags. Returns (transitions, flag actions).
    pub async fn tick(&self, writer: &Writer, now: i64) -> (usize, usize) {
        let (transitions, actions) = {
            let mut m = self.lock();
            let ts = m.coverage.tick(now);
            let actions = flags::plan(&m.flags, &m.coverage, &m.flag_rules, now);
            (ts, actions)
        };
        let (nt, na) = (transitions.len(), actions.len());
        store_transitions(writer, transitions).await;
        // Large first openings (a whole registry with no agents) go in slices, so pushes
        // are never held behind one huge transaction.
        for chunk in actions.chunks(10_000) {
            let chunk = chunk.to_vec();
            match writer.exec(move |tx| flags::apply(tx, &chunk, now)).await {
                Ok(briefs) => {
                    let mut m = self.lock();
                    for (tps, b) in briefs {
                        m.flags.by_station.insert(tps, b);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot store flag changes; retried next round")
                }
            }
        }
        (nt, na)
    }
}

/// Stores transitions in one go through the writer.
pub async fn store_transitions(writer: &Writer, ts: Vec<Transition>) {
    if ts.is_empty() {
        return;
    }
    let n = ts.len();
    let r = writer
        .exec(move |tx| {
            for t in &ts {
                store::insert_status_change(tx, &change(t))?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = r {
        // The state itself is in memory and is re-derived from the store at start.
        tracing::error!(error = %e, transitions = n, "cannot store status transitions");
    }
}

/// Runs the timer until dropped.
pub async fn run_timer(shared: Shared, writer: Writer, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let (t, a) = shared.tick(&writer, now_ms()).await;
        if t + a > 0 {
            tracing::debug!(transitions = t, flag_changes = a, "coverage re-evaluated");
        }
    }
}
