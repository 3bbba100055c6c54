//! Coverage, the follow-up queue and the status API end to end: a collector with the
//! Kepri registry, real pushes over gRPC, real HTTP with operator tokens.

use std::time::Duration;

use serde_json::{Value, json};
use tps_tests::{Agent, TestCollector, eventually, kepri_registry, measurement, now_ms};

const WAIT: Duration = Duration::from_secs(30);
const VILLAGE: &str = "21.71.01.1002";

async fn kepri_fast() -> anyhow::Result<(tempfile::TempDir, TestCollector)> {
    let dir = tempfile::tempdir()?;
    tps_collector::commands::import_stations(dir.path(), &kepri_registry())?;
    let c = TestCollector::start_with(dir.path(), |cfg| {
        cfg.coverage.tick = Duration::from_millis(100);
        cfg.coverage.flags.grace_ms = 300;
        cfg.coverage.flags.recovery_ms = 300;
    })
    .await?;
    Ok((dir, c))
}

async fn call(
    c: &TestCollector,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let client = reqwest::Client::new();
    let mut req = match method {
        "POST" => client.post(c.url(path)),
        "PUT" => client.put(c.url(path)),
        _ => client.get(c.url(path)),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_summary_regions_and_the_follow_up_queue() -> anyhow::Result<()> {
    let (dir, c) = kepri_fast().await?;
    let viewer = tps_collector::commands::add_operator(dir.path(), "vera", "viewer")?;
    let operator = tps_collector::commands::add_operator(dir.path(), "siti", "operator")?;

    // Everything is no_agent at first; the registry is the denominator.
    let (s, sum) = c.get_json("/api/v1/summary").await?;
    assert_eq!(s, 200, "{sum}");
    assert_eq!(
        (
            sum["total"].as_u64(),
            sum["no_agent"].as_u64(),
            sum["uncovered_share"].as_f64()
        ),
        (Some(3327), Some(3327), Some(1.0))
    );
    assert_eq!(sum["thresholds"]["loss_limit_pct"], 10.0);

    // Two stations report: one good, one lossy on its primary target.
    let codes = c.codes(VILLAGE)?;
    let mut good = Agent::enroll(&c, &codes[0].0, &codes[0].1).await?;
    let mut lossy = Agent::enroll(&c, &codes[1].0, &codes[1].1).await?;
    let base = now_ms() - 5 * 60_000;
    good.push(
        (1..=4)
            .map(|s| measurement(s * 2, base, "gateway"))
            .collect(),
    )
    .await?;
    let bad: Vec<_> = (1..=4)
        .map(|s| {
            let mut m = measurement(s, base, "gateway");
            m.received = 2;
            m
        })
        .collect();
    lossy.push(bad).await?;

    let (_, sum) = c.get_json("/api/v1/summary?region=21.71").await?;
    assert_eq!(
        (sum["covered"].as_u64(), sum["degraded"].as_u64()),
        (Some(1), Some(1)),
        "{sum}"
    );
    assert_eq!(sum["region_name"], "Kota Batam");
    let total_batam = sum["total"].as_u64().unwrap();
    let (_, regions) = c
        .get_json("/api/v1/regions?level=regency&parent=21")
        .await?;
    let list = regions["regions"].as_array().unwrap();
    assert_eq!(
        list.iter()
            .map(|r| r["total"].as_u64().unwrap())
            .sum::<u64>(),
        3327
    );
    let batam = list.iter().find(|r| r["code"] == "21.71").unwrap();
    assert_eq!(batam["total"].as_u64(), Some(total_batam));
    assert_eq!(batam["covered"], 1);
    let (_, districts) = c
        .get_json("/api/v1/regions?level=district&parent=21.71")
        .await?;
    assert!(
        districts["regions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["code"].as_str().unwrap().starts_with("21.71."))
    );

    // Station list: filter, search, pages.
    let (_, degraded) = c.get_json("/api/v1/stations?status=degraded").await?;
    assert_eq!(degraded["stations"][0]["tps_code"], codes[1].0.as_str());
    assert_eq!(degraded["stations"][0]["reason"], "high_loss");
    let (_, p1) = c
        .get_json("/api/v1/stations?region=21.71.01&limit=7")
        .await?;
    let (_, p2) = c
        .get_json(&format!(
            "/api/v1/stations?region=21.71.01&limit=7&cursor={}",
            p1["next_cursor"].as_str().unwrap()
        ))
        .await?;
    let a: Vec<&str> = p1["stations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tps_code"].as_str().unwrap())
        .collect();
    let b: Vec<&str> = p2["stations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tps_code"].as_str().unwrap())
        .collect();
    assert_eq!((a.len(), b.len()), (7, 7));
    assert!(a.last() < b.first(), "pages follow each other: {a:?} {b:?}");
    let (_, found) = c
        .get_json(&format!("/api/v1/stations?q={}", &codes[0].0))
        .await?;
    assert_eq!(found["matching"], 1);

    // Flags open after the grace period: everything uncovered, the lossy one included.
    let flags = eventually(WAIT, "flags for every uncovered station", || async {
        let (_, f) = c.get_json("/api/v1/flags?limit=10000").await.ok()?;
        let all = f["flags"].as_array()?;
        // The lossy station's flag carries its current reason (a tick may still be updating it).
        (all.len() == 3326 && all.last()?["reason"] == "high_loss").then_some(f)
    })
    .await?;
    let list = flags["flags"].as_array().unwrap();
    // no_agent and offline before degraded.
    assert_eq!(list.last().unwrap()["tps_code"], codes[1].0.as_str());
    assert_eq!(list.last().unwrap()["reason"], "high_loss");
    let id = list.last().unwrap()["id"].as_i64().unwrap();

    // Working the flag: roles, validation, audit trail.
    let path = |a: &str| format!("/api/v1/flags/{id}/{a}");
    assert_eq!(call(&c, "POST", &path("ack"), None, None).await?.0, 401);
    assert_eq!(
        call(&c, "POST", &path("ack"), Some(&viewer), None).await?.0,
        403
    );
    assert_eq!(
        call(&c, "POST", &path("ack"), Some(&operator), None)
            .await?
            .1["status"],
        "acknowledged"
    );
    let (s, e) = call(
        &c,
        "POST",
        &path("assign"),
        Some(&operator),
        Some(json!({})),
    )
    .await?;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().starts_with("assignee:"), "{e}");
    assert_eq!(
        call(
            &c,
            "POST",
            &path("assign"),
            Some(&operator),
            Some(json!({"assignee": "Budi"}))
        )
        .await?
        .1["assignee"],
        "Budi"
    );
    call(
        &c,
        "POST",
        &path("notes"),
        Some(&operator),
        Some(json!({"text": "Telkomsel tower down"})),
    )
    .await?;
    // The queue shows each flag's newest note.
    let (_, listed) = c.get_json("/api/v1/flags?limit=10000").await?;
    let row = listed["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .cloned()
        .unwrap();
    assert_eq!(row["latest_note"], "Telkomsel tower down");
    assert!(
        listed["flags"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["id"] != id)
            .all(|f| f["latest_note"].is_null())
    );
    let (s, r) = call(
        &c,
        "POST",
        &path("resolve"),
        Some(&operator),
        Some(json!({"resolution": "moved to satellite link"})),
    )
    .await?;
    assert_eq!((s, r["status"].as_str()), (200, Some("resolved")));
    assert_eq!(
        call(&c, "POST", &path("ack"), Some(&operator), None)
            .await?
            .0,
        409
    );
    let (_, f) = c.get_json(&format!("/api/v1/flags/{id}")).await?;
    let trail: Vec<(String, String)> = f["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    // Opened by the system; if the flag opened before the first push (a slow machine), the
    // system also recorded the reason changing to high_loss. Then the operator's four actions.
    assert_eq!(trail[0], ("system".to_string(), "opened".to_string()));
    let system_after: Vec<&str> = trail[1..]
        .iter()
        .filter(|(who, _)| who == "system")
        .map(|(_, a)| a.as_str())
        .collect();
    assert!(system_after.iter().all(|a| *a == "updated"), "{trail:?}");
    let by_siti: Vec<&str> = trail
        .iter()
        .filter(|(who, _)| who == "siti")
        .map(|(_, a)| a.as_str())
        .collect();
    assert_eq!(by_siti, ["acknowledged", "assigned", "note", "resolved"]);
    assert_eq!(list.last().unwrap()["reason"], "high_loss");
    // A resolved flag leaves the active queue and is not reopened for the same episode.
    let (_, active) = c.get_json("/api/v1/flags?limit=10000").await?;
    assert_eq!(active["flags"].as_array().unwrap().len(), 3325);

    // Station detail: coverage, transitions, the flag with its trail.
    let (_, d) = c
        .get_json(&format!("/api/v1/stations/{}", codes[1].0))
        .await?;
    assert_eq!(d["coverage"]["state"], "degraded");
    assert_eq!(d["transitions"][0]["state"], "degraded");
    assert_eq!(d["flag"]["status"], "resolved");
    assert_eq!(d["flag"]["events"].as_array().unwrap().len(), trail.len());

    // The good station's flag closes by itself once it has stayed covered.
    let good_code = codes[0].0.clone();
    eventually(WAIT, "no active flag for the covered station", || async {
        let (_, f) = c.get_json("/api/v1/flags?limit=10000").await.ok()?;
        let any = f["flags"]
            .as_array()?
            .iter()
            .any(|x| x["tps_code"] == good_code.as_str());
        (!any).then_some(())
    })
    .await?;

    // Series: downsampled RTT and loss.
    let (s, series) = c
        .get_json(&format!(
            "/api/v1/stations/{}/series?target=gateway&from={}&step=60000",
            codes[0].0, base
        ))
        .await?;
    assert_eq!(s, 200, "{series}");
    let points = series["points"].as_array().unwrap();
    assert!(!points.is_empty());
    assert_eq!(
        points
            .iter()
            .map(|p| p["rounds"].as_u64().unwrap())
            .sum::<u64>(),
        4
    );

    // Bad parameters are named.
    for (q, param) in [
        ("/api/v1/summary?region=2x", "region:"),
        ("/api/v1/regions?level=village", "level:"),
        ("/api/v1/stations?status=broken", "status:"),
        ("/api/v1/stations?limit=0", "limit:"),
        ("/api/v1/flags?status=maybe", "status:"),
    ] {
        let (s, e) = c.get_json(q).await?;
        assert_eq!(s, 400, "{q}");
        assert!(e["error"].as_str().unwrap().starts_with(param), "{q}: {e}");
    }
    assert_eq!(c.get_json("/api/v1/summary?region=99").await?.0, 404);
    assert_eq!(
        call(&c, "GET", "/api/v1/summary", Some("tps_nope"), None)
            .await?
            .0,
        401
    );
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_silence_and_restart() -> anyhow::Result<()> {
    let (dir, c) = kepri_fast().await?;
    let operator = tps_collector::commands::add_operator(dir.path(), "siti", "operator")?;
    let codes = c.codes(VILLAGE)?;
    let tps = codes[0].0.clone();
    let mut a = Agent::enroll(&c, &tps, &codes[0].1).await?;
    let base = now_ms() - 5 * 60_000;

    // A satellite station: 900 ms is fine there; only admins may say so.
    let path = format!("/api/v1/stations/{tps}/override");
    assert_eq!(
        call(
            &c,
            "PUT",
            &path,
            Some(&operator),
            Some(json!({"link_type": "satellite"}))
        )
        .await?
        .0,
        403
    );
    let (s, e) = call(
        &c,
        "PUT",
        &path,
        Some(&c.token),
        Some(json!({"link_type": "balloon"})),
    )
    .await?;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().starts_with("link_type:"));
    assert_eq!(
        call(
            &c,
            "PUT",
            &path,
            Some(&c.token),
            Some(json!({"link_type": "satellite"}))
        )
        .await?
        .0,
        200
    );
    let slow: Vec<_> = (1..=4)
        .map(|s| {
            let mut m = measurement(s, base, "gateway");
            m.rtt_min_ms = Some(850.0);
            m.rtt_avg_ms = Some(900.0);
            m.rtt_max_ms = Some(950.0);
            m
        })
        .collect();
    a.push(slow).await?;
    let (_, d) = c.get_json(&format!("/api/v1/stations/{tps}")).await?;
    assert_eq!(d["coverage"]["state"], "covered", "{d}");

    // State survives a restart (from the stored transitions).
    c.stop().await?;
    let c = TestCollector::start_with(dir.path(), |cfg| {
        cfg.coverage.tick = Duration::from_millis(100)
    })
    .await?;
    let (_, d) = c.get_json(&format!("/api/v1/stations/{tps}")).await?;
    assert_eq!(d["coverage"]["state"], "covered", "{d}");
    let (_, sum) = c.get_json("/api/v1/summary").await?;
    assert_eq!(sum["covered"], 1);

    // Silence is noticed by the clock: with a 1 s freshness window, offline without new data.
    c.stop().await?;
    let c = TestCollector::start_with(dir.path(), |cfg| {
        cfg.coverage.tick = Duration::from_millis(100);
        cfg.coverage.rules.fresh_ms = 1000;
    })
    .await?;
    // The timer changes the state, then stores the transition: wait for both.
    let d = eventually(WAIT, "the silent station to go offline", || async {
        let (_, d) = c.get_json(&format!("/api/v1/stations/{tps}")).await.ok()?;
        (d["coverage"]["state"] == "offline" && d["transitions"][0]["state"] == "offline")
            .then_some(d)
    })
    .await?;
    assert_eq!(d["transitions"][0]["state"], "offline");
    assert_eq!(d["transitions"][0]["previous"], "covered");
    // It comes back with nothing measured in between and the same boot: the agent was stopped.
    let mut a = Agent {
        client: c.client().await?,
        ..a
    };
    a.push(vec![]).await?;
    let (_, d) = c.get_json(&format!("/api/v1/stations/{tps}")).await?;
    assert_eq!(d["coverage"]["state"], "covered", "{d}");
    assert_eq!(d["transitions"][0]["cause"], "agent_stopped", "{d}");
    c.stop().await
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    tps_collector::commands::import_stations(dir.path(), &kepri_registry())?;
    let c = TestCollector::start(dir.path()).await?;
    // Served without a token, so tools can discover the API.
    let doc: Value = reqwest::get(c.url("/api/v1/openapi.json"))
        .await?
        .json()
        .await?;
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let src = concat!(
        include_str!("../../collector/src/web/api.rs"),
        include_str!("../../collector/src/web/reports.rs"),
        include_str!("../../collector/src/web/notifications.rs")
    );
    let routes: Vec<&str> = src
        .lines()
        .filter_map(|l| l.trim().strip_prefix(".route(\"")?.split('"').next())
        .collect();
    assert!(routes.len() >= 13);
    for r in routes {
        assert!(paths.contains_key(r), "{r} is not in openapi.json");
    }
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_revoke_agents_and_new_stations_join_while_running() -> anyhow::Result<()> {
    let (dir, c) = kepri_fast().await?;
    let operator = tps_collector::commands::add_operator(dir.path(), "siti", "operator")?;
    let codes = c.codes(VILLAGE)?;
    let mut a = Agent::enroll(&c, &codes[0].0, &codes[0].1).await?;
    a.push(vec![measurement(1, now_ms() - 60_000, "gateway")])
        .await?;

    let path = format!("/api/v1/agents/{}/revoke", a.agent_id);
    assert_eq!(call(&c, "POST", &path, Some(&operator), None).await?.0, 403);
    assert_eq!(
        call(
            &c,
            "POST",
            "/api/v1/agents/999999/revoke",
            Some(&c.token),
            None
        )
        .await?
        .0,
        404
    );
    let (s, r) = call(&c, "POST", &path, Some(&c.token), None).await?;
    assert_eq!(
        (s, r["tps_code"].as_str()),
        (200, Some(codes[0].0.as_str()))
    );
    // At once: the token is refused and the station no longer counts as covered.
    let e = a
        .push(vec![measurement(2, now_ms() - 30_000, "gateway")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let (_, d) = c
        .get_json(&format!("/api/v1/stations/{}", codes[0].0))
        .await?;
    assert_eq!(d["coverage"]["state"], "offline", "{d}");

    // A registry re-import with one more station, while the collector runs.
    let text = std::fs::read_to_string(kepri_registry())?;
    let last = text.lines().last().unwrap().to_string();
    let mut f: Vec<String> = last.split(',').map(String::from).collect();
    let new_code = format!("{}999", &f[0][..10]);
    f[0] = new_code.clone();
    f[1] = "999".into();
    let file = dir.path().join("plus-one.csv");
    std::fs::write(&file, format!("{text}{}\n", f.join(",")))?;
    tps_collector::commands::import_stations(dir.path(), &file)?;
    eventually(
        Duration::from_secs(90),
        "the new station in the summary",
        || async {
            let (_, s) = c.get_json("/api/v1/summary").await.ok()?;
            (s["total"] == 3328).then_some(())
        },
    )
    .await?;
    let (_, d) = c.get_json(&format!("/api/v1/stations/{new_code}")).await?;
    assert_eq!(d["coverage"]["state"], "no_agent");
    c.stop().await
}
