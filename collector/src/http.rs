//! The HTTP side (axum): health, Prometheus metrics, the dashboard page, and the
//! status API mounted from [`crate::api`].
//! Errors are JSON `{"error": "..."}` naming what was wrong.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rusqlite::Connection;
use serde_json::json;

use crate::live::Live;
use crate::metrics::Metrics;
use crate::store::{self, writer::Writer};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    pub writer: Writer,
    /// A read-only connection for registry lookups; reads are rare and short, so one
    /// connection behind a mutex (used from blocking threads) is enough.
    pub reader: Arc<Mutex<Connection>>,
    /// The InfluxDB sink's state, when it is on.
    pub influx: Option<Arc<crate::influx::SinkStatus>>,
    /// Coverage and the follow-up queue.
    pub monitor: crate::monitor::Shared,
    /// Where reports are written.
    pub data_dir: Arc<std::path::Path>,
    pub report: Arc<crate::report::schedule::ReportConfig>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/", get(crate::dashboard::page))
        .merge(crate::api::routes())
        .with_state(state)
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
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        ApiError(code, message.into())
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "HTTP handler failed");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// Runs a read against the store on a blocking thread.
pub async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Connection) -> Result<T, store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let reader = state.reader.clone();
    tokio::task::spawn_blocking(move || {
        let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

async fn healthz(State(state): State<AppState>) -> Response {
    let store = read(&state, |c| {
        Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)
    })
    .await;
    let body = json!({
        "status": if store.is_ok() { "ok" } else { "failing" },
        "store": match &store { Ok(_) => "ok".to_string(), Err(e) => e.1.clone() },
        "write_queue": state.writer.queued(),
        "enrolled_agents": state.live.active_agents(),
        "influx": state.influx.as_ref().map(|s| s.snapshot()),
    });
    let code = if store.is_ok() {
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
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
