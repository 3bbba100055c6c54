//! The report endpoints of the status API: made on request, the stored ones, and
//! short-lived links that open a report in the browser outside the dashboard's origin
//! (a report page, sandboxed, cannot read the operator's token).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
        .route("/api/v1/reports/links", axum::routing::post(new_link))
        .route("/reports/view/{ticket}", get(view))
}

/// How long a report link works.
pub const LINK_TTL: Duration = Duration::from_secs(600);
/// Most live links; past it, expired ones are dropped, and if none had expired a new
/// link is refused.
const MAX_LINKS: usize = 1000;

/// A report's query parameters (`week`, `lang`, `format`, `region`).
type ReportParams = HashMap<String, String>;

/// Report links: a random ticket → the report's parameters and when it was made; live
/// for `LINK_TTL`.
#[derive(Debug, Default)]
pub struct ReportLinks(Mutex<HashMap<String, (ReportParams, Instant)>>);

impl ReportLinks {
    fn add(&self, params: HashMap<String, String>) -> Option<String> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_LINKS {
            m.retain(|_, (_, at)| at.elapsed() < LINK_TTL);
            if m.len() >= MAX_LINKS {
                return None;
            }
        }
        let ticket = hex::encode(rand::random::<[u8; 24]>());
        m.insert(ticket.clone(), (params, Instant::now()));
        Some(ticket)
    }

    fn get(&self, ticket: &str) -> Option<HashMap<String, String>> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(ticket)
            .filter(|(_, at)| at.elapsed() < LINK_TTL)
            .map(|(p, _)| p.clone())
    }
}

/// `POST /api/v1/reports/links` with the parameters of `/api/v1/reports/weekly` as a
/// JSON object: a link (`url`) that opens that report for ten minutes, without a token.
async fn new_link(
    State(s): State<AppState>,
    op: Operator,
    axum::Json(params): axum::Json<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    require(&op, Role::Viewer)?;
    if let Some(k) = params
        .keys()
        .find(|k| !["week", "lang", "format", "region"].contains(&k.as_str()))
    {
        return Err(bad(
            k,
            "is not a report parameter (week, lang, format, region)",
        ));
    }
    // Checked now, so a bad link is refused here rather than when it is opened.
    WeeklyParams::parse(&params, now_ms(), &s.report)?;
    let ticket = s.report_links.add(params).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many report links are open; try again in a few minutes",
        )
    })?;
    tracing::info!(by = %op.name, "report link made");
    Ok(axum::Json(json!({
        "url": format!("/reports/view/{ticket}"),
        "expires_in_secs": LINK_TTL.as_secs(),
    }))
    .into_response())
}

/// A report opened from a link.
async fn view(State(s): State<AppState>, Path(ticket): Path<String>) -> Result<Response, ApiError> {
    let params = s.report_links.get(&ticket).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this report link has expired or is not valid; open the report again from the dashboard",
        )
    })?;
    make_weekly(&s, &params).await
}

/// The parameters of a weekly report, checked.
struct WeeklyParams {
    week: Week,
    format: Format,
    lang: Lang,
    region: Option<String>,
}

impl WeeklyParams {
    fn parse(
        q: &HashMap<String, String>,
        now: i64,
        cfg: &crate::report::schedule::ReportConfig,
    ) -> Result<WeeklyParams, ApiError> {
        Ok(WeeklyParams {
            week: crate::report::week::requested(q.get("week").map(String::as_str), now, &cfg.tz)
                .map_err(|e| bad("week", e))?,
            format: match q.get("format") {
                Some(f) => f.parse().map_err(|e: String| bad("format", e))?,
                None => Format::Html,
            },
            lang: match q.get("lang") {
                Some(l) => l.parse().map_err(|e: String| bad("lang", e))?,
                None => cfg.lang,
            },
            region: region_param(q)?,
        })
    }
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
    make_weekly(&s, &q).await
}

/// Makes this week's (or a requested week's) report now.
async fn make_weekly(s: &AppState, q: &HashMap<String, String>) -> Result<Response, ApiError> {
    let now = now_ms();
    let cfg = s.report.clone();
    let WeeklyParams {
        week,
        format,
        lang,
        region,
    } = WeeklyParams::parse(q, now, &cfg)?;
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

/// A report page runs in a sandbox of its own origin: no script, nothing fetched, no
/// access to the dashboard's storage (where the operator's token is).
pub const REPORT_POLICY: &str = "sandbox allow-popups allow-modals allow-downloads; default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// A report document with its type and a file name for saving.
fn document(format: Format, name: &str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{name}\""),
            ),
            (header::CONTENT_SECURITY_POLICY, REPORT_POLICY.to_string()),
        ],
        body,
    )
        .into_response()
}
