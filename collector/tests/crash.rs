//! Durability across process death: a real `tps-collector` process is SIGKILLed while
//! clients push, then restarted on the same data directory; every measurement it
//! acknowledged must be there. And SIGTERM drains: every push answered OK is stored.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tonic::transport::Channel;
use tps_proto::v1 as pb;
use tps_proto::v1::collector_client::CollectorClient;

mod support;

const AGENTS: usize = 4;
const BATCH: u64 = 50;

struct Proc {
    child: Child,
    grpc: String,
}

/// Starts the collector binary and reads its bound gRPC address from the log.
fn start(dir: &Path) -> anyhow::Result<Proc> {
    let (child, grpc, _) = support::serve(dir, "")?;
    Ok(Proc {
        child,
        grpc: format!("http://{grpc}"),
    })
}

fn now_ms() -> i64 {
    tps_collector::domain::now_ms()
}

fn batch(first: u64, base: i64) -> Vec<pb::Measurement> {
    (first..first + BATCH)
        .map(|seq| pb::Measurement {
            seq,
            start_ms: base + seq as i64,
            target_name: "gateway".into(),
            target_address: "192.0.2.1".into(),
            method: pb::Method::Icmp as i32,
            sent: 5,
            received: 5,
            rtt_min_ms: Some(1.0),
            rtt_avg_ms: Some(2.0),
            rtt_max_ms: Some(3.0),
            jitter_ms: Some(0.1),
            ..Default::default()
        })
        .collect()
}

fn push_req(token: &str, ms: Vec<pb::Measurement>) -> tonic::Request<pb::PushRequest> {
    let mut r = tonic::Request::new(pb::PushRequest {
        status: None,
        measurements: ms,
    });
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    r
}

/// Enrolls one agent per code.
async fn enroll_all(grpc: &str, codes: &[(String, String)]) -> anyhow::Result<Vec<(u64, String)>> {
    let mut client = CollectorClient::connect(grpc.to_string()).await?;
    let mut out = Vec::new();
    for (tps, code) in codes {
        let r = client
            .enroll(pb::EnrollRequest {
                tps_code: tps.clone(),
                enrollment_code: code.clone(),
                agent: None,
            })
            .await?
            .into_inner();
        out.push((r.agent_id, r.token));
    }
    Ok(out)
}

/// Pushes batches until the connection fails; records the highest acknowledged seq.
async fn pusher(
    grpc: String,
    token: String,
    from_seq: u64,
    acked: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
) {
    let Ok(ch) = Channel::from_shared(grpc).map(|e| e.connect_lazy()) else {
        return;
    };
    let mut client = CollectorClient::new(ch);
    let base = now_ms() - 3_600_000;
    let mut next = from_seq;
    loop {
        match client.push(push_req(&token, batch(next, base))).await {
            Ok(r) => {
                let a = r.into_inner().acked_seq;
                assert_eq!(a, next + BATCH - 1, "acked_seq must cover the batch");
                acked.store(a, Ordering::SeqCst);
                total.fetch_add(BATCH, Ordering::SeqCst);
                next += BATCH;
            }
            Err(_) => return,
        }
    }
}

fn stored_seqs(dir: &Path, agent_id: u64) -> anyhow::Result<Vec<u64>> {
    let conn =
        tps_collector::store::open(&dir.join("data"), tps_collector::store::Synchronous::Full)?;
    Ok(tps_collector::store::measurements_of(&conn, agent_id)?
        .into_iter()
        .map(|m| m.seq)
        .collect())
}

fn setup(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let registry = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/stations/kepri-3327.csv");
    let data = dir.join("data");
    tps_collector::commands::import_stations(&data, &registry)?;
    let out = dir.join("codes.csv");
    tps_collector::commands::enroll_codes(&data, Some("21.71.01.1002"), &out)?;
    let mut rdr = csv::Reader::from_path(&out)?;
    let codes: Vec<(String, String)> = rdr
        .records()
        .take(AGENTS)
        .map(|r| r.map(|r| (r[0].to_string(), r[1].to_string())))
        .collect::<Result<_, _>>()?;
    Ok(codes)
}

async fn wait_for(total: &AtomicU64, at_least: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while total.load(Ordering::SeqCst) < at_least {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "pushes did not progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_acknowledged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let codes = setup(dir.path())?;
    let mut proc = start(dir.path())?;
    let agents = enroll_all(&proc.grpc, &codes).await?;
    let acked: Vec<Arc<AtomicU64>> = (0..AGENTS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut expected: HashMap<u64, u64> = HashMap::new();

    for round in 0..3 {
        let total = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = agents
            .iter()
            .zip(&acked)
            .map(|((_, token), a)| {
                let from = a.load(Ordering::SeqCst) + 1;
                tokio::spawn(pusher(
                    proc.grpc.clone(),
                    token.clone(),
                    from,
                    a.clone(),
                    total.clone(),
                ))
            })
            .collect();
        wait_for(&total, 2_000).await?;
        // SIGKILL while every pusher is still mid-stream.
        proc.child.kill()?;
        proc.child.wait()?;
        for t in tasks {
            t.await?;
        }
        for ((id, _), a) in agents.iter().zip(&acked) {
            expected.insert(*id, a.load(Ordering::SeqCst));
        }
        proc = start(dir.path())?;
        for (id, _) in &agents {
            let want = expected[id];
            let seqs = stored_seqs(dir.path(), *id)?;
            assert!(want > 0, "round {round}: agent {id} got no acknowledgement");
            assert!(
                seqs.len() as u64 >= want && seqs.iter().take(want as usize).copied().eq(1..=want),
                "round {round}: agent {id} acknowledged up to {want} but the store has {} rows ending at {:?}",
                seqs.len(),
                seqs.last()
            );
        }
    }
    proc.child.kill()?;
    proc.child.wait()?;
    Ok(())
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_pushes_and_exits_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let codes = setup(dir.path())?;
    let mut proc = start(dir.path())?;
    let agents = enroll_all(&proc.grpc, &codes).await?;
    let total = Arc::new(AtomicU64::new(0));
    let acked: Vec<Arc<AtomicU64>> = (0..AGENTS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let tasks: Vec<_> = agents
        .iter()
        .zip(&acked)
        .map(|((_, token), a)| {
            tokio::spawn(pusher(
                proc.grpc.clone(),
                token.clone(),
                1,
                a.clone(),
                total.clone(),
            ))
        })
        .collect();
    wait_for(&total, 2_000).await?;
    // The child we started, by its PID.
    let term = Command::new("kill")
        .args(["-TERM", &proc.child.id().to_string()])
        .status()?;
    assert!(term.success());
    let status = proc.child.wait()?;
    assert!(
        status.success(),
        "collector exited with {status} after SIGTERM"
    );
    for t in tasks {
        t.await?;
    }
    for ((id, _), a) in agents.iter().zip(&acked) {
        let want = a.load(Ordering::SeqCst);
        let seqs = stored_seqs(dir.path(), *id)?;
        assert!(
            seqs.len() as u64 >= want,
            "agent {id}: acknowledged {want}, stored {}",
            seqs.len()
        );
    }
    Ok(())
}
