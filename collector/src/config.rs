//! The collector's configuration file: TOML parsed into raw values, then validated into
//! a typed [`Config`] (TLS material loaded, ranges checked) before anything is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::report::schedule::ReportConfig;
use crate::sinks::influx::InfluxConfig;
use crate::store::Synchronous;
use crate::store::space::Floor;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// Limits of each port's edge.
    pub grpc_edge: EdgeConfig,
    pub http_edge: EdgeConfig,
    /// `None` only when the file says `plaintext = true`.
    pub tls: Option<TlsMaterial>,
    pub data_dir: PathBuf,
    pub synchronous: Synchronous,
    /// Free space below which pushes are refused.
    pub floor: Floor,
    pub ingest: IngestConfig,
    pub enroll: EnrollConfig,
    /// The InfluxDB 2 sink; off when the file has no `[influx]` section.
    pub influx: Option<InfluxConfig>,
    pub coverage: CoverageConfig,
    pub report: ReportConfig,
    pub retention: RetentionConfig,
    /// Notifications to operators; off (no receivers) without a `[notify]` section.
    pub notify: crate::notify::config::NotifyConfig,
}

/// How long measurements are kept, raw and as rollups, and when they are compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Measurements (raw rows, then blocks) are kept this long.
    pub raw: Duration,
    /// Hourly rollups are kept this long.
    pub rollups: Duration,
    /// Raw rows older than this are moved into blocks.
    pub compact_after: Duration,
    /// How often a compaction and retention pass starts.
    pub every: Duration,
    /// Whose time compaction and retention go by: the wall clock (`None`, always from a
    /// config file) or, for soak benchmarks that run a campaign in an hour, a faster one.
    pub timeline: Option<Timeline>,
}

/// A clock that starts at `from_ms` when the wall clock reads `wall_ms` and runs `speed`
/// times as fast. Set only from code (the soak benchmark); no config key reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    pub wall_ms: i64,
    pub from_ms: i64,
    pub speed: u32,
}

impl Timeline {
    /// This timeline's time when the wall clock reads `wall_ms`.
    pub fn at(&self, wall_ms: i64) -> i64 {
        self.from_ms + (wall_ms - self.wall_ms) * i64::from(self.speed)
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            raw: Duration::from_secs(35 * 86_400),
            rollups: Duration::from_secs(400 * 86_400),
            compact_after: Duration::from_secs(24 * 3600),
            every: Duration::from_secs(60),
            timeline: None,
        }
    }
}

/// Coverage rules, follow-up timing and how often silence is checked.
#[derive(Debug, Clone, Copy)]
pub struct CoverageConfig {
    pub rules: crate::state::coverage::Rules,
    pub flags: crate::state::flags::FlagRules,
    pub tick: Duration,
}

impl CoverageConfig {
    /// Defaults for a push interval: fresh = 3 push intervals, at most 5 minutes.
    pub fn for_push_interval(push_interval_secs: u32) -> Self {
        let rules = crate::state::coverage::Rules {
            fresh_ms: (3 * i64::from(push_interval_secs) * 1000).min(300_000),
            ..Default::default()
        };
        CoverageConfig {
            rules,
            flags: crate::state::flags::FlagRules::default(),
            tick: Duration::from_secs(5),
        }
    }
}

/// PEM certificate chain and private key, read from the configured files.
#[derive(Clone)]
pub struct TlsMaterial {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TlsMaterial {{ cert: {} bytes, key: .. }}",
            self.cert_pem.len()
        )
    }
}

#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    /// Most measurements in one push (RESOURCE_EXHAUSTED above it).
    pub max_batch: usize,
    /// Push interval handed to agents.
    pub push_interval_secs: u32,
    /// How far in the future a measurement's start may lie by the server's clock.
    pub max_future: Duration,
    /// How far in the past a measurement's start may lie by the server's clock (an
    /// agent's spool keeps 7 days by default; older starts mean a wrong clock).
    pub max_past: Duration,
    /// Jobs the writer queue holds.
    pub queue_capacity: usize,
    /// How long a push waits for room in a full queue before UNAVAILABLE.
    pub queue_timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct EnrollConfig {
    /// Wrong codes one station may see per window before it is locked.
    pub max_failures_per_station: u32,
    /// Wrong codes one peer address may send per window before it is locked.
    pub max_failures_per_peer: u32,
    pub window: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_batch: 500,
            push_interval_secs: 60,
            max_future: Duration::from_secs(300),
            max_past: Duration::from_secs(30 * 86_400),
            queue_capacity: 4096,
            queue_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for EnrollConfig {
    fn default() -> Self {
        EnrollConfig {
            max_failures_per_station: 5,
            max_failures_per_peer: 20,
            window: Duration::from_secs(15 * 60),
        }
    }
}

impl Config {
    /// A plaintext configuration on the given data directory; for tests and tools.
    pub fn plaintext(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            grpc_listen: "127.0.0.1:50051".parse().unwrap_or_else(|_| unreachable!()),
            http_listen: "127.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!()),
            grpc_edge: EdgeConfig::grpc(),
            http_edge: EdgeConfig::http(),
            tls: None,
            data_dir: data_dir.into(),
            synchronous: Synchronous::Full,
            floor: Floor::default(),
            ingest: IngestConfig::default(),
            enroll: EnrollConfig::default(),
            influx: None,
            coverage: CoverageConfig::for_push_interval(60),
            report: ReportConfig::default(),
            retention: RetentionConfig::default(),
            notify: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {field}: {problem}")]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    grpc: RawListen,
    #[serde(default)]
    http: RawListen,
    #[serde(default)]
    tls: RawTls,
    store: RawStore,
    #[serde(default)]
    ingest: RawIngest,
    #[serde(default)]
    enroll: RawEnroll,
    influx: Option<RawInflux>,
    #[serde(default)]
    coverage: RawCoverage,
    #[serde(default)]
    report: RawReport,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    notify: crate::notify::config::RawNotify,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    raw_days: Option<u64>,
    rollup_days: Option<u64>,
    compact_after_hours: Option<u64>,
    every_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    time_zone: Option<String>,
    weekday: Option<String>,
    at: Option<String>,
    availability_threshold_pct: Option<f64>,
    lang: Option<String>,
    schedule: Option<bool>,
    rollup_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoverage {
    fresh_secs: Option<u64>,
    loss_limit_pct: Option<f64>,
    rtt_limit_ms: Option<f64>,
    satellite_rtt_limit_ms: Option<f64>,
    window_mins: Option<u64>,
    streak: Option<u64>,
    grace_mins: Option<u64>,
    recovery_mins: Option<u64>,
    tick_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInflux {
    url: String,
    org: String,
    bucket: String,
    token: Option<String>,
    token_file: Option<PathBuf>,
    batch_size: Option<u64>,
    flush_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    listen: Option<String>,
    max_connections: Option<u64>,
    start_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    max_in_flight: Option<u64>,
}

/// One port's edge: how many connections, how long a connection may stay silent at
/// its start and later, how long a request may run, how many may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeConfig {
    /// `None`: a share of the open-file limit, worked out at start.
    pub max_connections: Option<usize>,
    /// A new connection must start talking (TLS hello, HTTP/2 preface, request
    /// headers) within this.
    pub start_timeout: Duration,
    /// Closed when nothing moved either way for this long.
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// Requests running at once; more are refused (`UNAVAILABLE` / `503`).
    pub max_in_flight: usize,
}

impl EdgeConfig {
    pub fn grpc() -> EdgeConfig {
        EdgeConfig {
            max_connections: None,
            start_timeout: Duration::from_secs(10),
            // Longer than the server's HTTP/2 keepalive (60 s), so a live agent's
            // connection always moves within it.
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(60),
            max_in_flight: 4096,
        }
    }

    pub fn http() -> EdgeConfig {
        EdgeConfig {
            max_connections: None,
            start_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(120),
            max_in_flight: 256,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    plaintext: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    data_dir: PathBuf,
    synchronous: Option<Synchronous>,
    min_free_mb: Option<u64>,
    min_free_pct: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    max_batch: Option<u64>,
    push_interval_secs: Option<u64>,
    max_future_secs: Option<u64>,
    max_past_days: Option<u64>,
    queue_capacity: Option<u64>,
    queue_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnroll {
    max_failures_per_station: Option<u32>,
    max_failures_per_peer: Option<u32>,
    window_secs: Option<u64>,
}

/// Reads and validates a config file. Relative paths inside it are taken relative to
/// the file's own directory, so a config works wherever it is started from.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates config text; `path` names the file in messages and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let invalid = |field: &'static str, problem: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        field: field.to_string(),
        problem,
    };
    let addr = |field: &'static str,
                v: Option<String>,
                default: &str|
     -> Result<SocketAddr, ConfigError> {
        let s = v.unwrap_or_else(|| default.to_string());
        s.parse().map_err(|_| {
            invalid(
                field,
                format!("{s:?} is not an address like 0.0.0.0:50051 or [::]:50051"),
            )
        })
    };
    let grpc_listen = addr("grpc.listen", raw.grpc.listen.clone(), "0.0.0.0:50051")?;
    let http_listen = addr("http.listen", raw.http.listen.clone(), "0.0.0.0:8080")?;
    let edge = |section: &'static str,
                r: &RawListen,
                d: EdgeConfig|
     -> Result<EdgeConfig, ConfigError> {
        let field = |k: &'static str| -> &'static str {
            // Field names are static: one per section and key.
            match (section, k) {
                ("grpc", "max_connections") => "grpc.max_connections",
                ("grpc", "start_timeout_secs") => "grpc.start_timeout_secs",
                ("grpc", "idle_timeout_secs") => "grpc.idle_timeout_secs",
                ("grpc", "request_timeout_secs") => "grpc.request_timeout_secs",
                ("grpc", "max_in_flight") => "grpc.max_in_flight",
                ("http", "max_connections") => "http.max_connections",
                ("http", "start_timeout_secs") => "http.start_timeout_secs",
                ("http", "idle_timeout_secs") => "http.idle_timeout_secs",
                ("http", "request_timeout_secs") => "http.request_timeout_secs",
                _ => "http.max_in_flight",
            }
        };
        let within = |k: &'static str, v: Option<u64>, default: u64, lo: u64, hi: u64| {
            let v = v.unwrap_or(default);
            if v < lo || v > hi {
                Err(invalid(field(k), format!("{v} is outside {lo}..={hi}")))
            } else {
                Ok(v)
            }
        };
        let secs = Duration::from_secs;
        let e = EdgeConfig {
            max_connections: r
                .max_connections
                .map(|v| within("max_connections", Some(v), v, 1, 1_000_000).map(|v| v as usize))
                .transpose()?,
            start_timeout: secs(within(
                "start_timeout_secs",
                r.start_timeout_secs,
                d.start_timeout.as_secs(),
                1,
                300,
            )?),
            idle_timeout: secs(within(
                "idle_timeout_secs",
                r.idle_timeout_secs,
                d.idle_timeout.as_secs(),
                1,
                86_400,
            )?),
            request_timeout: secs(within(
                "request_timeout_secs",
                r.request_timeout_secs,
                d.request_timeout.as_secs(),
                1,
                3600,
            )?),
            max_in_flight: within(
                "max_in_flight",
                r.max_in_flight,
                d.max_in_flight as u64,
                1,
                1_000_000,
            )? as usize,
        };
        if section == "grpc" && e.idle_timeout <= Duration::from_secs(90) {
            return Err(invalid(
                "grpc.idle_timeout_secs",
                format!(
                    "{} s would close live agents' connections between keepalive pings (every 60 s); use more than 90",
                    e.idle_timeout.as_secs()
                ),
            ));
        }
        Ok(e)
    };
    let grpc_edge = edge("grpc", &raw.grpc, EdgeConfig::grpc())?;
    let http_edge = edge("http", &raw.http, EdgeConfig::http())?;
    if grpc_listen == http_listen && grpc_listen.port() != 0 {
        return Err(invalid(
            "http.listen",
            format!("{http_listen} is also grpc.listen; use two ports"),
        ));
    }

    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let tls = match (raw.tls.cert, raw.tls.key, raw.tls.plaintext) {
        (Some(_), Some(_), true) => {
            return Err(invalid(
                "tls.plaintext",
                "is true while tls.cert and tls.key are set; choose one".into(),
            ));
        }
        (Some(cert), Some(key), false) => {
            let read = |field: &'static str, p: PathBuf| {
                let p = resolve(p);
                std::fs::read(&p)
                    .map_err(|e| invalid(field, format!("cannot read {}: {e}", p.display())))
            };
            let cert_pem = read("tls.cert", cert)?;
            let key_pem = read("tls.key", key)?;
            if !String::from_utf8_lossy(&cert_pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid("tls.cert", "is not a PEM certificate".into()));
            }
            if !String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----") {
                return Err(invalid("tls.key", "is not a PEM private key".into()));
            }
            Some(TlsMaterial { cert_pem, key_pem })
        }
        (Some(_), None, _) => {
            return Err(invalid(
                "tls.key",
                "is missing while tls.cert is set".into(),
            ));
        }
        (None, Some(_), _) => {
            return Err(invalid(
                "tls.cert",
                "is missing while tls.key is set".into(),
            ));
        }
        (None, None, true) => None,
        (None, None, false) => {
            return Err(invalid(
                "tls",
                "set tls.cert and tls.key, or say `plaintext = true` to serve without TLS".into(),
            ));
        }
    };

    let d = IngestConfig::default();
    let range = |field: &'static str,
                 v: Option<u64>,
                 default: u64,
                 lo: u64,
                 hi: u64|
     -> Result<u64, ConfigError> {
        let v = v.unwrap_or(default);
        if v < lo || v > hi {
            return Err(invalid(field, format!("{v} is outside {lo}..={hi}")));
        }
        Ok(v)
    };
    let ingest = IngestConfig {
        max_batch: range(
            "ingest.max_batch",
            raw.ingest.max_batch,
            d.max_batch as u64,
            1,
            10_000,
        )? as usize,
        push_interval_secs: range(
            "ingest.push_interval_secs",
            raw.ingest.push_interval_secs,
            u64::from(d.push_interval_secs),
            1,
            3600,
        )? as u32,
        max_future: Duration::from_secs(range(
            "ingest.max_future_secs",
            raw.ingest.max_future_secs,
            d.max_future.as_secs(),
            0,
            86_400,
        )?),
        max_past: Duration::from_secs(
            86_400
                * range(
                    "ingest.max_past_days",
                    raw.ingest.max_past_days,
                    d.max_past.as_secs() / 86_400,
                    1,
                    3650,
                )?,
        ),
        queue_capacity: range(
            "ingest.queue_capacity",
            raw.ingest.queue_capacity,
            d.queue_capacity as u64,
            1,
            1_000_000,
        )? as usize,
        queue_timeout: Duration::from_millis(range(
            "ingest.queue_timeout_ms",
            raw.ingest.queue_timeout_ms,
            d.queue_timeout.as_millis() as u64,
            0,
            60_000,
        )?),
    };
    let e = EnrollConfig::default();
    let enroll = EnrollConfig {
        max_failures_per_station: range(
            "enroll.max_failures_per_station",
            raw.enroll.max_failures_per_station.map(u64::from),
            u64::from(e.max_failures_per_station),
            1,
            1000,
        )? as u32,
        max_failures_per_peer: range(
            "enroll.max_failures_per_peer",
            raw.enroll.max_failures_per_peer.map(u64::from),
            u64::from(e.max_failures_per_peer),
            1,
            100_000,
        )? as u32,
        window: Duration::from_secs(range(
            "enroll.window_secs",
            raw.enroll.window_secs,
            e.window.as_secs(),
            1,
            86_400,
        )?),
    };
    let influx = match raw.influx {
        None => None,
        Some(i) => {
            if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
                return Err(invalid(
                    "influx.url",
                    format!("{:?} is not a URL like http://influxdb:8086", i.url),
                ));
            }
            if i.org.is_empty() {
                return Err(invalid("influx.org", "is empty".into()));
            }
            if i.bucket.is_empty() {
                return Err(invalid("influx.bucket", "is empty".into()));
            }
            let token = match (i.token, i.token_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "influx.token_file",
                        "give either token or token_file, not both".into(),
                    ));
                }
                (Some(t), None) => t,
                (None, Some(f)) => {
                    let f = resolve(f);
                    std::fs::read_to_string(&f)
                        .map_err(|e| {
                            invalid(
                                "influx.token_file",
                                format!("cannot read {}: {e}", f.display()),
                            )
                        })?
                        .trim()
                        .to_string()
                }
                (None, None) => {
                    return Err(invalid(
                        "influx.token",
                        "is missing (or give token_file)".into(),
                    ));
                }
            };
            Some(InfluxConfig {
                url: i.url,
                org: i.org,
                bucket: i.bucket,
                token,
                batch_size: range("influx.batch_size", i.batch_size, 5000, 1, 100_000)? as usize,
                flush_interval: Duration::from_millis(range(
                    "influx.flush_interval_ms",
                    i.flush_interval_ms,
                    1000,
                    10,
                    600_000,
                )?),
            })
        }
    };
    let mut coverage = CoverageConfig::for_push_interval(ingest.push_interval_secs);
    let rc = raw.coverage;
    let mins = |field: &'static str,
                v: Option<u64>,
                default_ms: i64,
                hi: u64|
     -> Result<i64, ConfigError> {
        Ok(range(field, v, (default_ms / 60_000) as u64, 1, hi)? as i64 * 60_000)
    };
    coverage.rules.fresh_ms = range(
        "coverage.fresh_secs",
        rc.fresh_secs,
        (coverage.rules.fresh_ms / 1000) as u64,
        1,
        86_400,
    )? as i64
        * 1000;
    let pct =
        |field: &'static str, v: Option<f64>, default: f64, hi: f64| -> Result<f64, ConfigError> {
            let v = v.unwrap_or(default);
            if !(v > 0.0 && v <= hi) {
                return Err(invalid(
                    field,
                    format!("{v} is outside 0 (exclusive) to {hi}"),
                ));
            }
            Ok(v)
        };
    coverage.rules.loss_limit =
        pct("coverage.loss_limit_pct", rc.loss_limit_pct, 10.0, 100.0)? / 100.0;
    coverage.rules.rtt_limit_ms = pct("coverage.rtt_limit_ms", rc.rtt_limit_ms, 500.0, 60_000.0)?;
    coverage.rules.satellite_rtt_limit_ms = pct(
        "coverage.satellite_rtt_limit_ms",
        rc.satellite_rtt_limit_ms,
        1500.0,
        60_000.0,
    )?;
    coverage.rules.window_ms = mins(
        "coverage.window_mins",
        rc.window_mins,
        coverage.rules.window_ms,
        1440,
    )?;
    coverage.rules.streak = range("coverage.streak", rc.streak, 3, 1, 100)? as u32;
    coverage.flags.grace_ms = mins(
        "coverage.grace_mins",
        rc.grace_mins,
        coverage.flags.grace_ms,
        10_080,
    )?;
    coverage.flags.recovery_ms = mins(
        "coverage.recovery_mins",
        rc.recovery_mins,
        coverage.flags.recovery_ms,
        10_080,
    )?;
    coverage.tick = Duration::from_secs(range("coverage.tick_secs", rc.tick_secs, 5, 1, 3600)?);
    let report = report_config(raw.report, &invalid)?;
    if raw.store.data_dir.as_os_str().is_empty() {
        return Err(invalid("store.data_dir", "is empty".into()));
    }
    let rr = raw.retention;
    let raw_days = range("retention.raw_days", rr.raw_days, 35, 1, 3650)?;
    let rollup_days = range(
        "retention.rollup_days",
        rr.rollup_days,
        400.max(raw_days),
        raw_days,
        36_500,
    )?;
    let compact_after_hours = range(
        "retention.compact_after_hours",
        rr.compact_after_hours,
        24.min(raw_days * 24),
        1,
        raw_days * 24,
    )?;
    let retention = RetentionConfig {
        raw: Duration::from_secs(raw_days * 86_400),
        rollups: Duration::from_secs(rollup_days * 86_400),
        compact_after: Duration::from_secs(compact_after_hours * 3600),
        every: Duration::from_secs(range("retention.every_secs", rr.every_secs, 60, 1, 3600)?),
        timeline: None,
    };
    let d = Floor::default();
    let floor = Floor {
        min_free_bytes: range(
            "store.min_free_mb",
            raw.store.min_free_mb,
            d.min_free_bytes / 1_048_576,
            0,
            100_000_000,
        )? * 1_048_576,
        min_free_pct: match raw.store.min_free_pct {
            None => d.min_free_pct,
            Some(v) if (0.0..=50.0).contains(&v) => v,
            Some(v) => {
                return Err(invalid(
                    "store.min_free_pct",
                    format!("{v} is outside 0 to 50 (percent of the file system)"),
                ));
            }
        },
    };
    let notify = crate::notify::config::validate(raw.notify, base, &report.tz).map_err(
        |(field, problem)| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            problem,
        },
    )?;
    Ok(Config {
        grpc_listen,
        http_listen,
        grpc_edge,
        http_edge,
        tls,
        data_dir: resolve(raw.store.data_dir),
        synchronous: raw.store.synchronous.unwrap_or(Synchronous::Full),
        floor,
        ingest,
        enroll,
        report,
        influx,
        coverage,
        retention,
        notify,
    })
}

fn report_config(
    r: RawReport,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<ReportConfig, ConfigError> {
    let d = ReportConfig::default();
    let tz = match r.time_zone {
        None => d.tz,
        Some(name) => jiff::tz::TimeZone::get(&name).map_err(|_| {
            invalid(
                "report.time_zone",
                format!("{name:?} is not an IANA time zone like Asia/Jakarta, Asia/Makassar or Asia/Jayapura"),
            )
        })?,
    };
    let weekday = match r.weekday.as_deref().map(str::to_ascii_lowercase) {
        None => d.weekday,
        Some(w) => {
            use jiff::civil::Weekday::*;
            let days = [
                ("monday", Monday),
                ("tuesday", Tuesday),
                ("wednesday", Wednesday),
                ("thursday", Thursday),
                ("friday", Friday),
                ("saturday", Saturday),
                ("sunday", Sunday),
            ];
            days.iter()
                .find(|(n, _)| *n == w)
                .map(|(_, d)| *d)
                .ok_or_else(|| {
                    invalid(
                        "report.weekday",
                        format!("{w:?} is not a weekday like monday"),
                    )
                })?
        }
    };
    let at = match r.at {
        None => d.at,
        Some(t) => jiff::civil::Time::strptime("%H:%M", &t).map_err(|_| {
            invalid(
                "report.at",
                format!("{t:?} is not a time like 00:00 or 06:30"),
            )
        })?,
    };
    let threshold = match r.availability_threshold_pct {
        None => d.threshold,
        Some(v) if v > 0.0 && v <= 100.0 => v / 100.0,
        Some(v) => {
            return Err(invalid(
                "report.availability_threshold_pct",
                format!("{v} is outside 0 (exclusive) to 100"),
            ));
        }
    };
    let lang = match r.lang {
        None => d.lang,
        Some(l) => l.parse().map_err(|e| invalid("report.lang", e))?,
    };
    let rollup_secs = r.rollup_secs.unwrap_or(d.rollup_every.as_secs());
    if !(1..=3600).contains(&rollup_secs) {
        return Err(invalid(
            "report.rollup_secs",
            format!("{rollup_secs} is outside 1..=3600"),
        ));
    }
    Ok(ReportConfig {
        tz,
        weekday,
        at,
        threshold,
        lang,
        schedule: r.schedule.unwrap_or(d.schedule),
        rollup_every: Duration::from_secs(rollup_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, Path::new("/etc/tps/c.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn minimal_plaintext_config() {
        let c = parse(
            "[tls]\nplaintext = true\n[store]\ndata_dir = \"data\"\n",
            Path::new("/etc/tps/c.toml"),
        )
        .unwrap();
        assert!(c.tls.is_none());
        assert_eq!(c.data_dir, PathBuf::from("/etc/tps/data"));
        assert_eq!(c.grpc_listen.port(), 50051);
        assert_eq!(c.http_listen.port(), 8080);
        assert_eq!(c.synchronous, Synchronous::Full);
        assert_eq!(c.ingest.max_batch, 500);
    }

    #[test]
    fn tls_must_be_chosen() {
        assert!(
            err("[store]\ndata_dir = \"d\"\n")
                .contains("tls: set tls.cert and tls.key, or say `plaintext = true`")
        );
        assert!(
            err("[tls]\ncert = \"c.pem\"\n[store]\ndata_dir = \"d\"\n")
                .contains("tls.key: is missing")
        );
        assert!(err("[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n[store]\ndata_dir = \"d\"\n")
            .contains("tls.cert: cannot read /nonexistent/c.pem"));
    }

    #[test]
    fn report_settings_are_checked() {
        let base = "[tls]\nplaintext = true\n[store]\ndata_dir = \"d\"\n";
        let c = parse(
            &format!("{base}[report]\ntime_zone = \"Asia/Makassar\"\nweekday = \"Friday\"\nat = \"17:30\"\navailability_threshold_pct = 90\nlang = \"en\"\n"),
            Path::new("/etc/tps/c.toml"),
        )
        .unwrap();
        assert_eq!(c.report.tz.iana_name(), Some("Asia/Makassar"));
        assert_eq!(c.report.weekday, jiff::civil::Weekday::Friday);
        assert_eq!(c.report.at, jiff::civil::Time::constant(17, 30, 0, 0));
        assert_eq!(
            (c.report.threshold, c.report.lang),
            (0.9, crate::report::Lang::En)
        );
        for (bad, says) in [
            (
                "time_zone = \"WIB\"",
                "report.time_zone: \"WIB\" is not an IANA time zone",
            ),
            (
                "weekday = \"senin\"",
                "report.weekday: \"senin\" is not a weekday",
            ),
            ("at = \"25:00\"", "report.at: \"25:00\" is not a time"),
            (
                "availability_threshold_pct = 0",
                "report.availability_threshold_pct: 0 is outside",
            ),
            ("lang = \"fr\"", "report.lang: language \"fr\""),
        ] {
            let e = err(&format!("{base}[report]\n{bad}\n"));
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let base = "[tls]\nplaintext = true\n[store]\ndata_dir = \"d\"\n";
        assert!(
            err(&format!("{base}[ingest]\nmax_batch = 0\n"))
                .contains("ingest.max_batch: 0 is outside 1..=10000")
        );
        assert!(
            err(&format!("[grpc]\nlisten = \"nope\"\n{base}"))
                .contains("grpc.listen: \"nope\" is not an address")
        );
        assert!(
            err(&format!("{base}[ingest]\nmax_bacth = 3\n")).contains("unknown field `max_bacth`")
        );
        assert!(
            err(&format!("{base}[store]\n")).contains("duplicate"),
            "{}",
            err(&format!("{base}[store]\n"))
        );
        assert!(err("[tls]\nplaintext = true\n").contains("missing field `store`"));
        assert!(
            err(&base.replace(
                "data_dir = \"d\"",
                "data_dir = \"d\"\nsynchronous = \"off\""
            ))
            .contains("unknown variant `off`")
        );
        let floor = |extra: &str| {
            err(&base.replace("data_dir = \"d\"", &format!("data_dir = \"d\"\n{extra}")))
        };
        assert!(floor("min_free_pct = 80").contains("store.min_free_pct: 80 is outside 0 to 50"));
        assert!(floor("min_free_mb = -1").contains("min_free_mb"));
        let ret = |extra: &str| err(&format!("{base}[retention]\n{extra}\n"));
        assert!(
            ret("raw_days = 35\nrollup_days = 10")
                .contains("retention.rollup_days: 10 is outside 35..=36500")
        );
        assert!(
            ret("raw_days = 2\ncompact_after_hours = 49").contains("retention.compact_after_hours")
        );
        assert!(ret("raw_day = 2").contains("unknown field `raw_day`"));
    }

    #[test]
    fn notify_settings_name_the_key_at_fault() {
        let base = "[tls]\nplaintext = true\n[store]\ndata_dir = \"d\"\n";
        let n = |t: &str| err(&format!("{base}{t}"));
        let tg = "[[notify.receivers]]\nname = \"tg\"\ntype = \"telegram\"\nchat_id = -100123\n";
        assert!(
            n(tg).contains("notify.receivers.tg.bot_token: is missing (or give bot_token_file)"),
            "{}",
            n(tg)
        );
        let tg_ok = format!("{tg}bot_token = \"1:abc\"\n");
        assert!(
            n(&format!("{tg_ok}bot_token_file = \"t\"\n"))
                .contains("notify.receivers.tg.bot_token_file: give either")
        );
        assert!(
            n(&format!("{tg_ok}per_minute = 0\n"))
                .contains("notify.receivers.tg.per_minute: 0 is outside")
        );
        assert!(
            n("[[notify.receivers]]\nname = \"x\"\ntype = \"sms\"\n")
                .contains("notify.receivers.x.type: \"sms\" is not one of")
        );
        assert!(
            n("[[notify.receivers]]\nname = \"w\"\ntype = \"whatsapp\"\nto = [\"+62812\"]\n")
                .contains("notify.receivers.w.to")
        );
        let route = |extra: &str| {
            format!("{tg_ok}[[notify.routes]]\nname = \"r\"\nreceivers = [\"tg\"]\n{extra}")
        };
        assert!(
            n(&route("region = \"2171\"\n"))
                .contains("notify.routes.r.region: \"2171\" is not a region code")
        );
        assert!(n(&route("reasons = [\"down\"]\n")).contains("notify.routes.r.reasons"));
        assert!(n(&route("quiet_hours = \"22-06\"\n")).contains("notify.routes.r.quiet_hours"));
        assert!(
            n(&route("escalate_after_hours = 2\n"))
                .contains("notify.routes.r.escalate_to: is missing")
        );
        assert!(
            n(&route("escalate_after_hours = 2\nescalate_to = \"boss\"\n"))
                .contains("\"boss\" is not another route")
        );
        assert!(n(&route("group_by = \"village\"\n")).contains("notify.routes.r.group_by"));
        assert!(
            n(&format!(
                "{tg_ok}[[notify.routes]]\nname = \"r\"\nreceivers = [\"mail\"]\n"
            ))
            .contains("\"mail\" is not a receiver")
        );
        assert!(n("[notify.bot]\nreceiver = \"nope\"\n").contains("notify.bot.receiver"));
        assert!(n("[notify]\nlang = \"fr\"\n").contains("notify.lang"));
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "42:from-file\n").unwrap();
        let c = parse(
            &format!(
                "{base}[[notify.receivers]]\nname = \"tg\"\ntype = \"telegram\"\nchat_id = -100123\nbot_token_file = {:?}\n",
                secret.path().display().to_string()
            ),
            Path::new("/etc/tps/c.toml"),
        )
        .unwrap();
        match &c.notify.receivers[0].kind {
            crate::notify::config::ReceiverKind::Telegram {
                bot_token, chat_id, ..
            } => {
                assert_eq!(
                    (bot_token.as_str(), chat_id.as_str()),
                    ("42:from-file", "-100123")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !format!("{:?}", c.notify).contains("from-file"),
            "secrets stay out of Debug"
        );
    }
}
