//! Synthetic round outcomes drawn like the Kepri link mix (fixed lines, cellular,
//! satellite), for the storage benchmarks: what a round of five echoes measured.

use rand::Rng;

/// The three targets of a station and their addresses.
pub const TARGETS: [(&str, &str); 3] = [
    ("gateway", "192.168.1.1"),
    ("collector", "203.0.113.10"),
    ("anchor", "198.51.100.7"),
];

/// A station's base RTT per target (ms): fixed 20 %, cellular 65 %, satellite 15 %.
pub fn base_rtts(rng: &mut impl Rng) -> [f64; 3] {
    let link: f64 = match rng.random_range(0..100) {
        0..20 => 8.0,
        20..85 => 60.0,
        _ => 620.0,
    };
    [link * 0.3, link, link * 1.2]
}

/// One round of five echoes to a target whose base RTT is `base`.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub received: u32,
    pub rtt_min_ms: Option<f64>,
    pub rtt_avg_ms: Option<f64>,
    pub rtt_max_ms: Option<f64>,
    /// Present with two replies or more.
    pub jitter_ms: Option<f64>,
}

/// Draws a round: all five lost now and then, one or two lost sometimes.
pub fn draw(rng: &mut impl Rng, base: f64) -> Outcome {
    let lost = match rng.random_range(0..1000) {
        0..5 => 5,
        5..30 => rng.random_range(1..3),
        _ => 0,
    };
    let received = 5 - lost;
    let rtt = (received > 0).then(|| {
        let avg = base * (1.0 + rng.random_range(0.0..0.15));
        let min = avg - rng.random_range(0.0..0.1) * base;
        let max = avg + rng.random_range(0.0..0.4) * base;
        let jitter = rng.random_range(0.0..0.12) * base;
        (min.max(0.1), avg, max, jitter)
    });
    Outcome {
        received,
        rtt_min_ms: rtt.map(|x| x.0),
        rtt_avg_ms: rtt.map(|x| x.1),
        rtt_max_ms: rtt.map(|x| x.2),
        jitter_ms: rtt.filter(|_| received > 1).map(|x| x.3),
    }
}
