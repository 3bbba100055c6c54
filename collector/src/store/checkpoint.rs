//! WAL checkpoints mostly off the writer's path: a thread with a connection of its own
//! copies committed pages from the write-ahead log into the database file every 250 ms.
//! (SQLite's automatic checkpoint runs inside whichever commit takes the log past 1,000
//! pages; once compaction rewrites pages all over the file, that commit took hundreds of
//! milliseconds and every push queued behind it.) The writer keeps its automatic
//! checkpoint, which now finds the log nearly all copied: it copies the little left and
//! lets the next commit start the log again from the beginning — only a connection that
//! writes can do that, so without it the log would grow for ever.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::metrics::Metrics;

/// How often the log is copied back; the log holds about this long of writes.
pub const EVERY: Duration = Duration::from_millis(250);
/// The log file is cut back to this size after it restarts (it keeps its largest size
/// otherwise).
pub const WAL_KEEP_BYTES: i64 = 64 << 20;

/// The running checkpoint thread; dropping it stops the thread after one last
/// checkpoint.
#[derive(Debug)]
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// One checkpoint: `(pages in the log, pages copied into the database)`.
pub fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

impl Checkpointer {
    /// Takes the bulk of the checkpoints off `writer`, on a connection of its own to the
    /// same file. `None` for a database without a file.
    pub fn start(writer: &Connection, metrics: Arc<Metrics>) -> std::io::Result<Option<Self>> {
        let Some(path) = writer.path().filter(|p| !p.is_empty()).map(str::to_owned) else {
            return Ok(None);
        };
        let sql = |e: rusqlite::Error| std::io::Error::other(format!("{path}: {e}"));
        let conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        writer
            .pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)
            .map_err(sql)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || run(&conn, &s, &metrics))?;
        Ok(Some(Checkpointer {
            stop,
            thread: Some(thread),
        }))
    }
}

fn run(conn: &Connection, stop: &AtomicBool, metrics: &Metrics) {
    let mut warned = false;
    loop {
        let last = stop.load(Ordering::Relaxed);
        let t = Instant::now();
        match checkpoint(conn) {
            Ok((log, copied)) => {
                metrics
                    .checkpoint_seconds
                    .observe(t.elapsed().as_secs_f64());
                metrics.wal_pages_behind.set((log - copied).max(0));
                metrics.checkpoints.inc();
                warned = false;
            }
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying (the log grows until one succeeds)");
            }
            Err(_) => {}
        }
        if last {
            return;
        }
        std::thread::park_timeout(EVERY);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_bytes(dir: &std::path::Path) -> u64 {
        std::fs::metadata(dir.join("collector.sqlite-wal")).map_or(0, |m| m.len())
    }

    /// Writes `n` pages' worth of rows in one transaction.
    fn write(conn: &Connection, n: usize) {
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..n {
            tx.execute("INSERT INTO t (v) VALUES (randomblob(3000))", [])
                .unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn the_thread_copies_the_log_back_and_the_log_restarts_under_steady_commits() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(dir.path(), crate::store::Synchronous::Normal).unwrap();
        conn.execute_batch("CREATE TABLE t (v BLOB)").unwrap();
        let metrics = Arc::new(Metrics::new());
        let cp = Checkpointer::start(&conn, metrics.clone())
            .unwrap()
            .unwrap();
        // Commits one after another, as pushes come (~30 pages each, ~94 MB in all): the
        // log must restart now and then rather than hold everything written.
        for _ in 0..800 {
            write(&conn, 30);
        }
        let before = metrics.checkpoints.get();
        let deadline = Instant::now() + Duration::from_secs(60);
        while metrics.checkpoints.get() < before + 2 {
            assert!(Instant::now() < deadline, "no checkpoint within a minute");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            before > 0,
            "the thread took no checkpoint while the commits ran"
        );
        drop(cp);
        assert!(
            wal_bytes(dir.path()) <= WAL_KEEP_BYTES as u64,
            "the log grew to {} bytes",
            wal_bytes(dir.path())
        );
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 800 * 30);
    }
}
