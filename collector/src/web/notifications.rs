//! The notification API: each receiver's delivery state and the outbox
//! (`GET /api/v1/notifications`), and a test message to one receiver (admin).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::notify::TestError;
use crate::store::notify as db;
use crate::store::operators::{Operator, Role};
use crate::web::api::{bad, limit_param, require};
use crate::web::{ApiError, AppState, read};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/notifications", get(list))
        .route("/api/v1/notifications/test", post(test))
}

const STATES: [&str; 4] = ["queued", "sending", "sent", "failed"];

async fn list(
    State(s): State<AppState>,
    op: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require(&op, Role::Viewer)?;
    let cfg = s.notifier.cfg.clone();
    let receiver = q.get("receiver").filter(|r| !r.is_empty()).cloned();
    if let Some(r) = &receiver
        && cfg.receiver(r).is_none()
    {
        return Err(bad(
            "receiver",
            format!("{r:?} is not a configured receiver"),
        ));
    }
    let state = q.get("state").filter(|r| !r.is_empty()).cloned();
    if let Some(st) = &state
        && !STATES.contains(&st.as_str())
    {
        return Err(bad(
            "state",
            format!("{st:?} is not one of {}", STATES.join(", ")),
        ));
    }
    let limit = limit_param(&q, 100, 1000)?;
    let names: Vec<String> = cfg.receivers.iter().map(|r| r.name.clone()).collect();
    let (messages, backlogs) = read(&s, move |c| {
        let m = db::list(c, receiver.as_deref(), state.as_deref(), limit)?;
        let b = names
            .iter()
            .map(|n| Ok((n.clone(), db::backlog(c, n)?)))
            .collect::<Result<HashMap<_, _>, crate::store::StoreError>>()?;
        Ok((m, b))
    })
    .await?;
    let status = s.notifier.status.snapshot();
    let receivers: Vec<Value> = cfg
        .receivers
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "type": r.kind.as_str(),
                "per_minute": r.per_minute,
                "outbox": backlogs.get(&r.name),
                "delivery": status.get(&r.name),
            })
        })
        .collect();
    let routes: Vec<Value> = cfg
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "region": r.region,
                "receivers": r.receivers,
                "group_wait_secs": r.group_wait.as_secs(),
                "group_interval_secs": r.group_interval.as_secs(),
                "repeat_secs": r.repeat.map(|d| d.as_secs()),
                "escalate": r.escalate.as_ref().map(|(d, to)| json!({"after_secs": d.as_secs(), "to": to})),
                "quiet_hours": r.quiet.as_ref().map(|q| format!("{}-{}", q.from.strftime("%H:%M"), q.to.strftime("%H:%M"))),
                "summary_after": r.summary_after,
            })
        })
        .collect();
    Ok(Json(json!({
        "receivers": receivers,
        "routes": routes,
        "alertmanager": cfg.alertmanager.iter().map(|a| json!({"url": a.url, "region": a.region})).collect::<Vec<_>>(),
        "bot": cfg.bot.is_some(),
        "messages": messages,
    })))
}

#[derive(Debug, Deserialize)]
struct TestBody {
    receiver: String,
}

async fn test(
    State(s): State<AppState>,
    op: Operator,
    body: Result<Json<TestBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require(&op, Role::Admin)?;
    let Json(b) = body.map_err(|e| bad("body", format!("{e}; send {{\"receiver\": \"name\"}}")))?;
    match s.notifier.send_test(&b.receiver, &op.name).await {
        Ok(id) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "receiver": b.receiver, "state": "queued",
                         "see": format!("/api/v1/notifications?receiver={}", b.receiver) })),
        )),
        Err(TestError::NoReceiver(r)) => Err(bad(
            "receiver",
            format!("{r:?} is not a configured receiver"),
        )),
        Err(e) => Err(ApiError::internal(e)),
    }
}
