//! Storage for a campaign, in process against real files: below the free-space floor
//! pushes are refused with `UNAVAILABLE` while the API stays up and no station is blamed,
//! and they are taken again once space returns, with nothing acknowledged lost.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tps_tests::loopfs::LoopFs;
use tps_tests::{Agent, TestCollector, eventually, healthz, measurement, now_ms, small_registry};

const WAIT: Duration = Duration::from_secs(30);

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

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// Four days of rounds, one every 5 minutes on two targets, oldest first: varied RTTs
/// (to sub-microsecond digits), some rounds lost entirely.
fn four_days(now: i64) -> Vec<tps_proto::v1::Measurement> {
    let start = now - 4 * DAY;
    let mut out = Vec::new();
    let mut seq = 0u64;
    for i in 0..(4 * 24 * 12) {
        for target in ["gateway", "anchor"] {
            seq += 1;
            let mut m = measurement(seq, 0, target);
            m.start_ms = start + i * 300_000 + (seq % 7) as i64;
            if seq.is_multiple_of(23) {
                m.received = 0;
                m.rtt_min_ms = None;
                m.rtt_avg_ms = None;
                m.rtt_max_ms = None;
                m.jitter_ms = None;
            } else {
                let avg = 30.0 + (seq % 41) as f64 * 1.234_567_8;
                m.rtt_min_ms = Some(avg - 2.5);
                m.rtt_avg_ms = Some(avg);
                m.rtt_max_ms = Some(avg + 7.25);
            }
            out.push(m);
        }
    }
    out
}

/// What `/series` should show for `ms` (mean RTT over answered rounds, mean loss, rounds
/// per bucket), computed from the rounds as they were pushed.
fn expected_series(
    ms: &[tps_proto::v1::Measurement],
    target: &str,
    from: i64,
    to: i64,
    step: i64,
) -> std::collections::BTreeMap<i64, (Option<f64>, f64, u64)> {
    let mut b: std::collections::BTreeMap<i64, (f64, u32, f64, u64)> = Default::default();
    for m in ms
        .iter()
        .filter(|m| m.target_name == target && (from..to).contains(&m.start_ms))
    {
        let e = b
            .entry(from + (m.start_ms - from) / step * step)
            .or_default();
        if let Some(a) = m.rtt_avg_ms {
            e.0 += a;
            e.1 += 1;
        }
        e.2 += f64::from(m.sent - m.received) / f64::from(m.sent);
        e.3 += 1;
    }
    b.into_iter()
        .map(|(t, (r, n, l, k))| (t, ((n > 0).then(|| r / f64::from(n)), l / k as f64, k)))
        .collect()
}

async fn series(
    c: &TestCollector,
    tps: &str,
    from: i64,
    to: i64,
    step: i64,
) -> anyhow::Result<Value> {
    let (code, v) = c
        .get_json(&format!(
            "/api/v1/stations/{tps}/series?target=gateway&from={from}&to={to}&step={step}"
        ))
        .await?;
    anyhow::ensure!(code == 200, "{v}");
    Ok(v)
}

fn assert_series_agree(
    got: &Value,
    want: &std::collections::BTreeMap<i64, (Option<f64>, f64, u64)>,
    what: &str,
) {
    let points = got["points"].as_array().expect("points");
    assert_eq!(points.len(), want.len(), "{what}: buckets");
    for (p, (t, (rtt, loss, n))) in points.iter().zip(want) {
        assert_eq!(p["t"].as_i64(), Some(*t), "{what}");
        assert_eq!(p["rounds"].as_u64(), Some(*n), "{what} at {t}: rounds");
        let l = p["loss"].as_f64().unwrap();
        assert!((l - loss).abs() < 1e-9, "{what} at {t}: loss {l} vs {loss}");
        match (p["rtt_avg_ms"].as_f64(), rtt) {
            (None, None) => {}
            // RTTs are kept to the microsecond once compacted.
            (Some(a), Some(b)) => assert!((a - b).abs() <= 0.0005, "{what} at {t}: rtt {a} vs {b}"),
            other => panic!("{what} at {t}: rtt {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_measurements_become_blocks_and_rollups_that_agree_with_the_raw_data()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    tps_collector::commands::import_stations(&data, &small_registry(dir.path(), 5)?)?;
    let c = TestCollector::start_with(&data, |cfg| {
        cfg.retention.compact_after = Duration::from_secs(3600);
        cfg.retention.raw = Duration::from_secs(2 * 86_400);
        cfg.retention.every = Duration::from_millis(200);
        cfg.report.rollup_every = Duration::from_millis(200);
    })
    .await?;
    let codes = c.codes("21")?;
    let (tps, code) = &codes[0];
    let mut a = Agent::enroll(&c, tps, code).await?;
    let now = now_ms();
    let pushed = four_days(now);
    for chunk in pushed.chunks(500) {
        a.push(chunk.to_vec()).await?;
    }
    let cutoff = (now - HOUR).div_euclid(HOUR) * HOUR;
    let raw_from = (now - 2 * DAY).div_euclid(HOUR) * HOUR;
    // The pass may run a little after `now`: an hour boundary may pass meanwhile.
    let moved_at_least = pushed.iter().filter(|m| m.start_ms < cutoff).count() as f64;
    eventually(
        WAIT,
        "old rounds compacted and the oldest deleted",
        || async {
            let moved = c
                .metric("tps_compaction_moved_measurements_total")
                .await
                .ok()?;
            let deleted = c
                .metric("tps_retention_deleted_total{what=\"blocks\"}")
                .await
                .ok()?;
            (moved >= moved_at_least && deleted > 0.0).then_some(())
        },
    )
    .await?;

    // Hourly series over all four days (rollups past the raw window, raw rows in the
    // last hour) agree with what was pushed.
    let from = (now - 4 * DAY).div_euclid(HOUR) * HOUR;
    let got = series(&c, tps, from, now + 1, HOUR).await?;
    assert_series_agree(
        &got,
        &expected_series(&pushed, "gateway", from, now + 1, HOUR),
        "hourly",
    );
    // Finer steps inside the raw window read blocks and raw rows.
    let (f2, step) = (now - 30 * HOUR + 12_345, 600_000);
    let got = series(&c, tps, f2, now + 1, step).await?;
    assert_series_agree(
        &got,
        &expected_series(&pushed, "gateway", f2, now + 1, step),
        "10-minute",
    );

    // Rounds re-sent after compaction are acknowledged, not stored again; a late round
    // for a compacted hour is merged into its block.
    let dup_before = c.metric("tps_measurements_duplicate_total").await?;
    let resent: Vec<_> = pushed
        .iter()
        .filter(|m| m.start_ms < cutoff && m.start_ms >= raw_from)
        .take(10)
        .cloned()
        .collect();
    assert_eq!(a.push(resent).await?.acked_seq, pushed.len() as u64);
    assert_eq!(
        c.metric("tps_measurements_duplicate_total").await? - dup_before,
        10.0
    );
    let mut late = measurement(pushed.len() as u64 + 1, 0, "gateway");
    late.start_ms = now - 30 * HOUR;
    // The newest row always stays raw (its id keeps rowids from being reused): a round
    // of now follows the late one, as it would in the field.
    let mut current = measurement(pushed.len() as u64 + 2, 0, "anchor");
    current.start_ms = now;
    a.push(vec![late.clone(), current.clone()]).await?;
    let moved_now = c.metric("tps_compaction_moved_measurements_total").await?;
    eventually(WAIT, "the late round merged into its block", || async {
        (c.metric("tps_compaction_moved_measurements_total")
            .await
            .ok()?
            > moved_now)
            .then_some(())
    })
    .await?;
    let agent_id = a.agent_id;
    c.stop().await?;

    // Every round of the raw window is there once; older ones live on in the rollups.
    let conn = tps_collector::store::open(&data, tps_collector::store::Synchronous::Full)?;
    let stored = tps_collector::store::measurements_of(&conn, agent_id)?;
    let mut want: Vec<_> = pushed.iter().filter(|m| m.start_ms >= raw_from).collect();
    want.push(&late);
    want.push(&current);
    want.sort_by_key(|m| m.seq);
    assert_eq!(
        stored.iter().map(|m| m.seq).collect::<Vec<_>>(),
        want.iter().map(|m| m.seq).collect::<Vec<_>>(),
        "each round of the raw window once"
    );
    for (s, w) in stored.iter().zip(&want) {
        assert_eq!(
            (s.start_ms, s.received, &s.target_name),
            (w.start_ms, w.received, &w.target_name)
        );
        let (x, y) = (s.rtt.as_ref().map(|r| r.avg_ms), w.rtt_avg_ms);
        assert!(
            x.zip(y).is_none_or(|(x, y)| (x - y).abs() <= 0.0005) && x.is_some() == y.is_some()
        );
    }
    let raw_left: u64 = conn.query_row(
        "SELECT count(*) FROM measurements WHERE start_ms < ?1",
        [cutoff],
        |r| r.get(0),
    )?;
    assert_eq!(raw_left, 0, "nothing older than the cutoff left raw");
    Ok(())
}
