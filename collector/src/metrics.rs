//! The collector's own Prometheus metrics: what it ingested, what it refused and why,
//! how long commits take, and what its bounded queues had to turn away.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Every metric, registered once; shared as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub pushes: Counter,
    pub measurements_stored: Counter,
    pub measurements_duplicate: Counter,
    /// Pushes and enrollments refused, by reason.
    rejects: Family<Labels, Counter>,
    enrollments: Family<Labels, Counter>,
    pub commit_seconds: Histogram,
    /// WAL checkpoints, taken off the writer's path.
    pub checkpoint_seconds: Histogram,
    pub checkpoints: Counter,
    /// Pages in the log not yet copied into the database file.
    pub wal_pages_behind: Gauge,
    /// Time from receiving a push to answering it (validation, queue, commit).
    pub push_seconds: Histogram,
    pub commit_jobs: Histogram,
    pub commit_failures: Counter,
    /// Writes turned away because the writer's queue stayed full.
    pub write_queue_full: Counter,
    pub enrolled_agents: Gauge,
    pub influx_points_written: Counter,
    pub influx_write_errors: Counter,
    /// Rows stored in SQLite but not yet written to InfluxDB.
    pub influx_lag: Gauge,
    /// Scheduled weekly reports, by result (written, failed).
    weekly_reports: Family<Labels, Counter>,
    /// When the last scheduled report was written (Unix seconds): alert when it is old.
    pub weekly_report_last_success: Gauge,
    /// Measurements stored but not yet folded into the daily rollups.
    pub rollup_lag: Gauge,
    /// Agent statuses kept only in part (too many interfaces, strings too long), by field.
    status_truncated: Family<Labels, Counter>,
    /// Measurements agents say they did not deliver, by reason (their `dropped_by_reason`
    /// growing), summed over agents since this collector started.
    agent_dropped: Family<Labels, Counter>,
    /// Facts committed after the state owner stopped (at shutdown only).
    pub facts_unheard: Counter,
    /// Facts waiting for the state owner.
    pub facts_queued: Gauge,
    /// Transitions and flag changes decided but not yet stored.
    pub persist_backlog: Gauge,
    /// Failed attempts to store them (each is retried until stored).
    pub persist_retries: Counter,
    /// Times the collector noticed it had not been looking, by kind.
    away: Family<Labels, Counter>,
    /// Protobuf requests that could not be decoded, and other malformed input, by edge.
    pub decode_errors: Family<Labels, Counter>,
    /// Connections refused because the cap was reached, and closed for idling, by port.
    pub connections: Family<Labels, Counter>,
    /// Requests shed (concurrency limit reached) or timed out, by port.
    pub shed: Family<Labels, Counter>,
    /// The store's disk (see [`crate::store::space`]).
    store_bytes: Gauge,
    store_free_bytes: Gauge,
    store_floor_bytes: Gauge,
    store_growth: Gauge,
    store_days_until_floor: Gauge<f64, std::sync::atomic::AtomicU64>,
    store_refusing: Gauge,
    /// When coverage was last evaluated (Unix seconds): a stuck state owner stops it.
    pub coverage_evaluated: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Raw measurements moved into blocks.
    pub compaction_moved: Counter,
    /// Time one compaction or retention step held the writer.
    pub compaction_step_seconds: Histogram,
    /// When the last compaction pass finished (Unix seconds).
    pub compaction_last_pass: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Blocks and rollups deleted past their retention, by what.
    retention_deleted: Family<Labels, Counter>,
    /// Notifications, per receiver (names come from the config).
    notify_sent: Family<NamedLabels, Counter>,
    notify_failed: Family<NamedLabels, Counter>,
    notify_given_up: Family<NamedLabels, Counter>,
    notify_queued: Family<NamedLabels, Gauge>,
    /// From the oldest flag event in a message to its delivery.
    pub notify_latency_seconds: Histogram,
    /// Flag events planned into notifications.
    pub notify_events: Counter,
}

type NamedLabels = Vec<(&'static str, String)>;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tps");
        let pushes = Counter::default();
        let measurements_stored = Counter::default();
        let measurements_duplicate = Counter::default();
        let rejects = Family::<Labels, Counter>::default();
        let enrollments = Family::<Labels, Counter>::default();
        let commit_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 14));
        let checkpoint_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        let checkpoints = Counter::default();
        let wal_pages_behind = Gauge::default();
        registry.register(
            "store_checkpoint_seconds",
            "Time one WAL checkpoint took (its own thread; commits do not wait for it)",
            checkpoint_seconds.clone(),
        );
        registry.register(
            "store_checkpoints",
            "WAL checkpoints taken",
            checkpoints.clone(),
        );
        registry.register(
            "store_wal_pages_behind",
            "Pages in the write-ahead log not yet copied into the database file",
            wal_pages_behind.clone(),
        );
        let commit_jobs = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let push_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "push_seconds",
            "Time from receiving a push to acknowledging it",
            push_seconds.clone(),
        );
        let commit_failures = Counter::default();
        let write_queue_full = Counter::default();
        let enrolled_agents = Gauge::default();
        let influx_points_written = Counter::default();
        let influx_write_errors = Counter::default();
        let influx_lag = Gauge::default();
        let weekly_reports = Family::<Labels, Counter>::default();
        let weekly_report_last_success = Gauge::default();
        let rollup_lag = Gauge::default();
        let status_truncated = Family::<Labels, Counter>::default();
        registry.register(
            "status_truncated",
            "Agent statuses stored only in part because a field did not fit, by field",
            status_truncated.clone(),
        );
        let agent_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "agent_dropped_measurements",
            "Measurements agents report they dropped undelivered, by reason (growth seen by this collector)",
            agent_dropped.clone(),
        );
        registry.register(
            "weekly_reports",
            "Scheduled weekly reports, by result",
            weekly_reports.clone(),
        );
        registry.register(
            "weekly_report_last_success_timestamp_seconds",
            "When the last scheduled weekly report was written",
            weekly_report_last_success.clone(),
        );
        registry.register(
            "rollup_lag_rows",
            "Measurements stored but not yet folded into the daily rollups",
            rollup_lag.clone(),
        );
        registry.register(
            "influx_points_written",
            "Points written to InfluxDB",
            influx_points_written.clone(),
        );
        registry.register(
            "influx_write_errors",
            "Failed InfluxDB write requests (retried)",
            influx_write_errors.clone(),
        );
        registry.register(
            "influx_lag_rows",
            "Rows stored but not yet written to InfluxDB",
            influx_lag.clone(),
        );
        registry.register("pushes", "Pushes accepted and stored", pushes.clone());
        registry.register(
            "measurements_stored",
            "Measurements newly stored",
            measurements_stored.clone(),
        );
        registry.register(
            "measurements_duplicate",
            "Measurements received again after they were stored (acknowledged, not stored twice)",
            measurements_duplicate.clone(),
        );
        registry.register("push_rejects", "Pushes refused, by reason", rejects.clone());
        registry.register(
            "enrollments",
            "Enrollment attempts, by result",
            enrollments.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Time to commit one batch of writes to SQLite",
            commit_seconds.clone(),
        );
        registry.register(
            "store_commit_jobs",
            "Pushes and enrollments committed together in one transaction",
            commit_jobs.clone(),
        );
        registry.register(
            "store_commit_failures",
            "Failed commits",
            commit_failures.clone(),
        );
        registry.register(
            "store_queue_full",
            "Writes refused because the write queue stayed full",
            write_queue_full.clone(),
        );
        registry.register(
            "enrolled_agents",
            "Agents enrolled and not revoked",
            enrolled_agents.clone(),
        );
        let facts_unheard = Counter::default();
        let facts_queued = Gauge::default();
        let persist_backlog = Gauge::default();
        let persist_retries = Counter::default();
        let away = Family::<Labels, Counter>::default();
        let decode_errors = Family::<Labels, Counter>::default();
        let connections = Family::<Labels, Counter>::default();
        let shed = Family::<Labels, Counter>::default();
        registry.register(
            "state_facts_unheard",
            "Committed facts the state owner did not hear (only after it stopped)",
            facts_unheard.clone(),
        );
        registry.register(
            "state_facts_queued",
            "Committed facts waiting for the state owner",
            facts_queued.clone(),
        );
        registry.register(
            "state_persist_backlog",
            "Status transitions and flag changes decided but not yet stored",
            persist_backlog.clone(),
        );
        registry.register(
            "state_persist_retries",
            "Failed attempts to store transitions and flag changes (retried until stored)",
            persist_retries.clone(),
        );
        registry.register(
            "collector_away",
            "Times the collector noticed it had stalled or its clock stepped, by kind",
            away.clone(),
        );
        registry.register(
            "decode_errors",
            "Requests that could not be decoded, by port",
            decode_errors.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections refused at the cap or closed for idling or a slow start, by port and why",
            connections.clone(),
        );
        registry.register(
            "requests_shed",
            "Requests refused under load or cut at their time limit, by port and why",
            shed.clone(),
        );
        let store_bytes = Gauge::default();
        let store_free_bytes = Gauge::default();
        let store_floor_bytes = Gauge::default();
        let store_growth = Gauge::default();
        let store_days_until_floor = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let store_refusing = Gauge::default();
        let coverage_evaluated = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let compaction_moved = Counter::default();
        // Fine buckets (25 % apart): the ~50 ms budget of a step must be readable.
        let compaction_step_seconds = Histogram::new(exponential_buckets(0.001, 1.25, 30));
        let compaction_last_pass = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let retention_deleted = Family::<Labels, Counter>::default();
        let notify_sent = Family::<NamedLabels, Counter>::default();
        let notify_failed = Family::<NamedLabels, Counter>::default();
        let notify_given_up = Family::<NamedLabels, Counter>::default();
        let notify_queued = Family::<NamedLabels, Gauge>::default();
        let notify_latency_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        let notify_events = Counter::default();
        registry.register(
            "notify_sent",
            "Notifications delivered, by receiver",
            notify_sent.clone(),
        );
        registry.register(
            "notify_failed_attempts",
            "Notification sends that failed (retried unless given up), by receiver",
            notify_failed.clone(),
        );
        registry.register(
            "notify_given_up",
            "Notifications given up (refused by the API, or undelivered for 24 hours), by receiver",
            notify_given_up.clone(),
        );
        registry.register(
            "notify_queued",
            "Notifications waiting in the outbox, by receiver",
            notify_queued.clone(),
        );
        registry.register(
            "notify_latency_seconds",
            "Time from the oldest flag event in a notification to its delivery",
            notify_latency_seconds.clone(),
        );
        registry.register(
            "notify_events",
            "Flag events read by the notification planner",
            notify_events.clone(),
        );
        registry.register(
            "compaction_moved_measurements",
            "Raw measurements moved into compact blocks",
            compaction_moved.clone(),
        );
        registry.register(
            "compaction_step_seconds",
            "Time one compaction or retention step spent in the writer",
            compaction_step_seconds.clone(),
        );
        registry.register(
            "compaction_last_pass_timestamp_seconds",
            "When the last compaction and retention pass finished",
            compaction_last_pass.clone(),
        );
        registry.register(
            "retention_deleted",
            "Measurement blocks and hourly rollups deleted past their retention, by what",
            retention_deleted.clone(),
        );
        registry.register(
            "coverage_evaluated_timestamp_seconds",
            "When coverage was last evaluated (every tick); alert when it falls behind",
            coverage_evaluated.clone(),
        );
        registry.register(
            "store_bytes",
            "Size of the store's database and WAL",
            store_bytes.clone(),
        );
        registry.register(
            "store_free_bytes",
            "Free space for the collector on the store's file system",
            store_free_bytes.clone(),
        );
        registry.register(
            "store_floor_bytes",
            "Free space below which pushes are refused",
            store_floor_bytes.clone(),
        );
        registry.register(
            "store_growth_bytes_per_day",
            "How fast the store grew over up to the last day",
            store_growth.clone(),
        );
        registry.register(
            "store_days_until_floor",
            "Days until free space reaches the floor at that rate (+Inf while not growing)",
            store_days_until_floor.clone(),
        );
        registry.register(
            "store_refusing_pushes",
            "1 while pushes are refused because free space is below the floor",
            store_refusing.clone(),
        );
        Metrics {
            store_bytes,
            store_free_bytes,
            store_floor_bytes,
            store_growth,
            store_days_until_floor,
            store_refusing,
            coverage_evaluated,
            compaction_moved,
            compaction_step_seconds,
            compaction_last_pass,
            retention_deleted,
            notify_sent,
            notify_failed,
            notify_given_up,
            notify_queued,
            notify_latency_seconds,
            notify_events,
            facts_unheard,
            facts_queued,
            persist_backlog,
            persist_retries,
            away,
            decode_errors,
            connections,
            shed,
            registry,
            pushes,
            measurements_stored,
            measurements_duplicate,
            rejects,
            enrollments,
            commit_seconds,
            checkpoint_seconds,
            checkpoints,
            wal_pages_behind,
            push_seconds,
            commit_jobs,
            commit_failures,
            write_queue_full,
            enrolled_agents,
            influx_points_written,
            influx_write_errors,
            influx_lag,
            weekly_reports,
            weekly_report_last_success,
            rollup_lag,
            status_truncated,
            agent_dropped,
        }
    }

    pub fn status_truncated(&self, field: &'static str) {
        self.status_truncated
            .get_or_create(&vec![("field", field)])
            .inc();
    }

    /// An agent's drop count for `reason` grew by `n`.
    pub fn agent_dropped(&self, reason: &str, n: u64) {
        let reason: &'static str = match reason {
            "spool_full" => "spool_full",
            "too_old" => "too_old",
            "disk_full" => "disk_full",
            "refused" => "refused",
            _ => "other",
        };
        self.agent_dropped
            .get_or_create(&vec![("reason", reason)])
            .inc_by(n);
    }

    pub fn observe_space(&self, v: &crate::store::space::SpaceView) {
        let g = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        self.store_bytes.set(g(v.store_bytes));
        self.store_free_bytes.set(g(v.free_bytes));
        self.store_floor_bytes.set(g(v.floor_bytes));
        self.store_growth
            .set(v.growth_bytes_per_day.unwrap_or(0.0) as i64);
        self.store_days_until_floor
            .set(v.days_until_floor.unwrap_or(f64::INFINITY));
        self.store_refusing.set(i64::from(v.refusing));
    }

    pub fn retention_deleted(&self, what: &'static str, n: u64) {
        self.retention_deleted
            .get_or_create(&vec![("what", what)])
            .inc_by(n);
    }

    pub fn collector_away(&self, kind: &'static str) {
        self.away.get_or_create(&vec![("kind", kind)]).inc();
    }

    pub fn connection_closed(&self, port: &'static str, why: &'static str) {
        self.connections
            .get_or_create(&vec![("port", port), ("why", why)])
            .inc();
    }

    pub fn request_shed(&self, port: &'static str, why: &'static str) {
        self.shed
            .get_or_create(&vec![("port", port), ("why", why)])
            .inc();
    }

    pub fn weekly_report(&self, result: &'static str) {
        self.weekly_reports
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    pub fn notify_sent(&self, receiver: &str, latency_secs: f64) {
        self.notify_sent
            .get_or_create(&vec![("receiver", receiver.to_string())])
            .inc();
        self.notify_latency_seconds.observe(latency_secs);
    }

    pub fn notify_failed(&self, receiver: &str) {
        self.notify_failed
            .get_or_create(&vec![("receiver", receiver.to_string())])
            .inc();
    }

    pub fn notify_given_up(&self, receiver: &str) {
        self.notify_given_up
            .get_or_create(&vec![("receiver", receiver.to_string())])
            .inc();
    }

    pub fn notify_queued(&self, receiver: &str, n: u64) {
        self.notify_queued
            .get_or_create(&vec![("receiver", receiver.to_string())])
            .set(n as i64);
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejects.get_or_create(&vec![("reason", reason)]).inc();
    }

    pub fn enrollment(&self, result: &'static str) {
        self.enrollments
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The value of one series (`name` with its labels as exposed, e.g.
/// `tps_push_rejects_total{reason="busy"}`) in a `/metrics` text, for tools and tests.
pub fn value_in(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .find_map(|v| v.split_whitespace().next()?.parse().ok())
}
