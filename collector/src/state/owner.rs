//! The one task that owns coverage and the follow-up queue: it is built from the store
//! at start, consumes committed facts and the clock, hands every transition and flag
//! change to the persister (which retries until stored), and publishes snapshots.
//! It never waits for the store, so a slow disk cannot stall it, and nothing waits for it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, watch};

use crate::domain::{RegionLevel, TpsCode, now_ms};
use crate::metrics::Metrics;
use crate::state::coverage::{Cause, Coverage, PushFacts, Rules, State, Transition};
use crate::state::facts::Fact;
use crate::state::flags::{self, Action, Brief, FlagIndex, FlagRules};
use crate::state::live::Live;
use crate::state::persist::Persist;
use crate::state::snapshot::{CHUNK, Registry, Snapshot};
use crate::store::space::Space;
use crate::store::{self, StoreError};

/// A loop that wakes this much later than it should have means the collector itself was
/// away (stopped, starved, suspended).
const STALL_SLACK: Duration = Duration::from_secs(10);
/// The wall clock moving this much against the monotonic clock is a step.
const STEP_LIMIT_MS: i64 = 10_000;
/// Longest wait between snapshots while changes are pending.
const MAX_PUBLISH_DELAY: Duration = Duration::from_secs(1);
/// Facts applied in one go before the loop looks at the clock again.
const FACTS_PER_TURN: usize = 4096;

/// The collector's own time for coverage: the wall clock at start, advanced by the
/// monotonic clock, so a wall-clock step does not make every agent look silent. It is
/// brought back to the wall clock when a step is noticed.
#[derive(Debug)]
struct Clock {
    base_wall: i64,
    base_mono: Instant,
    last_mono: Instant,
}

/// Why the collector was not looking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Away {
    /// Nothing ran for `gap_ms` from `from_ms` (collector time).
    Stalled { from_ms: i64, gap_ms: i64 },
    /// The wall clock moved by `by_ms` against the monotonic clock.
    Stepped { by_ms: i64 },
}

impl Clock {
    fn new() -> Clock {
        let now = Instant::now();
        Clock {
            base_wall: now_ms(),
            base_mono: now,
            last_mono: now,
        }
    }

    fn now_ms(&self) -> i64 {
        self.base_wall + self.base_mono.elapsed().as_millis() as i64
    }

    /// Notices a stall longer than `limit` since the last look, or a wall-clock step.
    fn look(&mut self, limit: Duration) -> Option<Away> {
        let mono = Instant::now();
        let gap = mono.duration_since(self.last_mono);
        self.last_mono = mono;
        let ours = self.now_ms();
        let step = now_ms() - ours;
        if step.abs() > STEP_LIMIT_MS {
            // Follow the wall clock from here on, so stored times stay in wall time.
            self.base_wall += step;
            return Some(Away::Stepped { by_ms: step });
        }
        let gap_ms = gap.as_millis() as i64;
        (gap > limit).then_some(Away::Stalled {
            from_ms: ours - gap_ms,
            gap_ms,
        })
    }
}

/// The owner and what it was built from.
#[derive(Debug)]
pub struct Owner {
    coverage: Coverage,
    flags: FlagIndex,
    flag_rules: FlagRules,
    registry: Arc<Registry>,
    /// Stations with flag changes on their way to the store: not planned again until
    /// stored.
    flags_pending: HashSet<TpsCode>,
    /// Active (open or acknowledged) flags per region code (`""` for all).
    active_flags: Arc<HashMap<String, u64>>,
    snapshot: Snapshot,
    publish: watch::Sender<Arc<Snapshot>>,
    /// Chunks of stations changed since the last snapshot.
    changed: HashSet<usize>,
    registry_changed: bool,
    /// Facts applied so far.
    applied: u64,
    last_publish: Instant,
    last_build: Duration,
    clock: Clock,
    persist: mpsc::UnboundedSender<Persist>,
    metrics: Arc<Metrics>,
    /// While the store refuses pushes (its disk is below the floor), agents cannot be
    /// heard: their silence then is the collector's, not theirs.
    space: Option<Arc<Space>>,
    /// When the last tick ran, and whether pushes were refused then.
    last_tick_ms: Option<i64>,
    was_refusing: bool,
}

/// Builds the owner from the store: registry, last state of every station, agents (from
/// the live view), overrides and flags. Returns it with the receiver readers clone.
pub fn load(
    conn: &Connection,
    live: &Live,
    rules: Rules,
    flag_rules: FlagRules,
    persist: mpsc::UnboundedSender<Persist>,
    metrics: Arc<Metrics>,
) -> Result<(Owner, watch::Receiver<Arc<Snapshot>>), StoreError> {
    let clock = Clock::new();
    let started = clock.now_ms();
    let stations = store::load_stations(conn)?;
    let mut registry = Registry::default();
    registry.upsert(&stations);
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
    coverage.take_changed();
    let index = store::flags::load_index(conn)?;
    let mut active = HashMap::new();
    for (tps, b) in &index.by_station {
        if b.status.active() {
            count_flag(&mut active, tps, 1);
        }
    }
    let active_flags = Arc::new(active);
    let registry = Arc::new(registry);
    let snapshot = Snapshot::build(
        &coverage,
        flag_rules,
        registry.clone(),
        active_flags.clone(),
        started,
    );
    let (publish, rx) = watch::channel(Arc::new(snapshot.clone()));
    Ok((
        Owner {
            coverage,
            flags: index,
            flag_rules,
            registry,
            flags_pending: HashSet::new(),
            active_flags,
            snapshot,
            publish,
            changed: HashSet::new(),
            registry_changed: false,
            applied: 0,
            last_publish: Instant::now(),
            last_build: Duration::ZERO,
            clock,
            persist,
            metrics,
            space: None,
            last_tick_ms: None,
            was_refusing: false,
        },
        rx,
    ))
}

impl Owner {
    /// Judges nobody while `space` says pushes are refused.
    pub fn with_space(mut self, space: Arc<Space>) -> Owner {
        self.space = Some(space);
        self
    }

    /// Runs until `stop` resolves or every fact sender is gone.
    pub async fn run(
        mut self,
        mut facts: mpsc::Receiver<Fact>,
        every: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        let stall_limit = every + STALL_SLACK;
        let mut batch = Vec::with_capacity(FACTS_PER_TURN);
        loop {
            let publish_in = self.publish_delay();
            tokio::select! {
                biased;
                () = &mut stop => break,
                _ = tick.tick() => {
                    self.look_at_clock(stall_limit);
                    self.tick();
                }
                n = facts.recv_many(&mut batch, FACTS_PER_TURN) => {
                    if n == 0 {
                        break;
                    }
                    self.look_at_clock(stall_limit);
                    let now = self.clock.now_ms();
                    self.applied += n as u64;
                    for f in batch.drain(..) {
                        self.apply(f, now);
                    }
                }
                () = sleep_opt(publish_in) => {}
            }
            if self.publish_delay() == Some(Duration::ZERO) {
                self.publish_now();
            }
        }
        if self.publish_delay().is_some() {
            self.publish_now();
        }
    }

    /// When the next snapshot is due: `None` with nothing to show; otherwise spaced so
    /// building snapshots takes at most a fifth of the owner's time.
    fn publish_delay(&self) -> Option<Duration> {
        if self.changed.is_empty()
            && !self.registry_changed
            && self.applied == self.snapshot.applied
        {
            return None;
        }
        let spacing = (self.last_build * 4).min(MAX_PUBLISH_DELAY);
        Some(spacing.saturating_sub(self.last_publish.elapsed()))
    }

    fn look_at_clock(&mut self, limit: Duration) {
        let Some(away) = self.clock.look(limit) else {
            return;
        };
        let now = self.clock.now_ms();
        match away {
            Away::Stalled { from_ms, gap_ms } => {
                self.coverage.discount(from_ms, gap_ms, now);
                self.metrics.collector_away("stalled");
                tracing::warn!(
                    seconds = gap_ms / 1000,
                    "the collector was stopped or starved; stations get a fresh window instead of being blamed for the gap"
                );
            }
            Away::Stepped { by_ms } => {
                self.coverage.rebase(by_ms);
                self.metrics.collector_away("clock_step");
                tracing::warn!(
                    seconds = by_ms / 1000,
                    "the host clock stepped; coverage times follow it and no station is judged by the jump"
                );
            }
        }
    }

    fn mark_changed(&mut self) {
        for i in self.coverage.take_changed() {
            self.changed.insert(i as usize / CHUNK);
        }
    }

    fn transitions(&mut self, ts: Vec<Transition>) {
        if !ts.is_empty() {
            self.metrics.persist_backlog.inc_by(ts.len() as i64);
            let _ = self.persist.send(Persist::Transitions(ts));
        }
    }

    fn apply(&mut self, fact: Fact, now: i64) {
        match fact {
            Fact::Pushed(p) => {
                // Freshness runs on the collector's own clock, taken when the fact is
                // applied (a few milliseconds after the commit).
                let facts = PushFacts {
                    agent_id: p.agent_id,
                    received_ms: now,
                    boot_time_ms: p.boot_time_ms,
                    rounds: &p.rounds,
                    newest_start_ms: p.newest_start_ms,
                    primary_problem: p.primary_problem,
                };
                let t = self.coverage.on_push(&facts);
                self.transitions(t.into_iter().collect());
            }
            Fact::Enrolled { agent_id, station } => {
                let tps = station.tps_code;
                if self.coverage.station(&tps).is_none() {
                    self.add_stations(vec![station], now);
                }
                self.coverage.add_agent(agent_id, &tps, None, None, false);
            }
            Fact::Revoked(ids) => {
                let ts = ids
                    .iter()
                    .filter_map(|id| self.coverage.revoke(*id, now))
                    .collect();
                self.transitions(ts);
            }
            Fact::Stations(stations) => self.add_stations(stations, now),
            Fact::Override { tps, value } => {
                self.coverage.set_override(&tps, value);
            }
            Fact::FlagsStored(briefs) => {
                for (tps, b) in briefs {
                    self.flags_pending.remove(&tps);
                    self.set_brief(tps, b);
                }
            }
            Fact::FlagActed {
                tps,
                id,
                status,
                ended_ms,
            } => {
                if let Some(b) = self.flags.by_station.get(&tps).copied()
                    && b.id == id
                {
                    self.set_brief(
                        tps,
                        Brief {
                            status,
                            ended_ms,
                            ..b
                        },
                    );
                }
            }
        }
        self.mark_changed();
    }

    /// A station's newest flag changed: keep the active counts with it.
    fn set_brief(&mut self, tps: TpsCode, b: Brief) {
        let was = self
            .flags
            .by_station
            .insert(tps, b)
            .is_some_and(|old| old.status.active());
        let is = b.status.active();
        if was != is {
            count_flag(
                Arc::make_mut(&mut self.active_flags),
                &tps,
                if is { 1 } else { -1 },
            );
            self.registry_changed = true;
        }
    }

    fn add_stations(&mut self, stations: Vec<crate::domain::Station>, now: i64) {
        let registry = Arc::make_mut(&mut self.registry);
        let added = registry.upsert(&stations);
        let added_cov = self.coverage.add_new_stations(&stations, now);
        debug_assert_eq!(
            added, added_cov,
            "registry and coverage keep the same stations"
        );
        self.registry_changed = true;
        if added > 0 {
            tracing::info!(
                stations = added,
                "new stations from the registry are now monitored"
            );
        }
    }

    /// Silence is a signal: re-evaluate every station against the clock, then plan flags.
    fn tick(&mut self) {
        let now = self.clock.now_ms();
        self.discount_refusal(now);
        let ts = self.coverage.tick(now);
        self.metrics.coverage_evaluated.set(now as f64 / 1000.0);
        let nt = ts.len();
        self.transitions(ts);
        let actions: Vec<Action> = flags::plan(&self.flags, &self.coverage, &self.flag_rules, now)
            .into_iter()
            .filter(|a| !self.flags_pending.contains(a.tps()))
            .collect();
        let na = actions.len();
        for a in &actions {
            self.flags_pending.insert(*a.tps());
        }
        // Large first openings (a whole registry with no agents) go in slices, so pushes
        // are never held behind one huge transaction.
        for chunk in actions.chunks(10_000) {
            self.metrics.persist_backlog.inc_by(chunk.len() as i64);
            let _ = self.persist.send(Persist::Flags {
                actions: chunk.to_vec(),
                now_ms: now,
            });
        }
        self.mark_changed();
        if nt + na > 0 {
            tracing::debug!(transitions = nt, flag_changes = na, "coverage re-evaluated");
        }
    }

    /// Pushes refused since the last tick: that time is not counted against any agent.
    fn discount_refusal(&mut self, now: i64) {
        let refusing = self.space.as_ref().is_some_and(|s| s.refusing());
        if refusing {
            if !self.was_refusing {
                self.metrics.collector_away("disk_floor");
                tracing::warn!(
                    "pushes are refused for lack of disk space: stations are not judged until they can be heard again"
                );
            }
            let from = self.last_tick_ms.unwrap_or(now);
            if now > from {
                self.coverage.discount(from, now - from, now);
            }
        }
        self.was_refusing = refusing;
        self.last_tick_ms = Some(now);
    }

    fn publish_now(&mut self) {
        let started = Instant::now();
        let changed = std::mem::take(&mut self.changed);
        self.registry_changed = false;
        self.snapshot = self.snapshot.next(
            &self.coverage,
            self.registry.clone(),
            self.active_flags.clone(),
            &changed,
            self.clock.now_ms(),
        );
        self.snapshot.applied = self.applied;
        self.publish.send_replace(Arc::new(self.snapshot.clone()));
        self.last_build = started.elapsed();
        self.last_publish = Instant::now();
    }
}

/// Adds `n` to the active-flag counts of a station's regions.
fn count_flag(counts: &mut HashMap<String, u64>, tps: &TpsCode, n: i64) {
    for key in [
        String::new(),
        tps.region(RegionLevel::Province),
        tps.region(RegionLevel::Regency),
        tps.region(RegionLevel::District),
    ] {
        let c = counts.entry(key).or_default();
        *c = c.saturating_add_signed(n);
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
