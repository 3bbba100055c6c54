//! The one writer: a dedicated thread that owns the write connection, takes pushes and
//! enrollments from a bounded queue, and commits as many as are waiting in one
//! transaction (group commit). After each commit it brings the live view up to date and
//! publishes what was stored as facts for the state owner, then answers each caller: a
//! caller that goes away after its commit cannot keep anyone from hearing of it.

use std::any::Any;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use crate::auth::Digest32;
use crate::domain::{AgentId, Push, Station, TpsCode, newest_per_target};
use crate::metrics::Metrics;
use crate::state::coverage::PushFacts;
use crate::state::facts::{Fact, Facts, Pushed};
use crate::state::live::{AgentLive, Live, Seen};

/// Most jobs committed in one transaction.
const MAX_JOBS_PER_COMMIT: usize = 1024;
/// Most measurements in one transaction, so one commit never stalls callers for long.
const MAX_MEASUREMENTS_PER_COMMIT: usize = 20_000;

/// What a stored push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// Highest sequence number stored for the agent, after this push.
    pub acked_seq: u64,
    /// Measurements newly stored.
    pub stored: u64,
    /// Measurements already stored before (re-sent after a lost acknowledgement).
    pub duplicates: u64,
}

/// An enrollment to be checked and recorded atomically.
#[derive(Debug, Clone)]
pub struct EnrollJob {
    pub tps_code: TpsCode,
    pub code_hash: Digest32,
    pub token_hash: Digest32,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub now_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollOutcome {
    Enrolled {
        agent_id: AgentId,
    },
    UnknownStation,
    /// No unused code for the station, or a different one.
    WrongCode,
}

type ExecValue = (Box<dyn Any + Send>, Vec<Fact>);
type ExecFn = Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> Result<ExecValue, StoreError> + Send>;

enum Job {
    Push {
        push: Push,
        reply: oneshot::Sender<Result<PushOutcome, StoreError>>,
    },
    Enroll {
        job: EnrollJob,
        reply: oneshot::Sender<Result<EnrollOutcome, StoreError>>,
    },
    /// Any other write (status changes, flags), committed with the rest of the batch.
    Exec {
        f: ExecFn,
        reply: oneshot::Sender<Result<Box<dyn Any + Send>, StoreError>>,
    },
}

/// How the writer is doing, for `/healthz`.
#[derive(Debug, Default)]
pub struct Health {
    /// When the commit under way began (Unix ms); 0 when idle.
    busy_since_ms: AtomicI64,
    /// Commits failed in a row, and the last failure.
    failing: AtomicU64,
    last_error: Mutex<String>,
    last_ok_ms: AtomicI64,
}

/// A reading of [`Health`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthView {
    /// The writer thread has ended (it panicked, or shutdown).
    pub stopped: bool,
    /// Milliseconds the commit under way has taken so far.
    pub busy_ms: Option<i64>,
    pub failing_commits: u64,
    pub last_error: Option<String>,
    pub last_ok_ms: Option<i64>,
}

impl Health {
    fn begin(&self) {
        self.busy_since_ms
            .store(crate::domain::now_ms(), Ordering::Relaxed);
    }
    fn ok(&self) {
        self.busy_since_ms.store(0, Ordering::Relaxed);
        self.failing.store(0, Ordering::Relaxed);
        self.last_ok_ms
            .store(crate::domain::now_ms(), Ordering::Relaxed);
    }
    fn failed(&self, e: &str) {
        self.busy_since_ms.store(0, Ordering::Relaxed);
        self.failing.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
    }
}

/// Where the writer tells what it committed.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub live: Arc<Live>,
    pub facts: Facts,
}

/// Why a write was not done.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the store is busy (write queue full for {0:?}); retry later")]
    Busy(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Handle to the writer thread; cheap to clone. When every handle is dropped the writer
/// finishes what is queued and its thread ends.
#[derive(Clone, Debug)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    health: Arc<Health>,
    /// How long a caller waits for room in the queue before it is told to retry.
    enqueue_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Push { push, .. } => write!(f, "Push(agent {})", push.agent_id),
            Job::Enroll { job, .. } => write!(f, "Enroll({})", job.tps_code),
            Job::Exec { .. } => f.write_str("Exec"),
        }
    }
}

impl Writer {
    /// Starts the writer thread on `conn`. `capacity` bounds the queue of jobs.
    pub fn spawn(
        conn: Connection,
        capacity: usize,
        enqueue_timeout: Duration,
        metrics: Arc<Metrics>,
        mirror: Mirror,
    ) -> std::io::Result<(Writer, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(capacity);
        let m = metrics.clone();
        let health = Arc::new(Health::default());
        let h = health.clone();
        let checkpointer = super::checkpoint::Checkpointer::start(&conn, metrics.clone())?;
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer_loop(conn, rx, &m, &mirror, &h);
                // The last checkpoint comes after the last commit.
                drop(checkpointer);
            })?;
        Ok((
            Writer {
                tx,
                health,
                enqueue_timeout,
                metrics,
            },
            handle,
        ))
    }

    async fn send(&self, job: Job) -> Result<(), WriteError> {
        match self.tx.send_timeout(job, self.enqueue_timeout).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                self.metrics.write_queue_full.inc();
                Err(WriteError::Busy(self.enqueue_timeout))
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(StoreError::WriterGone.into()),
        }
    }

    /// Stores a push; returns after the commit.
    pub async fn push(&self, push: Push) -> Result<PushOutcome, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Push { push, reply }).await?;
        Ok(rx.await.map_err(|_| StoreError::WriterGone)??)
    }

    /// Checks an enrollment code and records the new agent; returns after the commit.
    pub async fn enroll(&self, job: EnrollJob) -> Result<EnrollOutcome, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Enroll { job, reply }).await?;
        Ok(rx.await.map_err(|_| StoreError::WriterGone)??)
    }

    /// Runs `f` inside the writer's next transaction; returns its value after the commit.
    pub async fn exec<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, WriteError> {
        self.exec_publishing(move |tx| f(tx).map(|v| (v, Vec::new())))
            .await
    }

    /// Like [`Writer::exec`], and the facts `f` returns are published once committed
    /// (even if the caller has gone by then).
    pub async fn exec_publishing<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(T, Vec<Fact>), StoreError>
        + Send
        + 'static,
    ) -> Result<T, WriteError> {
        let (reply, rx) = oneshot::channel();
        let f: ExecFn =
            Box::new(move |tx| f(tx).map(|(v, facts)| (Box::new(v) as Box<dyn Any + Send>, facts)));
        self.send(Job::Exec { f, reply }).await?;
        let v = rx.await.map_err(|_| StoreError::WriterGone)??;
        Ok(*v
            .downcast::<T>()
            .map_err(|_| StoreError::CommitFailed("writer returned another type".into()))?)
    }

    pub fn health(&self) -> HealthView {
        let h = &self.health;
        let busy = h.busy_since_ms.load(Ordering::Relaxed);
        let failing = h.failing.load(Ordering::Relaxed);
        let ok = h.last_ok_ms.load(Ordering::Relaxed);
        HealthView {
            stopped: self.tx.is_closed(),
            busy_ms: (busy > 0).then(|| crate::domain::now_ms() - busy),
            failing_commits: failing,
            last_error: (failing > 0).then(|| {
                h.last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            }),
            last_ok_ms: (ok > 0).then_some(ok),
        }
    }

    /// Jobs waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    metrics: &Metrics,
    mirror: &Mirror,
    health: &Health,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_JOBS_PER_COMMIT);
    while let Some(first) = rx.blocking_recv() {
        let mut n_meas = job_size(&first);
        batch.push(first);
        while batch.len() < MAX_JOBS_PER_COMMIT && n_meas < MAX_MEASUREMENTS_PER_COMMIT {
            match rx.try_recv() {
                Ok(job) => {
                    n_meas += job_size(&job);
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        health.begin();
        let result = commit(&mut conn, &mut batch);
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.commit_jobs.observe(batch.len() as f64);
        match result {
            Ok(outcomes) => {
                health.ok();
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    match (job, outcome) {
                        (Job::Push { push, reply }, Outcome::Push(o)) => {
                            mirror_push(mirror, metrics, push, &o);
                            let _ = reply.send(Ok(o));
                        }
                        (Job::Enroll { job, reply }, Outcome::Enroll((o, station))) => {
                            if let (EnrollOutcome::Enrolled { agent_id }, Some(station)) =
                                (o, station)
                            {
                                mirror_enroll(mirror, metrics, job, agent_id, station);
                            }
                            let _ = reply.send(Ok(o));
                        }
                        (Job::Exec { reply, .. }, Outcome::Exec(v)) => {
                            let v = v.map(|(v, facts)| {
                                for f in facts {
                                    if let Fact::Revoked(ids) = &f {
                                        mirror.live.revoke(ids);
                                    }
                                    mirror.facts.publish_blocking(f);
                                }
                                v
                            });
                            let _ = reply.send(v);
                        }
                        _ => unreachable!("outcomes follow jobs in order"),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "store commit failed; callers will retry");
                metrics.commit_failures.inc();
                health.failed(&e.to_string());
                for job in batch.drain(..) {
                    let err = || StoreError::CommitFailed(e.to_string());
                    match job {
                        Job::Push { reply, .. } => {
                            let _ = reply.send(Err(err()));
                        }
                        Job::Enroll { reply, .. } => {
                            let _ = reply.send(Err(err()));
                        }
                        Job::Exec { reply, .. } => {
                            let _ = reply.send(Err(err()));
                        }
                    }
                }
            }
        }
    }
    tracing::debug!("store writer finished");
}

fn job_size(job: &Job) -> usize {
    match job {
        Job::Push { push, .. } => push.measurements.len().max(1),
        Job::Enroll { .. } | Job::Exec { .. } => 1,
    }
}

enum Outcome {
    Push(PushOutcome),
    Enroll((EnrollOutcome, Option<Station>)),
    Exec(Result<ExecValue, StoreError>),
}

/// A committed push reaches the live view and the state owner.
fn mirror_push(mirror: &Mirror, metrics: &Metrics, push: Push, o: &PushOutcome) {
    let seen = Seen {
        agent_id: push.agent_id,
        received_ms: push.received_ms,
        clock_skew_ms: push.clock_skew_ms,
        acked_seq: o.acked_seq,
        status: push.status.clone(),
    };
    let newest = newest_per_target(&push.measurements)
        .into_iter()
        .cloned()
        .collect();
    for (reason, n) in mirror.live.apply(&seen, newest) {
        metrics.agent_dropped(&reason, n);
    }
    metrics.pushes.inc();
    metrics.measurements_stored.inc_by(o.stored);
    metrics.measurements_duplicate.inc_by(o.duplicates);
    mirror.facts.publish_blocking(Fact::Pushed(Pushed {
        agent_id: push.agent_id,
        received_ms: push.received_ms,
        boot_time_ms: push.status.boot_time_ms,
        rounds: PushFacts::primary_rounds(&push.measurements, &push.status.primary_target),
        newest_start_ms: push.measurements.iter().map(|m| m.start_ms).max(),
        primary_problem: !push.status.primary_problem.is_empty(),
    }));
}

/// A committed enrollment: the token works at once, and the station is credited.
fn mirror_enroll(
    mirror: &Mirror,
    metrics: &Metrics,
    job: EnrollJob,
    agent_id: AgentId,
    station: Station,
) {
    mirror.live.add_agent(
        AgentLive {
            agent_id,
            tps_code: job.tps_code,
            hostname: job.hostname,
            os: job.os,
            agent_version: job.agent_version,
            enrolled_ms: job.now_ms,
            revoked: false,
            acked_seq: 0,
            last_seen_ms: None,
            clock_skew_ms: None,
            status: None,
            latest: Vec::new(),
        },
        job.token_hash,
    );
    metrics.enrolled_agents.inc();
    mirror
        .facts
        .publish_blocking(Fact::Enrolled { agent_id, station });
}

fn commit(conn: &mut Connection, batch: &mut [Job]) -> Result<Vec<Outcome>, StoreError> {
    // IMMEDIATE: the write lock is taken (and waited for) at the start. A deferred
    // transaction whose first statement reads cannot wait for another process's write
    // lock later: SQLite answers "database is locked" at once.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        out.push(match job {
            Job::Push { push, .. } => Outcome::Push(store_push(&tx, push)?),
            Job::Enroll { job, .. } => Outcome::Enroll(store_enroll(&tx, job)?),
            Job::Exec { f, .. } => {
                // Each closure runs once: swap in a no-op so the job can still be answered.
                let f = std::mem::replace(
                    f,
                    Box::new(|_| Ok((Box::new(()) as Box<dyn Any + Send>, Vec::new()))),
                );
                // A savepoint keeps one failing job from undoing everyone else's writes.
                tx.execute_batch("SAVEPOINT exec_job")?;
                match f(&tx) {
                    Ok(v) => {
                        tx.execute_batch("RELEASE exec_job")?;
                        Outcome::Exec(Ok(v))
                    }
                    Err(e) => {
                        tx.execute_batch("ROLLBACK TO exec_job; RELEASE exec_job")?;
                        Outcome::Exec(Err(e))
                    }
                }
            }
        });
    }
    tx.commit()?;
    Ok(out)
}

fn store_push(tx: &rusqlite::Transaction<'_>, push: &Push) -> Result<PushOutcome, StoreError> {
    let agent = push.agent_id as i64;
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO measurements (agent_id, seq, start_ms, target_name, target_address,
             method, sent, received, rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms, received_ms,
             errors)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    let mut stored = 0u64;
    let mut max_seq = 0u64;
    // At or below this, a measurement may have been moved into a block already.
    let compacted = super::compact::compacted_seq(tx, agent)?;
    for m in &push.measurements {
        max_seq = max_seq.max(m.seq);
        if (m.seq as i64) <= compacted && super::compact::in_blocks(tx, agent, m.seq as i64)? {
            continue;
        }
        let rtt = m.rtt.as_ref();
        stored += insert.execute(params![
            agent,
            m.seq as i64,
            m.start_ms,
            m.target_name,
            m.target_address,
            m.method.as_str(),
            m.sent,
            m.received,
            rtt.map(|r| r.min_ms),
            rtt.map(|r| r.avg_ms),
            rtt.map(|r| r.max_ms),
            rtt.and_then(|r| r.jitter_ms),
            push.received_ms,
            m.errors,
        ])? as u64;
    }
    let duplicates = push.measurements.len() as u64 - stored;

    let mut latest = tx.prepare_cached(
        "INSERT INTO latest (agent_id, target_name, seq, start_ms, target_address, method, sent,
             received, rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms, errors)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (agent_id, target_name) DO UPDATE SET
             seq = excluded.seq, start_ms = excluded.start_ms,
             target_address = excluded.target_address, method = excluded.method,
             sent = excluded.sent, received = excluded.received,
             rtt_min_ms = excluded.rtt_min_ms, rtt_avg_ms = excluded.rtt_avg_ms,
             rtt_max_ms = excluded.rtt_max_ms, jitter_ms = excluded.jitter_ms,
             errors = excluded.errors
         WHERE excluded.start_ms >= latest.start_ms",
    )?;
    for m in newest_per_target(&push.measurements) {
        let rtt = m.rtt.as_ref();
        latest.execute(params![
            agent,
            m.target_name,
            m.seq as i64,
            m.start_ms,
            m.target_address,
            m.method.as_str(),
            m.sent,
            m.received,
            rtt.map(|r| r.min_ms),
            rtt.map(|r| r.avg_ms),
            rtt.map(|r| r.max_ms),
            rtt.and_then(|r| r.jitter_ms),
            m.errors,
        ])?;
    }

    let status = serde_json::to_string(&push.status).unwrap_or_default();
    let mut update = tx.prepare_cached(
        "UPDATE agents SET acked_seq = max(acked_seq, ?2), last_seen_ms = ?3, clock_skew_ms = ?4,
             status_json = ?5
         WHERE agent_id = ?1 RETURNING acked_seq",
    )?;
    let acked: Option<i64> = update
        .query_row(
            params![
                agent,
                max_seq as i64,
                push.received_ms,
                push.clock_skew_ms,
                status
            ],
            |r| r.get(0),
        )
        .optional()?;
    let acked = acked.ok_or_else(|| {
        StoreError::NotFound(format!("agent {} is not in the store", push.agent_id))
    })?;
    Ok(PushOutcome {
        acked_seq: acked as u64,
        stored,
        duplicates,
    })
}

/// Checks and records an enrollment; with the station's row when it succeeds (the
/// owner may not know the station yet: imported a moment ago).
fn store_enroll(
    tx: &rusqlite::Transaction<'_>,
    job: &EnrollJob,
) -> Result<(EnrollOutcome, Option<Station>), StoreError> {
    let code = job.tps_code.as_str();
    let Some(station) = super::station(tx, &job.tps_code)? else {
        return Ok((EnrollOutcome::UnknownStation, None));
    };
    let hash: Option<Vec<u8>> = tx
        .prepare_cached("SELECT code_hash FROM enrollment_codes WHERE tps_code = ?1")?
        .query_row([code], |r| r.get(0))
        .optional()?;
    // Constant-time comparison is not needed: the stored value is a keyed hash.
    if hash.as_deref() != Some(&job.code_hash[..]) {
        return Ok((EnrollOutcome::WrongCode, None));
    }
    tx.execute("DELETE FROM enrollment_codes WHERE tps_code = ?1", [code])?;
    let id: i64 = tx.query_row(
        "INSERT INTO agents (tps_code, token_hash, hostname, os, agent_version, enrolled_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING agent_id",
        params![
            code,
            &job.token_hash[..],
            job.hostname,
            job.os,
            job.agent_version,
            job.now_ms
        ],
        |r| r.get(0),
    )?;
    Ok((
        EnrollOutcome::Enrolled {
            agent_id: id as AgentId,
        },
        Some(station),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_job(f: ExecFn) -> Job {
        let (reply, _rx) = oneshot::channel();
        Job::Exec { f, reply }
    }

    #[test]
    fn a_failing_job_does_not_undo_the_others_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = super::super::open(dir.path(), super::super::Synchronous::Normal).unwrap();
        let ok = |v: i64| -> ExecFn {
            Box::new(move |tx| {
                tx.execute(
                    "INSERT INTO sink_cursors (name, last_id) VALUES (?1, ?2)",
                    params![format!("c{v}"), v],
                )?;
                Ok((Box::new(v) as Box<dyn Any + Send>, Vec::new()))
            })
        };
        let failing: ExecFn = Box::new(|tx| {
            tx.execute(
                "INSERT INTO sink_cursors (name, last_id) VALUES ('half-done', 1)",
                [],
            )?;
            Err(StoreError::NotFound("nothing here".into()))
        });
        let mut batch = vec![exec_job(ok(1)), exec_job(failing), exec_job(ok(3))];
        let out = commit(&mut conn, &mut batch).unwrap();
        assert!(matches!(&out[0], Outcome::Exec(Ok(_))));
        assert!(matches!(
            &out[1],
            Outcome::Exec(Err(StoreError::NotFound(_)))
        ));
        assert!(matches!(&out[2], Outcome::Exec(Ok(_))));
        let names: Vec<String> = conn
            .prepare("SELECT name FROM sink_cursors WHERE name <> 'notify' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            names,
            vec!["c1".to_string(), "c3".to_string()],
            "the failed job's write is undone, the rest kept"
        );
    }
}
