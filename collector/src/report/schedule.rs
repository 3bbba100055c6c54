//! Writes last week's report (HTML, CSV, JSON) into `<data_dir>/reports` on a weekly
//! schedule (Monday 00:00 Asia/Jakarta by default), catches up on a missed run after a
//! restart, and lists what was written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::compute::Options;
use super::week::{Week, rfc3339};
use super::{Format, Lang, ReportError};
use crate::domain::now_ms;
use crate::store::{self, writer::Writer};

/// The `[report]` section, validated.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    pub tz: TimeZone,
    /// When the weekly run happens, local time.
    pub weekday: Weekday,
    pub at: Time,
    /// Availability (0–1) below which a station needs follow-up.
    pub threshold: f64,
    pub lang: Lang,
    /// Off: reports are only made on request.
    pub schedule: bool,
    /// How often measurements are folded into the daily rollups.
    pub rollup_every: Duration,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            tz: TimeZone::get("Asia/Jakarta").unwrap_or(TimeZone::UTC),
            weekday: Weekday::Monday,
            at: Time::midnight(),
            threshold: 0.95,
            lang: Lang::Id,
            schedule: true,
            rollup_every: Duration::from_secs(60),
        }
    }
}

impl ReportConfig {
    pub fn options(&self, week: Week, region: Option<String>, now_ms: i64) -> Options {
        Options {
            week,
            region,
            threshold: self.threshold,
            tz: self.tz.clone(),
            now_ms,
        }
    }

    /// The newest scheduled run at or before `now_ms`.
    pub fn last_run(&self, now_ms: i64) -> i64 {
        let today = Timestamp::from_millisecond(now_ms)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone())
            .date();
        let back = i64::from(today.weekday().since(self.weekday));
        let at = |days_back: i64| {
            let d = today
                .checked_sub(jiff::Span::new().days(days_back))
                .unwrap_or(today);
            self.tz
                .to_ambiguous_zoned(d.to_datetime(self.at))
                .compatible()
                .map(|z| z.timestamp().as_millisecond())
                .unwrap_or_default()
        };
        let t = at(back);
        if t <= now_ms { t } else { at(back + 7) }
    }

    /// The first scheduled run after `now_ms`.
    pub fn next_run(&self, now_ms: i64) -> i64 {
        // A week later in local time, whatever the clocks did in between.
        let last = self.last_run(now_ms);
        let mut probe = last + 7 * 86_400_000 - 2 * 3_600_000;
        while self.last_run(probe) == last {
            probe += 3_600_000;
        }
        self.last_run(probe)
    }

    /// The week the newest scheduled run reports on: the last whole week before it.
    pub fn due_week(&self, now_ms: i64) -> Week {
        Week::containing(self.last_run(now_ms), &self.tz).previous()
    }
}

pub fn reports_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("reports")
}

pub fn file_name(week: Week, format: Format) -> String {
    format!("weekly-{week}.{}", format.extension())
}

/// A stored report file.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    pub week: String,
    pub format: &'static str,
    pub name: String,
    pub bytes: u64,
    pub written: String,
}

/// The reports in the data directory, newest week first.
pub fn list(data_dir: &Path, tz: &TimeZone) -> Vec<Stored> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(reports_dir(data_dir)) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((week, ext)) = name
            .strip_prefix("weekly-")
            .and_then(|rest| rest.rsplit_once('.'))
        else {
            continue;
        };
        let (Ok(week), Ok(format)) = (week.parse::<Week>(), ext.parse::<Format>()) else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        let written = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| rfc3339(d.as_millis() as i64, tz))
            .unwrap_or_default();
        out.push(Stored {
            week: week.to_string(),
            format: format.extension(),
            name,
            bytes: meta.len(),
            written,
        });
    }
    out.sort_by(|a, b| b.week.cmp(&a.week).then(a.format.cmp(b.format)));
    out
}

/// A stored report's path, if `name` is one of ours (never a path outside the directory).
pub fn stored_path(data_dir: &Path, name: &str) -> Option<PathBuf> {
    let (week, ext) = name.strip_prefix("weekly-")?.rsplit_once('.')?;
    let week: Week = week.parse().ok()?;
    let format: Format = ext.parse().ok()?;
    let path = reports_dir(data_dir).join(file_name(week, format));
    path.is_file().then_some(path)
}

/// Writes `path` with `fill` so that it appears whole or not at all.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn std::io::Write) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    let io = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("partial");
    let result = (|| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        fill(&mut f)?;
        let f = f.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Opens the store read-only, for a long report that should not hold the shared reader.
pub fn open_read_only(data_dir: &Path) -> Result<Connection, ReportError> {
    let conn = Connection::open_with_flags(
        store::db_path(data_dir),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(30))?;
    Ok(conn)
}

/// Computes `week` once and writes it in every format; returns the files written.
pub fn write_week(
    conn: &Connection,
    cfg: &ReportConfig,
    week: Week,
    data_dir: &Path,
    now_ms: i64,
) -> Result<Vec<PathBuf>, ReportError> {
    let report = super::make(conn, &cfg.options(week, None, now_ms))?;
    let mut written = Vec::new();
    for format in Format::ALL {
        let path = reports_dir(data_dir).join(file_name(week, format));
        write_atomically(&path, |w| super::render_to(&report, format, cfg.lang, w))?;
        written.push(path);
    }
    Ok(written)
}

fn written(data_dir: &Path, week: Week) -> bool {
    Format::ALL
        .iter()
        .all(|&f| reports_dir(data_dir).join(file_name(week, f)).is_file())
}

/// Whether any station existed before the end of `week` (nothing to report otherwise).
fn has_stations(conn: &Connection, cfg: &ReportConfig, week: Week) -> Result<bool, ReportError> {
    let (_, end) = week.bounds(&cfg.tz);
    Ok(crate::store::stations_before(conn, end)?)
}

/// One report is made at a time in the running collector: a national one holds about
/// 750 MB while it is computed, so requests queue here instead of adding up.
pub static MAKING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Makes the due report if it is missing; `Ok(None)` when there was nothing to do.
pub async fn make_due(
    writer: &Writer,
    data_dir: &Path,
    cfg: &ReportConfig,
) -> Result<Option<(Week, Vec<PathBuf>)>, ReportError> {
    let week = cfg.due_week(now_ms());
    if written(data_dir, week) {
        return Ok(None);
    }
    let _turn = MAKING.acquire().await;
    crate::sinks::rollup::catch_up_via(writer, &cfg.tz).await?;
    let (dir, cfg) = (data_dir.to_path_buf(), cfg.clone());
    tokio::task::spawn_blocking(move || {
        let conn = open_read_only(&dir)?;
        if !has_stations(&conn, &cfg, week)? {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        tracing::info!(%week, "making the weekly coverage report");
        let files = write_week(&conn, &cfg, week, &dir, now_ms())?;
        tracing::info!(%week, seconds = started.elapsed().as_secs_f64(), dir = %reports_dir(&dir).display(), "weekly report written");
        Ok(Some((week, files)))
    })
    .await
    .map_err(|e| ReportError::Render(e.to_string()))?
}

/// The schedule in the running collector: checks at each run time, and at least hourly
/// (a clock change or a failed run is picked up within the hour).
pub async fn run(
    writer: Writer,
    data_dir: PathBuf,
    cfg: ReportConfig,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    loop {
        match make_due(&writer, &data_dir, &cfg).await {
            Ok(Some(_)) => {
                metrics.weekly_report("written");
                metrics.weekly_report_last_success.set(now_ms() / 1000);
            }
            Ok(None) => {}
            Err(e) => {
                metrics.weekly_report("failed");
                tracing::error!(error = %e, "weekly report failed; trying again within the hour");
            }
        }
        let now = now_ms();
        let wait = (cfg.next_run(now) - now).clamp(1_000, 3_600_000);
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_runs_monday_midnight_in_jakarta_for_the_week_before() {
        let cfg = ReportConfig::default();
        // Sunday 22 November 2026 09:39 UTC = 16:39 WIB.
        let now = 1_795_340_340_000;
        assert_eq!(
            rfc3339(cfg.last_run(now), &cfg.tz),
            "2026-11-16T00:00:00+07:00"
        );
        assert_eq!(
            rfc3339(cfg.next_run(now), &cfg.tz),
            "2026-11-23T00:00:00+07:00"
        );
        assert_eq!(cfg.due_week(now).to_string(), "2026-W46");
        // At the run instant itself, the week that just ended is due.
        let run = cfg.next_run(now);
        assert_eq!(cfg.last_run(run), run);
        assert_eq!(cfg.due_week(run).to_string(), "2026-W47");
        assert_eq!(cfg.due_week(run - 1).to_string(), "2026-W46");
        let friday = ReportConfig {
            weekday: Weekday::Friday,
            at: Time::constant(17, 30, 0, 0),
            ..ReportConfig::default()
        };
        assert_eq!(
            rfc3339(friday.next_run(now), &cfg.tz),
            "2026-11-27T17:30:00+07:00"
        );
        assert_eq!(friday.due_week(now).to_string(), "2026-W46");
    }

    #[test]
    fn only_our_report_names_map_to_files() {
        let dir = tempfile::tempdir().unwrap();
        let week: Week = "2026-W47".parse().unwrap();
        let path = reports_dir(dir.path()).join(file_name(week, Format::Csv));
        write_atomically(&path, |w| {
            w.write_all(b"x")
                .map_err(|e| ReportError::Render(e.to_string()))
        })
        .unwrap();
        // A failed write leaves neither the file nor its partial.
        let failed = reports_dir(dir.path()).join(file_name(week, Format::Json));
        let e = write_atomically(&failed, |_| Err(ReportError::Render("boom".into())));
        assert!(e.is_err());
        assert!(!failed.exists() && !failed.with_extension("partial").exists());
        assert_eq!(stored_path(dir.path(), "weekly-2026-W47.csv"), Some(path));
        for bad in [
            "weekly-2026-W47.pdf",
            "../collector.sqlite",
            "weekly-../../x.csv",
            "weekly-2026-W48.csv",
        ] {
            assert_eq!(stored_path(dir.path(), bad), None, "{bad}");
        }
        let listed = list(dir.path(), &TimeZone::UTC);
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].week.as_str(), listed[0].format),
            ("2026-W47", "csv")
        );
    }
}
