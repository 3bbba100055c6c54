//! Refusing to serve a damaged database: `PRAGMA quick_check` at start (time-boxed, so
//! a national store does not delay the start for long), and a message that says what
//! to do when it fails.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

use super::StoreError;

/// Longest the start-up check may take; past it the collector starts and says so.
pub const QUICK_CHECK_BUDGET: Duration = Duration::from_secs(60);

/// Whether an SQLite error means the file is damaged (not busy, not missing).
pub fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// The error for a damaged database, with what to do.
pub fn damaged(data_dir: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        path: super::db_path(data_dir),
        detail: detail.into(),
    }
}

/// Runs `PRAGMA quick_check` within `budget`; `Err(Damaged)` when it finds a problem.
pub fn quick_check(
    conn: &Connection,
    data_dir: &Path,
    budget: Duration,
) -> Result<bool, StoreError> {
    // A watchdog interrupts the check at the deadline, unless told it finished.
    let interrupt = conn.get_interrupt_handle();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(budget).is_err() {
            interrupt.interrupt();
        }
    });
    let result: Result<Vec<String>, rusqlite::Error> = (|| {
        let mut st = conn.prepare("PRAGMA quick_check(20)")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })();
    let _ = done.send(());
    let _ = watchdog.join();
    match result {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(true),
        Ok(rows) => Err(damaged(data_dir, rows.join("; "))),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) => Ok(false),
        Err(e) if is_damage(&e) => Err(damaged(data_dir, e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// The check at start: refuses a damaged database; warns when the check ran out of time.
pub fn check_at_start(conn: &Connection, data_dir: &Path) -> Result<(), StoreError> {
    let started = Instant::now();
    if quick_check(conn, data_dir, QUICK_CHECK_BUDGET)? {
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "database integrity check passed"
        );
    } else {
        tracing::warn!(
            seconds = QUICK_CHECK_BUDGET.as_secs(),
            "the database integrity check did not finish in time; serving without it \
             (run `sqlite3 collector.sqlite 'PRAGMA quick_check'` in a quiet hour)"
        );
    }
    Ok(())
}
