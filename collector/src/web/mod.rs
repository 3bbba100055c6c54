//! The HTTP side (axum): health, Prometheus metrics, the dashboard page, and the
//! status API mounted from [`crate::web::api`].
//! Errors are JSON `{"error": "..."}` naming what was wrong.

pub mod api;
pub mod dashboard;
pub mod notifications;
pub mod reports;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rusqlite::Connection;
use serde_json::json;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::state::facts::Facts;
use crate::state::live::Live;
use crate::state::snapshot::Snapshot;
use crate::store::operators::Operator;
use crate::store::{self, readers::Readers, writer::Writer};

/// How long an operator-token check is reused (a revocation takes effect within this).
pub const OPERATOR_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most cached token checks; the cache starts over when full.
const OPERATOR_CACHE_MAX: usize = 10_000;
/// A commit running longer than this means a stuck writer.
const WRITER_STUCK_MS: i64 = 30_000;

/// Operator-token checks, by token hash, for a few seconds.
#[derive(Debug, Default)]
pub struct OperatorCache(Mutex<HashMap<[u8; 32], CachedCheck>>);

/// A token's operator (or none), and when it was looked up.
type CachedCheck = (Option<Operator>, Instant);

impl OperatorCache {
    pub fn get(&self, hash: &[u8; 32]) -> Option<Option<Operator>> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(hash)
            .filter(|(_, at)| at.elapsed() < OPERATOR_CACHE_TTL)
            .map(|(op, _)| op.clone())
    }

    pub fn put(&self, hash: [u8; 32], op: Option<Operator>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= OPERATOR_CACHE_MAX {
            m.clear();
        }
        m.insert(hash, (op, Instant::now()));
    }

    /// Forgets every check (after a change made through this collector).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    pub writer: Writer,
    /// Read connections for registry lookups, series and flag lists.
    pub readers: Readers,
    /// The InfluxDB sink's state, when it is on.
    pub influx: Option<Arc<crate::sinks::influx::SinkStatus>>,
    /// Coverage and the follow-up queue as last published by the state owner.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// For changes made through the API, published once committed.
    pub facts: Facts,
    pub operators: Arc<OperatorCache>,
    /// Notification status and test messages.
    pub notifier: crate::notify::Notifier,
    /// Where reports are written.
    pub data_dir: Arc<std::path::Path>,
    pub report: Arc<crate::report::schedule::ReportConfig>,
    /// The store's disk: size, free space, growth, whether pushes are refused.
    pub space: Arc<crate::store::space::Space>,
    /// Short-lived links that open a report outside the dashboard's origin.
    pub report_links: Arc<crate::web::reports::ReportLinks>,
}

/// The HTTP routes under the port's limits: at most `max_in_flight` requests at once
/// (more are refused at once with `503` and `Retry-After`), each cut at
/// `request_timeout`. `/healthz` and `/metrics` stay outside the limit, so a monitor
/// can still see an overloaded collector.
pub fn router(state: AppState, edge: &crate::config::EdgeConfig) -> Router {
    let m = state.metrics.clone();
    let limited = Router::new()
        .merge(crate::web::dashboard::routes())
        .merge(crate::web::api::routes())
        .merge(crate::web::notifications::routes())
        .fallback(not_found)
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    move |e: tower::BoxError| {
                        let m = m.clone();
                        async move { shed(&m, e) }
                    },
                ))
                .load_shed()
                .concurrency_limit(edge.max_in_flight)
                .timeout(edge.request_timeout),
        );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(limited)
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// A request refused by the port's limits.
fn shed(metrics: &Metrics, e: tower::BoxError) -> Response {
    if e.is::<tower::load_shed::error::Overloaded>() {
        metrics.request_shed("http", "overloaded");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(json!({ "error": "the collector is answering as many requests as it can; retry in a second" })),
        )
            .into_response()
    } else if e.is::<tower::timeout::error::Elapsed>() {
        metrics.request_shed("http", "timeout");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Json(json!({ "error": "the request took longer than the collector allows; retry, or ask for less" })),
        )
            .into_response()
    } else {
        ApiError::internal(e).into_response()
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such page: {}; the API is under /api/v1 (see /api/v1/openapi.json)",
            crate::domain::shown(uri.path())
        ),
    )
}

/// What a page of this collector may do in a browser: its own scripts, styles and API
/// only; no framing by other sites; no inline script.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Headers every answer carries. A response that set its own Content-Security-Policy
/// (a report, which is sandboxed) keeps it.
async fn security_headers(mut resp: Response) -> Response {
    use axum::http::HeaderValue;
    let h = resp.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(PAGE_POLICY));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// Most bytes of a framework error text (path or query rejections, 405) kept.
const ERROR_TEXT_MAX: usize = 300;

/// Every error leaves as JSON `{"error": ...}`: rejections made by the framework (a bad
/// path parameter, a wrong method, a body too large, a time limit) are rewritten.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let text = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.chars().take(ERROR_TEXT_MAX).collect()
    };
    let mut out = (status, Json(json!({ "error": text }))).into_response();
    for name in [header::RETRY_AFTER, header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// A JSON error with its status code.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    /// An error to answer with; the message is cut to a bounded length, so input
    /// repeated in it never makes an answer large.
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        let mut m: String = message.into();
        if m.len() > 1000 {
            let mut end = 1000;
            while !m.is_char_boundary(end) {
                end -= 1;
            }
            m.truncate(end);
            m.push('…');
        }
        ApiError(code, m)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "HTTP handler failed");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl AppState {
    /// The newest published picture of coverage (no lock held after this returns).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// After a change made through the API: waits (briefly) until the published picture
    /// includes it, so the caller's next read shows what it just did.
    pub async fn caught_up(&self) {
        let target = self.facts.sent();
        let mut rx = self.snapshot.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|s| s.applied >= target))
            .await;
    }
}

/// Runs a read against the store on a pooled connection.
pub async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Connection) -> Result<T, store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    state.readers.read(f).await.map_err(ApiError::internal)
}

async fn healthz(State(state): State<AppState>) -> Response {
    let mut problems: Vec<String> = Vec::new();
    let store = read(&state, store::ping).await;
    if let Err(e) = &store {
        problems.push(format!("the store cannot be read: {}", e.1));
    }
    let w = state.writer.health();
    if w.stopped {
        problems.push("the store writer has stopped; restart the collector".into());
    }
    if let Some(ms) = w.busy_ms.filter(|ms| *ms > WRITER_STUCK_MS) {
        problems.push(format!(
            "a commit has been running for {} s (disk stalled?)",
            ms / 1000
        ));
    }
    if w.failing_commits > 0 {
        problems.push(format!(
            "the last {} commit(s) failed: {}",
            w.failing_commits,
            w.last_error.clone().unwrap_or_default()
        ));
    }
    let space = state.space.view();
    if space.refusing {
        problems.push(format!(
            "only {} MB free for the store (floor {} MB): pushes are refused until space is freed",
            space.free_bytes / 1_048_576,
            space.floor_bytes / 1_048_576
        ));
    }
    if let Some(e) = &space.error {
        problems.push(e.clone());
    }
    problems.extend(state.notifier.status.problems(crate::domain::now_ms()));
    let snap = state.snapshot();
    let body = json!({
        "status": if problems.is_empty() { "ok" } else { "failing" },
        "problems": problems,
        "store": match &store { Ok(_) => "ok".to_string(), Err(e) => e.1.clone() },
        "writer": w,
        "disk": space,
        "write_queue": state.writer.queued(),
        "facts_queued": state.facts.queued(),
        "persist_backlog": state.metrics.persist_backlog.get(),
        "coverage_as_of_ms": snap.as_of_ms,
        "enrolled_agents": state.live.active_agents(),
        "influx": state.influx.as_ref().map(|s| s.snapshot()),
        "notify": state.notifier.status.snapshot(),
    });
    let code = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .enrolled_agents
        .set(state.live.active_agents() as i64);
    state.metrics.facts_queued.set(state.facts.queued() as i64);
    let decoded = tps_proto::codec::decode_errors();
    let grpc = state
        .metrics
        .decode_errors
        .get_or_create(&vec![("port", "grpc")]);
    grpc.inc_by(decoded.saturating_sub(grpc.get()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
