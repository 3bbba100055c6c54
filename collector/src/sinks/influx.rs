//! The InfluxDB 2 sink: copies every stored measurement and every status change into
//! InfluxDB (line protocol over `/api/v2/write`, with the `influxdb2` crate).
//!
//! SQLite stays the source of truth. The sink reads what is already committed, with
//! its own connection, from a durable cursor (`sink_cursors`) over the tables' rowid
//! order; ingest never waits for it. When InfluxDB is slow or away, the cursor simply
//! stops; when it returns, the backlog goes out in order and the sink catches up. A
//! batch whose answer was lost is written again after a restart: InfluxDB keeps one
//! point per series and timestamp, so a repeat overwrites instead of duplicating.
//!
//! Schema (documented in the README):
//! - `link,tps=,regency=,district=,target=,method=,agent= sent=i,received=i,loss=,
//!   rtt_min_ms=,rtt_avg_ms=,rtt_max_ms=,jitter_ms=` at the measurement's start time
//!   (and `errors=` i: probes answered by an ICMP error);
//! - `station_status,tps=,regency=,district= state="",cause="",covered=i,state_code=i`
//!   at the change's time. Regency and district are dotted region codes (`21.71`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use influxdb2::RequestError;
use influxdb2::api::write::TimestampPrecision;
use rusqlite::Connection;
use serde::Serialize;

use crate::domain::{RegionLevel, TpsCode};
use crate::metrics::Metrics;
use crate::store::{self, SinkMeasurement, StatusChange, StoreError};

pub const CURSOR_MEASUREMENTS: &str = "influx.measurements";
const CURSOR_STATUS: &str = "influx.status_changes";
/// Longest wait between attempts while InfluxDB is failing.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// The validated `[influx]` section.
#[derive(Clone)]
pub struct InfluxConfig {
    pub url: String,
    pub org: String,
    pub bucket: String,
    pub token: String,
    /// Points per write request.
    pub batch_size: usize,
    /// How long the sink waits for new data once it has caught up.
    pub flush_interval: Duration,
}

impl std::fmt::Debug for InfluxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxConfig")
            .field("url", &self.url)
            .field("org", &self.org)
            .field("bucket", &self.bucket)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

/// Where the sink stands, for `/healthz` and `/metrics`.
#[derive(Debug, Default)]
pub struct SinkStatus {
    state: Mutex<SinkState>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkState {
    pub url: String,
    pub bucket: String,
    /// `ok`, `failing` or `starting`.
    pub state: &'static str,
    pub last_error: Option<String>,
    pub lag_rows: i64,
    pub last_success_ms: Option<i64>,
}

impl SinkStatus {
    pub fn snapshot(&self) -> SinkState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn update(&self, f: impl FnOnce(&mut SinkState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Escapes a tag value (commas, spaces and equals signs; line protocol).
fn tag(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, ',' | ' ' | '=' | '\\') {
            out.push('\\');
        }
        if c == '\n' {
            out.push(' ');
            continue;
        }
        out.push(c);
    }
    if out.is_empty() { "none".into() } else { out }
}

/// Escapes a string field value.
fn string_field(v: &str) -> String {
    format!(
        "\"{}\"",
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', " ")
    )
}

fn regions(tps: &str) -> (String, String) {
    match tps.parse::<TpsCode>() {
        Ok(c) => (
            c.region(RegionLevel::Regency),
            c.region(RegionLevel::District),
        ),
        Err(_) => ("none".into(), "none".into()),
    }
}

/// One `link` point in line protocol (millisecond timestamp).
pub fn link_line(out: &mut String, m: &SinkMeasurement) {
    let (regency, district) = regions(&m.tps_code);
    let x = &m.measurement;
    let _ = write!(
        out,
        "link,tps={},regency={},district={},target={},method={},agent={} sent={}i,received={}i,errors={}i,loss={}",
        tag(&m.tps_code),
        tag(&regency),
        tag(&district),
        tag(&x.target_name),
        x.method.as_str(),
        m.agent_id,
        x.sent,
        x.received,
        x.errors,
        x.loss()
    );
    if let Some(r) = &x.rtt {
        let _ = write!(
            out,
            ",rtt_min_ms={},rtt_avg_ms={},rtt_max_ms={}",
            r.min_ms, r.avg_ms, r.max_ms
        );
        if let Some(j) = r.jitter_ms {
            let _ = write!(out, ",jitter_ms={j}");
        }
    }
    let _ = writeln!(out, " {}", x.start_ms);
}

/// Numeric code of a coverage state, for graphing.
pub fn state_code(state: &str) -> i64 {
    match state {
        "covered" => 0,
        "degraded" => 1,
        "offline" => 2,
        "no_agent" => 3,
        _ => 9,
    }
}

/// One `station_status` point in line protocol.
pub fn status_line(out: &mut String, c: &StatusChange) {
    let (regency, district) = regions(&c.tps_code);
    let _ = writeln!(
        out,
        "station_status,tps={},regency={},district={} state={},cause={},covered={}i,state_code={}i {}",
        tag(&c.tps_code),
        tag(&regency),
        tag(&district),
        string_field(&c.state),
        string_field(c.cause.as_deref().unwrap_or("")),
        i64::from(c.state == "covered"),
        state_code(&c.state),
        c.at_ms
    );
}

/// Explains an InfluxDB refusal to an operator.
fn explain(e: &RequestError) -> String {
    match e {
        RequestError::Http { status, text } => match status.as_u16() {
            401 | 403 => format!(
                "InfluxDB refused the token ({status}): check [influx] token / token_file. {text}"
            ),
            404 => format!(
                "InfluxDB has no such org or bucket ({status}): check [influx] org and bucket. {text}"
            ),
            _ => format!("InfluxDB answered {status}: {text}"),
        },
        other => format!("cannot reach InfluxDB: {other}"),
    }
}

/// Runs the sink until the task is dropped.
pub async fn run(
    config: InfluxConfig,
    data_dir: PathBuf,
    status: Arc<SinkStatus>,
    metrics: Arc<Metrics>,
) {
    status.update(|s| {
        s.url = config.url.clone();
        s.bucket = config.bucket.clone();
        s.state = "starting";
    });
    let client =
        influxdb2::Client::new(config.url.clone(), config.org.clone(), config.token.clone());
    let conn =
        match tokio::task::spawn_blocking(move || store::open(&data_dir, store::Synchronous::Full))
            .await
        {
            Ok(Ok(c)) => Arc::new(Mutex::new(c)),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "influx sink cannot open the store; it is off");
                return;
            }
            Err(_) => return,
        };
    let mut retry = Duration::from_secs(1);
    let mut failing = false;
    loop {
        let c = conn.clone();
        let batch_size = config.batch_size;
        let next = tokio::task::spawn_blocking(move || {
            next_batch(&c.lock().unwrap_or_else(|p| p.into_inner()), batch_size)
        })
        .await;
        let (body, points, cursor, lag) = match next {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "influx sink cannot read the store");
                tokio::time::sleep(config.flush_interval).await;
                continue;
            }
            Err(_) => return,
        };
        metrics.influx_lag.set(lag);
        status.update(|s| s.lag_rows = lag);
        let Some((cursor_name, last_id)) = cursor else {
            tokio::time::sleep(config.flush_interval).await;
            continue;
        };
        match client
            .write_line_protocol_with_precision(
                &config.org,
                &config.bucket,
                body,
                TimestampPrecision::Milliseconds,
            )
            .await
        {
            Ok(()) => {
                let c = conn.clone();
                let saved = tokio::task::spawn_blocking(move || {
                    store::set_sink_cursor(
                        &c.lock().unwrap_or_else(|p| p.into_inner()),
                        cursor_name,
                        last_id,
                    )
                })
                .await;
                if let Ok(Err(e)) = saved {
                    tracing::error!(error = %e, "influx sink cannot save its position; points may be written again");
                }
                metrics.influx_points_written.inc_by(points);
                if failing {
                    tracing::info!(url = %config.url, "InfluxDB writes succeed again; catching up");
                    failing = false;
                }
                retry = Duration::from_secs(1);
                status.update(|s| {
                    s.state = "ok";
                    s.last_error = None;
                    s.last_success_ms = Some(crate::domain::now_ms());
                });
            }
            Err(e) => {
                metrics.influx_write_errors.inc();
                let message = explain(&e);
                // One log line when writing starts failing or the reason changes, not one per attempt.
                let changed = status.snapshot().last_error.as_deref() != Some(message.as_str());
                if !failing || changed {
                    tracing::error!(url = %config.url, bucket = %config.bucket, "{message}; points stay in SQLite and are retried");
                }
                failing = true;
                status.update(|s| {
                    s.state = "failing";
                    s.last_error = Some(message);
                });
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

type Batch = (String, u64, Option<(&'static str, i64)>, i64);

/// The next batch to write: status changes first (few, and what dashboards watch),
/// then measurements. Returns the body, its point count, the cursor to save after a
/// successful write, and how many rows wait in all.
fn next_batch(conn: &Connection, limit: usize) -> Result<Batch, StoreError> {
    let m_cursor = store::sink_cursor(conn, CURSOR_MEASUREMENTS)?;
    let s_cursor = store::sink_cursor(conn, CURSOR_STATUS)?;
    let lag = (store::max_id(conn, "measurements")? - m_cursor)
        + (store::max_id(conn, "status_changes")? - s_cursor);
    let mut body = String::new();
    let changes = store::status_changes_after(conn, s_cursor, limit)?;
    if let Some(last) = changes.last() {
        for c in &changes {
            status_line(&mut body, c);
        }
        return Ok((
            body,
            changes.len() as u64,
            Some((CURSOR_STATUS, last.id)),
            lag,
        ));
    }
    let ms = store::measurements_after(conn, m_cursor, limit)?;
    if let Some(last) = ms.last() {
        body.reserve(ms.len() * 200);
        for m in &ms {
            link_line(&mut body, m);
        }
        return Ok((
            body,
            ms.len() as u64,
            Some((CURSOR_MEASUREMENTS, last.id)),
            lag,
        ));
    }
    Ok((body, 0, None, lag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Measurement, Method, Rtt};

    #[test]
    fn line_protocol_for_a_measurement_and_a_status_change() {
        let m = SinkMeasurement {
            id: 1,
            agent_id: 42,
            tps_code: "2171011002001".into(),
            measurement: Measurement {
                seq: 9,
                start_ms: 1_790_000_000_123,
                target_name: "my gw,1".into(),
                target_address: "192.0.2.1".into(),
                method: Method::Icmp,
                sent: 5,
                received: 4,
                errors: 1,
                rtt: Some(Rtt {
                    min_ms: 1.5,
                    avg_ms: 2.0,
                    max_ms: 3.25,
                    jitter_ms: Some(0.5),
                }),
            },
        };
        let mut out = String::new();
        link_line(&mut out, &m);
        assert_eq!(
            out,
            "link,tps=2171011002001,regency=21.71,district=21.71.01,target=my\\ gw\\,1,method=icmp,agent=42 \
             sent=5i,received=4i,errors=1i,loss=0.2,rtt_min_ms=1.5,rtt_avg_ms=2,rtt_max_ms=3.25,jitter_ms=0.5 1790000000123\n"
        );
        let c = StatusChange {
            id: 1,
            tps_code: "2171011002001".into(),
            at_ms: 5,
            state: "offline".into(),
            previous: Some("covered".into()),
            reason: None,
            cause: Some("link_down".into()),
        };
        let mut out = String::new();
        status_line(&mut out, &c);
        assert_eq!(
            out,
            "station_status,tps=2171011002001,regency=21.71,district=21.71.01 state=\"offline\",cause=\"link_down\",covered=0i,state_code=2i 5\n"
        );
    }
}
