//! A small pool of read-only connections for the API and the pollers: a few reads run
//! at once (WAL readers never block the writer or each other), more wait their turn.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::StoreError;

/// Connections in the pool.
pub const READERS: usize = 4;

#[derive(Debug, Clone)]
pub struct Readers {
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

/// Why a read did not run.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the read was interrupted: {0}")]
    Join(String),
}

impl Readers {
    /// Opens `n` read-only connections to the database in `data_dir` (which must exist).
    pub fn open(data_dir: &Path, n: usize) -> Result<Readers, StoreError> {
        let path = super::db_path(data_dir);
        let conns = (0..n.max(1))
            .map(|_| {
                // Read-write flags (a read-only open of a WAL database needs its shared
                // memory file to exist already), then refuse writes on this connection.
                let c = Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                c.pragma_update(None, "query_only", "ON")?;
                Ok(c)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Readers {
            permits: Arc::new(Semaphore::new(conns.len())),
            idle: Arc::new(Mutex::new(conns)),
        })
    }

    /// Runs `f` on a pooled connection, on a blocking thread.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ReadError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ReadError::Join(e.to_string()))?;
        let idle = self.idle.clone();
        tokio::task::spawn_blocking(move || {
            let conn = idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .ok_or_else(|| StoreError::CommitFailed("no idle reader".into()))?;
            let r = f(&conn);
            idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            r
        })
        .await
        .map_err(|e| ReadError::Join(e.to_string()))?
        .map_err(ReadError::Store)
    }
}
