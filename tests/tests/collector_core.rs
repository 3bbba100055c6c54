//! The collector's core under faults, in process: transitions decided while the store
//! cannot commit are stored once it can; a station imported while running is credited
//! the moment its agent enrolls; a damaged database is refused at start; the status API
//! and its error answers at their edges.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tps_tests::{
    Agent, TestCollector, eventually, healthz, kepri_registry, measurement, now_ms, small_registry,
};

const WAIT: Duration = Duration::from_secs(30);

/// A tmpfs of `mb` megabytes mounted on `dir` while it lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mb: u32) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        tps_tests::loopfs::sh(&format!(
            "mount -t tmpfs -o size={mb}m tmpfs '{}'",
            dir.display()
        ))?;
        Ok(Tmpfs(dir.to_path_buf()))
    }

    /// Fills it up with one file; returns the file.
    fn fill(&self) -> PathBuf {
        let f = self.0.join("filler");
        let _ = tps_tests::loopfs::sh(&format!(
            "dd if=/dev/zero of='{}' bs=64k 2>/dev/null || true",
            f.display()
        ));
        f
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = tps_tests::loopfs::sh(&format!("umount -l '{}'", self.0.display()));
    }
}

async fn station(c: &TestCollector, tps: &str) -> anyhow::Result<Value> {
    Ok(c.get_json(&format!("/api/v1/stations/{tps}")).await?.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_decided_while_commits_fail_is_stored_once_they_succeed() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let fs = Tmpfs::mount(&data, 16)?;
    tps_collector::commands::import_stations(&data, &small_registry(dir.path(), 20)?)?;
    let c = TestCollector::start_with(&data, |cfg| {
        cfg.coverage.rules.fresh_ms = 1500;
        cfg.coverage.tick = Duration::from_millis(100);
        // No flags in this test: only the transition is at stake.
        cfg.coverage.flags.grace_ms = 7 * 86_400_000;
        // No free-space floor: this is about commits failing on a disk that is full (the
        // floor, which refuses pushes before that, is tested in storage.rs).
        cfg.floor = tps_collector::store::space::Floor {
            min_free_bytes: 0,
            min_free_pct: 0.0,
        };
    })
    .await?;
    let codes = c.codes("21")?;
    let (tps, code) = &codes[0];
    let mut a = Agent::enroll(&c, tps, code).await?;
    a.push(vec![measurement(1, now_ms() - 1000, "gateway")])
        .await?;
    eventually(WAIT, "the station covered", || async {
        (station(&c, tps).await.ok()?["coverage"]["state"] == "covered").then_some(())
    })
    .await?;

    // The disk fills; the agent falls silent; the station goes offline while no commit
    // can succeed. A reader holding its snapshot meanwhile (a long report, say) keeps the
    // log from starting again at its beginning, so every commit needs new space (without
    // one, a small commit may fit in the log's old space and succeed, as it should).
    let reader = tps_tests::open_store(&data)?;
    reader.execute_batch("BEGIN")?;
    reader.query_row("SELECT count(*) FROM stations", [], |r| r.get::<_, i64>(0))?;
    let filler = fs.fill();
    let down = eventually(WAIT, "the station offline in the live view", || async {
        let s = station(&c, tps).await.ok()?;
        (s["coverage"]["state"] == "offline").then_some(s)
    })
    .await?;
    let (code_h, h) = eventually(WAIT, "/healthz to report failing commits", || async {
        let (s, h) = healthz(&c).await.ok()?;
        h["problems"]
            .to_string()
            .contains("commit")
            .then_some((s, h))
    })
    .await?;
    assert_eq!(code_h, 503, "{h}");
    assert!(
        c.metric("tps_state_persist_retries_total").await? >= 1.0,
        "the transition is being retried"
    );
    assert!(
        !down["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["state"] == "offline"),
        "nothing can have been stored yet: {down}"
    );

    // Room again: the transition reaches the store, once.
    std::fs::remove_file(&filler)?;
    reader.execute_batch("COMMIT")?;
    drop(reader);
    let stored = eventually(WAIT, "the offline transition stored", || async {
        let s = station(&c, tps).await.ok()?;
        let n = s["transitions"]
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "offline")
            .count();
        (n > 0).then_some(n)
    })
    .await?;
    assert_eq!(stored, 1, "stored exactly once");
    eventually(WAIT, "/healthz ok again", || async {
        (healthz(&c).await.ok()?.0 == 200).then_some(())
    })
    .await?;
    assert_eq!(c.metric("tps_state_persist_backlog").await?, 0.0);
    c.stop().await?;
    drop(fs);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_imported_while_running_is_credited_as_soon_as_its_agent_enrolls()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    tps_collector::commands::import_stations(&data, &small_registry(dir.path(), 10)?)?;
    let c = TestCollector::start_with(&data, |cfg| {
        cfg.coverage.tick = Duration::from_millis(100);
    })
    .await?;
    // Ten more stations arrive from the command line while the collector runs; an agent
    // of one of them enrolls and pushes at once.
    let bigger = small_registry(dir.path(), 20)?;
    tps_collector::commands::import_stations(&data, &bigger)?;
    let codes = c.codes("21")?;
    let text = std::fs::read_to_string(&bigger)?;
    let new_tps = text
        .lines()
        .nth(15)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let code = &codes.iter().find(|(t, _)| *t == new_tps).unwrap().1;
    let mut a = Agent::enroll(&c, &new_tps, code).await?;
    a.push(vec![measurement(1, now_ms() - 1000, "gateway")])
        .await?;
    let credited = eventually(
        Duration::from_secs(5),
        "the new station covered",
        || async {
            let s = station(&c, &new_tps).await.ok()?;
            (s["coverage"]["state"] == "covered").then_some(s)
        },
    )
    .await?;
    assert_eq!(credited["agents"].as_array().unwrap().len(), 1);
    eventually(
        Duration::from_secs(5),
        "all 20 stations counted",
        || async {
            let (_, s) = c.get_json("/api/v1/summary").await.ok()?;
            (s["total"] == 20).then_some(())
        },
    )
    .await?;

    // A rename by re-import reaches search within seconds.
    let renamed = text.replacen(
        &text
            .lines()
            .nth(3)
            .unwrap()
            .split(',')
            .nth(3)
            .unwrap()
            .to_string(),
        "Desa Baru Sekali",
        1,
    );
    let file = dir.path().join("renamed.csv");
    std::fs::write(&file, renamed)?;
    tps_collector::commands::import_stations(&data, &file)?;
    let found = eventually(Duration::from_secs(5), "the new name in search", || async {
        let (_, s) = c.get_json("/api/v1/stations?q=baru%20sekali").await.ok()?;
        (s["matching"].as_u64()? > 0).then_some(s)
    })
    .await?;
    assert_eq!(
        found["stations"][0]["village"], "Desa Baru Sekali",
        "{found}"
    );

    // Through the API: counted as soon as the import answers.
    let put = |body: String| {
        reqwest::Client::new()
            .put(c.url("/api/v1/stations"))
            .bearer_auth(&c.token)
            .header("content-type", "text/csv")
            .body(body)
            .send()
    };
    let r = put(std::fs::read_to_string(small_registry(dir.path(), 25)?)?).await?;
    assert_eq!(r.status().as_u16(), 200);
    let (_, sum) = c.get_json("/api/v1/summary").await?;
    assert_eq!(sum["total"], 25, "{sum}");
    // A bad row refuses the whole file, naming the line.
    let mut bad = std::fs::read_to_string(small_registry(dir.path(), 30)?)?;
    bad.push_str("2101041005999,999,21.01.04.1005,X,Y,Z,W,north,104.5,10\n");
    let r = put(bad).await?;
    assert_eq!(r.status().as_u16(), 400);
    let e: Value = r.json().await?;
    assert!(e["error"].as_str().unwrap().contains("line 32"), "{e}");
    let (_, sum) = c.get_json("/api/v1/summary").await?;
    assert_eq!(sum["total"], 25, "nothing written: {sum}");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_refused_at_start_with_what_to_do() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    tps_collector::commands::import_stations(&data, &kepri_registry())?;
    let db = tps_collector::store::db_path(&data);
    let len = std::fs::metadata(&db)?.len();
    // Half the file is gone, as after a bad copy or a torn restore.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)?
        .set_len(len / 2)?;
    let e = TestCollector::start(&data).await.unwrap_err().to_string();
    assert!(e.contains("is damaged"), "{e}");
    assert!(e.contains(".recover"), "says what to do: {e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_cases_are_refused_by_field_and_errors_stay_json() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    tps_collector::commands::import_stations(&data, &small_registry(dir.path(), 5)?)?;
    let c = TestCollector::start(&data).await?;
    let codes = c.codes("21")?;
    let tps = &codes[0].0;

    // /series with times far outside any plausible range.
    let (s, e) = c
        .get_json(&format!(
            "/api/v1/stations/{tps}/series?from={}&to={}",
            i64::MIN,
            i64::MAX
        ))
        .await?;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().starts_with("to:"), "{e}");

    // A path parameter that is not a number, an unknown route, a wrong method: JSON.
    for (method, path, want) in [
        ("GET", "/api/v1/flags/not-a-number", 400),
        ("GET", "/api/v1/nothing-here", 404),
        ("DELETE", "/api/v1/summary", 405),
    ] {
        let r = reqwest::Client::new()
            .request(method.parse()?, c.url(path))
            .bearer_auth(&c.token)
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), want, "{method} {path}");
        let v: Value = r.json().await?;
        assert!(v["error"].is_string(), "{method} {path}: {v}");
    }
    // A long query is not repeated back whole.
    let long = "x".repeat(10_000);
    let (s, e) = c
        .get_json(&format!("/api/v1/stations?status={long}"))
        .await?;
    assert_eq!(s, 400);
    assert!(
        e.to_string().len() < 1200,
        "bounded: {} bytes",
        e.to_string().len()
    );

    // gRPC: a 10 KB TPS code is not echoed; implausible values are refused by field.
    let mut client = c.client().await?;
    let err = client
        .enroll(tps_proto::v1::EnrollRequest {
            tps_code: "9".repeat(10_000),
            enrollment_code: "ABCD-EFGH".into(),
            agent: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().len() < 300, "{} bytes", err.message().len());
    let mut a = Agent::enroll(&c, tps, &codes[0].1).await?;
    let base = now_ms() - 10_000;
    let mut huge_seq = measurement(1, base, "gateway");
    huge_seq.seq = 1 << 63;
    let mut far_rtt = measurement(2, base, "gateway");
    far_rtt.rtt_max_ms = Some(1e308);
    let mut many = measurement(3, base, "gateway");
    many.sent = 1_000_000_000;
    for (m, field) in [
        (huge_seq, "measurements[0].seq"),
        (far_rtt, "measurements[0].rtt_max_ms"),
        (many, "measurements[0].sent"),
    ] {
        let e = a.push(vec![m]).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }
    // Bytes that are not a protobuf message: INVALID_ARGUMENT, and counted.
    let body = [0x00, 0x00, 0x00, 0x00, 0x03, 0xff, 0xff, 0xff];
    let r = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()?
        .post(format!("http://{}/tps.v1.Collector/Push", c.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body.to_vec())
        .send()
        .await?;
    let status = r
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let message = r
        .headers()
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(
        status, "3",
        "INVALID_ARGUMENT, not INTERNAL (13): {message}"
    );
    eventually(WAIT, "the decode error counted", || async {
        (c.metric("tps_decode_errors_total{port=\"grpc\"}")
            .await
            .ok()?
            >= 1.0)
            .then_some(())
    })
    .await?;
    c.stop().await
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is loopback).
async fn client_from(
    c: &TestCollector,
    ip: &str,
) -> anyhow::Result<tps_proto::v1::collector_client::CollectorClient<tonic::transport::Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(c.endpoint())?
        .local_address(Some(ip.parse()?))
        .connect()
        .await?;
    Ok(tps_proto::v1::collector_client::CollectorClient::new(ch))
}

fn enroll_req(tps: &str, code: &str) -> tps_proto::v1::EnrollRequest {
    tps_proto::v1::EnrollRequest {
        tps_code: tps.into(),
        enrollment_code: code.into(),
        agent: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_is_limited_at_the_guesser_and_remembered_across_a_restart() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    tps_collector::commands::import_stations(&data, &small_registry(dir.path(), 5)?)?;
    let mut c = TestCollector::start(&data).await?;
    let codes = c.codes("21")?;
    let (tps, right) = codes[0].clone();

    // 200 wrong codes at once from one address: only the limit (5) is evaluated.
    let attacker = client_from(&c, "127.0.0.2").await?;
    let tries = (0..200).map(|_| {
        let mut a = attacker.clone();
        let req = enroll_req(&tps, "WXYZ-WXYZ");
        tokio::spawn(async move { a.enroll(req).await.map(|_| ()) })
    });
    let mut evaluated = 0;
    let mut limited = 0;
    for t in tries {
        match t.await? {
            Err(e) if e.code() == tonic::Code::PermissionDenied => evaluated += 1,
            Err(e) if e.code() == tonic::Code::ResourceExhausted => limited += 1,
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((evaluated, limited), (5, 195));

    // The station's technician, on another address, still enrolls with the right code.
    let mut technician = client_from(&c, "127.0.0.3").await?;
    technician.enroll(enroll_req(&tps, &right)).await?;

    // The guesser's lockout was stored: after a restart it still holds.
    c.halt().await?;
    let c = TestCollector::start_on(&data, c.grpc, c.http, |_| {}).await?;
    let mut attacker = client_from(&c, "127.0.0.2").await?;
    let e = attacker
        .enroll(enroll_req(&codes[1].0, "WXYZ-WXYZ"))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::PermissionDenied,
        "other stations: still evaluated"
    );
    let e = attacker
        .enroll(enroll_req(&tps, "WXYZ-WXYZ"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{}", e.message());
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_operator_token_stops_working_within_seconds() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    tps_collector::commands::import_stations(&data, &small_registry(dir.path(), 5)?)?;
    let c = TestCollector::start(&data).await?;
    let token = tps_collector::commands::add_operator(&data, "ani", "viewer")?;
    let get = |t: String| {
        let url = c.url("/api/v1/summary");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(t)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    assert_eq!(get(token.clone()).await?, 200);
    // Revoked from the command line (another process writing the store).
    tps_collector::commands::revoke_operator(&data, "ani")?;
    eventually(
        Duration::from_secs(10),
        "the revoked token refused",
        || async { (get(token.clone()).await.ok()? == 401).then_some(()) },
    )
    .await?;
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_whose_caller_gave_up_before_the_commit_still_counts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    tps_collector::commands::import_stations(&data, &small_registry(dir.path(), 5)?)?;
    let c = TestCollector::start_with(&data, |cfg| {
        cfg.coverage.tick = Duration::from_millis(100);
    })
    .await?;
    let codes = c.codes("21")?;
    let (tps, code) = &codes[0];
    let a = Agent::enroll(&c, tps, code).await?;

    // Another process holds the database's write lock, so the commit waits; the agent
    // gives up on its call (a deadline of 300 ms) while the push sits in the writer.
    let other = tps_tests::open_store(&data)?;
    other.execute_batch("BEGIN IMMEDIATE")?;
    let mut req =
        tps_tests::push_request(&a.token, vec![measurement(1, now_ms() - 1000, "gateway")]);
    req.set_timeout(Duration::from_millis(300));
    let mut client = a.client.clone();
    let e = client.push(req).await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        "{e:?}"
    );
    other.execute_batch("COMMIT")?;

    // The push was committed after its caller left: the live view and coverage hear of
    // it all the same.
    let s = eventually(
        WAIT,
        "the station covered by the abandoned push",
        || async {
            let s = station(&c, tps).await.ok()?;
            (s["coverage"]["state"] == "covered").then_some(s)
        },
    )
    .await?;
    assert!(s["agents"][0]["last_seen_ms"].is_i64(), "{s}");
    assert_eq!(s["agents"][0]["acked_seq"], 1, "{s}");
    c.stop().await
}
