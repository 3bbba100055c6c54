//! Regency boundaries at national scale: how long the bundled shapes take to parse, and
//! how long finding the stations outside their own regency takes for a registry of
//! 820,161 stations (`make_registry.py --total 820161`), as an import and every
//! registry load at start do. Median of 5 runs.
//!
//! `cargo bench -p tps-collector --bench boundaries -- /tmp/national.csv`

use std::time::Instant;

use tps_collector::boundaries::{Boundaries, warn_outside};

fn main() {
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "/tmp/national.csv".into());
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (make it with make_registry.py)"));
    let stations = tps_collector::registry::parse(std::io::BufReader::new(file), 1 << 30, |_| {})
        .expect("valid registry");
    let t = Instant::now();
    let b = Boundaries::bundled();
    println!(
        "bundled boundaries parsed in {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(b.contains("21.71", 1.08, 104.03), Some(true));
    let mut runs = Vec::new();
    for run in 1..=5 {
        let t = Instant::now();
        let w = warn_outside(&stations);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "run {run}: {} stations checked in {:.2} s ({:.2} µs each), {} outside their regency",
            stations.len(),
            secs,
            secs * 1e6 / stations.len() as f64,
            w.count
        );
        runs.push(secs);
    }
    runs.sort_by(f64::total_cmp);
    println!("median of 5 runs: {:.2} s", runs[2]);
}
