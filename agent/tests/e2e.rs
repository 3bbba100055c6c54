//! The agent against a real collector on loopback: real ICMP to 127.0.0.1 and ::1, a
//! real spool file, real gRPC; the `tps-agent` binary for enroll, check and SIGKILL.

mod support;

use std::time::Duration;

use support::*;
use tps_agent::credentials;
use tps_agent::spool::Spool;
use tps_collector::testing::{assert_complete_and_ordered, eventually};

/// Enrolls station 0, runs the agent in this process, and waits for its first data.
async fn running_agent(
    s: &Setup,
) -> anyhow::Result<(
    credentials::Credentials,
    tokio::task::JoinHandle<Result<(), tps_agent::run::RunError>>,
)> {
    let creds = enroll_cli(s, 0)?;
    let config = tps_agent::config::load(&s.write_config("")?)?;
    let agent = tokio::spawn(tps_agent::run::run(
        config,
        creds.clone(),
        std::future::pending(),
    ));
    eventually(WAIT, "first measurements stored", || async {
        (!s.stored(creds.agent_id).ok()?.is_empty()).then_some(())
    })
    .await?;
    Ok((creds, agent))
}

fn stored(s: &Setup, agent_id: u64) -> anyhow::Result<Vec<(u64, i64)>> {
    s.stored(agent_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolls_probes_loopback_and_the_collector_shows_it() -> anyhow::Result<()> {
    let s = setup(500).await?;
    let creds = enroll_cli(&s, 0)?;
    // enroll wrote a config naming the collector; the test then uses its fast one.
    let written = std::fs::read_to_string(s.config_path())?;
    assert!(
        written.contains(&format!("collector = \"http://{}\"", s.grpc)),
        "{written}"
    );
    let config = tps_agent::config::load(&s.write_config("")?)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(tps_agent::run::run(config, creds.clone(), async {
        let _ = stopped.await;
    }));

    let body = eventually(WAIT, "both loopback targets at the collector", || async {
        let (_, b) = s
            .collector
            .get_json(&format!("/api/v1/stations/{}", creds.tps_code))
            .await
            .ok()?;
        let latest = b["agents"][0]["latest"].as_array()?.clone();
        (latest.len() == 2).then_some(b)
    })
    .await?;
    let agent_json = &body["agents"][0];
    for (i, (name, addr)) in [("lo4", "127.0.0.1"), ("lo6", "::1")]
        .into_iter()
        .enumerate()
    {
        let m = &agent_json["latest"][i];
        assert_eq!(m["target_name"], name);
        assert_eq!(m["target_address"], addr);
        assert_eq!(m["method"], "icmp");
        assert_eq!(m["sent"], 3);
        assert_eq!(m["received"], 3, "loopback answers every echo: {m}");
        assert!(m["rtt"]["avg_ms"].as_f64().unwrap() < 100.0);
    }
    let status = &agent_json["status"];
    assert!(status["boot_time_ms"].as_i64().unwrap() > 0);
    assert!(status["system_uptime_secs"].as_u64().unwrap() > 0);
    assert!(!status["interfaces"].as_array().unwrap().is_empty());
    let _ = stop.send(());
    agent.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_spooled_then_delivered_in_order_once() -> anyhow::Result<()> {
    let mut s = setup(500).await?;
    let (creds, agent) = running_agent(&s).await?;

    // The collector goes away; the agent keeps measuring into its spool.
    s.collector.halt().await?;
    let before = stored(&s, creds.agent_id)?.len();
    let state = s.state_dir();
    eventually(WAIT, "a backlog of 8 in the spool", || async {
        (spool_state(&state).ok()?.0 >= 8).then_some(())
    })
    .await?;
    let (_, last_during_outage, _) = spool_state(&state)?;

    // It comes back on the same address: the backlog arrives, in order, once.
    s.restart_collector(500).await?;
    let rows = eventually(WAIT, "the backlog delivered", || async {
        let rows = stored(&s, creds.agent_id).ok()?;
        (rows.len() as u64 >= last_during_outage).then_some(rows)
    })
    .await?;
    assert!(rows.len() > before);
    assert_complete_and_ordered(&rows, last_during_outage);
    let (_, _, dropped) = spool_state(&state)?;
    assert_eq!(dropped, 0);
    agent.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_restarts_mid_backlog_and_loses_nothing() -> anyhow::Result<()> {
    let mut s = setup(4).await?;
    let creds = enroll_cli(&s, 0)?;
    let config = s.write_config("")?;
    // Outage first, so a backlog builds up in the spool of a real agent process.
    s.collector.halt().await?;
    let mut agent = run_agent_process(&config)?;
    let state = s.state_dir();
    eventually(WAIT, "a backlog of 10", || async {
        (spool_state(&state).ok()?.0 >= 10).then_some(())
    })
    .await?;
    agent.kill()?; // SIGKILL
    agent.wait()?;
    let (depth, last, _) = spool_state(&state)?;
    assert!(depth >= 10 && last >= depth);

    // Restarted, the agent finds its spool and delivers all of it (in pushes of 4).
    s.restart_collector(4).await?;
    let mut agent = run_agent_process(&config)?;
    let rows = eventually(
        WAIT,
        "everything spooled before the kill delivered",
        || async {
            let rows = stored(&s, creds.agent_id).ok()?;
            (rows.len() as u64 >= last).then_some(rows)
        },
    )
    .await?;
    assert_complete_and_ordered(&rows, last);
    agent.kill()?;
    agent.wait()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_the_oldest_and_the_collector_is_told() -> anyhow::Result<()> {
    let s = setup(500).await?;
    let creds = enroll_cli(&s, 0)?;
    // 3,000 measurements waiting, then a spool limit that holds far fewer.
    let state = s.state_dir();
    {
        let mut spool = Spool::open(
            &state,
            tps_agent::spool::Limits {
                max_bytes: 1 << 30,
                max_entries: u64::MAX,
            },
        )?;
        let now = tps_agent::run::now_ms();
        let e = tps_agent::spool::NewEntry {
            start_ms: now - 60_000,
            offset_ms: None,
            clock_epoch: 0,
            target_name: "lo4".into(),
            target_address: "127.0.0.1".into(),
            method: tps_agent::config::Method::Icmp,
            round: tps_agent::stats::summarize(&[Some(Duration::from_millis(1)), None]),
        };
        for _ in 0..30 {
            spool.append(&vec![e.clone(); 100])?;
        }
    }
    let mut config = tps_agent::config::load(&s.write_config("")?)?;
    config.spool_max_bytes = 96 * 1024;
    let agent = tokio::spawn(tps_agent::run::run(
        config,
        creds.clone(),
        std::future::pending(),
    ));
    let reported = eventually(WAIT, "the drop count reported to the collector", || async {
        let (_, b) = s
            .collector
            .get_json(&format!("/api/v1/stations/{}", creds.tps_code))
            .await
            .ok()?;
        let d = b["agents"][0]["status"]["dropped"].as_u64()?;
        (d > 0).then_some(d)
    })
    .await?;
    let (_, _, dropped) = spool_state(&state)?;
    assert!(dropped >= reported && reported > 0);
    // What was kept is the newest: the first stored seq comes right after the dropped ones.
    let rows = eventually(WAIT, "the kept entries delivered", || async {
        let rows = stored(&s, creds.agent_id).ok()?;
        (!rows.is_empty()).then_some(rows)
    })
    .await?;
    assert!(rows[0].0 > 1, "the oldest entries were dropped, not sent");
    agent.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_covered_when_enrolled_and_not_covered_otherwise() -> anyhow::Result<()> {
    let s = setup(500).await?;
    let config = s.write_config("")?;
    let out = agent_bin()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "not enrolled must not pass: {text}");
    assert!(
        text.contains("RESULT: NOT COVERED") && text.contains("not enrolled"),
        "{text}"
    );

    enroll_cli(&s, 0)?;
    let config = s.write_config("")?;
    let out = agent_bin()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("lo4")
            && text.contains("3/3 replies")
            && text.contains("token accepted: yes"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("RESULT: COVERED"), "{text}");

    // A wrong code gets an answer a technician can act on.
    let out = enroll_args(
        &mut agent_bin(),
        &format!("http://{}", s.grpc),
        (&s.codes[1].0, "AAAA-AAAA"),
        &s.dir.path().join("other.toml"),
        &s.dir.path().join("other-state"),
    )?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("enrollment code was not accepted"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_keeps_measuring_and_resumes_after_re_enrollment() -> anyhow::Result<()> {
    let mut s = setup(500).await?;
    let (creds, agent) = running_agent(&s).await?;

    tps_collector::commands::revoke_agent(&s.collector.data_dir, creds.agent_id, "test")?;
    let state = s.state_dir();
    // Refused from now on: the spool grows while nothing more is stored for the old agent.
    let (depth, _, _) = eventually(WAIT, "a backlog behind the revoked token", || async {
        let st = spool_state(&state).ok()?;
        (st.0 >= 6).then_some(st)
    })
    .await?;
    let frozen = stored(&s, creds.agent_id)?.len();
    assert!(depth >= 6);

    // The technician enrolls again with a new code; the running agent picks it up.
    let codes = s.collector.codes(&creds.tps_code)?;
    s.codes = codes;
    let fresh = enroll_cli(&s, 0)?;
    assert_ne!(fresh.agent_id, creds.agent_id);
    let rows = eventually(
        WAIT,
        "the backlog delivered under the new token",
        || async {
            let rows = stored(&s, fresh.agent_id).ok()?;
            (rows.len() as u64 >= depth).then_some(rows)
        },
    )
    .await?;
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(
        stored(&s, creds.agent_id)?.len(),
        frozen,
        "nothing more under the revoked agent"
    );
    agent.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_while_the_agent_runs_leaves_its_spool_alone() -> anyhow::Result<()> {
    let s = setup(500).await?;
    let (creds, agent) = running_agent(&s).await?;
    let out = agent_bin()
        .arg("check")
        .arg("--config")
        .arg(s.config_path())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("in use by the running agent") && text.contains("token accepted: yes"),
        "{text}"
    );
    assert!(out.status.success(), "{text}");
    // The running agent goes on delivering, in order, once.
    let before = stored(&s, creds.agent_id)?.len();
    let rows = eventually(WAIT, "more rounds delivered", || async {
        let rows = stored(&s, creds.agent_id).ok()?;
        (rows.len() > before + 4).then_some(rows)
    })
    .await?;
    assert_complete_and_ordered(&rows, rows.len() as u64);
    agent.abort();
    Ok(())
}
