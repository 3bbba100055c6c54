//! The collector foundation end to end: a real collector on 127.0.0.1:0 with a real
//! SQLite file, the bundled Kepri registry, real gRPC and HTTP.

use std::time::Duration;

use tonic::Code;
use tps_proto::v1 as pb;
use tps_tests::{
    Agent, TestCollector, eventually, kepri_registry, measurement, now_ms, open_store, push_request,
};

const BATAM_VILLAGE: &str = "21.71.01.1002";

async fn kepri() -> anyhow::Result<(tempfile::TempDir, TestCollector)> {
    let dir = tempfile::tempdir()?;
    tps_collector::commands::import_stations(dir.path(), &kepri_registry())?;
    let c = TestCollector::start(dir.path()).await?;
    Ok((dir, c))
}

async fn enrolled(c: &TestCollector, region: &str) -> anyhow::Result<Agent> {
    let codes = c.codes(region)?;
    let (tps, code) = &codes[0];
    Agent::enroll(c, tps, code).await
}

fn stored_count(c: &TestCollector, agent_id: u64) -> anyhow::Result<usize> {
    let conn = open_store(&c.data_dir)?;
    Ok(tps_collector::store::measurements_of(&conn, agent_id)?.len())
}

#[tokio::test]
async fn import_enroll_push_and_read_back() -> anyhow::Result<()> {
    let (_dir, c) = kepri().await?;
    let conn = open_store(&c.data_dir)?;
    assert_eq!(tps_collector::store::count(&conn, "stations")?, 3327);

    let mut agent = enrolled(&c, BATAM_VILLAGE).await?;
    assert!(agent.token.starts_with("tps_"));
    let base = now_ms() - 120_000;
    let batch: Vec<_> = (1..=6)
        .map(|s| measurement(s, base, if s % 2 == 0 { "gateway" } else { "anchor" }))
        .collect();
    let r = agent.push(batch.clone()).await?;
    assert_eq!(r.acked_seq, 6);
    assert!((r.server_time_ms - now_ms()).abs() < 10_000);
    assert_eq!(r.settings.map(|s| s.push_interval_secs), Some(60));

    let (status, body) = c
        .get_json(&format!("/api/v1/stations/{}", agent.tps_code))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tps_code"], agent.tps_code.as_str());
    assert_eq!(body["village_code"], BATAM_VILLAGE);
    assert_eq!(body["regency_code"], "21.71");
    let agents = body["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["agent_id"], agent.agent_id);
    assert_eq!(agents[0]["acked_seq"], 6);
    assert_eq!(agents[0]["status"]["hostname"], "laptop-test");
    // Newest per target: seq 6 for gateway, seq 5 for anchor.
    let latest = agents[0]["latest"].as_array().unwrap();
    let seqs: Vec<(String, u64)> = latest
        .iter()
        .map(|m| {
            (
                m["target_name"].as_str().unwrap().to_string(),
                m["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seqs,
        vec![("anchor".to_string(), 5), ("gateway".to_string(), 6)]
    );
    assert_eq!(latest[1]["rtt"]["avg_ms"], batch[5].rtt_avg_ms.unwrap());

    // Everything is in the SQLite file, field for field.
    let stored = tps_collector::store::measurements_of(&conn, agent.agent_id)?;
    assert_eq!(stored.len(), 6);
    for (s, sent) in stored.iter().zip(&batch) {
        assert_eq!(s.seq, sent.seq);
        assert_eq!(s.start_ms, sent.start_ms);
        assert_eq!(s.received, sent.received);
        assert_eq!(s.rtt.unwrap().max_ms, sent.rtt_max_ms.unwrap());
    }

    // A heartbeat (no measurements) is acknowledged with the stored high-water mark.
    assert_eq!(agent.push(vec![]).await?.acked_seq, 6);

    let metrics = reqwest::get(c.url("/metrics")).await?.text().await?;
    assert!(
        metrics.contains("tps_measurements_stored_total 6"),
        "{metrics}"
    );
    assert!(metrics.contains("tps_pushes_total 2"), "{metrics}");
    assert!(metrics.contains("tps_enrolled_agents 1"), "{metrics}");
    assert!(
        metrics.contains("tps_store_commit_seconds_bucket"),
        "{metrics}"
    );

    let (status, body) = c.get_json("/api/v1/stations/2171011002999").await?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = c.get_json("/api/v1/stations/21710").await?;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().starts_with("tps_code:"),
        "{body}"
    );
    c.stop().await
}

#[tokio::test]
async fn a_resent_batch_is_stored_once_and_acknowledged_again() -> anyhow::Result<()> {
    let (_dir, c) = kepri().await?;
    let mut agent = enrolled(&c, BATAM_VILLAGE).await?;
    let base = now_ms() - 60_000;
    let batch: Vec<_> = (1..=10).map(|s| measurement(s, base, "gateway")).collect();
    assert_eq!(agent.push(batch.clone()).await?.acked_seq, 10);
    // The acknowledgement was "lost": the agent sends the same batch again plus more.
    let mut again = batch.clone();
    again.extend((11..=12).map(|s| measurement(s, base, "gateway")));
    assert_eq!(agent.push(again).await?.acked_seq, 12);
    assert_eq!(stored_count(&c, agent.agent_id)?, 12);
    let metrics = reqwest::get(c.url("/metrics")).await?.text().await?;
    assert!(
        metrics.contains("tps_measurements_duplicate_total 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tps_measurements_stored_total 12"),
        "{metrics}"
    );
    c.stop().await
}

#[tokio::test]
async fn tokens_missing_unknown_or_revoked_are_unauthenticated() -> anyhow::Result<()> {
    let (_dir, c) = kepri().await?;
    let mut client = c.client().await?;
    let base = now_ms() - 60_000;

    let no_token = tonic::Request::new(pb::PushRequest {
        status: None,
        measurements: vec![measurement(1, base, "g")],
    });
    let e = client.push(no_token).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("authorization"), "{}", e.message());

    let e = client
        .push(push_request("tps_0000", vec![measurement(1, base, "g")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("re-enroll"), "{}", e.message());

    let mut agent = enrolled(&c, BATAM_VILLAGE).await?;
    agent.push(vec![measurement(1, base, "g")]).await?;
    // Revoked from the command line while the collector runs: picked up within seconds.
    tps_collector::commands::revoke_agent(&c.data_dir, agent.agent_id, "laptop stolen")?;
    let e = eventually(Duration::from_secs(10), "revocation to take effect", || {
        let mut a = agent.clone();
        async move { a.push(vec![measurement(2, base, "g")]).await.err() }
    })
    .await?;
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("revoked"), "{}", e.message());
    // Once refused, always refused, and nothing more is stored.
    let stored = stored_count(&c, agent.agent_id)?;
    let e = agent
        .push(vec![measurement(3, base, "g")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(stored_count(&c, agent.agent_id)?, stored);

    // The station enrolls again with a new code (a replaced laptop).
    let fresh = enrolled(&c, &agent.tps_code).await?;
    assert_ne!(fresh.agent_id, agent.agent_id);
    let (_, body) = c
        .get_json(&format!("/api/v1/stations/{}", agent.tps_code))
        .await?;
    let revoked: Vec<bool> = body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["revoked"].as_bool().unwrap())
        .collect();
    assert_eq!(revoked, vec![true, false]);
    c.stop().await
}

#[tokio::test]
async fn each_invalid_field_is_refused_by_name() -> anyhow::Result<()> {
    let (_dir, c) = kepri().await?;
    let mut agent = enrolled(&c, BATAM_VILLAGE).await?;
    let base = now_ms() - 60_000;
    type Break = fn(&mut pb::Measurement);
    let cases: [(&str, Break); 6] = [
        ("measurements[0].rtt_avg_ms", |m| {
            m.rtt_avg_ms = Some(f64::NAN)
        }),
        ("measurements[0].rtt_min_ms", |m| m.rtt_min_ms = Some(-3.0)),
        ("measurements[0].rtt_avg_ms", |m| {
            m.rtt_avg_ms = Some(m.rtt_max_ms.unwrap() + 1.0)
        }),
        ("measurements[0].received", |m| m.received = m.sent + 1),
        ("measurements[0].start_ms", |m| {
            m.start_ms = now_ms() + 6 * 60_000
        }),
        ("measurements[0].method", |m| m.method = 42),
    ];
    for (field, breaks) in cases {
        let mut m = measurement(1, base, "gateway");
        breaks(&mut m);
        let e = agent.push(vec![m]).await.unwrap_err();
        // A time out of range is the agent's clock: the code says so (with the
        // collector's time in the details), so the agent can correct it.
        let code = if field.ends_with("start_ms") {
            Code::FailedPrecondition
        } else {
            Code::InvalidArgument
        };
        assert_eq!(e.code(), code, "{field}: {}", e.message());
        assert!(
            e.message().starts_with(field),
            "expected {field}, got {}",
            e.message()
        );
    }
    let too_many: Vec<_> = (1..=501).map(|s| measurement(s, base, "gateway")).collect();
    let e = agent.push(too_many).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("at most 500"), "{}", e.message());

    assert_eq!(
        stored_count(&c, agent.agent_id)?,
        0,
        "nothing from a refused push is stored"
    );
    let metrics = reqwest::get(c.url("/metrics")).await?.text().await?;
    assert!(
        metrics.contains(r#"tps_push_rejects_total{reason="invalid_argument"} 5"#)
            && metrics.contains(r#"tps_push_rejects_total{reason="clock_out_of_range"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tps_push_rejects_total{reason="batch_too_large"} 1"#),
        "{metrics}"
    );
    // The agent's clock skew is recorded from its status.
    agent.push(vec![measurement(1, base, "gateway")]).await?;
    let (_, body) = c
        .get_json(&format!("/api/v1/stations/{}", agent.tps_code))
        .await?;
    let skew = body["agents"][0]["clock_skew_ms"].as_i64().unwrap();
    assert!(skew.abs() < 10_000, "{skew}");
    c.stop().await
}

#[tokio::test]
async fn enrollment_codes_are_one_time_checked_and_rate_limited() -> anyhow::Result<()> {
    let (_dir, c) = kepri().await?;
    let codes = c.codes(BATAM_VILLAGE)?;
    assert!(codes.len() > 1);
    let (tps, code) = codes[0].clone();
    let (other_tps, other_code) = codes[1].clone();
    let mut client = c.client().await?;
    let enroll = |tps: &str, code: &str| pb::EnrollRequest {
        tps_code: tps.into(),
        enrollment_code: code.into(),
        agent: None,
    };

    let e = client
        .enroll(enroll("2171011002999", &code))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    let e = client.enroll(enroll("21710110", &code)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("tps_code:"), "{}", e.message());
    let e = client.enroll(enroll(&tps, "ABC")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("enrollment_code:"),
        "{}",
        e.message()
    );
    // Another station's code does not work here.
    let e = client.enroll(enroll(&tps, &other_code)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Typed as a person would: lower case, a space instead of the dash.
    let typed = code.to_lowercase().replace('-', " ");
    let ok = client.enroll(enroll(&tps, &typed)).await?.into_inner();
    assert!(ok.agent_id > 0);
    // One time only.
    let e = client.enroll(enroll(&tps, &code)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Wrong codes lock the station out after 5 failures in the window (2 so far).
    for _ in 0..3 {
        let e = client
            .enroll(enroll(&other_tps, "AAAA-AAAA"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    for _ in 0..2 {
        let e = client
            .enroll(enroll(&other_tps, "BBBB-BBBB"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    // Even the right code is refused while locked.
    let e = client
        .enroll(enroll(&other_tps, &other_code))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("try again"), "{}", e.message());
    c.stop().await
}

#[tokio::test]
async fn enrollment_is_rate_limited_per_peer_across_stations() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    tps_collector::commands::import_stations(dir.path(), &kepri_registry())?;
    let c =
        TestCollector::start_with(dir.path(), |cfg| cfg.enroll.max_failures_per_peer = 3).await?;
    let codes = c.codes(BATAM_VILLAGE)?;
    let mut client = c.client().await?;
    for (tps, _) in codes.iter().take(3) {
        let req = pb::EnrollRequest {
            tps_code: tps.clone(),
            enrollment_code: "AAAA-AAAA".into(),
            agent: None,
        };
        assert_eq!(
            client.enroll(req).await.unwrap_err().code(),
            Code::PermissionDenied
        );
    }
    let (tps, code) = &codes[3];
    let req = pb::EnrollRequest {
        tps_code: tps.clone(),
        enrollment_code: code.clone(),
        agent: None,
    };
    assert_eq!(
        client.enroll(req).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    c.stop().await
}

#[tokio::test]
async fn live_view_is_rebuilt_from_the_store_at_start() -> anyhow::Result<()> {
    let (dir, c) = kepri().await?;
    let mut agent = enrolled(&c, BATAM_VILLAGE).await?;
    let base = now_ms() - 60_000;
    agent
        .push((1..=4).map(|s| measurement(s, base, "gateway")).collect())
        .await?;
    c.stop().await?;

    let c = TestCollector::start(dir.path()).await?;
    let (_, body) = c
        .get_json(&format!("/api/v1/stations/{}", agent.tps_code))
        .await?;
    assert_eq!(body["agents"][0]["acked_seq"], 4);
    assert_eq!(body["agents"][0]["latest"][0]["seq"], 4);
    assert!(body["last_seen_ms"].as_i64().is_some());
    // The token still works after the restart.
    let mut agent = Agent {
        client: c.client().await?,
        ..agent
    };
    assert_eq!(
        agent
            .push(vec![measurement(5, base, "gateway")])
            .await?
            .acked_seq,
        5
    );
    c.stop().await
}

#[tokio::test]
async fn reimport_updates_stations_and_keeps_their_history() -> anyhow::Result<()> {
    let (dir, c) = kepri().await?;
    let mut agent = enrolled(&c, BATAM_VILLAGE).await?;
    agent
        .push(vec![measurement(1, now_ms() - 60_000, "gateway")])
        .await?;

    // The same registry with this station's voter count changed.
    let text = std::fs::read_to_string(kepri_registry())?;
    let changed: String = text
        .lines()
        .map(|l| {
            if l.starts_with(&agent.tps_code) {
                let mut f: Vec<&str> = l.split(',').collect();
                f[9] = "123";
                f.join(",") + "\n"
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let file = dir.path().join("changed.csv");
    std::fs::write(&file, changed)?;
    let s = tps_collector::commands::import_stations(dir.path(), &file)?;
    assert_eq!(
        (s.inserted, s.updated, s.unchanged, s.not_in_file),
        (0, 1, 3326, 0)
    );

    let (_, body) = c
        .get_json(&format!("/api/v1/stations/{}", agent.tps_code))
        .await?;
    assert_eq!(body["voters"], 123);
    assert_eq!(body["agents"][0]["acked_seq"], 1);
    assert_eq!(stored_count(&c, agent.agent_id)?, 1);
    c.stop().await
}

#[tokio::test]
async fn a_bad_registry_changes_nothing_and_names_lines() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    tps_collector::commands::import_stations(dir.path(), &kepri_registry())?;
    let before = {
        let conn = open_store(dir.path())?;
        conn.query_row("SELECT sum(voters) FROM stations", [], |r| {
            r.get::<_, i64>(0)
        })?
    };
    // Every row changed (voters + 1), plus two bad rows near the end.
    let text = std::fs::read_to_string(kepri_registry())?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for l in lines.iter_mut().skip(1) {
        let mut f: Vec<String> = l.split(',').map(str::to_string).collect();
        f[9] = (f[9].parse::<u32>()? + 1).to_string();
        *l = f.join(",");
    }
    let n = lines.len();
    lines[n - 2] = lines[n - 2].replacen(",21.", ",22.", 1);
    lines[n - 1] = lines[1].clone();
    let file = dir.path().join("bad.csv");
    std::fs::write(&file, lines.join("\n"))?;
    let err = tps_collector::commands::import_stations(dir.path(), &file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("line {}: village_code", n - 1)),
        "{err}"
    );
    assert!(
        err.contains(&format!("line {n}: tps_code")) && err.contains("duplicate of line 2"),
        "{err}"
    );
    assert!(err.contains("2 bad row(s), nothing imported"), "{err}");
    let after = {
        let conn = open_store(dir.path())?;
        conn.query_row("SELECT sum(voters) FROM stations", [], |r| {
            r.get::<_, i64>(0)
        })?
    };
    assert_eq!(before, after, "a rejected file must not change any station");
    Ok(())
}

#[tokio::test]
async fn grpc_health_and_reflection_are_served() -> anyhow::Result<()> {
    let (_dir, c) = kepri().await?;
    let channel = tonic::transport::Endpoint::from_shared(c.endpoint())?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tps.v1.Collector".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        r.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::once(req))
        .await?
        .into_inner();
    let resp = stream.message().await?.expect("one reflection answer");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        anyhow::bail!("unexpected reflection answer {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"tps.v1.Collector".to_string()), "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    c.stop().await
}

#[tokio::test]
async fn a_status_that_does_not_fit_is_kept_as_far_as_it_fits() -> anyhow::Result<()> {
    let (_dir, c) = kepri().await?;
    let agent = enrolled(&c, BATAM_VILLAGE).await?;
    let mut status = tps_tests::agent_status(0);
    status.hostname = "laptop-".repeat(60);
    status.interfaces = (0..200)
        .map(|i| pb::NetInterface {
            name: format!("veth{i:03}"),
            rx_bytes: i,
            tx_bytes: i,
        })
        .collect();
    let mut req = tonic::Request::new(pb::PushRequest {
        status: Some(status),
        measurements: vec![measurement(1, now_ms() - 60_000, "gateway")],
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {}", agent.token).parse()?);
    let r = agent.client.clone().push(req).await?.into_inner();
    assert_eq!(r.acked_seq, 1, "stored, not refused");
    let (_, body) = c
        .get_json(&format!("/api/v1/stations/{}", agent.tps_code))
        .await?;
    let st = &body["agents"][0]["status"];
    assert_eq!(st["interfaces"].as_array().map(Vec::len), Some(64));
    assert_eq!(st["hostname"].as_str().map(str::len), Some(256));
    assert_eq!(
        c.metric("tps_status_truncated_total{field=\"interfaces\"}")
            .await?,
        1.0
    );
    assert_eq!(
        c.metric("tps_status_truncated_total{field=\"hostname\"}")
            .await?,
        1.0
    );
    assert_eq!(body["coverage"]["state"], "covered");
    c.stop().await
}
