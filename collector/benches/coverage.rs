//! Coverage engine at national scale: builds the engine for a registry (820,161 stations
//! from `make_registry.py --total 820161`), gives every station an agent that has
//! pushed, then times a full staleness re-evaluation (`tick`) and a follow-up plan.
//!
//! `cargo bench -p tps-collector --bench coverage -- /tmp/national.csv`

use std::time::Instant;

use tps_collector::state::coverage::{Coverage, PushFacts, Rules};
use tps_collector::state::flags::{self, FlagIndex, FlagRules};

fn main() {
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "/tmp/national.csv".into());
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (make it with make_registry.py)"));
    let stations = tps_collector::registry::parse(std::io::BufReader::new(file), 1 << 30, |_| {})
        .expect("valid registry");
    let t0: i64 = 1_790_000_000_000;
    let started = Instant::now();
    let mut c = Coverage::new(Rules::default(), &stations, t0);
    for (i, st) in stations.iter().enumerate() {
        c.add_agent(i as u64 + 1, &st.tps_code, None, None, false);
        c.on_push(&PushFacts {
            agent_id: i as u64 + 1,
            received_ms: t0,
            boot_time_ms: t0,
            rounds: &[],
            newest_start_ms: None,
            primary_problem: false,
        });
    }
    println!(
        "{} stations, each with an agent: engine built in {:.2} s",
        stations.len(),
        started.elapsed().as_secs_f64()
    );
    let mut ticks = Vec::new();
    for k in 1..=5 {
        // Alternate between "all fresh" and "all stale" so every run does real work.
        let now = if k % 2 == 1 {
            t0 + 60_000
        } else {
            t0 + 3_600_000 * k
        };
        let s = Instant::now();
        let n = c.tick(now).len();
        ticks.push(s.elapsed().as_secs_f64() * 1000.0);
        println!(
            "tick {k}: {:.1} ms ({n} transitions)",
            ticks.last().unwrap()
        );
        if k % 2 == 0 {
            // Bring them back for the next round.
            for i in 0..stations.len() {
                c.on_push(&PushFacts {
                    agent_id: i as u64 + 1,
                    received_ms: now,
                    boot_time_ms: t0,
                    rounds: &[],
                    newest_start_ms: None,
                    primary_problem: false,
                });
            }
        }
    }
    let index = FlagIndex::default();
    let s = Instant::now();
    let plan = flags::plan(&index, &c, &FlagRules::default(), t0 + 10 * 3_600_000);
    println!(
        "flag plan over every station: {:.1} ms ({} actions)",
        s.elapsed().as_secs_f64() * 1000.0,
        plan.len()
    );
    ticks.sort_by(f64::total_cmp);
    println!(
        "median tick: {:.1} ms over {} stations",
        ticks[ticks.len() / 2],
        stations.len()
    );
}
