//! Coverage: every registered station classified as covered, degraded, offline or
//! no_agent, always current. A pure state machine: pushes and the clock go in,
//! transitions come out; the caller stores them.
//!
//! Rules (configurable, see [`Rules`]): an agent is *fresh* while its last push is
//! within the freshness window; its link is *degraded* after `streak` bad rounds in a row
//! on its primary target (loss or average RTT over the limits; rounds older than the
//! window do not count) and covered again after `streak` good ones (hysteresis). A
//! station takes the best state of its agents; one that never heard from an agent is
//! `no_agent`. Silence is found by [`Coverage::tick`], not only when data arrives.
//! A fresh agent whose primary target is not being measured — it says so, or no round
//! of it was accepted for a freshness window while the agent kept pushing (all refused,
//! or never sent) — is degraded (`not_measured`), never covered: heartbeats alone do
//! not cover a station for long.

use std::collections::HashMap;

use serde::Serialize;

use crate::domain::{AgentId, Measurement, RegionLevel, Station, TpsCode};

/// Coverage state of a station.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Covered,
    Degraded,
    Offline,
    NoAgent,
}

impl State {
    pub const ALL: [State; 4] = [
        State::Covered,
        State::Degraded,
        State::Offline,
        State::NoAgent,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            State::Covered => "covered",
            State::Degraded => "degraded",
            State::Offline => "offline",
            State::NoAgent => "no_agent",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.as_str() == s)
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why an agent that came back had been silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// It kept measuring during the gap: the link was down.
    LinkDown,
    /// No measurements in the gap and the device booted again: power or device off.
    PowerOrDevice,
    /// No measurements, same boot: the agent itself was stopped.
    AgentStopped,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::LinkDown => "link_down",
            Cause::PowerOrDevice => "power_or_device",
            Cause::AgentStopped => "agent_stopped",
        }
    }
    pub fn parse(s: &str) -> Option<Cause> {
        [Cause::LinkDown, Cause::PowerOrDevice, Cause::AgentStopped]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// Why a station is where it is (shown with the state and on flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NoAgent,
    Offline,
    HighLoss,
    HighLatency,
    /// The agent is alive but its primary target is not being measured.
    NotMeasured,
    Ok,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoAgent => "no_agent",
            Reason::Offline => "offline",
            Reason::HighLoss => "high_loss",
            Reason::HighLatency => "high_latency",
            Reason::NotMeasured => "not_measured",
            Reason::Ok => "ok",
        }
    }
    pub fn parse(s: &str) -> Option<Reason> {
        [
            Reason::NoAgent,
            Reason::Offline,
            Reason::HighLoss,
            Reason::HighLatency,
            Reason::NotMeasured,
            Reason::Ok,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The thresholds in force.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rules {
    /// A push within this many milliseconds keeps an agent fresh.
    pub fresh_ms: i64,
    /// Loss (0–1) at or above which a round is bad.
    pub loss_limit: f64,
    /// Average RTT at or above which a round is bad.
    pub rtt_limit_ms: f64,
    /// The RTT limit for stations whose link type is satellite.
    pub satellite_rtt_limit_ms: f64,
    /// Only rounds this recent count towards a streak.
    pub window_ms: i64,
    /// Rounds in a row that switch between covered and degraded.
    pub streak: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            // 3 push intervals of 60 s, capped at 5 minutes.
            fresh_ms: 180_000,
            loss_limit: 0.10,
            rtt_limit_ms: 500.0,
            satellite_rtt_limit_ms: 1500.0,
            window_ms: 15 * 60_000,
            streak: 3,
        }
    }
}

/// Per-station adjustments made by an admin.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Override {
    /// `satellite` raises the RTT limit.
    pub link_type: Option<String>,
    /// A station exempt from follow-up, and why.
    pub exempt_reason: Option<String>,
}

#[derive(Debug, Clone)]
struct AgentCov {
    station: u32,
    last_seen_ms: Option<i64>,
    boot_time_ms: Option<i64>,
    /// Hysteresis state of the link.
    degraded: bool,
    /// Which limit the last bad rounds broke.
    bad_reason: Reason,
    bad_streak: u32,
    good_streak: u32,
    last_round_ms: i64,
    /// Cause of the last outage, once it is known.
    cause: Option<Cause>,
    revoked: bool,
    /// When a push last brought a round of the primary target (collector clock), or
    /// when the agent came back from silence if later: rounds have a freshness window
    /// from then to arrive.
    last_primary_ms: Option<i64>,
    /// The agent says its primary target cannot be measured.
    primary_problem: bool,
}

impl AgentCov {
    /// Whether the primary target goes unmeasured: the agent says so, or no round of it
    /// arrived for a freshness window.
    fn not_measured(&self, now_ms: i64, rules: &Rules) -> bool {
        self.primary_problem
            || self
                .last_primary_ms
                .is_none_or(|t| now_ms - t > rules.fresh_ms)
    }

    fn state(&self, now_ms: i64, rules: &Rules) -> (State, Reason) {
        match self.last_seen_ms {
            None => (State::NoAgent, Reason::NoAgent),
            Some(t) if now_ms - t > rules.fresh_ms => (State::Offline, Reason::Offline),
            Some(_) if self.not_measured(now_ms, rules) => (State::Degraded, Reason::NotMeasured),
            Some(_) if self.degraded => (State::Degraded, self.bad_reason),
            Some(_) => (State::Covered, Reason::Ok),
        }
    }
}

/// A station's coverage right now.
#[derive(Debug, Clone, Serialize)]
pub struct StationCov {
    pub tps_code: TpsCode,
    pub state: State,
    pub reason: Reason,
    /// When the station entered this state (registry import for a station never heard).
    pub since_ms: i64,
    /// Cause of the last outage, once known.
    pub cause: Option<Cause>,
    #[serde(skip)]
    agents: Vec<AgentId>,
    pub overrides: Override,
}

/// A change of a station's state, to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub tps_code: TpsCode,
    pub at_ms: i64,
    pub from: State,
    pub to: State,
    pub reason: Reason,
    pub cause: Option<Cause>,
}

/// Counts per state for a set of stations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub covered: u64,
    pub degraded: u64,
    pub offline: u64,
    pub no_agent: u64,
}

impl Counts {
    fn add(&mut self, s: State, n: i64) {
        let c = match s {
            State::Covered => &mut self.covered,
            State::Degraded => &mut self.degraded,
            State::Offline => &mut self.offline,
            State::NoAgent => &mut self.no_agent,
        };
        *c = (*c as i64 + n) as u64;
    }
    pub fn total(&self) -> u64 {
        self.covered + self.degraded + self.offline + self.no_agent
    }
    pub fn uncovered(&self) -> u64 {
        self.total() - self.covered
    }
    pub fn uncovered_share(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            self.uncovered() as f64 / self.total() as f64
        }
    }
}

/// What a push tells the engine.
#[derive(Debug, Clone)]
pub struct PushFacts<'a> {
    pub agent_id: AgentId,
    pub received_ms: i64,
    pub boot_time_ms: i64,
    /// The rounds of the agent's primary target in this push, oldest first.
    pub rounds: &'a [Measurement],
    /// Start of the newest measurement of any target in this push.
    pub newest_start_ms: Option<i64>,
    /// The agent says its primary target cannot be measured.
    pub primary_problem: bool,
}

impl PushFacts<'_> {
    /// The rounds of `primary` among `all` (the first target's when `primary` is empty).
    pub fn primary_rounds(all: &[Measurement], primary: &str) -> Vec<Measurement> {
        let name = if primary.is_empty() {
            all.first().map(|m| m.target_name.as_str()).unwrap_or("")
        } else {
            primary
        };
        all.iter()
            .filter(|m| m.target_name == name)
            .cloned()
            .collect()
    }
}

/// The engine: every station and agent, and counts kept per region as states change.
#[derive(Debug)]
pub struct Coverage {
    pub rules: Rules,
    stations: Vec<StationCov>,
    index: HashMap<TpsCode, u32>,
    agents: HashMap<AgentId, AgentCov>,
    /// Counts per region code (`21`, `21.71`, `21.71.01`) and for everything (`""`).
    counts: HashMap<String, Counts>,
    /// Stations whose row changed, for the next snapshot.
    changed: Vec<u32>,
}

/// A boot time this close to the last one is the same boot (uptime has 1 s resolution).
const SAME_BOOT_MS: i64 = 5_000;

impl Coverage {
    /// All stations start as `no_agent` since `registered_ms`.
    pub fn new(rules: Rules, stations: &[Station], registered_ms: i64) -> Coverage {
        let mut c = Coverage {
            rules,
            stations: Vec::with_capacity(stations.len()),
            index: HashMap::with_capacity(stations.len()),
            agents: HashMap::new(),
            counts: HashMap::new(),
            changed: Vec::new(),
        };
        for st in stations {
            c.add_station(st, registered_ms);
        }
        c
    }

    /// Adds stations not known yet (a registry re-import while running); returns how many.
    pub fn add_new_stations(&mut self, stations: &[Station], since_ms: i64) -> usize {
        let before = self.stations.len();
        for st in stations {
            if !self.index.contains_key(&st.tps_code) {
                self.add_station(st, since_ms);
            }
        }
        self.stations.len() - before
    }

    pub fn station_count(&self) -> usize {
        self.stations.len()
    }

    fn add_station(&mut self, st: &Station, since_ms: i64) {
        let i = self.stations.len() as u32;
        self.index.insert(st.tps_code, i);
        let sc = StationCov {
            tps_code: st.tps_code,
            state: State::NoAgent,
            reason: Reason::NoAgent,
            since_ms,
            cause: None,
            agents: Vec::new(),
            overrides: Override::default(),
        };
        self.count(&sc, State::NoAgent, 1);
        self.stations.push(sc);
        self.changed.push(i);
    }

    fn count(&mut self, sc: &StationCov, s: State, n: i64) {
        let province = sc.tps_code.region(RegionLevel::Province);
        for key in [
            String::new(),
            province,
            sc.tps_code.region(RegionLevel::Regency),
            sc.tps_code.region(RegionLevel::District),
        ] {
            self.counts.entry(key).or_default().add(s, n);
        }
    }

    /// Restores a state from history (at start), without emitting a transition.
    pub fn restore(&mut self, tps: &TpsCode, state: State, since_ms: i64, cause: Option<Cause>) {
        let Some(&i) = self.index.get(tps) else {
            return;
        };
        let old = self.stations[i as usize].state;
        let sc = self.stations[i as usize].clone();
        self.count(&sc, old, -1);
        self.count(&sc, state, 1);
        self.changed.push(i);
        let s = &mut self.stations[i as usize];
        s.state = state;
        s.since_ms = since_ms;
        s.cause = cause;
        s.reason = match state {
            State::Covered => Reason::Ok,
            State::Degraded => Reason::HighLoss,
            State::Offline => Reason::Offline,
            State::NoAgent => Reason::NoAgent,
        };
    }

    /// Adds an agent of a station (at start or on enrollment).
    pub fn add_agent(
        &mut self,
        agent_id: AgentId,
        tps: &TpsCode,
        last_seen_ms: Option<i64>,
        boot_time_ms: Option<i64>,
        revoked: bool,
    ) {
        let Some(&i) = self.index.get(tps) else {
            return;
        };
        // A restored station in `degraded` keeps its agents' link degraded until rounds say otherwise.
        let degraded = self.stations[i as usize].state == State::Degraded;
        self.agents.insert(
            agent_id,
            AgentCov {
                station: i,
                last_seen_ms,
                boot_time_ms,
                degraded,
                bad_reason: Reason::HighLoss,
                bad_streak: 0,
                good_streak: 0,
                last_round_ms: 0,
                cause: None,
                revoked,
                // Restored at start: taken as measured until the freshness window says
                // otherwise, so a restart does not flip covered stations.
                last_primary_ms: last_seen_ms,
                primary_problem: false,
            },
        );
        if !self.stations[i as usize].agents.contains(&agent_id) {
            self.stations[i as usize].agents.push(agent_id);
        }
    }

    /// A revoked agent no longer covers its station.
    pub fn revoke(&mut self, agent_id: AgentId, now_ms: i64) -> Option<Transition> {
        let a = self.agents.get_mut(&agent_id)?;
        a.revoked = true;
        let st = a.station;
        self.evaluate(st, now_ms, None)
    }

    pub fn set_override(&mut self, tps: &TpsCode, o: Override) -> bool {
        match self.index.get(tps) {
            Some(&i) => {
                self.stations[i as usize].overrides = o;
                self.changed.push(i);
                true
            }
            None => false,
        }
    }

    /// Applies a committed push; returns the station's transition, if any.
    pub fn on_push(&mut self, p: &PushFacts<'_>) -> Option<Transition> {
        let rules = self.rules;
        let a = self.agents.get(&p.agent_id)?;
        let station = a.station;
        let rtt_limit = if self.stations[station as usize]
            .overrides
            .link_type
            .as_deref()
            == Some("satellite")
        {
            rules.satellite_rtt_limit_ms
        } else {
            rules.rtt_limit_ms
        };
        let a = self.agents.get_mut(&p.agent_id)?;
        // Back from silence: why was it silent?
        let was_offline = a
            .last_seen_ms
            .is_some_and(|t| p.received_ms - t > rules.fresh_ms);
        if was_offline {
            let gap_start = a.last_seen_ms.unwrap_or(0);
            let measured_in_gap = p.newest_start_ms.is_some_and(|t| t > gap_start + 1000);
            let rebooted = a
                .boot_time_ms
                .is_some_and(|b| (b - p.boot_time_ms).abs() > SAME_BOOT_MS);
            a.cause = Some(if measured_in_gap {
                Cause::LinkDown
            } else if rebooted {
                Cause::PowerOrDevice
            } else {
                Cause::AgentStopped
            });
        }
        // Rounds of the primary target, oldest first, drive the hysteresis.
        for m in p.rounds {
            if m.start_ms <= a.last_round_ms || m.start_ms < p.received_ms - rules.window_ms {
                continue;
            }
            a.last_round_ms = m.start_ms;
            let loss_bad = m.sent == 0 || m.loss() >= rules.loss_limit;
            let rtt_bad = m.rtt.is_some_and(|r| r.avg_ms >= rtt_limit);
            if loss_bad || rtt_bad {
                a.bad_streak += 1;
                a.good_streak = 0;
                a.bad_reason = if loss_bad {
                    Reason::HighLoss
                } else {
                    Reason::HighLatency
                };
                if a.bad_streak >= rules.streak {
                    a.degraded = true;
                }
            } else {
                a.good_streak += 1;
                a.bad_streak = 0;
                if a.good_streak >= rules.streak {
                    a.degraded = false;
                }
            }
        }
        a.last_seen_ms = Some(p.received_ms);
        a.boot_time_ms = Some(p.boot_time_ms);
        a.primary_problem = p.primary_problem;
        if !p.rounds.is_empty() || was_offline || a.last_primary_ms.is_none() {
            a.last_primary_ms = Some(p.received_ms);
        }
        let cause = if was_offline { a.cause } else { None };
        self.evaluate(station, p.received_ms, cause)
    }

    /// Re-evaluates every station with an agent against the clock: silence is a signal.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        for i in 0..self.stations.len() {
            if self.stations[i].agents.is_empty() {
                continue;
            }
            if let Some(t) = self.evaluate(i as u32, now_ms, None) {
                out.push(t);
            }
        }
        out
    }

    fn evaluate(&mut self, i: u32, now_ms: i64, cause: Option<Cause>) -> Option<Transition> {
        let rules = self.rules;
        let sc = &self.stations[i as usize];
        let mut best = State::NoAgent;
        let mut reason = Reason::NoAgent;
        for id in &sc.agents {
            let Some(a) = self.agents.get(id) else {
                continue;
            };
            if a.revoked {
                continue;
            }
            let (s, why) = a.state(now_ms, &rules);
            if s < best {
                best = s;
                reason = why;
            }
        }
        // A station whose agents all went silent stays offline, not no_agent.
        if best == State::NoAgent
            && sc.agents.iter().any(|id| {
                self.agents
                    .get(id)
                    .is_some_and(|a| a.last_seen_ms.is_some())
            })
        {
            best = State::Offline;
            reason = Reason::Offline;
        }
        let from = sc.state;
        if best == from {
            let s = &mut self.stations[i as usize];
            if s.reason != reason || (cause.is_some() && s.cause != cause) {
                s.reason = reason;
                if cause.is_some() {
                    s.cause = cause;
                }
                self.changed.push(i);
            }
            return None;
        }
        let snapshot = sc.clone();
        self.count(&snapshot, from, -1);
        self.count(&snapshot, best, 1);
        // Leaving offline carries the outage's cause; entering offline clears the old one.
        let cause = if from == State::Offline {
            cause.or(snapshot.cause)
        } else {
            None
        };
        self.changed.push(i);
        let s = &mut self.stations[i as usize];
        s.state = best;
        s.reason = reason;
        s.since_ms = now_ms;
        s.cause = cause.or(if best == State::Offline {
            None
        } else {
            s.cause
        });
        Some(Transition {
            tps_code: s.tps_code,
            at_ms: now_ms,
            from,
            to: best,
            reason,
            cause,
        })
    }

    pub fn station(&self, tps: &TpsCode) -> Option<&StationCov> {
        self.index.get(tps).map(|&i| &self.stations[i as usize])
    }

    pub fn stations(&self) -> &[StationCov] {
        &self.stations
    }

    /// Counts for a region code prefix (`""` for everything).
    pub fn counts(&self, region: &str) -> Counts {
        self.counts.get(region).copied().unwrap_or_default()
    }

    /// Counts of every region at one level, optionally under a parent.
    pub fn region_counts(&self, level: RegionLevel, parent: Option<&str>) -> Vec<(String, Counts)> {
        regions_at(&self.counts, level, parent)
    }

    /// The wall clock stepped by `by_ms`: times kept on the old clock move with it, so
    /// no agent looks silent (or fresh) because of the jump, and grace periods keep
    /// their length.
    pub fn rebase(&mut self, by_ms: i64) {
        for a in self.agents.values_mut() {
            for v in [&mut a.last_seen_ms, &mut a.last_primary_ms]
                .into_iter()
                .flatten()
            {
                *v += by_ms;
            }
        }
        for (i, s) in self.stations.iter_mut().enumerate() {
            s.since_ms += by_ms;
            self.changed.push(i as u32);
        }
    }

    /// Counts per region code (`""` for everything).
    pub fn all_counts(&self) -> &HashMap<String, Counts> {
        &self.counts
    }

    /// Positions of stations whose row changed since the last call.
    pub fn take_changed(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.changed)
    }

    /// The collector itself was away (stopped, stalled, its clock stepped) for `gap_ms`
    /// from `from_ms`: silence in that time is not the stations'. Agents heard before it
    /// get the gap added to their last contact (never past `now_ms`), so they keep the
    /// freshness they had when the collector stopped looking.
    pub fn discount(&mut self, from_ms: i64, gap_ms: i64, now_ms: i64) {
        for a in self.agents.values_mut() {
            let shift = |t: &mut Option<i64>| {
                if let Some(v) = t
                    && *v <= from_ms
                {
                    *v = (*v + gap_ms).min(now_ms);
                }
            };
            shift(&mut a.last_seen_ms);
            shift(&mut a.last_primary_ms);
        }
    }
}

/// Counts of every region at one level, optionally under a parent, by code.
pub fn regions_at(
    counts: &HashMap<String, Counts>,
    level: RegionLevel,
    parent: Option<&str>,
) -> Vec<(String, Counts)> {
    let dots = match level {
        RegionLevel::Province => 0,
        RegionLevel::Regency => 1,
        RegionLevel::District => 2,
    };
    let mut v: Vec<(String, Counts)> = counts
        .iter()
        .filter(|(k, _)| !k.is_empty() && k.matches('.').count() == dots)
        .filter(|(k, _)| parent.is_none_or(|p| k.starts_with(&format!("{p}."))))
        .map(|(k, c)| (k.clone(), *c))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{Method, Rtt};

    const MIN: i64 = 60_000;
    const T0: i64 = 1_790_000_000_000;

    /// A station of village 21.71.01.1002 (also used by the follow-up tests).
    pub(crate) fn station(code: &str) -> Station {
        Station {
            tps_code: code.parse().unwrap(),
            village_code: "21.71.01.1002".into(),
            village: "v".into(),
            district: "d".into(),
            regency: "r".into(),
            province: "p".into(),
            lat: None,
            lon: None,
            voters: 100,
        }
    }

    fn round(t: i64, target: &str, received: u32, avg: f64) -> Measurement {
        Measurement {
            seq: 0,
            start_ms: t,
            target_name: target.into(),
            target_address: "192.0.2.1".into(),
            method: Method::Icmp,
            sent: 5,
            received,
            errors: 0,
            rtt: (received > 0).then_some(Rtt {
                min_ms: avg,
                avg_ms: avg,
                max_ms: avg,
                jitter_ms: None,
            }),
        }
    }

    struct Sim {
        c: Coverage,
        tps: TpsCode,
        log: Vec<(i64, State, Option<Cause>)>,
    }

    impl Sim {
        fn new() -> Sim {
            let st = station("2171011002001");
            let mut c = Coverage::new(
                Rules::default(),
                &[st.clone(), station("2171011002002")],
                T0,
            );
            c.add_agent(1, &st.tps_code, None, None, false);
            Sim {
                c,
                tps: st.tps_code,
                log: Vec::new(),
            }
        }
        fn push(&mut self, agent: AgentId, at: i64, boot: i64, ms: &[Measurement]) {
            let rounds = PushFacts::primary_rounds(ms, "gw");
            let p = PushFacts {
                agent_id: agent,
                received_ms: at,
                boot_time_ms: boot,
                rounds: &rounds,
                newest_start_ms: ms.iter().map(|m| m.start_ms).max(),
                primary_problem: false,
            };
            if let Some(t) = self.c.on_push(&p) {
                self.log.push((t.at_ms, t.to, t.cause));
            }
        }
        fn tick(&mut self, at: i64) {
            for t in self.c.tick(at) {
                self.log.push((t.at_ms, t.to, t.cause));
            }
        }
        fn state(&self) -> State {
            self.c.station(&self.tps).unwrap().state
        }
    }

    #[test]
    fn first_push_covers_and_counts_follow() {
        let mut s = Sim::new();
        assert_eq!(s.c.counts("").no_agent, 2);
        s.push(
            1,
            T0 + MIN,
            T0 - 3_600_000,
            &[round(T0 + 30_000, "gw", 5, 20.0)],
        );
        assert_eq!(s.state(), State::Covered);
        assert_eq!(
            s.c.counts(""),
            Counts {
                covered: 1,
                degraded: 0,
                offline: 0,
                no_agent: 1
            }
        );
        assert_eq!(s.c.counts("21.71").covered, 1);
        assert_eq!(s.c.counts("21.71.01").uncovered(), 1);
    }

    #[test]
    fn hysteresis_needs_three_bad_then_three_good_rounds() {
        let mut s = Sim::new();
        let boot = T0 - 3_600_000;
        s.push(1, T0, boot, &[round(T0 - 1000, "gw", 5, 20.0)]);
        // Two bad rounds: still covered. A good one in between resets the streak.
        s.push(
            1,
            T0 + MIN,
            boot,
            &[
                round(T0 + 10_000, "gw", 3, 20.0),
                round(T0 + 40_000, "gw", 3, 20.0),
            ],
        );
        assert_eq!(s.state(), State::Covered);
        s.push(
            1,
            T0 + 2 * MIN,
            boot,
            &[
                round(T0 + 70_000, "gw", 5, 20.0),
                round(T0 + 100_000, "gw", 5, 600.0),
            ],
        );
        assert_eq!(s.state(), State::Covered);
        // Bad rounds on another target do not count.
        s.push(
            1,
            T0 + 3 * MIN,
            boot,
            &[
                round(T0 + 130_000, "anchor", 0, 0.0),
                round(T0 + 131_000, "gw", 5, 600.0),
            ],
        );
        assert_eq!(s.state(), State::Covered);
        s.push(
            1,
            T0 + 4 * MIN,
            boot,
            &[round(T0 + 160_000, "gw", 5, 700.0)],
        );
        assert_eq!(s.state(), State::Degraded);
        assert_eq!(s.c.station(&s.tps).unwrap().reason, Reason::HighLatency);
        // Two good rounds are not enough to recover; the third is.
        s.push(
            1,
            T0 + 5 * MIN,
            boot,
            &[
                round(T0 + 190_000, "gw", 5, 20.0),
                round(T0 + 220_000, "gw", 5, 20.0),
            ],
        );
        assert_eq!(s.state(), State::Degraded);
        s.push(1, T0 + 6 * MIN, boot, &[round(T0 + 250_000, "gw", 5, 20.0)]);
        assert_eq!(s.state(), State::Covered);
        let states: Vec<State> = s.log.iter().map(|l| l.1).collect();
        assert_eq!(
            states,
            vec![State::Covered, State::Degraded, State::Covered]
        );
        assert_eq!(
            s.log[1].0,
            T0 + 4 * MIN,
            "the transition time is when it was decided"
        );
    }

    #[test]
    fn satellite_stations_have_a_higher_rtt_limit() {
        let mut s = Sim::new();
        let tps = s.tps;
        s.c.set_override(
            &tps,
            Override {
                link_type: Some("satellite".into()),
                exempt_reason: None,
            },
        );
        let boot = T0;
        let rounds: Vec<_> = (0..4)
            .map(|i| round(T0 + i * 30_000, "gw", 5, 900.0))
            .collect();
        s.push(1, T0 + 2 * MIN, boot, &rounds);
        assert_eq!(s.state(), State::Covered);
        let rounds: Vec<_> = (4..7)
            .map(|i| round(T0 + i * 30_000, "gw", 5, 1600.0))
            .collect();
        s.push(1, T0 + 4 * MIN, boot, &rounds);
        assert_eq!(s.state(), State::Degraded);
    }

    #[test]
    fn heartbeats_without_primary_rounds_do_not_cover_a_station() {
        let boot = T0 - 3_600_000;
        let mut s = Sim::new();
        s.push(1, T0, boot, &[round(T0 - 1000, "gw", 5, 20.0)]);
        assert_eq!(s.state(), State::Covered);
        // Every push from now on has only heartbeats and another target (the primary
        // target's rounds are refused or never measured).
        for i in 1..=6 {
            s.push(
                1,
                T0 + i * MIN,
                boot,
                &[round(T0 + i * MIN - 1000, "other", 5, 20.0)],
            );
        }
        assert_eq!(s.state(), State::Degraded);
        let st = s.c.station(&s.tps).unwrap();
        assert_eq!(st.reason, Reason::NotMeasured);
        // A primary round again: covered.
        s.push(
            1,
            T0 + 7 * MIN,
            boot,
            &[round(T0 + 7 * MIN - 1000, "gw", 5, 20.0)],
        );
        assert_eq!(s.state(), State::Covered);
        // The agent says the primary target cannot be measured: degraded at once.
        let p = PushFacts {
            agent_id: 1,
            received_ms: T0 + 8 * MIN,
            boot_time_ms: boot,
            rounds: &[],
            newest_start_ms: None,
            primary_problem: true,
        };
        s.c.on_push(&p);
        assert_eq!(s.state(), State::Degraded);
        assert_eq!(s.c.station(&s.tps).unwrap().reason, Reason::NotMeasured);
    }

    #[test]
    fn silence_is_found_by_the_clock_and_causes_are_told_apart() {
        let boot = T0 - 3_600_000;
        // link_down: measurements taken during the gap arrive with the return.
        let mut s = Sim::new();
        s.push(1, T0, boot, &[round(T0 - 1000, "gw", 5, 20.0)]);
        s.tick(T0 + 3 * MIN);
        assert_eq!(
            s.state(),
            State::Covered,
            "exactly the freshness window is still fresh"
        );
        s.tick(T0 + 3 * MIN + 1);
        assert_eq!(s.state(), State::Offline);
        let backlog: Vec<_> = (1..20)
            .map(|i| round(T0 + i * 30_000, "gw", 0, 0.0))
            .collect();
        s.push(1, T0 + 10 * MIN, boot, &backlog);
        assert_eq!(s.log.last().unwrap().2, Some(Cause::LinkDown));

        // power_or_device: nothing measured in the gap, and a new boot time.
        let mut s = Sim::new();
        s.push(1, T0, boot, &[round(T0 - 1000, "gw", 5, 20.0)]);
        s.tick(T0 + 5 * MIN);
        s.push(1, T0 + 30 * MIN, T0 + 29 * MIN, &[]);
        assert_eq!(
            s.log.last().unwrap(),
            &(T0 + 30 * MIN, State::Covered, Some(Cause::PowerOrDevice))
        );

        // agent_stopped: nothing measured, same boot (within a second or two).
        let mut s = Sim::new();
        s.push(1, T0, boot, &[round(T0 - 1000, "gw", 5, 20.0)]);
        s.tick(T0 + 5 * MIN);
        s.push(1, T0 + 30 * MIN, boot + 1000, &[]);
        assert_eq!(
            s.log.last().unwrap(),
            &(T0 + 30 * MIN, State::Covered, Some(Cause::AgentStopped))
        );
        assert_eq!(
            s.c.station(&s.tps).unwrap().cause,
            Some(Cause::AgentStopped)
        );
    }

    #[test]
    fn any_agent_covering_the_station_is_enough() {
        let mut s = Sim::new();
        let tps = s.tps;
        s.c.add_agent(2, &tps, None, None, false);
        let boot = T0;
        s.push(1, T0, boot, &[round(T0 - 1000, "gw", 5, 20.0)]);
        s.push(2, T0, boot, &[round(T0 - 1000, "gw", 5, 20.0)]);
        // Agent 1 (the router) goes silent; the laptop keeps pushing.
        for k in 1..10 {
            s.push(
                2,
                T0 + k * MIN,
                boot,
                &[round(T0 + k * MIN - 1000, "gw", 5, 20.0)],
            );
            s.tick(T0 + k * MIN);
        }
        assert_eq!(s.state(), State::Covered);
        // Then the laptop goes too.
        s.tick(T0 + 13 * MIN);
        assert_eq!(s.state(), State::Offline);
        // A revoked agent does not cover, even when it pushes.
        s.c.revoke(2, T0 + 13 * MIN);
        s.push(
            2,
            T0 + 14 * MIN,
            boot,
            &[round(T0 + 14 * MIN - 1000, "gw", 5, 20.0)],
        );
        assert_eq!(s.state(), State::Offline);
    }

    #[test]
    fn an_enrolled_agent_that_never_reported_leaves_the_station_no_agent() {
        let mut s = Sim::new();
        s.tick(T0 + 60 * MIN);
        assert_eq!(s.state(), State::NoAgent);
        assert!(s.log.is_empty());
        assert_eq!(
            s.c.region_counts(RegionLevel::Regency, Some("21")),
            vec![(
                "21.71".to_string(),
                Counts {
                    no_agent: 2,
                    ..Counts::default()
                }
            )]
        );
    }
}
