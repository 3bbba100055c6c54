//! Retry pacing after a failed push: gRPC's connection-backoff values (1 s initial,
//! ×1.6, ±20 % jitter, 120 s cap), since tonic has none of its own. The jitter spreads
//! thousands of agents that lost the collector at the same moment.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    multiplier: f64,
    jitter: f64,
    max: Duration,
    current: Duration,
    /// Waits handed out since the last success: 1 on the first failure of a streak.
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), 1.6, 0.2, Duration::from_secs(120))
    }
}

impl Backoff {
    pub fn new(initial: Duration, multiplier: f64, jitter: f64, max: Duration) -> Self {
        Backoff {
            initial,
            multiplier,
            jitter,
            max,
            current: initial,
            failures: 0,
        }
    }

    /// The wait before the next attempt; `unit` is a random number in [0, 1).
    pub fn wait_with(&mut self, unit: f64) -> Duration {
        let spread = 1.0 + self.jitter * (2.0 * unit - 1.0);
        let wait = self.current.mul_f64(spread);
        self.current = self.current.mul_f64(self.multiplier).min(self.max);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    pub fn wait(&mut self) -> Duration {
        self.wait_with(rand::random())
    }

    /// After a success, start again from the initial wait.
    pub fn reset(&mut self) {
        self.current = self.initial;
        self.failures = 0;
    }

    /// Failures in a row (waits handed out since the last success).
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_1_6_up_to_the_cap_without_jitter_at_the_midpoint() {
        let mut b = Backoff::default();
        let waits: Vec<f64> = (0..13).map(|_| b.wait_with(0.5).as_secs_f64()).collect();
        let want = [
            1.0,
            1.6,
            2.56,
            4.096,
            6.5536,
            10.48576,
            16.777216,
            26.8435456,
            42.94967296,
            68.719476736,
            109.9511627776,
            120.0,
            120.0,
        ];
        for (w, e) in waits.iter().zip(want) {
            assert!((w - e).abs() < 1e-6, "{waits:?}");
        }
    }

    #[test]
    fn jitter_stays_within_20_percent_and_reset_restarts() {
        let mut b = Backoff::default();
        assert!((b.wait_with(0.0).as_secs_f64() - 0.8).abs() < 1e-9);
        assert!((b.wait_with(0.999_999).as_secs_f64() - 1.6 * 1.2).abs() < 1e-5);
        b.reset();
        assert!((b.wait_with(0.5).as_secs_f64() - 1.0).abs() < 1e-9);
    }
}
