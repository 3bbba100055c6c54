//! The fleet simulator against a real collector: the coverage it produces matches the
//! profile mix it was given.

use std::time::Duration;

use tps_tests::fleet::{Fleet, FleetConfig, Mix, Profile};
use tps_tests::{TestCollector, eventually, kepri_registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_matches_the_profile_mix() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("collector");
    tps_collector::commands::import_stations(&data, &kepri_registry())?;
    let c = TestCollector::start_with(&data, |cfg| {
        cfg.ingest.push_interval_secs = 1;
        cfg.coverage.tick = Duration::from_millis(200);
    })
    .await?;
    // District 21.71.01 (Belakang Padang): every station in it is simulated.
    let stations = c.codes("21.71.01")?;
    let config = FleetConfig {
        collector: c.endpoint(),
        probe_interval: Duration::from_millis(1000),
        push_interval: Duration::from_secs(1),
        state_root: dir.path().join("fleet"),
        seed: 7,
        outage: (Duration::from_secs(3600), Duration::from_secs(3600)),
        up: (Duration::from_secs(3600), Duration::from_secs(3600)),
    };
    let fleet = Fleet::start(
        config,
        stations.clone(),
        &Mix {
            degraded: 0.15,
            outages: 0.0,
            never: 0.2,
        },
    );
    let (good, degraded, never) = (
        fleet.count(Profile::Good),
        fleet.count(Profile::Degraded),
        fleet.count(Profile::Never),
    );
    assert!(
        good > 0 && degraded > 0 && never > 0,
        "the seed gives every profile: {good}/{degraded}/{never}"
    );
    assert_eq!(good + degraded + never, stations.len());

    let sum = eventually(
        Duration::from_secs(90),
        "the mix in the summary",
        || async {
            let (_, s) = c.get_json("/api/v1/summary?region=21.71.01").await.ok()?;
            (s["covered"] == good && s["degraded"] == degraded).then_some(s)
        },
    )
    .await?;
    assert_eq!(sum["no_agent"], never);
    assert_eq!(sum["offline"], 0);
    // Every simulated agent really enrolled and pushes: one agent per simulated station.
    let (_, m) = c.get_json("/healthz").await?;
    assert_eq!(m["enrolled_agents"], good + degraded);

    // The weekly report made now (the week still running) says the same at its end.
    let (code, r) = c
        .get_json("/api/v1/reports/weekly?week=current&format=json&region=21.71.01")
        .await?;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["complete"], false);
    let h = &r["headline"];
    assert_eq!(h["stations"], stations.len());
    assert_eq!(h["no_agent_end"], never);
    assert_eq!(r["never_had_agent"].as_array().unwrap().len(), never);
    let end = h["covered_end"].as_u64().unwrap() + h["degraded_end"].as_u64().unwrap();
    assert_eq!(end as usize, good + degraded);
    fleet.stop().await;
    c.stop().await
}
