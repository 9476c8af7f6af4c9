//! One storage engine for every Raft log of a node: the catalog's and, later, each
//! replicated queue's. Logs are told apart by a group number; all of them live in one
//! SQLite file, written by one thread that commits in groups.
//!
//! Group commit: the thread takes every job waiting when it wakes (up to [`MAX_BATCH`]),
//! runs the writes among them in one transaction (each in a savepoint of its own, so one
//! failing write does not undo the others) and commits once, with `synchronous=FULL`: one
//! fsync covers every append of every group that arrived while the last one ran. Only after
//! that commit are the writers told (an append's callback, a vote's `await`), so nothing is
//! acknowledged before it is on disk.
//!
//! Order: jobs run in the order they were handed over, whoever sent them. A read sent after
//! an append sees it, even before the commit (the same connection reads its own
//! transaction): Raft may replicate entries the leader has not flushed yet, since the
//! leader counts itself towards a commit only once its flush is reported.
#![allow(clippy::disallowed_methods)] // the storage seam may own a thread and read a clock

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use rusqlite::Connection;

use super::sqlite::DbError;

/// Most jobs one commit takes: a bound on one transaction's time, not on throughput.
pub const MAX_BATCH: usize = 4096;

/// A write, run inside the batch's transaction (in a savepoint of its own).
pub type WriteJob = Box<dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send>;
/// Told how a write ended, once its batch is committed (or failed).
pub type Done = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A read, run in order with the writes; it sends its own answer.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

enum Job {
    Write(WriteJob, Done),
    Read(ReadJob),
}

/// What the engine has done: for `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct EngineCounts {
    /// Transactions committed (each one fsync of the WAL).
    pub commits: AtomicU64,
    /// Writes they carried.
    pub writes: AtomicU64,
}

/// A handle to the engine; clones share it. The thread ends when the last handle is gone.
#[derive(Clone)]
pub struct LogEngine {
    jobs: mpsc::Sender<Job>,
    counts: Arc<EngineCounts>,
}

impl LogEngine {
    /// Opens (creating if needed) the database at `path`, WAL, `synchronous=FULL`.
    /// `prepare` runs first, alone, in its own transaction (schema and format upgrades).
    pub fn open(
        path: &Path,
        prepare: impl FnOnce(&mut Connection) -> Result<(), DbError>,
    ) -> Result<LogEngine, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(DbError::Thread)?;
        }
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // A handle dropped a moment ago may still be committing its last batch.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        prepare(&mut conn)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let counts = Arc::new(EngineCounts::default());
        let c = counts.clone();
        std::thread::Builder::new()
            .name("mpreg-raftlog".to_owned())
            .spawn(move || run(conn, &queue, &c))
            .map_err(DbError::Thread)?;
        Ok(LogEngine { jobs, counts })
    }

    pub fn counts(&self) -> &Arc<EngineCounts> {
        &self.counts
    }

    /// Hands `write` to the engine; `done` hears how it ended once its batch is committed.
    /// Returns at once: later jobs see the write (see the module's note on order).
    pub fn write_then(&self, write: WriteJob, done: Done) -> Result<(), DbError> {
        self.jobs
            .send(Job::Write(write, done))
            .map_err(|_| DbError::Closed)
    }

    /// Runs `write` and returns once it is committed (on disk).
    pub async fn write<F>(&self, write: F) -> Result<(), DbError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write_then(
            Box::new(write),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.await
            .map_err(|_| DbError::Closed)?
            .map_err(|e| DbError::Thread(std::io::Error::other(e)))
    }

    /// Returns once everything handed over before it is committed.
    pub async fn flush(&self) -> Result<(), DbError> {
        self.write(|_| Ok(())).await
    }

    /// Runs `read` in order with the writes and returns what it read.
    pub async fn read<R, F>(&self, read: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Read(Box::new(move |c| {
                let _ = tx.send(read(c));
            })))
            .map_err(|_| DbError::Closed)?;
        Ok(rx.await.map_err(|_| DbError::Closed)??)
    }
}

/// The engine's thread: batches until every handle is gone.
fn run(mut conn: Connection, queue: &mpsc::Receiver<Job>, counts: &EngineCounts) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, batch, counts);
    }
}

/// Runs one batch: reads answered as they come, writes committed together, then told.
fn run_batch(conn: &mut Connection, batch: Vec<Job>, counts: &EngineCounts) {
    let mut told: Vec<(Done, Result<(), String>)> = Vec::new();
    let committed = (|| -> rusqlite::Result<()> {
        let mut tx = conn.transaction()?;
        for job in batch {
            match job {
                Job::Read(read) => read(&tx),
                Job::Write(write, done) => {
                    let sp = tx.savepoint()?;
                    let r = write(&sp);
                    let r = match r {
                        Ok(()) => sp.commit().map_err(|e| e.to_string()),
                        // Dropping the savepoint rolls back this write alone.
                        Err(e) => Err(e.to_string()),
                    };
                    told.push((done, r));
                }
            }
        }
        // With synchronous=FULL this returns after the WAL's fsync.
        tx.commit()
    })();
    let writes = told.len() as u64;
    if writes > 0 && committed.is_ok() {
        counts.commits.fetch_add(1, Ordering::Relaxed);
        counts.writes.fetch_add(writes, Ordering::Relaxed);
    }
    // A failed commit fails every write in it, whichever group it came from (their Raft
    // cores then stop on a storage error, as with any failed append): the shared fate of
    // group commit.
    match committed {
        Ok(()) => {
            for (done, r) in told {
                done(r);
            }
        }
        Err(e) => {
            let why = format!("commit failed: {e}");
            for (done, _) in told {
                done(Err(why.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mpreg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("log.sqlite")
    }

    fn open(path: &Path) -> LogEngine {
        LogEngine::open(path, |c| {
            c.execute_batch("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")?;
            Ok(())
        })
        .unwrap()
    }

    /// Many writers at once share commits, each is told only after its commit, a failing
    /// write fails alone, and what was committed is there after reopening.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_fail_alone() {
        let path = temp_db("engine");
        let engine = open(&path);
        let mut tasks = Vec::new();
        for k in 0..200i64 {
            let e = engine.clone();
            tasks.push(tokio::spawn(async move {
                e.write(move |c| {
                    c.execute("INSERT INTO t (k, v) VALUES (?1, 'x')", [k])
                        .map(|_| ())
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // A duplicate key fails, alone: the write beside it in the same batch stands.
        let dup = engine.write(|c| {
            c.execute("INSERT INTO t (k, v) VALUES (1, 'y')", [])
                .map(|_| ())
        });
        let other = engine.write(|c| {
            c.execute("INSERT INTO t (k, v) VALUES (500, 'z')", [])
                .map(|_| ())
        });
        let (dup, other) = tokio::join!(dup, other);
        assert!(dup.is_err());
        other.unwrap();
        let commits = engine.counts().commits.load(Ordering::Relaxed);
        let writes = engine.counts().writes.load(Ordering::Relaxed);
        assert_eq!(writes, 202);
        assert!(
            commits < writes,
            "{commits} commits for {writes} writes: no grouping"
        );
        drop(engine);
        let engine = open(&path);
        let n: i64 = engine
            .read(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(n, 201);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A read handed over after a write sees it, whether or not it is committed yet.
    #[tokio::test]
    async fn a_read_sees_the_writes_handed_over_before_it() {
        let path = temp_db("engine-order");
        let engine = open(&path);
        let (tx, rx) = tokio::sync::oneshot::channel();
        engine
            .write_then(
                Box::new(|c| {
                    c.execute("INSERT INTO t (k, v) VALUES (7, 'seven')", [])
                        .map(|_| ())
                }),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )
            .unwrap();
        let v: String = engine
            .read(|c| c.query_row("SELECT v FROM t WHERE k = 7", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(v, "seven");
        rx.await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
