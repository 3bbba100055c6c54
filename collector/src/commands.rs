//! The operator's one-shot commands: import the station registry, issue enrollment
//! codes, revoke an agent, make a weekly report. Each opens the store itself and may run beside a serving
//! collector (SQLite serialises the writers).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::auth::{self, CodeKey};
use crate::domain::now_ms;
use crate::registry::{self, RegistryError};
use crate::store::{self, ImportSummary, StoreError, Synchronous};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{path}: {source}")]
    Registry {
        path: PathBuf,
        source: RegistryError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Validates a whole registry file, then writes it in one transaction; a file with any
/// bad row changes nothing. Progress is logged every 100,000 rows.
pub fn import_stations(data_dir: &Path, file: &Path) -> Result<ImportSummary, CommandError> {
    let f = std::fs::File::open(file).map_err(|source| CommandError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let started = std::time::Instant::now();
    tracing::info!(file = %file.display(), "validating station registry");
    let stations = registry::parse(
        std::io::BufReader::with_capacity(1 << 20, f),
        100_000,
        |n| tracing::info!(rows = n, "validated"),
    )
    .map_err(|source| CommandError::Registry {
        path: file.to_path_buf(),
        source,
    })?;
    tracing::info!(stations = stations.len(), "registry valid; writing");
    let outside = crate::boundaries::warn_outside(&stations);
    if outside.count > 0 {
        tracing::warn!(
            stations = outside.count,
            "stations lie outside their own regency's boundary; imported anyway, but check their coordinates (lat/lon swapped or a sign lost?)"
        );
        for line in &outside.first {
            tracing::warn!("{line}");
        }
    }
    let mut conn = store::open(data_dir, Synchronous::Full)?;
    let summary = store::import_stations(&mut conn, &stations, now_ms(), |n| {
        tracing::info!(stations = n, "written")
    })?;
    tracing::info!(
        inserted = summary.inserted,
        updated = summary.updated,
        unchanged = summary.unchanged,
        not_in_file = summary.not_in_file,
        seconds = format_args!("{:.1}", started.elapsed().as_secs_f64()),
        "station registry imported"
    );
    if summary.not_in_file > 0 {
        tracing::warn!(
            stations = summary.not_in_file,
            "stations in the store are not in this file; they were kept with their history"
        );
    }
    Ok(summary)
}

/// Checks a region argument: a dotted or plain code prefix of 2 to 13 digits.
pub fn parse_region(region: &str) -> Result<String, CommandError> {
    let digits = region.replace('.', "");
    if digits.len() < 2 || digits.len() > 13 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::Usage(format!(
            "--region {region:?}: give a region code like 21, 21.71, 21.71.01, a village code or a TPS code"
        )));
    }
    Ok(region.to_string())
}

/// Issues a new one-time enrollment code for every station in `region` (all when
/// `None`), replacing unused earlier codes, and writes them to `out` as CSV. The file is
/// written under a temporary name and renamed only after the codes are committed.
pub fn enroll_codes(
    data_dir: &Path,
    region: Option<&str>,
    out: &Path,
) -> Result<usize, CommandError> {
    let region = region.map(parse_region).transpose()?;
    let mut conn = store::open(data_dir, Synchronous::Full)?;
    let key = CodeKey::load_or_create(data_dir).map_err(|source| CommandError::Io {
        path: data_dir.join("secret.key"),
        source,
    })?;
    let codes = store::station_codes(&conn, region.as_deref())?;
    if codes.is_empty() {
        return Err(CommandError::Usage(match region {
            Some(r) => format!("no station in the registry under region {r}"),
            None => "the station registry is empty; run import-stations first".into(),
        }));
    }
    let io = |source| CommandError::Io {
        path: out.to_path_buf(),
        source,
    };
    let tmp = out.with_extension("csv.partial");
    let mut hashes = Vec::with_capacity(codes.len());
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut w = std::io::BufWriter::new(opts.open(&tmp).map_err(io)?);
        writeln!(w, "tps_code,enrollment_code").map_err(io)?;
        for tps in &codes {
            let code = auth::new_code();
            let normalized = auth::normalize_code(&code).unwrap_or_default();
            hashes.push((tps.clone(), key.hash(tps, &normalized)));
            writeln!(w, "{tps},{code}").map_err(io)?;
        }
        w.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
    }
    store::store_codes(&mut conn, &hashes, now_ms())?;
    std::fs::rename(&tmp, out).map_err(io)?;
    tracing::info!(stations = codes.len(), out = %out.display(), "enrollment codes issued; earlier unused codes for these stations no longer work");
    Ok(codes.len())
}

/// Revokes an agent; a serving collector refuses its pushes within a few seconds.
pub fn revoke_agent(data_dir: &Path, agent_id: u64, reason: &str) -> Result<String, CommandError> {
    let conn = store::open(data_dir, Synchronous::Full)?;
    let tps = store::revoke_agent(&conn, agent_id, reason, now_ms())?;
    tracing::info!(agent_id, %tps, "agent revoked; the station can enroll again with a new code");
    Ok(tps)
}

/// Creates an operator and returns the token (shown once).
pub fn add_operator(data_dir: &Path, name: &str, role: &str) -> Result<String, CommandError> {
    let role = crate::store::operators::Role::parse(role).ok_or_else(|| {
        CommandError::Usage(format!("--role {role:?}: use viewer, operator or admin"))
    })?;
    let conn = store::open(data_dir, Synchronous::Full)?;
    crate::store::operators::add(&conn, name, role, now_ms())
        .map_err(|e| CommandError::Usage(e.to_string()))
}

pub fn revoke_operator(data_dir: &Path, name: &str) -> Result<(), CommandError> {
    let conn = store::open(data_dir, Synchronous::Full)?;
    crate::store::operators::revoke(&conn, name, now_ms())
        .map_err(|e| CommandError::Usage(e.to_string()))
}

pub fn list_operators(data_dir: &Path) -> Result<Vec<(String, String, bool)>, CommandError> {
    let conn = store::open(data_dir, Synchronous::Full)?;
    Ok(crate::store::operators::list(&conn)?)
}

/// What `report weekly` was asked for (strings as typed; checked here).
#[derive(Debug)]
pub struct WeeklyRequest<'a> {
    pub week: Option<&'a str>,
    pub region: Option<&'a str>,
    pub format: &'a str,
    pub lang: Option<&'a str>,
    pub out: &'a Path,
}

/// Makes one weekly report into a file (written whole or not at all); returns a line
/// for the operator.
pub fn weekly_report(
    data_dir: &Path,
    cfg: &crate::report::schedule::ReportConfig,
    r: &WeeklyRequest<'_>,
) -> Result<String, CommandError> {
    use crate::report::{self, Format, Lang, Week, schedule};
    let usage = |flag: &str, e: String| CommandError::Usage(format!("{flag}: {e}"));
    let now = now_ms();
    let week: Week = report::week::requested(r.week, now, &cfg.tz)
        .map_err(|e| usage("--week", e.to_string()))?;
    let format: Format = r.format.parse().map_err(|e| usage("--format", e))?;
    let lang: Lang = match r.lang {
        Some(l) => l.parse().map_err(|e| usage("--lang", e))?,
        None => cfg.lang,
    };
    let region = r
        .region
        .map(|code| crate::domain::parse_region(code).map_err(|e| usage("--region", e.to_string())))
        .transpose()?;
    if !store::db_path(data_dir).is_file() {
        return Err(CommandError::Usage(format!(
            "no collector store in {}; give the data directory of a collector",
            data_dir.display()
        )));
    }
    let started = std::time::Instant::now();
    let mut conn = store::open(data_dir, Synchronous::Full)?;
    tracing::info!("bringing measurement rollups up to date");
    let folded = crate::sinks::rollup::catch_up_all(&mut conn, &cfg.tz)?;
    tracing::info!(measurements = folded, %week, "rollups current; computing the report");
    let report = report::make(&conn, &cfg.options(week, region, now))?;
    schedule::write_atomically(r.out, |w| report::render_to(&report, format, lang, w))?;
    Ok(format!(
        "{} written: week {week}{}, {} stations, {} need follow-up ({} never had an agent), {:.1} s",
        r.out.display(),
        if report.complete {
            ""
        } else {
            " (still running: up to now)"
        },
        report.headline.stations,
        report.follow_up.len() + report.never_had_agent.len(),
        report.never_had_agent.len(),
        started.elapsed().as_secs_f64()
    ))
}
