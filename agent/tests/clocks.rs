//! The agent binary with a wrong clock (libfaketime: the wall clock only; monotonic and
//! boot clocks stay true), against a real collector: a router that booted in 1970, a
//! laptop set to 2100, and an NTP step from 1970 to now with rounds spooled before it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;
use tps_collector::testing::{eventually, stored_measurements};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// `tps-agent run` under libfaketime with `FAKETIME` (or a timestamp file) `env`.
fn faked(config: &Path, env: &[(&str, &str)]) -> anyhow::Result<LoggedAgent> {
    anyhow::ensure!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's faketime (scripts/test does)"
    );
    let mut c: Command = agent_bin();
    c.env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .envs(env.iter().copied())
        .arg("run")
        .arg("--config")
        .arg(config);
    LoggedAgent::spawn(c)
}

/// A TCP port nothing listens on: a target that loses every probe.
fn closed_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn near_now(start_ms: i64) -> bool {
    (start_ms - tps_agent::run::now_ms()).abs() < 5 * 60_000
}

async fn station_state(s: &Setup, tps: &str) -> Option<(String, String)> {
    let (_, b) = s
        .collector
        .get_json(&format!("/api/v1/stations/{tps}"))
        .await
        .ok()?;
    Some((
        b["coverage"]["state"].as_str()?.to_string(),
        b["coverage"]["reason"].as_str()?.to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_in_1970_is_judged_on_the_collectors_clock() -> anyhow::Result<()> {
    let s = setup(500).await?;
    let creds = enroll_cli(&s, 0)?;
    // The primary target loses everything: the station must not stay covered.
    let targets = format!(
        "[[target]]\nname = \"dead\"\naddress = \"127.0.0.1\"\nmethod = \"tcp\"\nport = {}\n\n[[target]]\nname = \"lo4\"\naddress = \"127.0.0.1\"\n",
        closed_port()?
    );
    let config = s.write_config_to(&format!("http://{}", s.grpc), 1, "", Some(&targets))?;
    let agent = faked(&config, &[("FAKETIME", "@1970-01-02 00:00:00")])?;
    let state = eventually(WAIT, "the station degraded", || async {
        let st = station_state(&s, &creds.tps_code).await?;
        (st.0 == "degraded").then_some(st)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.text()))?;
    assert_eq!(state.1, "high_loss");
    let ms = stored_measurements(&s.collector.data_dir, creds.agent_id)?;
    assert!(
        ms.iter().all(|m| near_now(m.start_ms)),
        "stamped with the collector's time: {:?}",
        ms.iter().map(|m| m.start_ms).collect::<Vec<_>>()
    );
    println!(
        "1970: {} measurements stored, all at the collector's time; station {} ({})",
        ms.len(),
        state.0,
        state.1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laptop_in_2100_has_every_round_stored() -> anyhow::Result<()> {
    let s = setup(500).await?;
    let creds = enroll_cli(&s, 0)?;
    let config = s.write_config("")?;
    let mut agent = faked(&config, &[("FAKETIME", "@2100-01-01 00:00:00")])?;
    let ms = eventually(WAIT, "ten rounds stored", || async {
        let ms = stored_measurements(&s.collector.data_dir, creds.agent_id).ok()?;
        (ms.len() >= 20).then_some(ms)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.text()))?;
    // Stopped as a service manager stops it: what is still spooled was measured after
    // the last push, not lost.
    let _ = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status();
    let _ = agent.child.wait();
    let (waiting, last, dropped) = spool_state(&s.state_dir())?;
    let stored = stored_measurements(&s.collector.data_dir, creds.agent_id)?;
    println!(
        "2100: measured {last}, stored {}, still spooled {waiting}, dropped {dropped}",
        stored.len()
    );
    assert_eq!(dropped, 0);
    assert_eq!(
        stored.len() as u64 + waiting,
        last,
        "every round measured is stored or waits"
    );
    assert!(stored.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    assert!(ms.iter().all(|m| near_now(m.start_ms)));
    let state = station_state(&s, &creds.tps_code).await;
    assert_eq!(state.map(|s| s.0).as_deref(), Some("covered"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ntp_step_from_1970_keeps_the_rounds_measured_before_it() -> anyhow::Result<()> {
    let mut s = setup(500).await?;
    let creds = enroll_cli(&s, 0)?;
    let config = s.write_config("")?;
    // The router boots in 1970 with its uplink down.
    s.collector.halt().await?;
    let clock: PathBuf = s.dir.path().join("faketime");
    std::fs::write(&clock, "@1970-01-02 00:00:00\n")?;
    let clock_s = clock.display().to_string();
    let agent = faked(
        &config,
        &[
            ("FAKETIME_TIMESTAMP_FILE", clock_s.as_str()),
            ("FAKETIME_NO_CACHE", "1"),
        ],
    )?;
    let before = eventually(WAIT, "five rounds spooled in 1970", || async {
        let (_, last, _) = spool_state(&s.state_dir()).ok()?;
        (last >= 10).then_some(last)
    })
    .await?;
    // NTP syncs: the clock steps to the real time; more rounds follow.
    let t_step = tps_agent::run::now_ms();
    std::fs::write(&clock, "+0\n")?;
    eventually(WAIT, "the step seen", || async {
        (agent.count("the device clock jumped") > 0).then_some(())
    })
    .await?;
    let after = eventually(WAIT, "rounds after the step", || async {
        let (_, last, _) = spool_state(&s.state_dir()).ok()?;
        (last >= before + 6).then_some(last)
    })
    .await?;
    // The uplink comes up: everything arrives, placed at the time it was measured.
    s.restart_collector(500).await?;
    let ms = eventually(WAIT, "every round delivered", || async {
        let ms = stored_measurements(&s.collector.data_dir, creds.agent_id).ok()?;
        (ms.len() as u64 >= after).then_some(ms)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.text()))?;
    drop(agent);
    let (_, last, dropped) = spool_state(&s.state_dir())?;
    println!(
        "NTP step: measured {last}, stored {}, dropped {dropped} ({before} measured before the step)",
        ms.len()
    );
    assert_eq!(dropped, 0);
    for m in &ms {
        assert!(
            near_now(m.start_ms),
            "seq {} at {} (step at {t_step})",
            m.seq,
            m.start_ms
        );
    }
    let pre: Vec<_> = ms.iter().filter(|m| m.seq <= before).collect();
    assert!(
        pre.iter().all(|m| m.start_ms <= t_step + 2_000),
        "rounds before the step are placed before it"
    );
    assert!(
        ms.windows(2).all(|w| w[0].start_ms <= w[1].start_ms),
        "in the order measured"
    );
    Ok(())
}
