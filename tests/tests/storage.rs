//! Storage for a campaign, in process against real files: below the free-space floor
//! pushes are refused with `UNAVAILABLE` while the API stays up and no station is blamed,
//! and they are taken again once space returns, with nothing acknowledged lost.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tps_tests::loopfs::LoopFs;
use tps_tests::{Agent, TestCollector, eventually, kepri_registry, measurement, now_ms};

const WAIT: Duration = Duration::from_secs(30);

/// The first `n` stations of the Kepri registry, as a registry file in `dir`.
fn small_registry(dir: &Path, n: usize) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(kepri_registry())?;
    let lines: Vec<&str> = text.lines().take(n + 1).collect();
    let file = dir.join(format!("registry-{n}.csv"));
    std::fs::write(&file, lines.join("\n") + "\n")?;
    Ok(file)
}

async fn healthz(c: &TestCollector) -> anyhow::Result<(u16, Value)> {
    let r = reqwest::get(c.url("/healthz")).await?;
    let s = r.status().as_u16();
    Ok((s, r.json().await?))
}

fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail * s.f_frsize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_floor_pushes_are_refused_and_taken_again_when_space_returns()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fs = LoopFs::mount(&dir.path().join("data"))?;
    let data = fs.mnt.clone();
    tps_collector::commands::import_stations(&data, &small_registry(dir.path(), 20)?)?;
    const FLOOR: u64 = 20 * 1_048_576;
    let c = TestCollector::start_with(&data, |cfg| {
        cfg.floor = tps_collector::store::space::Floor {
            min_free_bytes: FLOOR,
            min_free_pct: 0.0,
        };
        cfg.coverage.rules.fresh_ms = 1500;
        cfg.coverage.tick = Duration::from_millis(100);
        cfg.coverage.flags.grace_ms = 7 * 86_400_000;
    })
    .await?;
    let codes = c.codes("21")?;
    let (tps, code) = &codes[0];
    let mut a = Agent::enroll(&c, tps, code).await?;
    let base = now_ms() - 60_000;
    let batch = |seqs: std::ops::RangeInclusive<u64>| {
        seqs.map(|s| measurement(s, base, "gateway"))
            .collect::<Vec<_>>()
    };
    assert_eq!(a.push(batch(1..=5)).await?.acked_seq, 5);
    eventually(WAIT, "the station covered", || async {
        let s = c.get_json(&format!("/api/v1/stations/{tps}")).await.ok()?.1;
        (s["coverage"]["state"] == "covered").then_some(())
    })
    .await?;

    // Something else fills the disk to 8 MB above zero: below the 20 MB floor.
    let filler = data.join("filler");
    let leave = 8 * 1_048_576;
    let fill = free_bytes(&data)?.saturating_sub(leave);
    std::fs::File::create(&filler)?.set_len(0)?;
    tps_tests::loopfs::sh(&format!("fallocate -l {fill} '{}'", filler.display()))?;
    let refused = eventually(WAIT, "a push refused for lack of space", || async {
        match a.clone().push(batch(6..=10)).await {
            Err(s) if s.code() == tonic::Code::Unavailable => Some(s),
            _ => None,
        }
    })
    .await?;
    let refused_at = now_ms();
    assert!(
        refused.message().contains("disk is nearly full") && refused.message().contains("retry"),
        "the agent is told why and to keep its data: {refused:?}"
    );
    let (code, h) = healthz(&c).await?;
    assert_eq!(code, 503, "{h}");
    assert!(
        h["problems"].to_string().contains("pushes are refused"),
        "{h}"
    );
    assert_eq!(h["disk"]["refusing"], true, "{h}");
    assert!(h["disk"]["floor_bytes"].as_u64() == Some(FLOOR), "{h}");
    let (code, _) = c.get_json("/api/v1/summary").await?;
    assert_eq!(code, 200, "the API stays up");
    assert_eq!(c.metric("tps_store_refusing_pushes").await?, 1.0);
    assert!(
        c.metric("tps_push_rejects_total{reason=\"disk_floor\"}")
            .await?
            >= 1.0
    );

    // Four freshness windows pass while the agent cannot be heard: not the station's fault.
    eventually(
        WAIT,
        "coverage evaluated well past the freshness window",
        || async {
            let at = c
                .metric("tps_coverage_evaluated_timestamp_seconds")
                .await
                .ok()?;
            (at * 1000.0 > (refused_at + 4 * 1500) as f64).then_some(())
        },
    )
    .await?;
    let s = c.get_json(&format!("/api/v1/stations/{tps}")).await?.1;
    assert_eq!(
        s["coverage"]["state"], "covered",
        "silence while the collector refuses is not the station's: {s}"
    );
    assert!(
        c.metric("tps_collector_away_total{kind=\"disk_floor\"}")
            .await?
            >= 1.0
    );
    assert!(free_bytes(&data)? > 0, "the floor kept SQLite off ENOSPC");

    // Space returns: the same push is taken, without a restart.
    std::fs::remove_file(&filler)?;
    let ack = eventually(WAIT, "the push taken again", || async {
        a.clone().push(batch(6..=10)).await.ok()
    })
    .await?;
    assert_eq!(ack.acked_seq, 10);
    eventually(WAIT, "/healthz ok again", || async {
        (healthz(&c).await.ok()?.0 == 200).then_some(())
    })
    .await?;
    assert_eq!(c.metric("tps_store_refusing_pushes").await?, 0.0);
    let agent_id = a.agent_id;
    c.stop().await?;

    let conn = tps_collector::store::open(&data, tps_collector::store::Synchronous::Full)?;
    let seqs: Vec<u64> = tps_collector::store::measurements_of(&conn, agent_id)?
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=10).collect::<Vec<_>>(),
        "every acknowledged round, once"
    );
    drop(conn);
    drop(fs);
    Ok(())
}
