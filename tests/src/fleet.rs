//! The fleet simulator: plays N agents from a station registry. Each simulated agent
//! uses the agent's own code — enrollment, on-disk spool, push loop with its backoff —
//! over its own gRPC connection; only the probe results are synthetic. Behaviour per
//! station comes from a seeded, reproducible profile mix.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tps_agent::config::{Address, Config, Method, Target};
use tps_agent::credentials::{self, Credentials};
use tps_agent::run::{self, SharedSpool, with_spool};
use tps_agent::spool::{NewEntry, Spool};
use tps_agent::stats::Round;
use tps_agent::system::Facts;
use tps_agent::uplink::{self, Uplink};
use tps_proto::v1 as pb;

/// How a simulated station behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// RTT 20–150 ms, loss under 2 %.
    Good,
    /// Loss 10–40 % or RTT over 500 ms.
    Degraded,
    /// Good, with outages: the link down for minutes (measurements spool up), or a
    /// power cut (nothing measured, the device boots again).
    Outages,
    /// Never enrolls.
    Never,
}

/// Shares of each profile (they need not add up to exactly 1; the rest is `Good`).
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub degraded: f64,
    pub outages: f64,
    pub never: f64,
}

impl Mix {
    /// About 94 % covered at any moment, as Kepri reported weeks before the vote.
    pub fn kepri() -> Mix {
        Mix {
            degraded: 0.025,
            outages: 0.025,
            never: 0.03,
        }
    }
}

/// Assigns profiles to stations, reproducibly for a seed.
pub fn assign(n: usize, mix: &Mix, seed: u64) -> Vec<Profile> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let x: f64 = rng.random();
            if x < mix.never {
                Profile::Never
            } else if x < mix.never + mix.degraded {
                Profile::Degraded
            } else if x < mix.never + mix.degraded + mix.outages {
                Profile::Outages
            } else {
                Profile::Good
            }
        })
        .collect()
}

/// How the fleet runs.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub collector: String,
    pub probe_interval: Duration,
    pub push_interval: Duration,
    /// One state directory per agent below this (credentials, spool).
    pub state_root: PathBuf,
    pub seed: u64,
    /// How long an outage lasts, and how long a station stays up in between.
    pub outage: (Duration, Duration),
    pub up: (Duration, Duration),
}

const TARGETS: [&str; 3] = ["gateway", "collector", "anchor"];

fn agent_config(f: &FleetConfig, state_dir: PathBuf) -> Config {
    Config {
        collector: f.collector.clone(),
        ca_cert: None,
        state_dir,
        targets: TARGETS
            .iter()
            .map(|n| Target {
                name: n.to_string(),
                address: Address::Host("192.0.2.1".into()),
                method: Method::Icmp,
                port: None,
            })
            .collect(),
        probe_interval: f.probe_interval,
        echoes: 5,
        echo_timeout: Duration::from_secs(2),
        push_interval: f.push_interval,
        spool_max_age: Duration::from_secs(7 * 86_400),
        spool_max_bytes: 8 << 20,
    }
}

/// One synthetic round for a profile; `down`: the link is down (everything lost).
fn round(rng: &mut StdRng, profile: Profile, base_rtt: f64, down: bool) -> Round {
    if down {
        return tps_agent::stats::summarize(&[None; 5]);
    }
    // Echoes lost in this round: degraded links lose 1 or 2 of 5 (20-40 %) every round
    // (or answer slowly); good ones lose one now and then (under 2 % overall).
    let (lost, rtt) = match profile {
        Profile::Degraded if base_rtt > 100.0 => (0, 550.0 + rng.random::<f64>() * 300.0),
        Profile::Degraded => (1 + usize::from(rng.random::<bool>()), base_rtt),
        _ => (usize::from(rng.random::<f64>() < 0.08), base_rtt),
    };
    let results: Vec<Option<Duration>> = (0..5)
        .map(|i| {
            (i >= lost).then(|| {
                Duration::from_secs_f64((rtt * (0.9 + rng.random::<f64>() * 0.2)) / 1000.0)
            })
        })
        .collect();
    tps_agent::stats::summarize(&results)
}

/// One round's spool entries, a round per target from `round`.
fn entries(start_ms: i64, mut round: impl FnMut() -> Round) -> Vec<NewEntry> {
    TARGETS
        .iter()
        .map(|t| NewEntry {
            start_ms,
            // The simulator's clock is the collector's.
            offset_ms: Some(0),
            clock_epoch: 0,
            target_name: t.to_string(),
            target_address: "192.0.2.1".into(),
            method: Method::Icmp,
            round: round(),
        })
        .collect()
}

/// The push loop's setup for a simulated agent: its clock is the collector's.
fn push_setup(config: tps_agent::config::Config, creds: Credentials) -> run::PushSetup {
    run::PushSetup {
        config,
        creds,
        clock: Arc::new(std::sync::Mutex::new(tps_agent::clock::Clock::new())),
        primary_problem: String::new(),
    }
}

/// Enrolls (or reuses stored credentials) and returns them.
async fn credentials_for(
    f: &FleetConfig,
    state_dir: &std::path::Path,
    tps: &str,
    code: &str,
) -> Result<Credentials, String> {
    if let Ok(c) = credentials::load(state_dir)
        && c.collector == f.collector
    {
        return Ok(c);
    }
    let channel = uplink::channel(&f.collector, None).map_err(|e| e.to_string())?;
    let facts = pb::AgentFacts {
        hostname: format!("sim-{tps}"),
        os: "tps-fleet".into(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
    };
    let r = uplink::enroll(channel, &f.collector, tps, code, facts).await?;
    let c = Credentials {
        agent_id: r.agent_id,
        token: r.token,
        tps_code: tps.into(),
        collector: f.collector.clone(),
    };
    credentials::save(state_dir, &c).map_err(|e| e.to_string())?;
    Ok(c)
}

/// What a simulated device reports about itself; `boot` changes after a power cut.
fn facts(tps: String, boot: Arc<AtomicI64>) -> impl FnMut() -> Facts {
    move || {
        let b = boot.load(Ordering::Relaxed);
        let now = run::now_ms();
        Facts {
            system_uptime_secs: ((now - b) / 1000) as u64,
            boot_time_ms: b,
            agent_uptime_secs: ((now - b) / 1000) as u64,
            hostname: format!("sim-{tps}"),
            os: "tps-fleet".into(),
            interfaces: vec![("wwan0".into(), 0, 0)],
        }
    }
}

/// An agent back after a long outage: enrolls, finds `backlog` rounds in its spool (of
/// the past, three targets each) and pushes them with the agent's own push loop until
/// the spool is empty. For measuring the ingest ceiling end to end.
pub async fn drain_backlog(
    f: Arc<FleetConfig>,
    tps: String,
    code: String,
    backlog: usize,
    go: Arc<tokio::sync::Barrier>,
) -> Result<(), String> {
    let state_dir = f.state_root.join(&tps);
    // Every agent reaches the starting line, ready or not, so none waits forever.
    let ready = async {
        let creds = credentials_for(&f, &state_dir, &tps, &code).await?;
        let config = agent_config(&f, state_dir.clone());
        let mut spool =
            Spool::open(&state_dir, run::spool_limits(&config)).map_err(|e| e.to_string())?;
        let mut rng = StdRng::seed_from_u64(f.seed);
        let start = run::now_ms() - backlog as i64 * 30_000;
        for chunk in (0..backlog).collect::<Vec<_>>().chunks(500) {
            let entries: Vec<NewEntry> = chunk
                .iter()
                .flat_map(|&k| {
                    entries(start + k as i64 * 30_000, || {
                        round(&mut rng, Profile::Good, 40.0, false)
                    })
                })
                .collect();
            spool.append(&entries).map_err(|e| e.to_string())?;
        }
        Ok::<_, String>((creds, config, spool))
    }
    .await;
    go.wait().await;
    let (creds, config, spool) = ready.map_err(|e| format!("{tps}: {e}"))?;
    let spool: SharedSpool = Arc::new(std::sync::Mutex::new(spool));
    let channel = uplink::channel(&config.collector, None).map_err(|e| e.to_string())?;
    let up = Uplink::new(channel, creds.token.clone());
    let boot = Arc::new(AtomicI64::new(run::now_ms() - 3_600_000));
    let pushing = AbortOnDrop(tokio::spawn(run::push_loop(
        push_setup(config, creds),
        spool.clone(),
        up,
        facts(tps, boot),
    )));
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if with_spool(&spool, |s| s.depth())
            .await
            .map_err(|e| e.to_string())?
            == 0
        {
            drop(pushing);
            return Ok(());
        }
    }
}

/// Aborts a spawned task when dropped, so a push loop ends with its simulated station.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Plays one station until the task is dropped.
async fn play(f: Arc<FleetConfig>, tps: String, code: String, profile: Profile, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let state_dir = f.state_root.join(&tps);
    // Enrollment retries: a thousand agents at once may find the collector busy.
    let creds = loop {
        match credentials_for(&f, &state_dir, &tps, &code).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::debug!(%tps, error = %e, "enrollment failed; retrying");
                tokio::time::sleep(Duration::from_secs(2 + rng.random_range(0..5))).await;
            }
        }
    };
    let config = agent_config(&f, state_dir.clone());
    let spool: SharedSpool = match Spool::open(&state_dir, run::spool_limits(&config)) {
        Ok(s) => Arc::new(std::sync::Mutex::new(s)),
        Err(e) => {
            tracing::error!(%tps, error = %e, "cannot open the spool");
            return;
        }
    };
    let boot = Arc::new(AtomicI64::new(
        run::now_ms() - rng.random_range(3_600_000..86_400_000),
    ));
    let start_push = |boot: Arc<AtomicI64>| {
        let (config, creds, spool) = (config.clone(), creds.clone(), spool.clone());
        let tps = tps.clone();
        AbortOnDrop(tokio::spawn(async move {
            let Ok(channel) = uplink::channel(&config.collector, None) else {
                return;
            };
            let up = Uplink::new(channel, creds.token.clone());
            run::push_loop(push_setup(config, creds), spool, up, facts(tps, boot)).await;
        }))
    };
    // Held for its drop: replacing it ends the old push loop.
    let mut _uplink = Some(start_push(boot.clone()));
    let base_rtt = 20.0 + rng.random::<f64>() * 130.0;
    let mut tick = tokio::time::interval(f.probe_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::time::sleep(f.probe_interval.mul_f64(rng.random())).await;
    let span = |(a, b): (Duration, Duration), rng: &mut StdRng| {
        a + (b.saturating_sub(a)).mul_f64(rng.random())
    };
    let mut next_change = tokio::time::Instant::now() + span(f.up, &mut rng);
    // None: up; Some(true): link down; Some(false): power off.
    let mut outage: Option<bool> = None;
    loop {
        tick.tick().await;
        if profile == Profile::Outages && tokio::time::Instant::now() >= next_change {
            match outage {
                None => {
                    let link = rng.random::<f64>() < 0.6;
                    outage = Some(link);
                    _uplink = None; // the uplink goes down with the link or the power
                    next_change = tokio::time::Instant::now() + span(f.outage, &mut rng);
                }
                Some(link) => {
                    if !link {
                        boot.store(run::now_ms(), Ordering::Relaxed); // the device boots again
                    }
                    outage = None;
                    _uplink = Some(start_push(boot.clone()));
                    next_change = tokio::time::Instant::now() + span(f.up, &mut rng);
                }
            }
        }
        if outage == Some(false) {
            continue; // powered off: nothing is measured
        }
        let start_ms = run::now_ms();
        let entries = entries(start_ms, || {
            round(&mut rng, profile, base_rtt, outage == Some(true))
        });
        if let Err(e) = with_spool(&spool, move |s| s.append(&entries)).await {
            tracing::warn!(%tps, error = %e, "spool write failed");
        }
    }
}

/// A running fleet; dropping it stops every simulated agent.
#[derive(Debug)]
pub struct Fleet {
    tasks: JoinSet<()>,
    pub profiles: Vec<(String, Profile)>,
}

impl Fleet {
    /// Starts one simulated agent per (tps_code, enrollment_code), profiles from `mix`.
    pub fn start(config: FleetConfig, stations: Vec<(String, String)>, mix: &Mix) -> Fleet {
        let profiles = assign(stations.len(), mix, config.seed);
        let config = Arc::new(config);
        let mut tasks = JoinSet::new();
        let mut out = Vec::with_capacity(stations.len());
        for (i, ((tps, code), p)) in stations.into_iter().zip(profiles).enumerate() {
            out.push((tps.clone(), p));
            if p != Profile::Never {
                tasks.spawn(play(
                    config.clone(),
                    tps,
                    code,
                    p,
                    config.seed.wrapping_add(i as u64 * 7919),
                ));
            }
        }
        Fleet {
            tasks,
            profiles: out,
        }
    }

    pub fn count(&self, p: Profile) -> usize {
        self.profiles.iter().filter(|(_, x)| *x == p).count()
    }

    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}
