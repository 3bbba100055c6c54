//! The agent's time: its own wall clock, and the offset to the collector's clock that
//! every push answer tells (`server_time_ms`). A router without a real-time clock
//! starts in 1970 until NTP syncs; a laptop drifts; either may jump.
//!
//! Rounds are stamped with the agent's clock and, once the offset is known, the offset
//! (so the collector judges them on its own clock). Time runs in *epochs*: a new one
//! begins at start and whenever the wall clock jumps against the monotonic clock (an
//! NTP step, a clock set by hand, a laptop waking). An offset learned in an epoch also
//! applies to the rounds measured earlier in that epoch, before the collector could be
//! reached. Where the device has a clock that counts through suspend (Linux:
//! `CLOCK_BOOTTIME`), a jump is measured and remembered, so an offset learned after an
//! NTP step also reaches the rounds measured before it (a router's 1970 rounds); where
//! it has not, a jump cannot be told from sleep, and earlier epochs keep what they had.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall clock that moved this much more (or less) than the monotonic clock jumped.
pub const JUMP: Duration = Duration::from_secs(2);
/// A new offset within this much of the known one is noise (the push's round trip).
const OFFSET_NOISE_MS: i64 = 1_000;

/// Jumps remembered for reaching earlier epochs.
const LINKS: usize = 16;

/// A clock that never jumps, in ms since an arbitrary start, and whether it also counts
/// the time the device was suspended (then a difference to the wall clock is a real
/// jump, not sleep).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn steady_ms() -> (i64, bool) {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec * 1000 + t.tv_nsec / 1_000_000, true)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn steady_ms() -> (i64, bool) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    (start.elapsed().as_millis() as i64, false)
}

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
    /// The last reading of the steady and the wall clock, to see jumps.
    last: (i64, i64),
    /// Whether the steady clock counts suspend (jumps are then measured).
    measured: bool,
    /// (epoch before, jump into the next epoch) for the last jumps, oldest first.
    links: Vec<(i64, i64)>,
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
        let (steady, measured) = steady_ms();
        Clock::starting(steady, wall_ms(), measured)
    }

    /// A clock whose readings are given (tests): `steady` and `wall` now, and whether
    /// the steady clock counts suspend.
    pub fn starting(steady: i64, wall: i64, measured: bool) -> Clock {
        Clock {
            epoch: i64::from(rand::random::<u32>()) << 16,
            offset_ms: None,
            last: (steady, wall),
            measured,
            links: Vec::new(),
        }
    }

    /// Reads both clocks; a jump of the wall clock starts a new epoch.
    fn observe(&mut self, steady: i64, wall: i64) {
        let jump = (wall - self.last.1) - (steady - self.last.0);
        if jump.abs() > JUMP.as_millis() as i64 {
            tracing::info!(
                jumped_ms = jump,
                "the device clock jumped (NTP, set by hand, or waking from sleep); waiting for the collector's time again"
            );
            if self.measured {
                self.links.push((self.epoch, jump));
                if self.links.len() > LINKS {
                    self.links.remove(0);
                }
            }
            self.epoch += 1;
            self.offset_ms = None;
        }
        self.last = (steady, wall);
    }

    /// The stamp for a round starting now.
    pub fn stamp(&mut self) -> Stamp {
        self.stamp_at(steady_ms().0, wall_ms())
    }

    pub fn stamp_at(&mut self, steady: i64, wall: i64) -> Stamp {
        self.observe(steady, wall);
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
    /// with the collector's `server_ms`. Returns, when the offset is new, the offset of
    /// this epoch and of the earlier epochs it reaches through measured jumps (newest
    /// first), so spooled rounds without one can be given theirs.
    pub fn learn(&mut self, sent_ms: i64, answered_ms: i64, server_ms: i64) -> Vec<(i64, i64)> {
        self.learn_at(steady_ms().0, sent_ms, answered_ms, server_ms)
    }

    pub fn learn_at(
        &mut self,
        steady: i64,
        sent_ms: i64,
        answered_ms: i64,
        server_ms: i64,
    ) -> Vec<(i64, i64)> {
        if server_ms <= 0 || answered_ms < sent_ms {
            return Vec::new();
        }
        self.observe(steady, answered_ms);
        // The server read its clock about halfway through the round trip.
        let offset = server_ms - (sent_ms + (answered_ms - sent_ms) / 2);
        if self
            .offset_ms
            .is_some_and(|o| (o - offset).abs() < OFFSET_NOISE_MS)
        {
            return Vec::new();
        }
        if self.offset_ms.is_none() || (offset - self.offset_ms.unwrap_or(0)).abs() > 60_000 {
            tracing::info!(
                offset_ms = offset,
                "clock offset to the collector learned; rounds are stamped with the collector's time"
            );
        }
        self.offset_ms = Some(offset);
        // Before a jump of J the wall clock was J behind: its offset was J more.
        let mut out = vec![(self.epoch, offset)];
        let (mut epoch, mut o) = (self.epoch, offset);
        for &(before, jump) in self.links.iter().rev() {
            if before + 1 != epoch {
                break;
            }
            o += jump;
            epoch = before;
            out.push((epoch, o));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000; // a router that booted in 1970
    const REAL: i64 = 1_800_000_000_000;

    #[test]
    fn an_offset_is_learned_and_applied() {
        let mut c = Clock::starting(0, T0, true);
        let s = c.stamp_at(0, T0);
        assert_eq!(s.offset_ms, None);
        let epoch = s.epoch;
        // A push sent at T0+10 s, answered 200 ms later, the server at REAL.
        let learned = c.learn_at(10_200, T0 + 10_000, T0 + 10_200, REAL);
        assert_eq!(learned, vec![(epoch, REAL - (T0 + 10_100))]);
        let s = c.stamp_at(40_200, T0 + 40_200);
        assert_eq!(s.epoch, epoch);
        assert_eq!(s.corrected_ms(), REAL + 30_100);
        // The same offset again is no news.
        assert!(
            c.learn_at(70_400, T0 + 70_000, T0 + 70_400, REAL + 60_000)
                .is_empty()
        );
    }

    #[test]
    fn a_jump_starts_a_new_epoch_and_its_offset_reaches_back() {
        let mut c = Clock::starting(0, T0, true);
        let e0 = c.stamp_at(0, T0).epoch;
        // NTP steps the clock to the real time 30 s after boot, before the collector
        // was ever reached.
        let s = c.stamp_at(30_000, REAL + 30_000);
        assert_ne!(s.epoch, e0);
        assert_eq!(s.offset_ms, None);
        // Steady again: same epoch. A small drift is no jump.
        assert_eq!(c.stamp_at(60_000, REAL + 60_000).epoch, s.epoch);
        assert_eq!(c.stamp_at(90_000, REAL + 90_500).epoch, s.epoch);
        // The collector is reached (its clock 2 s ahead): both epochs get theirs; a
        // 1970 stamp plus its offset is the real time.
        let learned = c.learn_at(120_000, REAL + 120_500, REAL + 120_500, REAL + 122_500);
        assert_eq!(learned.len(), 2);
        assert_eq!(learned[0], (s.epoch, 2_000));
        assert_eq!(learned[1].0, e0);
        assert_eq!(
            T0 + learned[1].1,
            REAL + 2_000,
            "the round at boot, by the collector's clock"
        );
    }

    #[test]
    fn without_a_clock_that_counts_suspend_a_jump_reaches_nothing_back() {
        let mut c = Clock::starting(0, T0, false);
        c.stamp_at(0, T0);
        c.stamp_at(30_000, REAL);
        assert_eq!(
            c.learn_at(60_000, REAL + 30_000, REAL + 30_000, REAL + 30_000)
                .len(),
            1
        );
    }

    #[test]
    fn nonsense_from_the_server_is_ignored() {
        let mut c = Clock::new();
        assert!(c.learn(10, 20, 0).is_empty());
        assert!(c.learn(20, 10, REAL).is_empty());
        assert_eq!(c.offset_ms(), None);
    }
}
