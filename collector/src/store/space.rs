//! Disk space of the store: the size of its files, the free space of their file system,
//! how fast the store grows and when it would reach the floor, and whether pushes are
//! refused because free space is below the floor. One sampler task owns the readings;
//! ingest, the state owner, `/healthz` and `/metrics` read them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// How often free space is looked at.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often the store's size is recorded for the growth estimate, and how much history
/// the estimate uses.
const GROWTH_SAMPLE_EVERY: Duration = Duration::from_secs(60);
const GROWTH_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Growth is estimated only from at least this much history.
const GROWTH_MIN_SPAN: Duration = Duration::from_secs(10 * 60);
/// While refusing, the warning is repeated this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The free space below which pushes are refused: the larger of a size and a share of
/// the file system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floor {
    pub min_free_bytes: u64,
    pub min_free_pct: f64,
}

impl Default for Floor {
    fn default() -> Self {
        Floor {
            min_free_bytes: 2 * 1024 * 1024 * 1024,
            min_free_pct: 5.0,
        }
    }
}

impl Floor {
    /// The floor in bytes on a file system of `total` bytes.
    pub fn bytes(&self, total: u64) -> u64 {
        let share = (total as f64 * self.min_free_pct / 100.0) as u64;
        self.min_free_bytes.max(share)
    }
}

/// One reading.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SpaceView {
    /// The database and its WAL, bytes.
    pub store_bytes: u64,
    /// Free for the collector on the store's file system, and that file system's size.
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub floor_bytes: u64,
    /// How fast the store grew over up to the last day (`None` until 10 minutes are seen).
    pub growth_bytes_per_day: Option<f64>,
    /// When free space would reach the floor at that rate (`None` when not growing).
    pub days_until_floor: Option<f64>,
    /// Pushes are refused: free space is below the floor.
    pub refusing: bool,
    /// The file system could not be read (the last error).
    pub error: Option<String>,
}

/// The shared readings; written by [`run`] only.
#[derive(Debug)]
pub struct Space {
    dir: PathBuf,
    floor: Floor,
    refusing: AtomicBool,
    view: RwLock<SpaceView>,
}

impl Space {
    /// Takes a first reading at once, so the collector starts refusing if it starts on a
    /// disk that is already too full.
    pub fn new(dir: &Path, floor: Floor) -> Arc<Space> {
        let s = Arc::new(Space {
            dir: dir.to_path_buf(),
            floor,
            refusing: AtomicBool::new(false),
            view: RwLock::new(SpaceView::default()),
        });
        let mut v = s.read_now(false);
        v.refusing = v.error.is_none() && v.free_bytes < v.floor_bytes;
        s.refusing.store(v.refusing, Ordering::Relaxed);
        *s.view.write().unwrap_or_else(|p| p.into_inner()) = v;
        s
    }

    /// Pushes must be refused now.
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    pub fn view(&self) -> SpaceView {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What an agent is told when its push is refused.
    pub fn refusal_message(&self) -> String {
        let v = self.view();
        format!(
            "the collector's disk is nearly full ({} MB free, below the floor of {} MB): \
             keep the measurements and retry later",
            v.free_bytes / 1_048_576,
            v.floor_bytes / 1_048_576
        )
    }

    fn read_now(&self, was_refusing: bool) -> SpaceView {
        let store_bytes = ["collector.sqlite", "collector.sqlite-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum();
        match rustix::fs::statvfs(&self.dir) {
            Ok(s) => {
                let total = s.f_blocks.saturating_mul(s.f_frsize);
                let free = s.f_bavail.saturating_mul(s.f_frsize);
                let floor = self.floor.bytes(total);
                // Resume a little above the floor, so a disk right at it does not flap.
                let resume = floor.saturating_add(floor / 50);
                let refusing = if was_refusing {
                    free < resume
                } else {
                    free < floor
                };
                SpaceView {
                    store_bytes,
                    free_bytes: free,
                    total_bytes: total,
                    floor_bytes: floor,
                    refusing,
                    ..SpaceView::default()
                }
            }
            Err(e) => SpaceView {
                store_bytes,
                refusing: was_refusing,
                error: Some(format!(
                    "cannot read the free space of {}: {e}",
                    self.dir.display()
                )),
                ..SpaceView::default()
            },
        }
    }
}

/// Store sizes over time, for the growth per day.
#[derive(Debug, Default)]
struct Growth(VecDeque<(Instant, u64)>);

impl Growth {
    fn record(&mut self, at: Instant, size: u64) {
        if self
            .0
            .back()
            .is_some_and(|(t, _)| at.duration_since(*t) < GROWTH_SAMPLE_EVERY)
        {
            return;
        }
        self.0.push_back((at, size));
        while self
            .0
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > GROWTH_WINDOW)
        {
            self.0.pop_front();
        }
    }

    fn per_day(&self) -> Option<f64> {
        let (t0, s0) = self.0.front()?;
        let (t1, s1) = self.0.back()?;
        let span = t1.duration_since(*t0);
        (span >= GROWTH_MIN_SPAN).then(|| (*s1 as f64 - *s0 as f64) / span.as_secs_f64() * 86_400.0)
    }
}

/// Samples the disk until `stop`; logs when pushes start and stop being refused (and
/// once a minute in between).
pub async fn run(
    space: Arc<Space>,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut growth = Growth::default();
    let mut last_warn: Option<Instant> = None;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        let was = space.refusing();
        let s = space.clone();
        let Ok(mut v) = tokio::task::spawn_blocking(move || s.read_now(was)).await else {
            continue;
        };
        let now = Instant::now();
        growth.record(now, v.store_bytes);
        v.growth_bytes_per_day = growth.per_day();
        v.days_until_floor = v
            .growth_bytes_per_day
            .filter(|g| *g > 0.0)
            .map(|g| v.free_bytes.saturating_sub(v.floor_bytes) as f64 / g);
        if v.refusing && last_warn.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            last_warn = Some(now);
            tracing::warn!(
                free_mb = v.free_bytes / 1_048_576,
                floor_mb = v.floor_bytes / 1_048_576,
                store_mb = v.store_bytes / 1_048_576,
                "the store's disk is below its free-space floor: pushes are refused (agents keep \
                 their measurements) until space is freed; the API and dashboard stay up"
            );
        }
        if was && !v.refusing {
            last_warn = None;
            tracing::info!(
                free_mb = v.free_bytes / 1_048_576,
                "free space is back above the floor: pushes are accepted again"
            );
        }
        if let Some(e) = &v.error {
            tracing::warn!(error = %e, "disk check failed; the last decision stands");
        }
        metrics.observe_space(&v);
        space.refusing.store(v.refusing, Ordering::Relaxed);
        *space.view.write().unwrap_or_else(|p| p.into_inner()) = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_the_larger_of_size_and_share() {
        let f = Floor::default();
        assert_eq!(f.bytes(10 * 1024 * 1024 * 1024), 2 * 1024 * 1024 * 1024);
        assert_eq!(f.bytes(100 * 1024 * 1024 * 1024), 5 * 1024 * 1024 * 1024);
    }

    #[test]
    fn growth_needs_ten_minutes_and_forgets_after_a_day() {
        let mut g = Growth::default();
        let t0 = Instant::now();
        g.record(t0, 1000);
        g.record(t0 + Duration::from_secs(300), 2000);
        assert_eq!(g.per_day(), None, "five minutes are not enough");
        g.record(t0 + Duration::from_secs(600), 3000);
        let d = g.per_day().unwrap();
        assert!((d - 2000.0 * 144.0).abs() < 1e-6, "{d}");
        // A day later the first samples have gone: a store that stopped growing shows 0.
        g.record(t0 + Duration::from_secs(86_400 + 700), 3000);
        g.record(t0 + Duration::from_secs(86_400 + 1400), 3000);
        assert_eq!(g.per_day(), Some(0.0));
    }
}
