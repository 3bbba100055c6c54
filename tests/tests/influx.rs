//! The InfluxDB 2 sink against a real time-series server: VictoriaMetrics on loopback
//! accepts InfluxDB 2's `/api/v2/write`; every written value is read back through its
//! `/api/v1/export` and compared.

use std::collections::HashMap;
use std::time::Duration;

use tps_collector::sinks::influx::InfluxConfig;
use tps_proto::v1 as pb;
use tps_tests::victoria::{Series, VictoriaMetrics};
use tps_tests::{Agent, TestCollector, eventually, kepri_registry, now_ms};

const WAIT: Duration = Duration::from_secs(60);

fn sink_config(url: &str) -> InfluxConfig {
    InfluxConfig {
        url: url.to_string(),
        org: "kpu".into(),
        bucket: "tps".into(),
        token: "secret-token".into(),
        batch_size: 50,
        flush_interval: Duration::from_millis(50),
    }
}

/// Key of one point: (tps, target, method, agent, timestamp).
type Key = (String, String, String, String, i64);

/// A varied measurement: some lossy, some total loss, some TCP.
fn varied(seq: u64, base: i64, target: &str) -> pb::Measurement {
    let mut m = tps_tests::measurement(seq, base, target);
    match seq % 5 {
        0 => {
            // Total loss, two probes answered by ICMP errors.
            m.received = 0;
            m.errors = 2;
            m.rtt_min_ms = None;
            m.rtt_avg_ms = None;
            m.rtt_max_ms = None;
            m.jitter_ms = None;
        }
        1 => {
            m.method = pb::Method::Tcp as i32;
            m.received = 1;
            m.jitter_ms = None;
            m.rtt_avg_ms = m.rtt_min_ms;
            m.rtt_max_ms = m.rtt_min_ms;
        }
        2 => m.rtt_avg_ms = Some(m.rtt_avg_ms.unwrap() + 0.123_456_789),
        _ => {}
    }
    m
}

/// Expected field values per point, as the sink must write them.
fn expected_fields(m: &pb::Measurement) -> HashMap<&'static str, f64> {
    let mut f = HashMap::from([
        ("sent", f64::from(m.sent)),
        ("received", f64::from(m.received)),
        ("errors", f64::from(m.errors)),
        ("loss", f64::from(m.sent - m.received) / f64::from(m.sent)),
    ]);
    for (k, v) in [
        ("rtt_min_ms", m.rtt_min_ms),
        ("rtt_avg_ms", m.rtt_avg_ms),
        ("rtt_max_ms", m.rtt_max_ms),
        ("jitter_ms", m.jitter_ms),
    ] {
        if let Some(v) = v {
            f.insert(k, v);
        }
    }
    f
}

struct Fleet {
    agents: Vec<Agent>,
    expected: HashMap<Key, HashMap<&'static str, f64>>,
    next_seq: Vec<u64>,
    base: i64,
}

impl Fleet {
    async fn enroll(c: &TestCollector, n: usize) -> anyhow::Result<Fleet> {
        let codes = c.codes("21.71.01.1002")?;
        let mut agents = Vec::new();
        for (tps, code) in codes.iter().take(n) {
            agents.push(Agent::enroll(c, tps, code).await?);
        }
        Ok(Fleet {
            next_seq: vec![1; agents.len()],
            agents,
            expected: HashMap::new(),
            base: now_ms() - 3_600_000,
        })
    }

    /// Pushes `per_agent` measurements from every agent.
    async fn push(&mut self, per_agent: u64) -> anyhow::Result<()> {
        for (i, a) in self.agents.iter_mut().enumerate() {
            let first = self.next_seq[i];
            let batch: Vec<pb::Measurement> = (first..first + per_agent)
                .map(|s| varied(s, self.base, if s % 2 == 0 { "gateway" } else { "anchor" }))
                .collect();
            a.push(batch.clone()).await?;
            self.next_seq[i] += per_agent;
            for m in &batch {
                let method = if m.method == pb::Method::Tcp as i32 {
                    "tcp"
                } else {
                    "icmp"
                };
                let key = (
                    a.tps_code.clone(),
                    m.target_name.clone(),
                    method.to_string(),
                    a.agent_id.to_string(),
                    m.start_ms,
                );
                self.expected.insert(key, expected_fields(m));
            }
        }
        Ok(())
    }

    fn points(&self) -> usize {
        self.expected.values().map(HashMap::len).sum()
    }
}

fn key_of(s: &Series, ts: i64) -> Key {
    (
        s.label("tps").into(),
        s.label("target").into(),
        s.label("method").into(),
        s.label("agent").into(),
        ts,
    )
}

/// VictoriaMetrics keeps about 12 significant decimal digits of a float (InfluxDB keeps
/// all 64 bits), so values are equal when they agree to 1 part in 10^11.
fn same_stored_value(want: f64, got: f64) -> bool {
    want == got || (want - got).abs() <= want.abs().max(got.abs()) * 1e-11
}

/// Every expected field value is in VictoriaMetrics exactly once, with the same value.
fn compare(series: &[Series], fleet: &Fleet) -> Result<(), String> {
    let mut seen: HashMap<(Key, String), usize> = HashMap::new();
    for s in series {
        let field = s
            .name()
            .strip_prefix("link_")
            .ok_or("not a link series")?
            .to_string();
        if s.label("regency") != "21.71" || s.label("district") != "21.71.01" {
            return Err(format!("wrong region labels on {:?}", s.labels));
        }
        for &(ts, v) in &s.samples {
            let key = key_of(s, ts);
            let want = fleet.expected.get(&key).and_then(|f| f.get(field.as_str()));
            if !want.is_some_and(|w| same_stored_value(*w, v)) {
                return Err(format!(
                    "{key:?} {field}: VictoriaMetrics has {v}, expected {want:?}"
                ));
            }
            *seen.entry((key, field.clone())).or_default() += 1;
        }
    }
    if let Some((k, n)) = seen.iter().find(|(_, n)| **n != 1) {
        return Err(format!("{k:?} arrived {n} times"));
    }
    if seen.len() != fleet.points() {
        return Err(format!(
            "{} of {} values arrived",
            seen.len(),
            fleet.points()
        ));
    }
    Ok(())
}

async fn wait_until_all_arrived(vm: &VictoriaMetrics, fleet: &Fleet) -> anyhow::Result<()> {
    let last = std::sync::Mutex::new(String::new());
    let r = eventually(WAIT, "every value in VictoriaMetrics", || {
        let fut = vm.export(r#"{__name__=~"link_.*"}"#);
        let last = &last;
        async move {
            let series = fut.await.ok()?;
            match compare(&series, fleet) {
                Ok(()) => Some(()),
                Err(e) => {
                    *last.lock().unwrap() = e;
                    None
                }
            }
        }
    })
    .await;
    r.map_err(|e| anyhow::anyhow!("{e}; last difference: {}", last.lock().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_measurement_and_status_change_arrives_with_its_values() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let vm = VictoriaMetrics::start(&dir.path().join("vm"), &[]).await?;
    let data = dir.path().join("collector");
    tps_collector::commands::import_stations(&data, &kepri_registry())?;
    let c =
        TestCollector::start_with(&data, |cfg| cfg.influx = Some(sink_config(&vm.url()))).await?;
    let mut fleet = Fleet::enroll(&c, 3).await?;
    fleet.push(40).await?;
    fleet.push(25).await?;
    wait_until_all_arrived(&vm, &fleet).await?;
    // The coverage engine's own transitions (no_agent -> covered on the first push).
    let status = eventually(WAIT, "a status change per station", || async {
        let s = vm
            .export(r#"{__name__="station_status_state_code"}"#)
            .await
            .ok()?;
        (s.len() == 3).then_some(s)
    })
    .await?;
    for series in &status {
        assert!(
            fleet
                .agents
                .iter()
                .any(|a| a.tps_code == series.label("tps")),
            "{:?}",
            series.labels
        );
        assert_eq!(series.label("regency"), "21.71");
        assert_eq!(series.samples.len(), 1);
        assert_eq!(series.samples[0].1, 0.0, "covered");
    }

    let (_, health) = c.get_json("/healthz").await?;
    assert_eq!(health["influx"]["state"], "ok", "{health}");
    assert_eq!(health["influx"]["lag_rows"], 0, "{health}");
    let metrics = reqwest::get(c.url("/metrics")).await?.text().await?;
    assert!(
        metrics.contains(&format!("tps_influx_points_written_total {}", 3 * 65 + 3)),
        "{metrics}"
    );
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outage_loses_nothing_and_duplicates_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut vm = VictoriaMetrics::start(&dir.path().join("vm"), &[]).await?;
    let data = dir.path().join("collector");
    tps_collector::commands::import_stations(&data, &kepri_registry())?;
    let c =
        TestCollector::start_with(&data, |cfg| cfg.influx = Some(sink_config(&vm.url()))).await?;
    let mut fleet = Fleet::enroll(&c, 3).await?;
    fleet.push(30).await?;
    wait_until_all_arrived(&vm, &fleet).await?;

    // Stopped mid-run: ingest goes on, the sink falls behind and says so.
    vm.stop()?;
    fleet.push(30).await?;
    let health = eventually(
        WAIT,
        "the sink to report the outage and its lag",
        || async {
            let (_, h) = c.get_json("/healthz").await.ok()?;
            (h["influx"]["state"] == "failing" && h["influx"]["lag_rows"].as_i64()? >= 90)
                .then_some(h)
        },
    )
    .await?;
    assert!(
        health["influx"]["lag_rows"].as_i64().unwrap() >= 90,
        "{health}"
    );
    assert!(
        health["influx"]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach InfluxDB"),
        "{health}"
    );

    // Back again: the backlog goes out, then the sink keeps up.
    vm.restart().await?;
    fleet.push(30).await?;
    wait_until_all_arrived(&vm, &fleet).await?;
    let (_, h) = c.get_json("/healthz").await?;
    assert_eq!(h["influx"]["state"], "ok", "{h}");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_give_one_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // This server wants other credentials than the sink's token.
    let vm = VictoriaMetrics::start(
        &dir.path().join("vm"),
        &["-httpAuth.username=u", "-httpAuth.password=p"],
    )
    .await;
    let vm = match vm {
        Ok(vm) => vm,
        // /health is behind the same credentials on some versions; the start check then fails.
        Err(_) => {
            VictoriaMetrics::start(
                &dir.path().join("vm2"),
                &[
                    "-httpAuth.username=u",
                    "-httpAuth.password=p",
                    "-httpAuth.exclude=/health",
                ],
            )
            .await?
        }
    };
    let data = dir.path().join("collector");
    tps_collector::commands::import_stations(&data, &kepri_registry())?;
    let c =
        TestCollector::start_with(&data, |cfg| cfg.influx = Some(sink_config(&vm.url()))).await?;
    let mut fleet = Fleet::enroll(&c, 1).await?;
    fleet.push(5).await?;
    let h = eventually(WAIT, "the refusal in /healthz", || async {
        let (_, h) = c.get_json("/healthz").await.ok()?;
        (h["influx"]["state"] == "failing").then_some(h)
    })
    .await?;
    let err = h["influx"]["last_error"].as_str().unwrap_or("");
    assert!(err.contains("401") && err.contains("[influx] token"), "{h}");
    // Ingest is not slowed or refused meanwhile.
    fleet.push(5).await?;
    assert_eq!(h["status"], "ok");
    c.stop().await
}
