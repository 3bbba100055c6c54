//! Seeds weeks of history into a collector store, as a running collector would have
//! written it: one agent per station that has one, status changes drawn from shares like
//! the fleet's (about 94 % covered at the end), daily rollups of two targets, and flags
//! with assignees and notes for the stations uncovered at the end.

use jiff::tz::TimeZone;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, params};
use tps_collector::hist::{self, Hist};
use tps_collector::report::Week;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// What was written.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seeded {
    pub stations: u64,
    pub agents: u64,
    pub changes: u64,
    pub rollups: u64,
    pub flags: u64,
}

/// Writes history for `weeks` (consecutive, oldest first) in one transaction; every
/// station is made registered a week before the first.
pub fn seed(
    conn: &mut Connection,
    weeks: &[Week],
    tz: &TimeZone,
    seed: u64,
) -> rusqlite::Result<Seeded> {
    let mut rng = StdRng::seed_from_u64(seed);
    let days: Vec<i64> = weeks
        .iter()
        .flat_map(|w| w.day_starts(tz)[..7].to_vec())
        .collect();
    let (from, to) = (days[0], days[days.len() - 1] + DAY);
    let tx = conn.transaction()?;
    let codes: Vec<String> = {
        let mut st = tx.prepare("SELECT tps_code FROM stations ORDER BY tps_code")?;
        st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    tx.execute("UPDATE stations SET created_ms = ?1", [from - 7 * DAY])?;
    let mut out = Seeded {
        stations: codes.len() as u64,
        ..Seeded::default()
    };
    {
        let mut agent = tx.prepare(
            "INSERT INTO agents (tps_code, token_hash, hostname, os, agent_version, enrolled_ms, last_seen_ms, status_json)
             VALUES (?1, ?2, 'tps-laptop', 'linux', '0.1.0', ?3, ?4, '{\"primary_target\":\"gateway\"}')",
        )?;
        let mut change = tx.prepare(
            "INSERT INTO status_changes (tps_code, at_ms, state, previous, reason, cause) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut rollup = tx.prepare(
            "INSERT INTO daily_rollups (agent_id, day_ms, target_name, rounds, rtt_hist, loss_hist) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut flag = tx.prepare(
            "INSERT INTO flags (tps_code, reason, cause, since_ms, opened_ms, status, assignee, updated_ms)
             VALUES (?1, ?2, NULL, ?3, ?4, ?5, ?6, ?4)",
        )?;
        let mut event = tx.prepare(
            "INSERT INTO flag_events (flag_id, at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for code in &codes {
            let u: f64 = rng.random();
            if u < 0.03 {
                continue; // never had an agent
            }
            // (state, reason, cause) from `at`, in order.
            let mut seq: Vec<(i64, &str, &str, Option<&str>)> =
                vec![(from - DAY, "covered", "ok", None)];
            let kind = if u < 0.09 {
                "outages"
            } else if u < 0.13 {
                "degraded"
            } else {
                "good"
            };
            let (bad, back, reason, episodes) = match kind {
                "outages" => ("offline", "covered", "offline", rng.random_range(3..8)),
                "degraded" => ("degraded", "covered", "high_loss", rng.random_range(2..6)),
                _ => ("offline", "covered", "offline", rng.random_range(0..2)),
            };
            let span = (to - from) / (episodes + 1).max(1);
            for k in 0..episodes {
                let t = from + k * span + rng.random_range(0..span / 2);
                let len = match kind {
                    "good" => rng.random_range(5 * MIN..45 * MIN),
                    _ => rng.random_range(HOUR..14 * HOUR),
                };
                let cause =
                    ["link_down", "power_or_device", "agent_stopped"][rng.random_range(0..3)];
                seq.push((t, bad, reason, None));
                let end_open = k == episodes - 1 && kind != "good" && rng.random_bool(0.3);
                if !end_open && t + len < to {
                    seq.push((t + len, back, "ok", (bad == "offline").then_some(cause)));
                }
            }
            agent.execute(params![
                code,
                rng.random::<[u8; 32]>().to_vec(),
                from - 2 * DAY,
                to
            ])?;
            let agent_id = tx.last_insert_rowid();
            out.agents += 1;
            let mut prev: Option<&str> = None;
            for &(at, state, reason, cause) in &seq {
                change.execute(params![code, at, state, prev, reason, cause])?;
                prev = Some(state);
                out.changes += 1;
            }
            // Rollups: a base RTT per station; loss mostly nothing.
            let base = if kind == "degraded" {
                400.0
            } else {
                rng.random_range(20.0..150.0)
            };
            for &day in &days {
                for (target, factor) in [("gateway", 1.0), ("dns", 1.4)] {
                    let (mut rtt, mut loss) = (Hist::default(), Hist::default());
                    let rounds = 2880u32;
                    for (share, mult) in [(0.6, 1.0), (0.3, 1.3), (0.1, 2.2)] {
                        rtt.add(
                            hist::rtt_bucket(base * factor * mult),
                            (f64::from(rounds) * share) as u32,
                        );
                    }
                    let lossy = if kind == "degraded" { 600 } else { 40 };
                    loss.add(0, rounds - lossy);
                    loss.add(hist::loss_bucket(10, 8), lossy / 2);
                    loss.add(hist::loss_bucket(10, 6), lossy / 2);
                    rollup.execute(params![
                        agent_id,
                        day,
                        target,
                        rounds,
                        rtt.encode(),
                        loss.encode()
                    ])?;
                    out.rollups += 1;
                }
            }
            // A flag for a station uncovered at the end, worked by an operator or not.
            if let Some(&(since, state, reason, _)) = seq.last()
                && state != "covered"
                && since + 10 * MIN < to
            {
                let opened = since + 10 * MIN;
                let worked = rng.random_bool(0.6);
                let assignee =
                    worked.then(|| ["budi", "sari", "andi", "rina"][rng.random_range(0..4)]);
                flag.execute(params![
                    code,
                    reason,
                    since,
                    opened,
                    if worked { "acknowledged" } else { "open" },
                    assignee
                ])?;
                let id = tx.last_insert_rowid();
                event.execute(params![id, opened, "system", "opened", reason])?;
                if let Some(who) = assignee {
                    event.execute(params![
                        id,
                        opened + 5 * MIN,
                        "operator",
                        "acknowledged",
                        None::<String>
                    ])?;
                    event.execute(params![id, opened + 6 * MIN, "operator", "assigned", who])?;
                    event.execute(params![
                        id,
                        opened + 7 * MIN,
                        "operator",
                        "note",
                        format!("{who} menghubungi KPPS; cek modem dan listrik")
                    ])?;
                }
                out.flags += 1;
            }
        }
    }
    tx.commit()?;
    Ok(out)
}
