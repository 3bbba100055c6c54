//! The report endpoints of the status API: made on request, and the stored ones.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::domain::now_ms;
use crate::report::schedule::{self, open_read_only};
use crate::report::{Format, Lang, ReportError, Week};
use crate::store::operators::{Operator, Role};
use crate::web::api::{bad, region_param, require};
use crate::web::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/reports", get(list))
        .route("/api/v1/reports/weekly", get(weekly))
        .route("/api/v1/reports/files/{name}", get(file))
}

fn report_error(e: ReportError) -> ApiError {
    match e {
        ReportError::UnknownRegion(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        ReportError::NotStarted { .. } => bad("week", e),
        e => ApiError::internal(e),
    }
}

/// The stored reports and the schedule.
async fn list(State(s): State<AppState>, op: Operator) -> Result<Response, ApiError> {
    require(&op, Role::Viewer)?;
    let cfg = s.report.clone();
    let dir = s.data_dir.clone();
    let files = tokio::task::spawn_blocking(move || schedule::list(&dir, &cfg.tz))
        .await
        .map_err(ApiError::internal)?;
    let reports: Vec<_> = files
        .into_iter()
        .map(|f| {
            let url = format!("/api/v1/reports/files/{}", f.name);
            json!({"week": f.week, "format": f.format, "name": f.name, "bytes": f.bytes, "written": f.written, "url": url})
        })
        .collect();
    let now = now_ms();
    let c = &s.report;
    Ok(axum::Json(json!({
        "reports": reports,
        "schedule": {
            "enabled": c.schedule,
            "time_zone": c.tz.iana_name().unwrap_or("UTC"),
            "next_run": c.schedule.then(|| crate::report::week::rfc3339(c.next_run(now), &c.tz)),
            "next_week": c.schedule.then(|| c.due_week(c.next_run(now)).to_string()),
        },
    }))
    .into_response())
}

/// `?week=2026-W48|current|last&format=html|csv|json&lang=id|en&region=21.71`; the last
/// whole week by default. Made from the store now; rollups are brought up to date first.
async fn weekly(
    State(s): State<AppState>,
    op: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    require(&op, Role::Viewer)?;
    let now = now_ms();
    let cfg = s.report.clone();
    let week: Week =
        crate::report::week::requested(q.get("week").map(String::as_str), now, &cfg.tz)
            .map_err(|e| bad("week", e))?;
    let format: Format = match q.get("format") {
        Some(f) => f.parse().map_err(|e: String| bad("format", e))?,
        None => Format::Html,
    };
    let lang: Lang = match q.get("lang") {
        Some(l) => l.parse().map_err(|e: String| bad("lang", e))?,
        None => cfg.lang,
    };
    let region = region_param(&q)?;
    let _turn = schedule::MAKING.acquire().await;
    crate::sinks::rollup::catch_up_via(&s.writer, &cfg.tz)
        .await
        .map_err(ApiError::internal)?;
    let dir = s.data_dir.clone();
    let name = match &region {
        Some(r) => format!("weekly-{week}-{r}.{}", format.extension()),
        None => schedule::file_name(week, format),
    };
    let body = tokio::task::spawn_blocking(move || {
        let conn = open_read_only(&dir)?;
        let report = crate::report::make(&conn, &cfg.options(week, region, now))?;
        crate::report::render(&report, format, lang)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(report_error)?;
    Ok(document(format, &name, body))
}

/// A stored report file by name (`weekly-2026-W47.html`).
async fn file(
    State(s): State<AppState>,
    op: Operator,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    require(&op, Role::Viewer)?;
    let path = schedule::stored_path(&s.data_dir, &name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no stored report named {name:?}; GET /api/v1/reports lists them"),
        )
    })?;
    let format: Format = path
        .extension()
        .and_then(|e| e.to_str())
        .and_then(|e| e.parse().ok())
        .unwrap_or_default();
    let body = tokio::fs::read(&path).await.map_err(ApiError::internal)?;
    Ok(document(format, &name, body))
}

/// A report document with its type and a file name for saving.
fn document(format: Format, name: &str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}
