//! What a commit stored, told to the state owner: the writer publishes these after each
//! commit (so a cancelled request cannot skip them), on a bounded channel whose fullness
//! slows the writer rather than losing a fact.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::domain::{AgentId, Measurement, Station, TpsCode};
use crate::metrics::Metrics;
use crate::state::coverage::Override;
use crate::state::flags::{Brief, FlagStatus};

/// Facts waiting for the owner, at most.
pub const CAPACITY: usize = 65_536;

/// A committed push, as coverage needs it.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub agent_id: AgentId,
    pub received_ms: i64,
    pub boot_time_ms: i64,
    /// The rounds of the agent's primary target, oldest first.
    pub rounds: Vec<Measurement>,
    /// Start of the newest measurement of any target in the push.
    pub newest_start_ms: Option<i64>,
    /// The agent says its primary target cannot be measured.
    pub primary_problem: bool,
}

/// One committed change.
#[derive(Debug, Clone)]
pub enum Fact {
    Pushed(Pushed),
    /// An agent enrolled for this station (carried whole: it may be new to the owner).
    Enrolled {
        agent_id: AgentId,
        station: Station,
    },
    Revoked(Vec<AgentId>),
    /// Registry rows added or changed (an import while running).
    Stations(Vec<Station>),
    Override {
        tps: TpsCode,
        value: Override,
    },
    /// Flag changes the owner planned, now stored.
    FlagsStored(Vec<(TpsCode, Brief)>),
    /// An operator changed a flag's status.
    FlagActed {
        tps: TpsCode,
        id: i64,
        status: FlagStatus,
        ended_ms: Option<i64>,
    },
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Facts {
    tx: mpsc::Sender<Fact>,
    metrics: Arc<Metrics>,
    /// Facts handed over so far (counted before each send): a reader that wants to see
    /// its own change waits for a snapshot that has applied this many.
    sent: Arc<AtomicU64>,
}

impl Facts {
    pub fn channel(metrics: Arc<Metrics>) -> (Facts, mpsc::Receiver<Fact>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let sent = Arc::new(AtomicU64::new(0));
        (Facts { tx, metrics, sent }, rx)
    }

    /// From a thread outside the runtime (the writer): waits for room.
    pub fn publish_blocking(&self, fact: Fact) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        if self.tx.blocking_send(fact).is_err() {
            // Only at shutdown, once the owner has stopped.
            self.metrics.facts_unheard.inc();
        }
    }

    /// From a task: waits for room.
    pub async fn publish(&self, fact: Fact) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(fact).await.is_err() {
            self.metrics.facts_unheard.inc();
        }
    }

    /// Facts handed over so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Facts waiting for the owner.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}
