//! The on-disk spool: every measurement is written here before it is sent, and removed
//! only once the collector has acknowledged it.
//!
//! A SQLite file (`spool.sqlite` in the state directory), WAL journal,
//! `synchronous = FULL`: each probe round is one transaction, fsynced before the round
//! counts as measured. A power cut can cost at most the round being written at that
//! moment. Sequence numbers come from an AUTOINCREMENT key, so they keep increasing
//! across restarts and are never reused, even after the spool empties.
//!
//! Bounded by age (default 7 days) and size (default 64 MB): past either bound the
//! oldest entries go first, and the number dropped is kept in the file and reported.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::config::Method;
use crate::platform::StorageProblem;
use crate::stats::{Round, RttStats};

/// One spooled measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub start_ms: i64,
    pub target_name: String,
    pub target_address: String,
    pub method: Method,
    pub round: Round,
}

/// A measurement to be spooled (it gets its sequence number from the spool).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub start_ms: i64,
    pub target_name: String,
    pub target_address: String,
    pub method: Method,
    pub round: Round,
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

/// The spool; one per agent process.
#[derive(Debug)]
pub struct Spool {
    conn: Connection,
    max_age: Duration,
    max_bytes: u64,
}

const PAGE_SIZE: i64 = 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spool (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    start_ms       INTEGER NOT NULL,
    target_name    TEXT NOT NULL,
    target_address TEXT NOT NULL,
    method         TEXT NOT NULL,
    sent           INTEGER NOT NULL,
    received       INTEGER NOT NULL,
    rtt_min_ms     REAL,
    rtt_avg_ms     REAL,
    rtt_max_ms     REAL,
    jitter_ms      REAL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('dropped', 0);
";

fn method_str(m: Method) -> &'static str {
    match m {
        Method::Icmp => "icmp",
        Method::Tcp => "tcp",
    }
}

impl Spool {
    pub fn open(dir: &Path, max_age: Duration, max_bytes: u64) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|source| SpoolError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(dir.join("spool.sqlite"))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // Small pages for a new spool: every round rewrites a few pages, so a page of
        // 1 KiB instead of 4 KiB cuts what a router writes to its flash (see
        // docs/BENCHMARKS.md). Only takes effect before the file has content.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Spool {
            conn,
            max_age,
            max_bytes,
        })
    }

    /// Writes one round's measurements in one fsynced transaction, then enforces the
    /// bounds. Returns the sequence numbers given.
    pub fn append(&mut self, entries: &[NewEntry], now_ms: i64) -> Result<Vec<u64>, SpoolError> {
        let tx = self.conn.transaction()?;
        let mut seqs = Vec::with_capacity(entries.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO spool (start_ms, target_name, target_address, method, sent, received,
                     rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for e in entries {
                let r = e.round.rtt.as_ref();
                ins.execute(params![
                    e.start_ms,
                    e.target_name,
                    e.target_address,
                    method_str(e.method),
                    e.round.sent,
                    e.round.received,
                    r.map(|r| r.min_ms),
                    r.map(|r| r.avg_ms),
                    r.map(|r| r.max_ms),
                    r.and_then(|r| r.jitter_ms),
                ])?;
                seqs.push(tx.last_insert_rowid() as u64);
            }
        }
        tx.commit()?;
        self.enforce_bounds(now_ms)?;
        Ok(seqs)
    }

    fn add_dropped(tx: &rusqlite::Transaction<'_>, n: usize) -> Result<(), SpoolError> {
        if n > 0 {
            tx.execute(
                "UPDATE counters SET value = value + ?1 WHERE name = 'dropped'",
                [n as i64],
            )?;
        }
        Ok(())
    }

    /// Bytes the spool's live pages take.
    pub fn used_bytes(&self) -> Result<u64, SpoolError> {
        let page_size: i64 = self
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))?;
        let pages: i64 = self
            .conn
            .pragma_query_value(None, "page_count", |r| r.get(0))?;
        let free: i64 = self
            .conn
            .pragma_query_value(None, "freelist_count", |r| r.get(0))?;
        Ok(((pages - free) * page_size) as u64)
    }

    fn enforce_bounds(&mut self, now_ms: i64) -> Result<(), SpoolError> {
        let cutoff = now_ms - self.max_age.as_millis() as i64;
        let tx = self.conn.transaction()?;
        let aged = tx.execute("DELETE FROM spool WHERE start_ms < ?1", [cutoff])?;
        Self::add_dropped(&tx, aged)?;
        tx.commit()?;
        if aged > 0 {
            tracing::warn!(
                dropped = aged,
                "spool entries older than the age limit dropped"
            );
        }
        // Freed pages are reused, so the live size goes down as soon as rows go.
        for _ in 0..8 {
            let used = self.used_bytes()?;
            if used <= self.max_bytes {
                break;
            }
            let depth = self.depth()?;
            if depth == 0 {
                break;
            }
            let over = (used - self.max_bytes) as f64 / used as f64;
            let n = ((depth as f64 * over).ceil() as u64).clamp(1, depth);
            let tx = self.conn.transaction()?;
            let removed = tx.execute(
                "DELETE FROM spool WHERE seq IN (SELECT seq FROM spool ORDER BY seq LIMIT ?1)",
                [n as i64],
            )?;
            Self::add_dropped(&tx, removed)?;
            tx.commit()?;
            tracing::warn!(
                dropped = removed,
                max_bytes = self.max_bytes,
                "spool full: oldest entries dropped"
            );
        }
        Ok(())
    }

    /// The oldest `limit` entries, in sequence order.
    pub fn batch(&self, limit: usize) -> Result<Vec<Entry>, SpoolError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, start_ms, target_name, target_address, method, sent, received,
                    rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms
             FROM spool ORDER BY seq LIMIT ?1",
        )?;
        let rows = st.query_map([limit as i64], |r| {
            let method: String = r.get(4)?;
            let (min, avg, max): (Option<f64>, Option<f64>, Option<f64>) =
                (r.get(7)?, r.get(8)?, r.get(9)?);
            Ok(Entry {
                seq: r.get::<_, i64>(0)? as u64,
                start_ms: r.get(1)?,
                target_name: r.get(2)?,
                target_address: r.get(3)?,
                method: if method == "tcp" {
                    Method::Tcp
                } else {
                    Method::Icmp
                },
                round: Round {
                    sent: r.get(5)?,
                    received: r.get(6)?,
                    rtt: match (min, avg, max) {
                        (Some(min_ms), Some(avg_ms), Some(max_ms)) => Some(RttStats {
                            min_ms,
                            avg_ms,
                            max_ms,
                            jitter_ms: r.get(10)?,
                        }),
                        _ => None,
                    },
                },
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Removes everything up to and including `acked_seq`; returns how many went.
    pub fn ack(&mut self, acked_seq: u64) -> Result<usize, SpoolError> {
        Ok(self
            .conn
            .execute("DELETE FROM spool WHERE seq <= ?1", [acked_seq as i64])?)
    }

    /// Removes one entry the collector will never accept, counting it as dropped.
    pub fn discard(&mut self, seq: u64) -> Result<(), SpoolError> {
        let tx = self.conn.transaction()?;
        let n = tx.execute("DELETE FROM spool WHERE seq = ?1", [seq as i64])?;
        Self::add_dropped(&tx, n)?;
        tx.commit()?;
        Ok(())
    }

    pub fn depth(&self) -> Result<u64, SpoolError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM spool", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Entries dropped since the spool was created (bounds and discards).
    pub fn dropped(&self) -> Result<u64, SpoolError> {
        Ok(self.conn.query_row(
            "SELECT value FROM counters WHERE name = 'dropped'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// The highest sequence number ever given.
    pub fn last_seq(&self) -> Result<u64, SpoolError> {
        let v: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'spool'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Makes sure new and pending entries number above `acked_seq`. Needed when the
    /// collector has acknowledged more than this spool ever numbered (the spool file was
    /// lost or replaced while the agent kept its token): otherwise pending entries would
    /// be taken for duplicates and deleted unsent. Returns how far entries were moved.
    pub fn renumber_above(&mut self, acked_seq: u64) -> Result<u64, SpoolError> {
        let last = self.last_seq()?;
        if acked_seq < last {
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
        // sqlite_sequence has no key on name: update the row, or add it if absent.
        let next = (last + offset).max(acked_seq) as i64;
        if tx.execute(
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'spool'",
            [next],
        )? == 0
        {
            tx.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('spool', ?1)",
                [next],
            )?;
        }
        tx.commit()?;
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start_ms: i64) -> NewEntry {
        NewEntry {
            start_ms,
            target_name: "gateway".into(),
            target_address: "192.0.2.1".into(),
            method: Method::Icmp,
            round: Round {
                sent: 5,
                received: 4,
                rtt: Some(RttStats {
                    min_ms: 1.0,
                    avg_ms: 2.0,
                    max_ms: 3.0,
                    jitter_ms: Some(0.5),
                }),
            },
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn sequence_survives_reopen_and_ack() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), DAY, 1 << 30).unwrap();
        assert_eq!(
            s.append(&[entry(1000), entry(1000)], 2000).unwrap(),
            vec![1, 2]
        );
        assert_eq!(s.ack(2).unwrap(), 2);
        drop(s);
        let mut s = Spool::open(dir.path(), DAY, 1 << 30).unwrap();
        assert_eq!(
            s.append(&[entry(3000)], 4000).unwrap(),
            vec![3],
            "never reused after emptying"
        );
        let b = s.batch(10).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].round, entry(0).round);
    }

    #[test]
    fn age_bound_drops_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), Duration::from_secs(60), 1 << 30).unwrap();
        s.append(&[entry(0), entry(30_000)], 30_000).unwrap();
        s.append(&[entry(90_000)], 90_000).unwrap();
        assert_eq!(
            s.batch(10)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(s.dropped().unwrap(), 1);
    }

    #[test]
    fn size_bound_drops_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let max = 256 * 1024;
        let mut s = Spool::open(dir.path(), DAY * 30, max).unwrap();
        for round in 0..200 {
            let batch: Vec<_> = (0..50).map(|_| entry(round * 1000)).collect();
            s.append(&batch, round * 1000).unwrap();
        }
        assert!(s.used_bytes().unwrap() <= max);
        let dropped = s.dropped().unwrap();
        let depth = s.depth().unwrap();
        assert!(dropped > 0);
        assert_eq!(
            dropped + depth,
            10_000,
            "every entry is either kept or counted as dropped"
        );
        // What is kept is the newest.
        assert_eq!(s.batch(1).unwrap()[0].seq, dropped + 1);
    }

    #[test]
    fn renumbering_moves_pending_entries_above_the_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), DAY, 1 << 30).unwrap();
        s.append(&[entry(1), entry(2)], 10).unwrap();
        assert_eq!(
            s.renumber_above(1).unwrap(),
            0,
            "nothing to do when the spool is ahead"
        );
        assert_eq!(s.renumber_above(10).unwrap(), 10);
        assert_eq!(
            s.batch(10)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![11, 12]
        );
        assert_eq!(s.append(&[entry(3)], 10).unwrap(), vec![13]);
    }

    #[test]
    fn discard_counts_as_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), DAY, 1 << 30).unwrap();
        s.append(&[entry(1), entry(2)], 10).unwrap();
        s.discard(1).unwrap();
        assert_eq!(s.depth().unwrap(), 1);
        assert_eq!(s.dropped().unwrap(), 1);
    }
}
