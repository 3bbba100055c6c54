//! The status API (`/api/v1`, JSON): summary and region counts from the live coverage,
//! station lists and details, RTT/loss series, and the follow-up queue with its actions.
//! Every call needs an operator's bearer token; errors are JSON naming the problem.

use crate::store::compact::HOUR_MS;
use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::{RegionLevel, TpsCode, now_ms};
use crate::state::coverage::{Override, State as CovState};
use crate::state::facts::Fact;
use crate::state::flags::{self, ActError, FlagStatus, OperatorAction};
use crate::state::snapshot::{Snapshot, StationRow};
use crate::store;
use crate::store::operators::{self, Operator, Role};
use crate::web::{ApiError, AppState, read};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/regions", get(regions))
        .route("/api/v1/boundaries", get(boundaries))
        .route(
            "/api/v1/stations",
            get(stations)
                .put(import_stations)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_REGISTRY_BYTES)),
        )
        .route("/api/v1/stations/{tps_code}", get(station))
        .route("/api/v1/stations/{tps_code}/series", get(series))
        .route("/api/v1/stations/{tps_code}/override", put(set_override))
        .route("/api/v1/flags", get(list_flags))
        .route("/api/v1/flags/{id}", get(get_flag))
        .route("/api/v1/flags/{id}/ack", post(ack))
        .route("/api/v1/flags/{id}/assign", post(assign))
        .route("/api/v1/flags/{id}/notes", post(note))
        .route("/api/v1/flags/{id}/resolve", post(resolve))
        .route("/api/v1/agents/{id}/revoke", post(revoke_agent))
        .route("/api/v1/me", get(me))
        .merge(crate::web::reports::routes())
}

pub(crate) fn bad(param: &str, problem: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, format!("{param}: {problem}"))
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing `Authorization: Bearer <token>`; an admin creates one with `tps-collector operator add NAME --role viewer`",
                )
            })?;
        if token.len() > 512 {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the bearer token is longer than any operator token",
            ));
        }
        let hash = crate::auth::token_hash(&token);
        let op = match state.operators.get(&hash) {
            Some(op) => op,
            None => {
                let op = read(state, move |c| operators::authenticate(c, &token)).await?;
                state.operators.put(hash, op.clone());
                op
            }
        };
        op.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unknown or revoked operator token",
            )
        })
    }
}

/// The `limit` query parameter: `default` when absent, else 1 to `max`.
pub(crate) fn limit_param(
    q: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| bad("limit", format!("{l:?} is not a number from 1 to {max}"))),
    }
}

pub(crate) fn require(op: &Operator, role: Role) -> Result<(), ApiError> {
    if op.role >= role {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} is a {}; this needs the {} role",
                op.name,
                op.role.as_str(),
                role.as_str()
            ),
        ))
    }
}

/// A region parameter: a dotted code prefix (`21`, `21.71`, `21.71.01`).
pub(crate) fn region_param(q: &HashMap<String, String>) -> Result<Option<String>, ApiError> {
    q.get("region")
        .filter(|s| !s.trim().is_empty())
        .map(|r| crate::domain::parse_region(r).map_err(|e| bad("region", e)))
        .transpose()
}

fn tps_param(code: &str) -> Result<TpsCode, ApiError> {
    code.parse()
        .map_err(|e: crate::domain::BadTpsCode| bad("tps_code", e))
}

fn counts_json(c: crate::state::coverage::Counts) -> Value {
    json!({
        "total": c.total(),
        "covered": c.covered,
        "degraded": c.degraded,
        "offline": c.offline,
        "no_agent": c.no_agent,
        "uncovered": c.uncovered(),
        "uncovered_share": c.uncovered_share(),
    })
}

async fn me(op: Operator) -> Json<Operator> {
    Json(op)
}

async fn summary(
    State(s): State<AppState>,
    op: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require(&op, Role::Viewer)?;
    let region = region_param(&q)?;
    let m = s.snapshot();
    let key = region.clone().unwrap_or_default();
    let counts = m.counts(&key);
    if region.is_some() && counts.total() == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no station in region {key}"),
        ));
    }
    let r = m.rules;
    let f = m.flag_rules;
    let mut body = counts_json(counts);
    body["as_of_ms"] = json!(m.as_of_ms);
    body["region"] = json!(region);
    body["region_name"] = json!(region.as_ref().and_then(|r| m.registry.name(r)));
    body["outside_regency"] = json!(m.registry.outside_regency(&key));
    body["thresholds"] = json!({
        "fresh_secs": r.fresh_ms / 1000,
        "loss_limit_pct": r.loss_limit * 100.0,
        "rtt_limit_ms": r.rtt_limit_ms,
        "satellite_rtt_limit_ms": r.satellite_rtt_limit_ms,
        "window_mins": r.window_ms / 60_000,
        "streak": r.streak,
        "grace_mins": f.grace_ms / 60_000,
        "recovery_mins": f.recovery_ms / 60_000,
    });
    Ok(Json(body))
}

async fn regions(
    State(s): State<AppState>,
    op: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require(&op, Role::Viewer)?;
    let level = match q.get("level").map(String::as_str) {
        Some("province") => RegionLevel::Province,
        Some("regency") | None => RegionLevel::Regency,
        Some("district") => RegionLevel::District,
        Some(other) => {
            return Err(bad(
                "level",
                format!("{other:?} is not one of province, regency, district"),
            ));
        }
    };
    let parent = match q.get("parent").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => None,
        Some(p) => Some(crate::domain::parse_region(p).map_err(|e| bad("parent", e))?),
    };
    let m = s.snapshot();
    let list: Vec<Value> = m
        .region_counts(level, parent.as_deref())
        .into_iter()
        .map(|(code, c)| {
            let mut v = counts_json(c);
            v["name"] = json!(m.registry.name(&code));
            v["code"] = json!(code);
            v
        })
        .collect();
    Ok(Json(
        json!({ "level": q.get("level").map(String::as_str).unwrap_or("regency"), "parent": parent, "regions": list, "as_of_ms": m.as_of_ms }),
    ))
}

/// `GET /api/v1/boundaries?region=21`: the outlines (GeoJSON) of the regencies that
/// have stations in the registry under the region, with their attribution in `source`.
async fn boundaries(
    State(s): State<AppState>,
    op: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    require(&op, Role::Viewer)?;
    let region = region_param(&q)?;
    let m = s.snapshot();
    let codes: Vec<String> = m
        .region_counts(RegionLevel::Regency, region.as_deref())
        .into_iter()
        .map(|(code, _)| code)
        .collect();
    let body = crate::boundaries::Boundaries::bundled().geojson(codes.iter().map(String::as_str));
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/geo+json"),
            (axum::http::header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        body,
    )
        .into_response())
}

fn station_row(m: &Snapshot, st: &StationRow<'_>) -> Value {
    let (district, regency) = (st.district(), st.regency());
    json!({
        "tps_code": st.info.tps_code,
        "village": st.village(),
        "district": m.registry.name(&district),
        "district_code": district,
        "regency": m.registry.name(&regency),
        "regency_code": regency,
        "state": st.state.state,
        "reason": st.state.reason,
        "since_ms": st.state.since_ms,
        "cause": st.state.cause,
        "lat": st.info.lat,
        "lon": st.info.lon,
        "exempt": st.state.exempt,
        "outside_regency": st.info.outside_regency,
    })
}

async fn stations(
    State(s): State<AppState>,
    op: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require(&op, Role::Viewer)?;
    let region = region_param(&q)?.map(|r| r.replace('.', ""));
    let status = match q
        .get("status")
        .map(|s| s.as_str())
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some("uncovered") => Some(vec![
            CovState::Degraded,
            CovState::Offline,
            CovState::NoAgent,
        ]),
        Some(x) => Some(vec![CovState::parse(x).ok_or_else(|| {
            bad(
                "status",
                format!("{x:?} is not one of covered, degraded, offline, no_agent, uncovered"),
            )
        })?]),
    };
    let limit = limit_param(&q, 100, 10_000)?;
    let cursor = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            Some(tps_param(c).map_err(|_| bad("cursor", "not a cursor from a previous page"))?)
        }
    };
    let needle = q
        .get("q")
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty());
    if needle.as_ref().is_some_and(|n| n.chars().count() > 100) {
        return Err(bad("q", "is longer than 100 characters"));
    }
    let m = s.snapshot();
    // The scan runs off the async threads: at national scale it reads every station.
    let body = tokio::task::spawn_blocking(move || {
        let matcher = needle.as_deref().map(|n| m.matcher(n));
        let mut out = Vec::new();
        let mut matching = 0u64;
        let mut more = false;
        for st in m.stations() {
            if region
                .as_deref()
                .is_some_and(|r| !st.info.tps_code.as_str().starts_with(r))
            {
                continue;
            }
            if status
                .as_ref()
                .is_some_and(|ss| !ss.contains(&st.state.state))
            {
                continue;
            }
            if matcher.as_ref().is_some_and(|hit| !hit(&st)) {
                continue;
            }
            matching += 1;
            if cursor.is_some_and(|c| st.info.tps_code <= c) {
                continue;
            }
            if out.len() < limit {
                out.push(station_row(&m, &st));
            } else {
                more = true;
            }
        }
        (out, matching, more)
    })
    .await
    .map_err(ApiError::internal)?;
    let (out, matching, more) = body;
    // Stations are kept in code order, so the last code shown is the next page's cursor.
    let next = if more {
        out.last().map(|r| r["tps_code"].clone())
    } else {
        None
    };
    Ok(Json(
        json!({ "stations": out, "matching": matching, "next_cursor": next }),
    ))
}

/// Largest registry accepted through the API (the national file is about 80 MB).
const MAX_REGISTRY_BYTES: usize = 256 * 1024 * 1024;

/// `PUT /api/v1/stations` (admin, `text/csv`): imports a registry as `import-stations`
/// does (validated whole first; nothing is written if a row is bad), in the writer's
/// transaction; the live view and coverage have the stations once it answers.
async fn import_stations(
    State(s): State<AppState>,
    op: Operator,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    require(&op, Role::Admin)?;
    let stations =
        tokio::task::spawn_blocking(move || crate::registry::parse(&body[..], 100_000, |_| {}))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| bad("body", e))?;
    let n = stations.len();
    let outside = crate::boundaries::warn_outside(&stations);
    let by = op.name.clone();
    let summary = s
        .writer
        .exec_publishing(move |tx| {
            let summary = store::import_stations_in(tx, &stations, now_ms(), |_| {})?;
            Ok((summary, vec![Fact::Stations(stations)]))
        })
        .await
        .map_err(ApiError::internal)?;
    s.caught_up().await;
    tracing::info!(
        by = %by,
        stations = n,
        inserted = summary.inserted,
        updated = summary.updated,
        "station registry imported through the API"
    );
    Ok(Json(json!({
        "stations": n,
        "inserted": summary.inserted,
        "updated": summary.updated,
        "unchanged": summary.unchanged,
        "not_in_file": summary.not_in_file,
        "outside_regency": outside,
    })))
}

async fn station(
    State(s): State<AppState>,
    op: Operator,
    Path(code): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&op, Role::Viewer)?;
    let tps = tps_param(&code)?;
    let code_s = tps.to_string();
    let (facts, transitions, flag) = read(&s, move |c| {
        let facts = store::station(c, &tps)?;
        let transitions = store::status_changes_of(c, &code_s, 50)?;
        let flag = store::flags::latest_of(c, &code_s)?;
        let events = match &flag {
            Some(f) => store::flags::events(c, f.id)?,
            None => Vec::new(),
        };
        Ok((facts, transitions, flag.map(|f| (f, events))))
    })
    .await?;
    let facts = facts.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("TPS {tps} is not in the registry"),
        )
    })?;
    let agents = s.live.agents_of(&tps);
    let coverage = {
        let m = s.snapshot();
        m.station(&tps).map(|st| station_row(&m, &st))
    };
    let mut body = serde_json::to_value(&facts).map_err(ApiError::internal)?;
    body["regency_code"] = json!(tps.region(RegionLevel::Regency));
    body["district_code"] = json!(tps.region(RegionLevel::District));
    body["last_seen_ms"] = json!(agents.iter().filter_map(|a| a.last_seen_ms).max());
    body["coverage"] = json!(coverage);
    body["agents"] = json!(agents);
    body["transitions"] = json!(transitions.iter().map(|t| json!({
        "at_ms": t.at_ms, "state": t.state, "previous": t.previous, "reason": t.reason, "cause": t.cause
    })).collect::<Vec<_>>());
    body["flag"] = match flag {
        Some((f, events)) => {
            let mut v = serde_json::to_value(&f).map_err(ApiError::internal)?;
            v["events"] = json!(events);
            v
        }
        None => Value::Null,
    };
    Ok(Json(body))
}

async fn series(
    State(s): State<AppState>,
    op: Operator,
    Path(code): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require(&op, Role::Viewer)?;
    let tps = tps_param(&code)?;
    let now = now_ms();
    let num = |k: &str, default: i64| -> Result<i64, ApiError> {
        match q.get(k).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| bad(k, format!("{v:?} is not a number (unix milliseconds)"))),
        }
    };
    // Times outside 1970..2100 are refused before any arithmetic on them.
    const LATEST_MS: i64 = 4_102_444_800_000;
    let in_range = |k: &str, v: i64| {
        if (0..=LATEST_MS).contains(&v) {
            Ok(v)
        } else {
            Err(bad(
                k,
                format!("{v} is not a time between 1970 and 2100 (unix milliseconds)"),
            ))
        }
    };
    let to = in_range("to", num("to", now)?)?;
    let from = in_range("from", num("from", to - 24 * 3_600_000)?)?;
    if from >= to {
        return Err(bad("from", "must be before `to`"));
    }
    let step = match q.get("step").filter(|v| !v.is_empty()) {
        None => ((to - from) / 300).max(60_000),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|x| *x >= 1000)
            .ok_or_else(|| bad("step", format!("{v:?} is not a step of at least 1000 ms")))?,
    };
    // Whole-hour steps read rollups, kept for over a year; finer ones read measurements.
    if step % HOUR_MS == 0 {
        if to - from > 400 * 86_400_000 {
            return Err(bad("from", "the range is at most 400 days"));
        }
    } else if to - from > 31 * 86_400_000 {
        return Err(bad(
            "from",
            "the range is at most 31 days (or 400 with a step of whole hours)",
        ));
    }
    if (to - from) / step > 10_000 {
        return Err(bad(
            "step",
            "gives more than 10,000 points; use a larger step",
        ));
    }
    let target = q.get("target").filter(|t| !t.is_empty()).cloned();
    let agent_ids: Vec<u64> = s.live.agents_of(&tps).iter().map(|a| a.agent_id).collect();
    let t = target.clone();
    // Steps of whole hours read the hourly rollups (kept longer than the measurements)
    // plus the raw rows not yet compacted into them; such series start on the hour.
    let hourly = step % HOUR_MS == 0;
    let from = if hourly {
        crate::store::compact::hour_of(from)
    } else {
        from
    };
    let (rows, rollups) = read(&s, move |c| {
        if hourly {
            Ok((
                store::raw_between(c, &agent_ids, t.as_deref(), from, to)?,
                store::compact::hourly_between(c, &agent_ids, t.as_deref(), from, to)?,
            ))
        } else {
            Ok((
                store::measurements_between(c, &agent_ids, t.as_deref(), from, to)?,
                Vec::new(),
            ))
        }
    })
    .await?;
    // Downsample: per step, mean average RTT (over answered rounds) and mean loss.
    let mut buckets: std::collections::BTreeMap<i64, (f64, u32, f64, u32)> = Default::default();
    let bucket = |t: i64| from + (t - from) / step * step;
    for (_, m) in &rows {
        let b = buckets.entry(bucket(m.start_ms)).or_default();
        if let Some(r) = &m.rtt {
            b.0 += r.avg_ms;
            b.1 += 1;
        }
        b.2 += m.loss();
        b.3 += 1;
    }
    for h in &rollups {
        let b = buckets.entry(bucket(h.hour_ms)).or_default();
        b.0 += h.rtt_avg_sum_ms;
        b.1 += h.rtt_rounds;
        b.2 += h.loss_sum;
        b.3 += h.rounds;
    }
    let points: Vec<Value> = buckets
        .into_iter()
        .map(|(t, (rtt, nr, loss, n))| {
            json!({
                "t": t,
                "rtt_avg_ms": (nr > 0).then(|| rtt / f64::from(nr)),
                "loss": loss / f64::from(n),
                "rounds": n,
            })
        })
        .collect();
    Ok(Json(
        json!({ "tps_code": tps, "target": target, "from_ms": from, "to_ms": to, "step_ms": step, "points": points }),
    ))
}

#[derive(Debug, Deserialize)]
struct OverrideBody {
    link_type: Option<String>,
    exempt_reason: Option<String>,
}

async fn set_override(
    State(s): State<AppState>,
    op: Operator,
    Path(code): Path<String>,
    body: Result<Json<OverrideBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require(&op, Role::Admin)?;
    let Json(b) = body.map_err(|e| bad("body", e.body_text()))?;
    let tps = tps_param(&code)?;
    if let Some(l) = &b.link_type
        && !matches!(l.as_str(), "satellite" | "cellular" | "fixed")
    {
        return Err(bad(
            "link_type",
            format!("{l:?} is not one of satellite, cellular, fixed"),
        ));
    }
    let o = Override {
        link_type: b.link_type.filter(|s| !s.is_empty()),
        exempt_reason: b
            .exempt_reason
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
    };
    if s.snapshot().station(&tps).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("TPS {tps} is not in the registry"),
        ));
    }
    let (o2, by) = (o.clone(), op.name.clone());
    s.writer
        .exec_publishing(move |tx| {
            store::set_override(tx, tps.as_str(), &o2, &by, now_ms())?;
            Ok(((), vec![Fact::Override { tps, value: o2 }]))
        })
        .await
        .map_err(ApiError::internal)?;
    s.caught_up().await;
    Ok(Json(json!({ "tps_code": tps, "override": o })))
}

#[derive(Debug, Serialize)]
struct FlagRow {
    #[serde(flatten)]
    flag: flags::Flag,
    village: Option<String>,
    district: Option<String>,
    regency: Option<String>,
    state: Option<CovState>,
    last_seen_ms: Option<i64>,
    latest_note: Option<String>,
}

async fn list_flags(
    State(s): State<AppState>,
    op: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require(&op, Role::Viewer)?;
    let region = region_param(&q)?;
    let statuses = match q
        .get("status")
        .map(String::as_str)
        .filter(|s| !s.is_empty())
    {
        None | Some("active") => vec![FlagStatus::Open, FlagStatus::Acknowledged],
        Some("all") => vec![
            FlagStatus::Open,
            FlagStatus::Acknowledged,
            FlagStatus::Resolved,
            FlagStatus::Closed,
        ],
        Some(x) => vec![FlagStatus::parse(x).ok_or_else(|| {
            bad(
                "status",
                format!("{x:?} is not one of active, all, open, acknowledged, resolved, closed"),
            )
        })?],
    };
    let limit = limit_param(&q, 500, 10_000)?;
    // The active queue's size is kept by the state owner; other lists are counted.
    let active = statuses.len() == 2 && statuses.iter().all(|st| st.active());
    let known_total = active.then(|| s.snapshot().active_flags(region.as_deref().unwrap_or("")));
    let list = read(&s, move |c| {
        let total = match known_total {
            Some(n) => n,
            None => store::flags::count(c, &statuses, region.as_deref())?,
        };
        let fl = store::flags::list(c, &statuses, region.as_deref(), limit)?;
        let latest = store::flags::latest_notes(c, &fl.iter().map(|f| f.id).collect::<Vec<_>>())?;
        let notes: Vec<Option<String>> = fl.iter().map(|f| latest.get(&f.id).cloned()).collect();
        Ok((fl, notes, total))
    })
    .await?;
    let m = s.snapshot();
    let rows: Vec<FlagRow> = list
        .0
        .into_iter()
        .zip(list.1)
        .map(|(flag, latest_note)| {
            let tps: Option<TpsCode> = flag.tps_code.parse().ok();
            let st = tps.as_ref().and_then(|t| m.station(t));
            let name = |code: String| m.registry.name(&code).map(str::to_string);
            FlagRow {
                village: st.map(|x| x.village().to_string()),
                district: st.and_then(|x| name(x.district())),
                regency: st.and_then(|x| name(x.regency())),
                state: st.map(|x| x.state.state),
                last_seen_ms: tps.as_ref().and_then(|t| {
                    s.live
                        .agents_of(t)
                        .iter()
                        .filter_map(|a| a.last_seen_ms)
                        .max()
                }),
                latest_note,
                flag,
            }
        })
        .collect();
    Ok(Json(json!({ "flags": rows, "total": list.2 })))
}

async fn get_flag(
    State(s): State<AppState>,
    op: Operator,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    require(&op, Role::Viewer)?;
    let (flag, events) = read(&s, move |c| {
        Ok((store::flags::get(c, id)?, store::flags::events(c, id)?))
    })
    .await?;
    let flag =
        flag.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no flag with id {id}")))?;
    let mut v = serde_json::to_value(&flag).map_err(ApiError::internal)?;
    v["events"] = json!(events);
    Ok(Json(v))
}

async fn act(
    s: &AppState,
    op: &Operator,
    id: i64,
    action: OperatorAction,
) -> Result<Json<Value>, ApiError> {
    require(op, Role::Operator)?;
    let actor = op.name.clone();
    let r = s
        .writer
        .exec(move |tx| Ok(store::flags::act(tx, id, &actor, &action, now_ms())))
        .await
        .map_err(ApiError::internal)?;
    let flag = match r {
        Ok(f) => f,
        Err(ActError::NotFound(_)) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no flag with id {id}"),
            ));
        }
        Err(e @ ActError::Conflict { .. }) => {
            return Err(ApiError::new(StatusCode::CONFLICT, e.to_string()));
        }
        Err(ActError::Store(e)) => return Err(ApiError::internal(e)),
    };
    s.caught_up().await;
    Ok(Json(
        serde_json::to_value(&flag).map_err(ApiError::internal)?,
    ))
}

#[derive(Debug, Deserialize)]
struct TextBody {
    assignee: Option<String>,
    text: Option<String>,
    resolution: Option<String>,
}

type TextJson = Result<Json<TextBody>, axum::extract::rejection::JsonRejection>;

/// The flag actions that carry a text, each in its own JSON field.
#[derive(Debug, Clone, Copy)]
enum WithText {
    Assign,
    Note,
    Resolve,
}

impl WithText {
    fn field(self) -> &'static str {
        match self {
            WithText::Assign => "assignee",
            WithText::Note => "text",
            WithText::Resolve => "resolution",
        }
    }

    /// Takes the field out of the body (required, trimmed, at most 2000 characters).
    fn action(self, body: TextJson) -> Result<OperatorAction, ApiError> {
        let Json(b) = body.map_err(|e| bad("body", e.body_text()))?;
        let field = self.field();
        let v = match self {
            WithText::Assign => b.assignee,
            WithText::Note => b.text,
            WithText::Resolve => b.resolution,
        }
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(field, "is required"))?;
        if v.len() > 2000 {
            return Err(bad(field, "is longer than 2000 characters"));
        }
        Ok(match self {
            WithText::Assign => OperatorAction::Assign(v),
            WithText::Note => OperatorAction::Note(v),
            WithText::Resolve => OperatorAction::Resolve(v),
        })
    }
}

async fn ack(
    State(s): State<AppState>,
    op: Operator,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    act(&s, &op, id, OperatorAction::Acknowledge).await
}

async fn assign(
    State(s): State<AppState>,
    op: Operator,
    Path(id): Path<i64>,
    body: TextJson,
) -> Result<Json<Value>, ApiError> {
    act(&s, &op, id, WithText::Assign.action(body)?).await
}

async fn note(
    State(s): State<AppState>,
    op: Operator,
    Path(id): Path<i64>,
    body: TextJson,
) -> Result<Json<Value>, ApiError> {
    act(&s, &op, id, WithText::Note.action(body)?).await
}

async fn resolve(
    State(s): State<AppState>,
    op: Operator,
    Path(id): Path<i64>,
    body: TextJson,
) -> Result<Json<Value>, ApiError> {
    act(&s, &op, id, WithText::Resolve.action(body)?).await
}

async fn revoke_agent(
    State(s): State<AppState>,
    op: Operator,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    require(&op, Role::Admin)?;
    let reason = format!("revoked by {}", op.name);
    let tps = s
        .writer
        .exec_publishing(move |tx| {
            let tps = store::revoke_agent(tx, id, &reason, now_ms())?;
            Ok((tps, vec![Fact::Revoked(vec![id])]))
        })
        .await
        .map_err(|e| match e {
            crate::store::writer::WriteError::Store(store::StoreError::NotFound(m)) => {
                ApiError::new(StatusCode::NOT_FOUND, m)
            }
            other => ApiError::internal(other),
        })?;
    s.caught_up().await;
    Ok(Json(
        json!({ "agent_id": id, "tps_code": tps, "revoked": true }),
    ))
}

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}
