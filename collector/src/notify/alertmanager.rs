//! Active flags pushed to a Prometheus Alertmanager (`POST /api/v2/alerts`), the way
//! Prometheus does it: every alert again each interval with `endsAt` a few intervals
//! ahead, and flags that ended with `endsAt` set to when they ended, so Alertmanager's
//! own grouping, silences and routing do the rest.

use serde_json::{Value, json};

use super::config::AlertmanagerPush;
use crate::domain::{RegionLevel, TpsCode, now_ms};
use crate::state::flags::{Flag, FlagStatus};
use crate::store::{flags, readers::Readers};

/// Alerts per request.
const CHUNK: usize = 1000;
/// Ended flags are sent as resolved for this long after they end.
const RESOLVED_FOR_MS: i64 = 15 * 60_000;

/// A time as Alertmanager reads it (RFC 3339, UTC).
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// The labels of a station's alert, the same in the Alertmanager push and the webhook:
/// `alertname`, `tps`, `regency`, `district`, `state`, `flag` and, when known, `cause`.
pub fn labels(tps_code: &str, reason: &str, cause: Option<&str>, flag: i64) -> Value {
    let region = |level| {
        tps_code
            .parse::<TpsCode>()
            .map(|t| t.region(level))
            .unwrap_or_default()
    };
    let mut labels = json!({
        "alertname": "TPSUncovered",
        "tps": tps_code,
        "regency": region(RegionLevel::Regency),
        "district": region(RegionLevel::District),
        "state": reason,
        "flag": flag.to_string(),
    });
    if let Some(c) = cause {
        labels["cause"] = json!(c);
    }
    labels
}

/// The Alertmanager alert for a flag; `ends_ms` is when it stops firing.
pub fn alert(f: &Flag, ends_ms: i64, dashboard_url: Option<&str>) -> Value {
    let c = &f.tps_code;
    let labels = labels(c, &f.reason, f.cause.as_deref(), f.id);
    json!({
        "labels": labels,
        "annotations": {
            "summary": format!("TPS {c} is {} since {}", f.reason, rfc3339(f.since_ms)),
            "status": f.status.as_str(),
        },
        "startsAt": rfc3339(f.since_ms),
        "endsAt": rfc3339(ends_ms),
        "generatorURL": dashboard_url.map(|b| format!("{b}#tps={c}")).unwrap_or_default(),
    })
}

/// Pushes the region's flags to one Alertmanager every interval until dropped.
pub async fn run(
    am: AlertmanagerPush,
    dashboard_url: Option<String>,
    readers: Readers,
    http: reqwest::Client,
) {
    let mut tick = tokio::time::interval(am.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let prefix: String = am.region.chars().filter(|c| *c != '.').collect();
    let mut failing = false;
    loop {
        tick.tick().await;
        let now = now_ms();
        let region = am.region.clone();
        let p = prefix.clone();
        let read = readers
            .read(move |c| {
                let active = flags::list(
                    c,
                    &[FlagStatus::Open, FlagStatus::Acknowledged],
                    (!region.is_empty()).then_some(region.as_str()),
                    usize::MAX >> 1,
                )?;
                let ended = flags::ended_since(c, &p, now - RESOLVED_FOR_MS)?;
                Ok((active, ended))
            })
            .await;
        let Ok((active, ended)) = read else {
            continue;
        };
        // Alive for four intervals: a collector that stops pushing lets them resolve.
        let ends = now + 4 * am.every.as_millis() as i64;
        let alerts: Vec<Value> = active
            .iter()
            .map(|f| alert(f, ends, dashboard_url.as_deref()))
            .chain(
                ended
                    .iter()
                    .map(|f| alert(f, f.ended_ms.unwrap_or(now), dashboard_url.as_deref())),
            )
            .collect();
        let mut ok = true;
        for chunk in alerts.chunks(CHUNK) {
            let r = http
                .post(format!("{}/api/v2/alerts", am.url))
                .json(&chunk)
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => {
                    ok = false;
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    if !failing {
                        tracing::warn!(url = %am.url, %status, body = %body.chars().take(200).collect::<String>(), "Alertmanager refused alerts; sending again next interval");
                    }
                    break;
                }
                Err(e) => {
                    ok = false;
                    if !failing {
                        tracing::warn!(url = %am.url, error = %e, "cannot reach Alertmanager; sending again next interval");
                    }
                    break;
                }
            }
        }
        if ok && failing {
            tracing::info!(url = %am.url, alerts = alerts.len(), "Alertmanager reachable again");
        }
        failing = !ok;
    }
}
