//! SQLite behind an async door: one dedicated thread owns a connection and runs the jobs
//! that async callers send it. rusqlite is blocking and its `Connection` is not `Sync`; a
//! thread of its own keeps fsyncs off the runtime's workers. (Simulation uses in-memory
//! storage instead: real file IO and threads are not deterministic under turmoil.)
#![allow(clippy::disallowed_methods)] // the storage seam may own a thread

use std::path::Path;
use std::sync::mpsc;

use rusqlite::Connection;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// How hard a database syncs: `Full` fsyncs the WAL on every commit (Raft's vote and log:
/// an acknowledged entry must survive power loss); `Normal` syncs at checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Full,
    Normal,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("storage: {0}")]
    Thread(std::io::Error),
    #[error("the storage thread has stopped")]
    Closed,
    #[error(
        "the data directory was written by a newer mpreg (data format {found}; this build \
         reads formats up to {supported}): run that build or a newer one on it, or start this \
         one with another --data-dir"
    )]
    NewerFormat { found: i64, supported: i64 },
}

/// A handle to a database served by its own thread; clones share it. The thread ends when
/// the last handle is dropped.
#[derive(Clone)]
pub struct SqliteDb {
    jobs: mpsc::Sender<Job>,
}

impl SqliteDb {
    /// Opens (creating if needed) `path` in WAL mode with `durability`.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteDb, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(DbError::Thread)?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("mpreg-sqlite".to_owned())
            .spawn(move || {
                let mut conn = conn;
                for job in queue {
                    job(&mut conn);
                }
            })
            .map_err(DbError::Thread)?;
        Ok(SqliteDb { jobs })
    }

    /// Runs `f` on the storage thread and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = done.send(f(conn));
            }))
            .map_err(|_| DbError::Closed)?;
        Ok(result.await.map_err(|_| DbError::Closed)??)
    }
}
