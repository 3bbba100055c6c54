//! The on-disk spool: every measurement is written here before it is sent, and removed
//! only once the collector has acknowledged it.
//!
//! A SQLite file (`spool.sqlite` in the state directory), WAL journal,
//! `synchronous = FULL`: each probe round is one transaction, fsynced before the round
//! counts as measured. A power cut can cost at most the round being written at that
//! moment. A round gets its sequence numbers once, when it is written, and keeps them:
//! they keep increasing across restarts and are never reused, even after the spool
//! empties (the highest ever given is kept in `counters`).
//!
//! What it takes on disk — main file, write-ahead log and its index — stays inside
//! `max_bytes`, and inside what the file system has free: the log is checkpointed every
//! [`WAL_CHECKPOINT_BYTES`] and cut back after, and the index lives in memory
//! (exclusive locking: no `-shm` file, and nothing else opens the spool while the
//! agent runs). Past a bound the oldest entries go first; the number dropped is kept in
//! the file, by reason, and reported.
//!
//! Writes are few, because flash wears: an acknowledgement is kept in memory and its
//! entries are deleted in the next round's transaction (an acknowledged entry that a
//! crash brings back is only sent again, and the collector keeps one copy per
//! sequence number).
//!
//! When the file system refuses a write (full, read-only), rounds are held in memory,
//! [`HELD_ROUNDS`] at most, oldest dropped first, and written as soon as it takes them.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::config::Method;
use crate::platform::StorageProblem;
use crate::stats::{Round, RttStats};

/// One spooled measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    /// When the round started by the agent's own clock, unix ms.
    pub start_ms: i64,
    /// What to add to `start_ms` for the collector's clock, when known (see
    /// [`crate::clock`]).
    pub offset_ms: Option<i64>,
    pub target_name: String,
    pub target_address: String,
    pub method: Method,
    pub round: Round,
}

impl Entry {
    /// The round's start by the collector's clock when the offset is known, else by
    /// the agent's.
    pub fn corrected_start_ms(&self) -> i64 {
        self.start_ms + self.offset_ms.unwrap_or(0)
    }
}

/// A measurement to be spooled (it gets its sequence number from the spool).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub start_ms: i64,
    pub offset_ms: Option<i64>,
    /// Which run of the agent's clock the start was read in (see [`crate::clock`]): an
    /// offset learned later applies to entries of the same epoch only.
    pub clock_epoch: i64,
    pub target_name: String,
    pub target_address: String,
    pub method: Method,
    pub round: Round,
}

/// Why measurements were not delivered; counted apart in the spool and in the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// The spool reached `spool.max_mb` (or the file system's free space).
    SpoolFull,
    /// Older than the spool's age bound (`spool.max_age_days`, counted in rounds).
    TooOld,
    /// The state directory refused writes for longer than memory could hold rounds.
    DiskFull,
    /// The collector will never accept them (a field it refuses, a time it cannot place).
    Refused,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::SpoolFull,
        DropReason::TooOld,
        DropReason::DiskFull,
        DropReason::Refused,
    ];
    /// The name in the spool's counters and in `AgentStatus.dropped_by_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::SpoolFull => "spool_full",
            DropReason::TooOld => "too_old",
            DropReason::DiskFull => "disk_full",
            DropReason::Refused => "refused",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot create the spool directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl SpoolError {
    /// Whether the error is the state directory refusing writes (read-only, full, not
    /// ours), which the operator must fix on the device; `dir` is probed to tell which.
    pub fn storage_problem(&self, dir: &Path) -> Option<StorageProblem> {
        use rusqlite::ErrorCode as C;
        match self {
            SpoolError::Dir { source, .. } => io_problem(source),
            SpoolError::Sql(rusqlite::Error::SqliteFailure(e, _)) => match e.code {
                C::DiskFull => Some(StorageProblem::Full),
                C::ReadOnly | C::CannotOpen | C::PermissionDenied | C::SystemIoFailure => {
                    probe_dir(dir)
                }
                _ => None,
            },
            SpoolError::Sql(_) => None,
        }
    }
}

fn io_problem(e: &std::io::Error) -> Option<StorageProblem> {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ReadOnlyFilesystem => Some(StorageProblem::ReadOnly),
        K::StorageFull | K::QuotaExceeded => Some(StorageProblem::Full),
        K::PermissionDenied => Some(StorageProblem::PermissionDenied),
        _ => None,
    }
}

/// Writes and removes a small file in `dir` to learn why SQLite could not write there.
fn probe_dir(dir: &Path) -> Option<StorageProblem> {
    let p = dir.join(".tps-agent-write-test");
    let r = std::fs::write(&p, [0u8; 4096]).and_then(|()| std::fs::File::open(&p)?.sync_all());
    let _ = std::fs::remove_file(&p);
    match r {
        Ok(()) => None,
        Err(e) => io_problem(&e),
    }
}

/// The spool's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes on disk: main file, write-ahead log and journal together.
    pub max_bytes: u64,
    /// Entries kept at most: the age bound counted in rounds (`max_age /
    /// probe_interval` rounds of every target), so a clock that jumps cannot age
    /// entries out.
    pub max_entries: u64,
}

impl Limits {
    /// The bounds for an age, a probe interval, a number of targets and a size.
    pub fn new(
        max_age: Duration,
        probe_interval: Duration,
        targets: usize,
        max_bytes: u64,
    ) -> Self {
        let rounds = max_age.as_secs().div_ceil(probe_interval.as_secs().max(1));
        Limits {
            max_bytes,
            max_entries: rounds.saturating_mul(targets.max(1) as u64),
        }
    }
}

/// Rounds held in memory at most while the disk refuses writes (8 hours of 30 s rounds).
pub const HELD_ROUNDS: usize = 960;
/// The write-ahead log is checkpointed into the main file once it holds this much.
pub const WAL_CHECKPOINT_BYTES: u64 = 64 * 1024;
/// What the log may take on disk at most: a checkpoint's worth, one round's
/// transaction and its header; it is cut back to [`WAL_CHECKPOINT_BYTES`] after.
const WAL_ALLOWANCE: u64 = 2 * WAL_CHECKPOINT_BYTES;
/// Free space the spool leaves on its file system for everything else.
const FS_RESERVE: u64 = 256 * 1024;

/// The spool; one per agent process.
#[derive(Debug)]
pub struct Spool {
    conn: Connection,
    dir: PathBuf,
    limits: Limits,
    page_size: u64,
    /// Highest sequence number the collector acknowledged (kept in memory; entries up
    /// to it are deleted with the next write).
    acked: u64,
    /// What the file holds of `acked` already.
    trimmed: u64,
    /// The newest entry handed out in the last batch: on its way to the collector, so
    /// a bound never drops it (it would be counted as dropped and stored).
    in_flight: u64,
    /// Rounds the disk refused, oldest first, with the counts of those dropped since.
    held: VecDeque<Vec<NewEntry>>,
    unsaved_drops: BTreeMap<DropReason, u64>,
    /// The offsets given to the latest clock epochs ([`Spool::set_offset`]), so a
    /// round stamped before its epoch's offset was learned gets it when it is written.
    offsets: VecDeque<(i64, i64)>,
}

/// Clock epochs whose offsets the spool remembers for rounds still to come.
const OFFSET_EPOCHS: usize = 4;

const PAGE_SIZE: i64 = 1024;

/// Version 2: no AUTOINCREMENT (its counter page was rewritten every round), a clock
/// offset and epoch per entry, ICMP errors, drop counts by reason.
const SCHEMA_VERSION: i64 = 2;

/// The entries' table, as version 2 has it.
macro_rules! spool_table {
    () => {
        "CREATE TABLE IF NOT EXISTS spool (
    seq            INTEGER PRIMARY KEY,
    start_ms       INTEGER NOT NULL,
    offset_ms      INTEGER,
    clock_epoch    INTEGER NOT NULL DEFAULT 0,
    target_name    TEXT NOT NULL,
    target_address TEXT NOT NULL,
    method         TEXT NOT NULL,
    sent           INTEGER NOT NULL,
    received       INTEGER NOT NULL,
    errors         INTEGER NOT NULL DEFAULT 0,
    rtt_min_ms     REAL,
    rtt_avg_ms     REAL,
    rtt_max_ms     REAL,
    jitter_ms      REAL
);
"
    };
}

const SCHEMA: &str = concat!(
    spool_table!(),
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('last_seq', 0);
"
);

/// A version-1 spool (AUTOINCREMENT, one drop count) becomes version 2 in one
/// transaction; its entries keep their sequence numbers.
const MIGRATE_V1: &str = concat!(
    "ALTER TABLE spool RENAME TO spool_v1;\n",
    spool_table!(),
    "INSERT INTO spool (seq, start_ms, target_name, target_address, method, sent, received,
                   rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms)
    SELECT seq, start_ms, target_name, target_address, method, sent, received,
           rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms FROM spool_v1;
INSERT OR REPLACE INTO counters (name, value)
    SELECT 'last_seq', coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'spool_v1'), 0);
UPDATE counters SET name = 'dropped_spool_full' WHERE name = 'dropped';
DROP TABLE spool_v1;
"
);

fn method_str(m: Method) -> &'static str {
    match m {
        Method::Icmp => "icmp",
        Method::Tcp => "tcp",
    }
}

fn dropped_key(r: DropReason) -> String {
    format!("dropped_{}", r.as_str())
}

fn add_count(tx: &rusqlite::Transaction<'_>, name: &str, n: u64) -> Result<(), SpoolError> {
    if n > 0 {
        tx.execute(
            "INSERT INTO counters (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            params![name, n as i64],
        )?;
    }
    Ok(())
}

impl Spool {
    pub fn open(dir: &Path, limits: Limits) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|source| SpoolError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(dir.join("spool.sqlite"))?;
        // The agent holds the file locked while it runs (exclusive locking): another
        // process (`tps-agent check`) learns that within 2 s.
        conn.busy_timeout(Duration::from_secs(2))?;
        // Small pages for a new spool: every round rewrites a few pages, so a page of
        // 1 KiB instead of 4 KiB cuts what a router writes to its flash (see
        // docs/BENCHMARKS.md). Only takes effect before the file has content.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        // Before WAL: the log's index then lives in this process's memory, not in a
        // `-shm` file that every commit would write.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let page_size = page_size as u64;
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            (WAL_CHECKPOINT_BYTES / page_size).max(4) as i64,
        )?;
        conn.pragma_update(None, "journal_size_limit", WAL_CHECKPOINT_BYTES as i64)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < SCHEMA_VERSION {
            let v1: Option<String> = conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'spool'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let mut conn = conn;
            let tx = conn.transaction()?;
            if v1.is_some_and(|sql| sql.contains("AUTOINCREMENT")) {
                tx.execute_batch(MIGRATE_V1)?;
            }
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
            return Self::with(conn, dir, limits, page_size);
        }
        conn.execute_batch(SCHEMA)?;
        Self::with(conn, dir, limits, page_size)
    }

    fn with(
        conn: Connection,
        dir: &Path,
        limits: Limits,
        page_size: u64,
    ) -> Result<Spool, SpoolError> {
        Ok(Spool {
            conn,
            dir: dir.to_path_buf(),
            limits,
            page_size,
            acked: 0,
            trimmed: 0,
            in_flight: 0,
            held: VecDeque::new(),
            unsaved_drops: BTreeMap::new(),
            offsets: VecDeque::new(),
        })
    }

    /// Writes one round's measurements in one fsynced transaction, together with any
    /// rounds held in memory before it (oldest first) and the deletion of what was
    /// acknowledged, then keeps the bounds. Returns the sequence numbers given, in
    /// order.
    ///
    /// When the disk refuses the write, the round is held in memory (the oldest held
    /// round is dropped, and counted, past [`HELD_ROUNDS`]) and the error returned.
    pub fn append(&mut self, entries: &[NewEntry]) -> Result<Vec<u64>, SpoolError> {
        if !entries.is_empty() {
            let mut round = entries.to_vec();
            for e in round.iter_mut().filter(|e| e.offset_ms.is_none()) {
                e.offset_ms = self.offset_of(e.clock_epoch);
            }
            self.held.push_back(round);
        }
        let written = self.write_held();
        if written.is_err() {
            while self.held.len() > HELD_ROUNDS {
                let lost = self.held.pop_front().map(|r| r.len()).unwrap_or(0);
                *self.unsaved_drops.entry(DropReason::DiskFull).or_default() += lost as u64;
            }
        }
        written
    }

    /// Rounds held in memory because the disk refused them.
    pub fn held_rounds(&self) -> usize {
        self.held.len()
    }

    fn write_held(&mut self) -> Result<Vec<u64>, SpoolError> {
        let acked = self.acked;
        let budget = self.data_budget();
        let (limits, page_size) = (self.limits, self.page_size);
        let keep = self.in_flight.max(acked);
        let tx = self.conn.transaction()?;
        let mut next = last_seq(&tx)?;
        // Acknowledged entries go first, so their pages take the new ones.
        if acked > self.trimmed {
            tx.execute("DELETE FROM spool WHERE seq <= ?1", [acked as i64])?;
            if self.held.is_empty() && acked >= next {
                // Emptied: the counter keeps the highest number ever given.
                save_last_seq(&tx, next)?;
            }
        }
        let mut seqs = Vec::new();
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO spool (seq, start_ms, offset_ms, clock_epoch, target_name,
                     target_address, method, sent, received, errors,
                     rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for e in self.held.iter().flatten() {
                next += 1;
                let r = e.round.rtt.as_ref();
                ins.execute(params![
                    next as i64,
                    e.start_ms,
                    e.offset_ms,
                    e.clock_epoch,
                    e.target_name,
                    e.target_address,
                    method_str(e.method),
                    e.round.sent,
                    e.round.received,
                    e.round.errors,
                    r.map(|r| r.min_ms),
                    r.map(|r| r.avg_ms),
                    r.map(|r| r.max_ms),
                    r.and_then(|r| r.jitter_ms),
                ])?;
                seqs.push(next);
            }
        }
        for (reason, n) in &self.unsaved_drops {
            add_count(&tx, &dropped_key(*reason), *n)?;
        }
        enforce_bounds(&tx, limits, budget, page_size, keep)?;
        tx.commit()?;
        self.trimmed = acked;
        self.held.clear();
        self.unsaved_drops.clear();
        Ok(seqs)
    }

    /// Bytes the spool takes on disk: main file, write-ahead log, journal.
    pub fn footprint_bytes(&self) -> u64 {
        [
            "spool.sqlite",
            "spool.sqlite-wal",
            "spool.sqlite-journal",
            "spool.sqlite-shm",
        ]
        .iter()
        .filter_map(|f| std::fs::metadata(self.dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
    }

    /// What the live pages may take: the size bound less the log's allowance, and no
    /// more than the spool has now plus what the file system has free (less a reserve).
    fn data_budget(&self) -> u64 {
        let mut budget = self.limits.max_bytes.saturating_sub(WAL_ALLOWANCE);
        if let Some(free) = crate::disk::free_bytes(&self.dir) {
            let main = std::fs::metadata(self.dir.join("spool.sqlite"))
                .map(|m| m.len())
                .unwrap_or(0);
            budget = budget.min((main + free).saturating_sub(FS_RESERVE + WAL_ALLOWANCE));
        }
        budget.max(16 * self.page_size)
    }

    /// The oldest `limit` entries not acknowledged yet, in sequence order.
    pub fn batch(&mut self, limit: usize) -> Result<Vec<Entry>, SpoolError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, start_ms, offset_ms, target_name, target_address, method, sent,
                    received, errors, rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms
             FROM spool WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = st.query_map(params![self.acked as i64, limit as i64], |r| {
            let method: String = r.get(5)?;
            let (min, avg, max): (Option<f64>, Option<f64>, Option<f64>) =
                (r.get(9)?, r.get(10)?, r.get(11)?);
            Ok(Entry {
                seq: r.get::<_, i64>(0)? as u64,
                start_ms: r.get(1)?,
                offset_ms: r.get(2)?,
                target_name: r.get(3)?,
                target_address: r.get(4)?,
                method: if method == "tcp" {
                    Method::Tcp
                } else {
                    Method::Icmp
                },
                round: Round {
                    sent: r.get(6)?,
                    received: r.get(7)?,
                    errors: r.get(8)?,
                    rtt: match (min, avg, max) {
                        (Some(min_ms), Some(avg_ms), Some(max_ms)) => Some(RttStats {
                            min_ms,
                            avg_ms,
                            max_ms,
                            jitter_ms: r.get(12)?,
                        }),
                        _ => None,
                    },
                },
            })
        })?;
        let batch = rows.collect::<Result<Vec<_>, _>>()?;
        drop(st);
        self.in_flight = batch.last().map(|e| e.seq).unwrap_or(0);
        Ok(batch)
    }

    /// The collector holds everything up to and including `acked_seq`: those entries
    /// are not sent again, and are deleted with the next write (no write of their own).
    pub fn ack(&mut self, acked_seq: u64) {
        self.acked = self.acked.max(acked_seq);
    }

    /// Deletes what was acknowledged when it is at least `n` entries: while a backlog
    /// drains, pushes follow each other faster than rounds, and a crash should not
    /// leave much to send again.
    pub fn trim_behind(&mut self, n: u64) -> Result<(), SpoolError> {
        if self.acked >= self.trimmed + n {
            self.trim()?;
        }
        Ok(())
    }

    /// Deletes what was acknowledged now (at exit, or when no round follows).
    pub fn trim(&mut self) -> Result<(), SpoolError> {
        if self.acked > self.trimmed || !self.held.is_empty() {
            self.write_held()?;
        }
        Ok(())
    }

    /// Gives entries of clock epoch `epoch` that have no offset yet the offset
    /// learned for that epoch (the rounds measured before the collector was reached).
    /// Returns the sequence numbers of the entries on disk that got it.
    /// Rounds of that epoch written later get it too.
    pub fn set_offset(&mut self, epoch: i64, offset_ms: i64) -> Result<Vec<u64>, SpoolError> {
        self.offsets.retain(|(e, _)| *e != epoch);
        self.offsets.push_back((epoch, offset_ms));
        if self.offsets.len() > OFFSET_EPOCHS {
            self.offsets.pop_front();
        }
        for e in self.held.iter_mut().flatten() {
            if e.clock_epoch == epoch && e.offset_ms.is_none() {
                e.offset_ms = Some(offset_ms);
            }
        }
        let mut st = self.conn.prepare_cached(
            "UPDATE spool SET offset_ms = ?2
             WHERE clock_epoch = ?1 AND offset_ms IS NULL AND seq > ?3 RETURNING seq",
        )?;
        let seqs = st
            .query_map(params![epoch, offset_ms, self.acked as i64], |r| {
                r.get::<_, i64>(0).map(|v| v as u64)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(seqs)
    }

    fn offset_of(&self, epoch: i64) -> Option<i64> {
        self.offsets
            .iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, o)| *o)
    }

    /// Removes entries the collector will never accept, counting them as refused.
    pub fn discard(&mut self, seqs: &[u64]) -> Result<usize, SpoolError> {
        let tx = self.conn.transaction()?;
        save_last_seq(&tx, last_seq(&tx)?)?;
        let mut n = 0;
        {
            let mut del = tx.prepare_cached("DELETE FROM spool WHERE seq = ?1")?;
            for s in seqs {
                n += del.execute([*s as i64])?;
            }
        }
        add_count(&tx, &dropped_key(DropReason::Refused), n as u64)?;
        tx.commit()?;
        Ok(n)
    }

    /// Entries waiting to be delivered (not acknowledged yet), held ones included.
    pub fn depth(&self) -> Result<u64, SpoolError> {
        let on_disk = self.conn.query_row(
            "SELECT count(*) FROM spool WHERE seq > ?1",
            [self.acked as i64],
            |r| r.get::<_, i64>(0),
        )? as u64;
        Ok(on_disk + self.held.iter().map(|r| r.len() as u64).sum::<u64>())
    }

    /// Entries dropped since the spool was created, by reason (held drops included).
    pub fn dropped_by_reason(&self) -> Result<BTreeMap<DropReason, u64>, SpoolError> {
        let mut out = self.unsaved_drops.clone();
        let mut st = self
            .conn
            .prepare_cached("SELECT name, value FROM counters WHERE name LIKE 'dropped_%'")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (name, v) = row?;
            if let Some(r) = DropReason::ALL
                .into_iter()
                .find(|r| dropped_key(*r) == name)
            {
                *out.entry(r).or_default() += v as u64;
            }
        }
        out.retain(|_, v| *v > 0);
        Ok(out)
    }

    /// Entries dropped since the spool was created, for every reason.
    pub fn dropped(&self) -> Result<u64, SpoolError> {
        Ok(self.dropped_by_reason()?.values().sum())
    }

    /// The highest sequence number ever given.
    pub fn last_seq(&self) -> Result<u64, SpoolError> {
        last_seq(&self.conn)
    }

    /// Makes sure new and pending entries number above `acked_seq` when the collector
    /// has acknowledged more than this spool ever numbered (the spool file was lost or
    /// replaced while the agent kept its token): otherwise pending entries would be
    /// taken for delivered ones and deleted unsent. When the collector holds no more
    /// than this spool numbered, nothing moves: entries up to `acked_seq` are the ones
    /// it holds (stored, but the acknowledgement was lost to a crash), and giving them
    /// new numbers would store them twice. Returns how far entries were moved.
    pub fn renumber_above(&mut self, acked_seq: u64) -> Result<u64, SpoolError> {
        let last = self.last_seq()?;
        if acked_seq <= last {
            return Ok(0);
        }
        let first: Option<i64> = self
            .conn
            .query_row("SELECT min(seq) FROM spool", [], |r| r.get(0))?;
        // The oldest pending entry becomes acked_seq + 1; an empty spool just moves on.
        let offset = first.map(|f| acked_seq + 1 - f as u64).unwrap_or(0);
        let tx = self.conn.transaction()?;
        // Move in descending order so the primary key never collides.
        let seqs: Vec<i64> = {
            let mut st = tx.prepare("SELECT seq FROM spool ORDER BY seq DESC")?;
            st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        for s in seqs {
            tx.execute(
                "UPDATE spool SET seq = ?1 WHERE seq = ?2",
                params![s + offset as i64, s],
            )?;
        }
        save_last_seq(&tx, (last + offset).max(acked_seq))?;
        tx.commit()?;
        Ok(offset)
    }
}

/// What a copy of a spool holds, read while the agent keeps the spool itself locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Entries in the file (acknowledged ones the agent has not deleted yet included).
    pub entries: u64,
    pub last_seq: u64,
    pub dropped: u64,
}

impl Spool {
    /// Reads a copy of the spool in `dir` (log first, then main file, into a temporary
    /// directory): the running agent holds the spool locked, and this leaves it alone.
    pub fn snapshot(dir: &Path) -> Result<Snapshot, SpoolError> {
        let tmp = std::env::temp_dir().join(format!(
            "tps-agent-spool-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let io = |source| SpoolError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&tmp).map_err(io)?;
        let read = (|| {
            for f in ["spool.sqlite-wal", "spool.sqlite"] {
                match std::fs::copy(dir.join(f), tmp.join(f)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(e)),
                }
            }
            let s = Spool::open(
                &tmp,
                Limits {
                    max_bytes: u64::MAX,
                    max_entries: u64::MAX,
                },
            )?;
            let entries = s
                .conn
                .query_row("SELECT count(*) FROM spool", [], |r| r.get::<_, i64>(0))?
                as u64;
            Ok(Snapshot {
                entries,
                last_seq: s.last_seq()?,
                dropped: s.dropped()?,
            })
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        read
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // What was acknowledged is deleted now rather than sent again after a restart.
        let _ = self.trim();
    }
}

/// Drops the oldest entries past the entry bound and past the byte budget, counted;
/// entries up to `keep` (acknowledged, or on their way) are not dropped.
fn enforce_bounds(
    tx: &rusqlite::Transaction<'_>,
    limits: Limits,
    budget: u64,
    page_size: u64,
    keep: u64,
) -> Result<(), SpoolError> {
    let depth: u64 = tx.query_row("SELECT count(*) FROM spool", [], |r| r.get::<_, i64>(0))? as u64;
    if depth > limits.max_entries {
        let n = depth - limits.max_entries;
        let removed = drop_oldest(tx, n, keep)?;
        add_count(tx, &dropped_key(DropReason::TooOld), removed)?;
        tracing::warn!(
            dropped = removed,
            "spool entries past the age limit dropped (oldest first)"
        );
    }
    // Freed pages are reused, so the live size goes down as soon as rows go.
    for _ in 0..8 {
        let used = used_bytes(tx, page_size)?;
        if used <= budget {
            break;
        }
        let depth: u64 =
            tx.query_row("SELECT count(*) FROM spool", [], |r| r.get::<_, i64>(0))? as u64;
        if depth == 0 {
            break;
        }
        let over = (used - budget) as f64 / used as f64;
        let n = ((depth as f64 * over).ceil() as u64).clamp(1, depth);
        let removed = drop_oldest(tx, n, keep)?;
        add_count(tx, &dropped_key(DropReason::SpoolFull), removed)?;
        tracing::warn!(
            dropped = removed,
            budget_bytes = budget,
            "spool full: oldest entries dropped"
        );
    }
    Ok(())
}

fn used_bytes(conn: &Connection, page_size: u64) -> Result<u64, SpoolError> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    Ok((pages - free) as u64 * page_size)
}

/// The highest sequence number given: the newest entry's, or the counter's when the
/// spool is empty.
fn last_seq(conn: &Connection) -> Result<u64, SpoolError> {
    Ok(conn.query_row(
        "SELECT max(coalesce((SELECT max(seq) FROM spool), 0),
                    (SELECT value FROM counters WHERE name = 'last_seq'))",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

fn save_last_seq(conn: &Connection, seq: u64) -> Result<(), SpoolError> {
    conn.execute(
        "UPDATE counters SET value = max(value, ?1) WHERE name = 'last_seq'",
        [seq as i64],
    )?;
    Ok(())
}

/// Drops the `n` oldest entries above `keep`, keeping the newest one (it holds the
/// sequence).
fn drop_oldest(tx: &rusqlite::Transaction<'_>, n: u64, keep: u64) -> Result<u64, SpoolError> {
    let depth: u64 = tx.query_row(
        "SELECT count(*) FROM spool WHERE seq > ?1",
        [keep as i64],
        |r| r.get::<_, i64>(0),
    )? as u64;
    let n = n.min(depth.saturating_sub(1));
    let removed = tx.execute(
        "DELETE FROM spool WHERE seq IN (SELECT seq FROM spool WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
        params![keep as i64, n as i64],
    )? as u64;
    Ok(removed)
}

#[cfg(test)]
mod tests;
