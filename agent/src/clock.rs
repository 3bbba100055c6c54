//! The agent's time: its own wall clock, and the offset to the collector's clock that
//! every push answer tells (`server_time_ms`). A router without a real-time clock
//! starts in 1970 until NTP syncs; a laptop drifts; either may jump.
//!
//! Rounds are stamped with the agent's clock and, once the offset is known, the offset
//! (so the collector judges them on its own clock). Time runs in *epochs*: a new one
//! begins at start and whenever the wall clock jumps against the monotonic clock (an
//! NTP step, a clock set by hand, a laptop waking). An offset learned in an epoch also
//! applies to the rounds measured earlier in that epoch, before the collector could be
//! reached; rounds of an earlier epoch keep what they had.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A wall clock that moved this much more (or less) than the monotonic clock jumped.
pub const JUMP: Duration = Duration::from_secs(2);
/// A new offset within this much of the known one is noise (the push's round trip).
const OFFSET_NOISE_MS: i64 = 1_000;

/// The wall clock now, unix ms.
pub fn wall_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// A round's time stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The agent's wall clock, unix ms.
    pub wall_ms: i64,
    /// Collector clock minus agent clock, when known in this epoch.
    pub offset_ms: Option<i64>,
    pub epoch: i64,
}

impl Stamp {
    pub fn corrected_ms(&self) -> i64 {
        self.wall_ms + self.offset_ms.unwrap_or(0)
    }
}

/// The agent's clock; one per process, shared by the probe and push loops.
#[derive(Debug)]
pub struct Clock {
    epoch: i64,
    offset_ms: Option<i64>,
    /// The last reading of both clocks, to see jumps.
    last: (Instant, i64),
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A new epoch with no offset known. Epochs of different processes differ (their
    /// spooled rounds are not corrected by each other's offsets).
    pub fn new() -> Clock {
        Clock {
            epoch: i64::from(rand::random::<u32>()) << 16,
            offset_ms: None,
            last: (Instant::now(), wall_ms()),
        }
    }

    /// Reads both clocks; a jump of the wall clock starts a new epoch.
    fn observe(&mut self, mono: Instant, wall: i64) {
        let mono_ms = mono.saturating_duration_since(self.last.0).as_millis() as i64;
        let wall_delta = wall - self.last.1;
        if (wall_delta - mono_ms).abs() > JUMP.as_millis() as i64 {
            tracing::info!(
                jumped_ms = wall_delta - mono_ms,
                "the device clock jumped (NTP, set by hand, or waking from sleep); waiting for the collector's time again"
            );
            self.epoch += 1;
            self.offset_ms = None;
        }
        self.last = (mono, wall);
    }

    /// The stamp for a round starting now.
    pub fn stamp(&mut self) -> Stamp {
        self.stamp_at(Instant::now(), wall_ms())
    }

    pub fn stamp_at(&mut self, mono: Instant, wall: i64) -> Stamp {
        self.observe(mono, wall);
        Stamp {
            wall_ms: wall,
            offset_ms: self.offset_ms,
            epoch: self.epoch,
        }
    }

    /// The offset known now, if any.
    pub fn offset_ms(&self) -> Option<i64> {
        self.offset_ms
    }

    /// Learns from a push sent at `sent_ms` and answered at `answered_ms` (agent clock)
    /// with the collector's `server_ms`. Returns the epoch and offset when they are
    /// new, so spooled rounds of the epoch without one can be given it.
    pub fn learn(&mut self, sent_ms: i64, answered_ms: i64, server_ms: i64) -> Option<(i64, i64)> {
        self.learn_at(Instant::now(), sent_ms, answered_ms, server_ms)
    }

    pub fn learn_at(
        &mut self,
        mono: Instant,
        sent_ms: i64,
        answered_ms: i64,
        server_ms: i64,
    ) -> Option<(i64, i64)> {
        if server_ms <= 0 || answered_ms < sent_ms {
            return None;
        }
        self.observe(mono, answered_ms);
        // The server read its clock about halfway through the round trip.
        let offset = server_ms - (sent_ms + (answered_ms - sent_ms) / 2);
        if self
            .offset_ms
            .is_some_and(|o| (o - offset).abs() < OFFSET_NOISE_MS)
        {
            return None;
        }
        if self.offset_ms.is_none() || (offset - self.offset_ms.unwrap_or(0)).abs() > 60_000 {
            tracing::info!(
                offset_ms = offset,
                "clock offset to the collector learned; rounds are stamped with the collector's time"
            );
        }
        self.offset_ms = Some(offset);
        Some((self.epoch, offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000; // a router that booted in 1970
    const REAL: i64 = 1_800_000_000_000;

    #[test]
    fn an_offset_is_learned_and_applied() {
        let m0 = Instant::now();
        let mut c = Clock::new();
        let s = c.stamp_at(m0, T0);
        assert_eq!(s.offset_ms, None);
        let epoch = s.epoch;
        // A push sent at T0+10 s, answered 200 ms later, the server at REAL.
        let m = m0 + Duration::from_millis(10_200);
        let learned = c.learn_at(m, T0 + 10_000, T0 + 10_200, REAL);
        assert_eq!(learned, Some((epoch, REAL - (T0 + 10_100))));
        let s = c.stamp_at(m + Duration::from_secs(30), T0 + 40_200);
        assert_eq!(s.epoch, epoch);
        assert_eq!(s.corrected_ms(), REAL + 30_100);
        // The same offset again is no news.
        let m2 = m + Duration::from_secs(60);
        assert_eq!(
            c.learn_at(m2, T0 + 70_000, T0 + 70_400, REAL + 60_000),
            None
        );
    }

    #[test]
    fn a_jump_starts_a_new_epoch_without_an_offset() {
        let m0 = Instant::now();
        let mut c = Clock::new();
        let e0 = c.stamp_at(m0, T0).epoch;
        c.learn_at(m0, T0, T0, REAL).unwrap();
        // NTP steps the clock to the real time 30 s later.
        let s = c.stamp_at(m0 + Duration::from_secs(30), REAL + 30_000);
        assert_ne!(s.epoch, e0);
        assert_eq!(s.offset_ms, None, "the old offset no longer holds");
        // Steady again: same epoch.
        let s2 = c.stamp_at(m0 + Duration::from_secs(60), REAL + 60_000);
        assert_eq!(s2.epoch, s.epoch);
        // A small drift is no jump.
        let s3 = c.stamp_at(m0 + Duration::from_secs(90), REAL + 90_500);
        assert_eq!(s3.epoch, s.epoch);
    }

    #[test]
    fn nonsense_from_the_server_is_ignored() {
        let mut c = Clock::new();
        assert_eq!(c.learn(10, 20, 0), None);
        assert_eq!(c.learn(20, 10, REAL), None);
        assert_eq!(c.offset_ms(), None);
    }
}
