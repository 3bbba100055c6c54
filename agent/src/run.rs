//! The running agent: a probe loop that measures every target each round and spools
//! the results, and a push loop that delivers the spool to the collector. The probe
//! loop never waits for the network side: a dead link only makes the spool grow.

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::backoff::Backoff;
use crate::clock::{self, Clock, Stamp};
use crate::config::{self, Config};
use crate::credentials::{self, Credentials};
use crate::icmp::Icmp;
use crate::platform::Device;
use crate::probe::{Outcome, TargetProber};
use crate::spool::{Limits, NewEntry, Spool, SpoolError};
use crate::system::SystemInfo;
use crate::uplink::{self, PushError, Uplink};
use crate::wire::{self, SpoolView};

/// Most measurements per push until the collector says otherwise.
const DEFAULT_MAX_BATCH: usize = 500;
/// How long resolving one target may take before the round counts it as unreachable.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The state directory refuses writes; the text says what to change on the device.
    #[error("{0}")]
    Storage(String),
    #[error(transparent)]
    Connect(#[from] uplink::ConnectError),
}

pub type SharedSpool = Arc<Mutex<Spool>>;
pub type SharedClock = Arc<Mutex<Clock>>;

/// Runs a spool operation on a blocking thread (SQLite fsyncs must not stall probes).
pub async fn with_spool<T: Send + 'static>(
    spool: &SharedSpool,
    f: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    let s = spool.clone();
    tokio::task::spawn_blocking(move || f(&mut s.lock().unwrap_or_else(|p| p.into_inner())))
        .await
        .unwrap_or_else(|e| {
            Err(SpoolError::Sql(rusqlite::Error::ToSqlConversionFailure(
                Box::new(e),
            )))
        })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn now_ms() -> i64 {
    clock::wall_ms()
}

/// The primary target's name: the first target, by which the collector judges the link.
pub fn primary(config: &Config) -> &str {
    config
        .targets
        .first()
        .map(|t| t.name.as_str())
        .unwrap_or("")
}

/// The spool's bounds for a config.
pub fn spool_limits(config: &Config) -> Limits {
    Limits::new(
        config.spool_max_age,
        config.probe_interval,
        config.targets.len(),
        config.spool_max_bytes,
    )
}

/// Opens the spool; a state directory that refuses writes is told with what to change.
pub fn open_spool(config: &Config) -> Result<SharedSpool, RunError> {
    match Spool::open(&config.state_dir, spool_limits(config)) {
        Ok(s) => Ok(Arc::new(Mutex::new(s))),
        Err(e) => match storage_advice(&e, config) {
            Some(advice) => Err(RunError::Storage(format!(
                "cannot open the spool: {advice}"
            ))),
            None => Err(e.into()),
        },
    }
}

/// Whether the spool could not be opened because another process holds it (the
/// running agent: it keeps the spool locked).
pub fn spool_in_use(e: &RunError) -> bool {
    matches!(
        e,
        RunError::Spool(SpoolError::Sql(rusqlite::Error::SqliteFailure(f, _)))
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// What to change on the device when a spool error is the state directory's fault.
pub fn storage_advice(e: &SpoolError, config: &Config) -> Option<String> {
    e.storage_problem(&config.state_dir)
        .map(|p| Device::detect().storage_advice(p, &config.state_dir))
}

/// What can be probed here: a prober per target that can be, and why the primary
/// target cannot be when it cannot (empty when it can).
#[derive(Debug)]
pub struct Probers {
    pub probers: Vec<TargetProber>,
    pub primary_problem: String,
}

/// The probers for a config's targets; says once, at start, what cannot be probed.
pub fn probers(config: &Config) -> Probers {
    let icmp = Icmp::open();
    if let Some(why) = icmp.unavailable() {
        tracing::warn!("{why}");
    }
    let mut primary_problem = String::new();
    let probers = config
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| (i, TargetProber::new(t.clone(), icmp.clone(), config.echoes, config.echo_timeout)))
        .filter(|(i, p)| {
            let ok = p.can_probe();
            if !ok {
                let why = format!(
                    "target {:?} is not measured: ICMP is not allowed here and the target has no port for a TCP probe. {}",
                    p.target.name,
                    icmp.unavailable().unwrap_or_default()
                );
                tracing::warn!("{why}");
                if *i == 0 {
                    primary_problem = why;
                }
            }
            ok
        })
        .map(|(_, p)| p)
        .collect();
    Probers {
        probers,
        primary_problem,
    }
}

/// One round against every target at once; returns the probers and, per target that
/// could be probed, its name and what was measured, in target order.
pub async fn probe_round(
    probers: Vec<TargetProber>,
    collector_host: &str,
) -> (Vec<TargetProber>, Vec<(String, Outcome)>) {
    let mut set = JoinSet::new();
    for (i, mut p) in probers.into_iter().enumerate() {
        let host = collector_host.to_string();
        set.spawn(async move {
            let resolving = crate::probe::resolve(&p.target.address, &host);
            let (ip, shown): (Option<IpAddr>, String) =
                match tokio::time::timeout(RESOLVE_TIMEOUT, resolving).await {
                    Ok(r) => r,
                    Err(_) => (None, p.target.name.clone()),
                };
            let out = p.round(ip, &shown).await;
            (i, p, out)
        });
    }
    let mut done = set.join_all().await;
    done.sort_by_key(|(i, _, _)| *i);
    let mut back = Vec::with_capacity(done.len());
    let mut outcomes = Vec::new();
    for (_, p, out) in done {
        if let Some(o) = out {
            outcomes.push((p.target.name.clone(), o));
        }
        back.push(p);
    }
    (back, outcomes)
}

/// Spool entries for one round's outcomes.
pub fn round_entries(outcomes: Vec<(String, Outcome)>, stamp: Stamp) -> Vec<NewEntry> {
    outcomes
        .into_iter()
        .map(|(target_name, o)| NewEntry {
            start_ms: stamp.wall_ms,
            offset_ms: stamp.offset_ms,
            clock_epoch: stamp.epoch,
            target_name,
            target_address: o.address,
            method: o.method,
            round: o.round,
        })
        .collect()
}

/// Probes every `probe_interval` and spools each round. Missed ticks (a busy device, a
/// laptop waking from sleep) are skipped, never made up in a burst. A round the disk
/// refuses is held in memory and written with the next one the disk takes.
pub async fn probe_loop(
    config: Config,
    mut probers: Vec<TargetProber>,
    spool: SharedSpool,
    clock: SharedClock,
) {
    let host = config::collector_host(&config.collector).unwrap_or_default();
    let mut tick = tokio::time::interval(config.probe_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // Rounds refused in a row; the advice is logged once per streak, not every round.
    let mut failing = 0u64;
    loop {
        tick.tick().await;
        let stamp = lock(&clock).stamp();
        let (back, outcomes) = probe_round(std::mem::take(&mut probers), &host).await;
        probers = back;
        let batch = round_entries(outcomes, stamp);
        let n = batch.len();
        let result = with_spool(&spool, move |s| {
            let r = s.append(&batch);
            Ok((r, s.held_rounds()))
        })
        .await;
        let (result, held) = match result {
            Ok((r, held)) => (r, held),
            Err(e) => (Err(e), 0),
        };
        match result {
            Ok(seqs) => {
                if failing > 0 {
                    tracing::info!(
                        rounds = failing,
                        measurements = seqs.len(),
                        "the spool takes rounds again; the rounds held in memory are written"
                    );
                }
                failing = 0;
                tracing::debug!(measurements = n, "round spooled");
            }
            Err(e) => {
                failing += 1;
                if failing == 1 {
                    let advice = storage_advice(&e, &config).unwrap_or_default();
                    tracing::error!(
                        error = %e,
                        "cannot write the spool; rounds are held in memory (at most {}, then the oldest are dropped and counted) until it can. {advice}",
                        crate::spool::HELD_ROUNDS
                    );
                } else {
                    tracing::debug!(error = %e, held_rounds = held, "cannot write the spool; round held in memory");
                }
            }
        }
    }
}

/// How often a wait checks the wall clock (see [`wait_due`]).
const WAKE_CHECK: Duration = Duration::from_secs(5);

/// Whether a wait of `wait` that began `mono` ago by the monotonic clock, and at
/// `wall_start` by the wall clock, is over by either clock.
pub fn due(
    wait: Duration,
    mono: Duration,
    wall_start: std::time::SystemTime,
    wall_now: std::time::SystemTime,
) -> bool {
    mono >= wait || wall_now.duration_since(wall_start).is_ok_and(|d| d >= wait)
}

/// Waits `wait`, or less when the wall clock says it has passed: a laptop's monotonic
/// clock may stand still while it sleeps, so after waking the push that fell due goes
/// out within [`WAKE_CHECK`] instead of a whole interval later. (A wall clock set
/// forward only makes one push early.)
pub async fn wait_due(wait: Duration) {
    let (mono_start, wall_start) = (tokio::time::Instant::now(), std::time::SystemTime::now());
    loop {
        let mono = mono_start.elapsed();
        if due(wait, mono, wall_start, std::time::SystemTime::now()) {
            return;
        }
        tokio::time::sleep((wait - mono).min(WAKE_CHECK)).await;
    }
}

/// What the push loop needs besides the spool: the config, the credentials, the
/// clock to correct, and why the primary target is not measured (empty if it is).
#[derive(Debug, Clone)]
pub struct PushSetup {
    pub config: Config,
    pub creds: Credentials,
    pub clock: SharedClock,
    pub primary_problem: String,
}

/// Delivers the spool: a push every interval (a heartbeat when nothing waits), the
/// backlog back to back after an outage, exponential backoff with jitter on every
/// failure — a refused push, a spool that cannot be updated, an unreachable collector.
///
/// `facts` tells the device's facts for each push (sysinfo on a real device; the fleet
/// simulator gives its own, so a simulated power cut changes the boot time).
pub async fn push_loop(
    setup: PushSetup,
    spool: SharedSpool,
    mut uplink: Uplink,
    mut facts: impl FnMut() -> crate::system::Facts,
) {
    let PushSetup {
        config,
        creds,
        clock,
        primary_problem,
    } = setup;
    let mut backoff = Backoff::default();
    let mut interval = config.push_interval;
    let mut max_batch = DEFAULT_MAX_BATCH;
    let mut token = creds.token.clone();
    // Agents restarted together (a district-wide power cut) must not arrive together.
    tokio::time::sleep(interval.mul_f64(rand::random::<f64>())).await;
    // The first push is a heartbeat: it tells what the collector already holds before
    // any spooled entry is sent (see Spool::renumber_above).
    let mut first = true;
    // Refused measurements dropped in a row; logged once per streak.
    let mut refused_streak = 0u64;
    loop {
        // What to send and what the status tells of the spool, in one trip to it.
        let heartbeat = first;
        let read = with_spool(&spool, move |s| {
            let batch = if heartbeat {
                Vec::new()
            } else {
                s.batch(max_batch)?
            };
            let view = SpoolView {
                depth: s.depth()?,
                dropped: s.dropped_by_reason()?,
            };
            Ok((batch, view))
        })
        .await;
        let (batch, view) = match read {
            Ok(r) => r,
            Err(e) => {
                back_off(&mut backoff, |wait| {
                    tracing::error!(error = %e, retry_in = ?wait, "cannot read the spool");
                })
                .await;
                continue;
            }
        };
        let sent_ms = clock::wall_ms();
        let status = wire::status(facts(), &view, sent_ms, primary(&config), &primary_problem);
        let sent = batch.len();
        let result = uplink
            .push(status, batch.iter().map(wire::measurement).collect())
            .await;
        let answered_ms = clock::wall_ms();
        match result {
            Ok(r) => {
                let acked = r.acked_seq;
                let learned = lock(&clock).learn(sent_ms, answered_ms, r.server_time_ms);
                let was_first = first;
                let applied = with_spool(&spool, move |s| {
                    for (epoch, offset) in learned {
                        s.set_offset(epoch, offset)?;
                    }
                    let moved = if was_first {
                        s.renumber_above(acked)?
                    } else {
                        0
                    };
                    s.ack(acked);
                    s.trim_behind(DEFAULT_MAX_BATCH as u64)?;
                    Ok(moved)
                })
                .await;
                let moved = match applied {
                    Ok(m) => m,
                    Err(e) => {
                        // Not acknowledged here: the same entries go out again, but only
                        // after a backoff step.
                        back_off(&mut backoff, |wait| {
                            tracing::error!(error = %e, retry_in = ?wait, "the collector has the measurements but the spool cannot be updated");
                        })
                        .await;
                        continue;
                    }
                };
                let recovered = backoff.failures() > 0;
                backoff.reset();
                if was_first || recovered {
                    tracing::info!(acked, "the collector takes pushes");
                }
                first = false;
                if moved > 0 {
                    tracing::warn!(
                        by = moved,
                        "the collector had seen higher sequence numbers than this spool ever gave (was it reset?); pending entries renumbered"
                    );
                }
                if sent > 0 {
                    refused_streak = 0;
                }
                if let Some(s) = r.settings {
                    if s.push_interval_secs > 0 {
                        interval = Duration::from_secs(u64::from(s.push_interval_secs));
                    }
                    if s.max_batch > 0 {
                        max_batch = s.max_batch as usize;
                    }
                }
                tracing::debug!(sent, acked, "pushed");
                if sent > 0 && sent >= max_batch {
                    continue; // more backlog waits: send it now, in order
                }
                wait_due(interval).await;
            }
            Err(PushError::Unauthenticated(msg)) => {
                tracing::error!(
                    "the collector refused this agent's token ({msg}). Re-enroll: \
                     tps-agent enroll --collector URL --tps {} --code XXXX-XXXX. Measuring continues into the spool.",
                    creds.tps_code
                );
                // Wait for a new token on disk (enrolled while running), then resume.
                loop {
                    tokio::time::sleep(interval).await;
                    if let Ok(c) = credentials::load(&config.state_dir)
                        && c.token != token
                    {
                        tracing::info!(
                            agent_id = c.agent_id,
                            "new credentials found; pushing again"
                        );
                        token = c.token.clone();
                        uplink.set_token(c.token);
                        first = true;
                        break;
                    }
                }
            }
            Err(PushError::Refused { refusal, message }) => {
                let progress =
                    handle_refusal(&spool, &clock, &batch, refusal, (sent_ms, answered_ms)).await;
                match progress {
                    Ok((restamped, dropped)) if restamped + dropped > 0 => {
                        refused_streak += dropped as u64;
                        if refused_streak == dropped as u64 && dropped > 0 {
                            tracing::error!(%message, dropped, "the collector will never accept these measurements; dropped and counted as refused");
                        } else {
                            tracing::debug!(%message, dropped, restamped, "refused measurements handled");
                        }
                        // Something changed: send again now.
                    }
                    Ok(_) => {
                        back_off(&mut backoff, |wait| {
                            tracing::warn!(%message, retry_in = ?wait, "push refused, and nothing in it the agent can correct or drop");
                        })
                        .await;
                    }
                    Err(e) => {
                        back_off(&mut backoff, |wait| {
                            tracing::error!(error = %e, retry_in = ?wait, "cannot drop refused measurements from the spool");
                        })
                        .await;
                    }
                }
            }
            Err(PushError::TooLarge(message)) if sent > 1 => {
                max_batch = (sent / 2).max(1);
                tracing::warn!(%message, max_batch, "batch too large; sending smaller ones");
            }
            Err(e) => {
                let wait = backoff.wait();
                if backoff.failures() == 1 {
                    // The first failure of a streak: say what to change if it is the name.
                    let host = config::collector_host(&config.collector).unwrap_or_default();
                    if let Err(advice) = crate::probe::lookup(&host).await {
                        tracing::error!("{advice} Measurements stay spooled.");
                    }
                }
                tracing::warn!(error = %e, retry_in = ?wait, spooled = view.depth, "push failed; measurements stay spooled");
                wait_due(wait).await;
            }
        }
    }
}

/// One backoff step after a failure: `say` logs it with the wait, then the wait.
async fn back_off(backoff: &mut Backoff, say: impl FnOnce(Duration)) {
    let wait = backoff.wait();
    say(wait);
    wait_due(wait).await;
}

/// Acts on a refusal: learns the collector's clock when the refusal is about time and
/// gives the rounds of this clock epoch that had no offset the one learned (they go
/// again, re-stamped); drops the other refused ones, counted. Returns how many were
/// re-stamped and how many dropped.
async fn handle_refusal(
    spool: &SharedSpool,
    clock: &SharedClock,
    batch: &[crate::spool::Entry],
    refusal: wire::Refusal,
    (sent_ms, answered_ms): (i64, i64),
) -> Result<(usize, usize), SpoolError> {
    let learned = refusal
        .clock_server_ms
        .map(|server| lock(clock).learn(sent_ms, answered_ms, server))
        .unwrap_or_default();
    let listed: Vec<u64> = refusal
        .indexes
        .iter()
        .filter_map(|&i| batch.get(i).map(|e| e.seq))
        .collect();
    with_spool(spool, move |s| {
        let mut restamped = Vec::new();
        for (epoch, offset) in learned {
            restamped.extend(s.set_offset(epoch, offset)?);
        }
        let drop: Vec<u64> = listed
            .into_iter()
            .filter(|seq| !restamped.contains(seq))
            .collect();
        let dropped = if drop.is_empty() {
            0
        } else {
            s.discard(&drop)?
        };
        Ok((restamped.len(), dropped))
    })
    .await
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    config: Config,
    creds: Credentials,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let spool = open_spool(&config)?;
    let channel = uplink::channel(&config.collector, config.ca_cert.as_deref())?;
    let uplink = Uplink::new(channel, creds.token.clone());
    tracing::info!(
        tps = %creds.tps_code,
        agent_id = creds.agent_id,
        collector = %config.collector,
        targets = config.targets.len(),
        "agent running"
    );
    let Probers {
        probers,
        primary_problem,
    } = probers(&config);
    let clock: SharedClock = Arc::new(Mutex::new(Clock::new()));
    let mut sys = SystemInfo::new();
    let setup = PushSetup {
        config: config.clone(),
        creds,
        clock: clock.clone(),
        primary_problem,
    };
    tokio::select! {
        () = probe_loop(config, probers, spool.clone(), clock) => {}
        () = push_loop(setup, spool.clone(), uplink, move || sys.facts()) => {}
        () = shutdown => tracing::info!("agent stopping; the spool keeps what was not delivered"),
    }
    // What was acknowledged is deleted now rather than sent again after a restart.
    if let Err(e) = with_spool(&spool, |s| s.trim()).await {
        tracing::warn!(error = %e, "could not trim the spool at exit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn a_wait_is_due_by_either_clock() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // A 60 s wait, `mono` s by the monotonic clock, the wall clock `wall` s on.
        let due_at = |mono: u64, wall: i64| {
            let now = if wall >= 0 {
                t0 + Duration::from_secs(wall as u64)
            } else {
                t0 - Duration::from_secs(wall.unsigned_abs())
            };
            due(Duration::from_secs(60), Duration::from_secs(mono), t0, now)
        };
        assert!(!due_at(10, 10));
        assert!(due_at(60, 60));
        // Asleep for an hour: the monotonic clock stood still, the wall clock did not.
        assert!(due_at(10, 3_610));
        // A wall clock set back never holds a push past its monotonic time.
        assert!(due_at(61, -600));
        assert!(!due_at(1, -600));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_due_waits_the_whole_wait_when_the_clocks_agree() {
        let t = tokio::time::Instant::now();
        wait_due(Duration::from_secs(60)).await;
        assert!(t.elapsed() >= Duration::from_secs(60));
    }
}
