//! The weekly coverage report for KPU: figures per province, regency and district from
//! the stored status history and measurement rollups, rendered as HTML (print-ready, in
//! Bahasa Indonesia or English), CSV (one row per station) or JSON.
//!
//! # Layout
//! - [`week`]: ISO weeks and their bounds in the configured time zone.
//! - [`hist`]: RTT and loss histograms (what [`crate::sinks::rollup`] stores per day).
//! - [`compute`]: reads the store and computes a [`Report`] for one week.
//! - [`html`], [`table`]: the HTML document and the CSV file; JSON is the [`Report`].
//! - [`routes`]: `GET /api/v1/reports` (what was written) and
//!   `/api/v1/reports/weekly` (made on request).
//! - [`schedule`]: writes last week's report into the data directory every week and
//!   lists what was written.
//!
//! A report says what was known at the end of its week: states from the status history,
//! flags as they stood then. RTT and loss also count rounds that arrived later from an
//! agent's spool, so those two figures may grow by the late rounds of a backlog.

pub mod compute;
pub mod html;
pub mod schedule;
pub mod table;
pub mod week;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

pub use compute::{Report, make};
pub use week::Week;

/// The JSON schema's identifier; bump it when a field changes meaning.
pub const SCHEMA: &str = "tps-weekly-report/1";

/// Language of the HTML report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Id,
    En,
}

impl FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "id" => Ok(Lang::Id),
            "en" => Ok(Lang::En),
            other => Err(format!(
                "language {other:?} is not id (Bahasa Indonesia) or en"
            )),
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Id => "id",
            Lang::En => "en",
        })
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Html,
    Csv,
    Json,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Html, Format::Csv, Format::Json];
    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.extension() == s)
            .ok_or_else(|| format!("format {s:?} is not html, csv or json"))
    }
}

/// Renders a computed report.
pub fn render(report: &Report, format: Format, lang: Lang) -> Result<Vec<u8>, ReportError> {
    let mut out = Vec::new();
    render_to(report, format, lang, &mut out)?;
    Ok(out)
}

/// Renders a computed report into `out` (a national CSV or JSON is hundreds of MB: it is
/// streamed, not built in memory first). JSON is compact.
pub fn render_to(
    report: &Report,
    format: Format,
    lang: Lang,
    out: &mut dyn std::io::Write,
) -> Result<(), ReportError> {
    let render = |e: &dyn std::fmt::Display| ReportError::Render(e.to_string());
    match format {
        Format::Html => out
            .write_all(html::render(report, lang).as_bytes())
            .map_err(|e| render(&e)),
        Format::Csv => table::render_to(report, out),
        Format::Json => serde_json::to_writer(out, report).map_err(|e| render(&e)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("region {0:?} has no registered stations")]
    UnknownRegion(String),
    #[error("week {week} has not started yet (it starts {starts})")]
    NotStarted { week: Week, starts: String },
    #[error("cannot render the report: {0}")]
    Render(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl From<rusqlite::Error> for ReportError {
    fn from(e: rusqlite::Error) -> Self {
        ReportError::Store(e.into())
    }
}
