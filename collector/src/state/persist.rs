//! Stores what the owner decided — status transitions and flag changes — through the
//! writer, in order, retrying until each is stored: a busy writer or a failing disk
//! delays the record, never drops it. What waits is the `tps_state_persist_backlog` gauge.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::state::coverage::Transition;
use crate::state::facts::Fact;
use crate::state::flags::Action;
use crate::store::{self, StatusChange, writer::Writer};

/// First and longest wait between attempts.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// At shutdown, how long a failing store is retried before giving up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// One record to store.
#[derive(Debug)]
pub enum Persist {
    Transitions(Vec<Transition>),
    /// Flag changes; once stored, their briefs come back to the owner as a fact.
    Flags {
        actions: Vec<Action>,
        now_ms: i64,
    },
}

impl Persist {
    fn len(&self) -> usize {
        match self {
            Persist::Transitions(t) => t.len(),
            Persist::Flags { actions, .. } => actions.len(),
        }
    }
}

fn change(t: &Transition) -> StatusChange {
    StatusChange {
        id: 0,
        tps_code: t.tps_code.to_string(),
        at_ms: t.at_ms,
        state: t.to.as_str().into(),
        previous: Some(t.from.as_str().into()),
        reason: Some(t.reason.as_str().into()),
        cause: t.cause.map(|c| c.as_str().into()),
    }
}

async fn attempt(writer: &Writer, job: &Persist) -> Result<(), crate::store::writer::WriteError> {
    match job {
        Persist::Transitions(ts) => {
            let rows: Vec<StatusChange> = ts.iter().map(change).collect();
            writer
                .exec(move |tx| {
                    for c in &rows {
                        store::insert_status_change(tx, c)?;
                    }
                    Ok(())
                })
                .await
        }
        Persist::Flags { actions, now_ms } => {
            let (actions, now) = (actions.clone(), *now_ms);
            writer
                .exec_publishing(move |tx| {
                    let briefs = store::flags::apply(tx, &actions, now)?;
                    Ok(((), vec![Fact::FlagsStored(briefs)]))
                })
                .await
        }
    }
}

/// Runs until the owner is gone and everything it sent is stored (or, once `stopping`
/// is set, until a failing store has been retried for [`SHUTDOWN_GRACE`]).
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<Persist>,
    writer: Writer,
    metrics: Arc<Metrics>,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    while let Some(job) = rx.recv().await {
        let n = job.len();
        let mut wait = RETRY_FIRST;
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            match attempt(&writer, &job).await {
                Ok(()) => break,
                Err(e) => {
                    metrics.persist_retries.inc();
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if wait == RETRY_FIRST {
                        tracing::error!(error = %e, records = n, "cannot store coverage changes yet; retrying until stored");
                    }
                    if *stopping.borrow() && since.elapsed() > SHUTDOWN_GRACE {
                        tracing::error!(
                            records = n + rx.len(),
                            "shutting down with coverage changes not stored; they are re-derived at the next start"
                        );
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
        metrics.persist_backlog.dec_by(n as i64);
    }
}
