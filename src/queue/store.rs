//! Where an owner keeps its queues' messages: a SQLite file of its own (`queues.sqlite` in
//! the data directory), written by one thread in group commits, or memory.
//!
//! Durable before the ack: a send's row is in a transaction that is committed with
//! `synchronous = FULL` (the WAL fsynced) before [`Committed`] resolves, and the owner
//! answers the sender only then. Writes that arrive while a commit is under way wait for
//! the next one together, so N concurrent sends cost one fsync, not N (group commit).
//! Writes are applied in the order they were handed over, so an ack's delete never lands
//! before its message's insert. Deliveries, visibility changes and dead letters are written
//! the same way, but nobody waits for them: a crash before their commit loses only a
//! receive count or a deadline (the message is redelivered: at least once).
//!
//! The table rows are a queue's [`Stored`] messages, keyed by the queue's store key (its
//! name and incarnation: a queue created again under a name never sees the old rows), plus
//! deduplication ids in their window and each queue's next message id.
//!
//! Memory mode keeps the same tables in a map (`MemoryDisk`), which a test or the
//! simulator may keep across a node's restart; writes are committed at once, or (the
//! simulator's disks) after a sync delay that a crash may cut short.

#![allow(clippy::disallowed_methods)] // the storage seam may own a thread

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::engine::Stored;

/// The queue file's layout version (SQLite `user_version`); a newer one is refused.
/// 2: messages keep the consumer they are addressed to (`to_consumer`); a format-1 file
/// gains the column at open.
pub const QUEUE_FORMAT: i64 = 2;

/// Most writes one commit takes (a bound on one transaction's time, not on throughput).
const MAX_BATCH: usize = 4096;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue_messages (
    queue TEXT NOT NULL, id INTEGER NOT NULL, payload BLOB NOT NULL, meta BLOB,
    priority INTEGER NOT NULL, grp TEXT, fire_and_forget INTEGER NOT NULL,
    deliveries INTEGER NOT NULL, receives INTEGER NOT NULL, expires_at INTEGER,
    visible_at INTEGER NOT NULL, dead INTEGER NOT NULL, sent_ms INTEGER NOT NULL,
    to_consumer TEXT,
    PRIMARY KEY (queue, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_dedup (
    queue TEXT NOT NULL, dedup_id TEXT NOT NULL, id INTEGER NOT NULL, until INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_next (queue TEXT PRIMARY KEY, next_id INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_defs (queue TEXT PRIMARY KEY, entry BLOB NOT NULL)
    WITHOUT ROWID;
";

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("queue store: {0}")]
    Sqlite(String),
    #[error("the queue store has stopped")]
    Closed,
    #[error(
        "the queue store was written by a newer mpreg (format {found}; this build reads up \
         to {QUEUE_FORMAT}): run that build, or another --data-dir"
    )]
    NewerFormat { found: i64 },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Sqlite(e.to_string())
    }
}

/// A message as written: what the engine restores, and when it was sent (for its age and
/// send-to-ack latency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub message: Stored,
    pub sent_ms: u64,
}

/// One change to the store.
#[derive(Debug, Clone)]
pub enum Write {
    /// A queue this node owns, as the catalog holds it (JSON of its `QueueEntry`): kept so
    /// that the node can give the catalog its queues back if the catalog forgot them (a
    /// one-node cluster that stopped, and so ended).
    Define { queue: Arc<str>, entry: Vec<u8> },
    /// A new message; its deduplication id (with its window's end), and the queue's next id.
    Insert {
        queue: Arc<str>,
        row: Box<Row>,
        dedup: Option<(String, u64)>,
        next_id: u64,
    },
    /// A delivery, a nack or a visibility change: its counts and when it is visible.
    Update {
        queue: Arc<str>,
        id: u64,
        deliveries: u32,
        receives: u32,
        visible_at: u64,
    },
    /// Dead-lettered (`true`) or redriven (`false`, its receive count reset).
    Dead {
        queue: Arc<str>,
        id: u64,
        dead: bool,
        visible_at: u64,
    },
    /// Acknowledged, expired, purged, or received at most once.
    Delete { queue: Arc<str>, id: u64 },
    /// Deduplication ids whose window ended before `now`.
    Prune { queue: Arc<str>, now: u64 },
    /// Every row of a queue (deleted).
    Drop { queue: Arc<str> },
    /// Nothing: committed with (or after) every write handed over before it, so waiting
    /// for it waits for them.
    Barrier,
}

/// What the store holds of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// In id order.
    pub rows: Vec<Row>,
    /// (deduplication id, message id, window end).
    pub dedup: Vec<(String, u64, u64)>,
    pub next_id: u64,
}

/// Resolves once a write is committed (durable in SQLite mode).
pub type Committed = oneshot::Receiver<Result<(), StoreError>>;

/// The tables of memory mode, as a value: a test or the simulator keeps one across a
/// node's restart. With a sync delay (the simulator's), a write is answered only once it
/// is "synced", that long after it was written, and a crash loses what was not: the
/// simulated fsync before a send's answer.
#[derive(Debug, Clone, Default)]
pub struct MemoryDisk(Arc<Mutex<DiskState>>);

#[derive(Debug, Default)]
struct DiskState {
    /// What the node reads: every write applied as it was handed over.
    live: Tables,
    /// What survives a crash: the writes synced (with a sync delay only).
    durable: Tables,
    /// Writes handed over and not yet synced, with their callers' answers.
    pending: Vec<(Write, oneshot::Sender<Result<(), StoreError>>)>,
    sync_delay: Option<std::time::Duration>,
    sync_scheduled: bool,
    /// Bumped by a crash, so that a sync scheduled before it does nothing.
    epoch: u64,
}

impl MemoryDisk {
    /// A disk whose writes become durable (and are answered) only `delay` after they were
    /// handed over: a crash in between loses them.
    pub fn with_sync_delay(delay: std::time::Duration) -> MemoryDisk {
        let disk = MemoryDisk::default();
        disk.0.lock().sync_delay = Some(delay);
        disk
    }

    /// Power loss: whatever was not synced is gone, and its callers are never answered.
    /// (Without a sync delay every write was synced at once: nothing is lost.)
    pub fn crash(&self) {
        let mut d = self.0.lock();
        if d.sync_delay.is_none() {
            return;
        }
        d.live = d.durable.clone();
        d.pending.clear();
        d.sync_scheduled = false;
        d.epoch += 1;
    }

    fn write(&self, w: Write, done: oneshot::Sender<Result<(), StoreError>>) {
        let mut d = self.0.lock();
        let Some(delay) = d.sync_delay else {
            // Synced at once: the live tables are the durable ones.
            d.live.apply(w);
            drop(d);
            let _ = done.send(Ok(()));
            return;
        };
        d.live.apply(w.clone());
        d.pending.push((w, done));
        if !d.sync_scheduled {
            d.sync_scheduled = true;
            let (disk, epoch) = (self.clone(), d.epoch);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                disk.sync(epoch);
            });
        }
    }

    /// Applies the pending writes to the durable tables and answers them.
    fn sync(&self, epoch: u64) {
        let answers = {
            let mut d = self.0.lock();
            if d.epoch != epoch {
                return;
            }
            d.sync_scheduled = false;
            let pending = std::mem::take(&mut d.pending);
            let mut answers = Vec::with_capacity(pending.len());
            for (w, done) in pending {
                d.durable.apply(w);
                answers.push(done);
            }
            answers
        };
        for done in answers {
            let _ = done.send(Ok(()));
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Tables {
    defs: BTreeMap<Arc<str>, Vec<u8>>,
    rows: BTreeMap<(Arc<str>, u64), Row>,
    dedup: BTreeMap<(Arc<str>, String), (u64, u64)>,
    next: BTreeMap<Arc<str>, u64>,
}

impl Tables {
    fn apply(&mut self, w: Write) {
        match w {
            Write::Define { queue, entry } => {
                self.defs.insert(queue, entry);
            }
            Write::Insert {
                queue,
                row,
                dedup,
                next_id,
            } => {
                if let Some((d, until)) = dedup {
                    self.dedup
                        .insert((queue.clone(), d), (row.message.id, until));
                }
                self.next.insert(queue.clone(), next_id);
                self.rows.insert((queue, row.message.id), *row);
            }
            Write::Update {
                queue,
                id,
                deliveries,
                receives,
                visible_at,
            } => {
                if let Some(r) = self.rows.get_mut(&(queue, id)) {
                    r.message.deliveries = deliveries;
                    r.message.receives = receives;
                    r.message.visible_at = visible_at;
                }
            }
            Write::Dead {
                queue,
                id,
                dead,
                visible_at,
            } => {
                if let Some(r) = self.rows.get_mut(&(queue, id)) {
                    r.message.dead = dead;
                    r.message.visible_at = visible_at;
                    if dead {
                        r.message.expires_at = None;
                    } else {
                        r.message.receives = 0;
                    }
                }
            }
            Write::Delete { queue, id } => {
                self.rows.remove(&(queue, id));
            }
            Write::Prune { queue, now } => {
                self.dedup
                    .retain(|(q, _), (_, until)| *q != queue || *until >= now);
            }
            Write::Drop { queue } => {
                self.rows.retain(|(q, _), _| *q != queue);
                self.dedup.retain(|(q, _), _| *q != queue);
                self.next.remove(&queue);
                self.defs.remove(&queue);
            }
            Write::Barrier => {}
        }
    }

    fn load(&self, queue: &str) -> Loaded {
        Loaded {
            rows: self
                .rows
                .iter()
                .filter(|((q, _), _)| &**q == queue)
                .map(|(_, r)| r.clone())
                .collect(),
            dedup: self
                .dedup
                .iter()
                .filter(|((q, _), _)| &**q == queue)
                .map(|((_, d), (id, until))| (d.clone(), *id, *until))
                .collect(),
            next_id: self.next.get(queue).copied().unwrap_or(1),
        }
    }

    fn defs(&self) -> Vec<Vec<u8>> {
        self.defs.values().cloned().collect()
    }
}

enum Job {
    Write(Write, oneshot::Sender<Result<(), StoreError>>),
    Load(String, oneshot::Sender<Result<Loaded, StoreError>>),
    Defs(oneshot::Sender<Result<Vec<Vec<u8>>, StoreError>>),
}

/// The store; clones share it.
#[derive(Clone)]
pub struct Store(Backend);

#[derive(Clone)]
enum Backend {
    Sqlite(mpsc::Sender<Job>),
    Memory(MemoryDisk),
}

impl Store {
    /// Memory mode on `disk`.
    pub fn memory(disk: MemoryDisk) -> Store {
        Store(Backend::Memory(disk))
    }

    /// Opens (creating) the queue file at `path`, with its writer thread.
    pub fn sqlite(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Sqlite(e.to_string()))?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Every commit fsyncs the WAL: an acknowledged send survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > QUEUE_FORMAT {
            return Err(StoreError::NewerFormat { found });
        }
        if found == 1 {
            conn.execute_batch("ALTER TABLE queue_messages ADD COLUMN to_consumer TEXT")?;
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(&format!("PRAGMA user_version = {QUEUE_FORMAT}"))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("mpreg-queues".to_owned())
            .spawn(move || writer(conn, queue))
            .map_err(|e| StoreError::Sqlite(e.to_string()))?;
        Ok(Store(Backend::Sqlite(jobs)))
    }

    /// Whether what is committed outlives the process.
    pub fn durable(&self) -> bool {
        matches!(self.0, Backend::Sqlite(_))
    }

    /// Hands `w` over; it is applied after every write handed over before it. Await the
    /// result for durability, or drop it.
    pub fn write(&self, w: Write) -> Committed {
        let (done, committed) = oneshot::channel();
        match &self.0 {
            Backend::Sqlite(jobs) => {
                if let Err(mpsc::SendError(Job::Write(_, done))) = jobs.send(Job::Write(w, done)) {
                    let _ = done.send(Err(StoreError::Closed));
                }
            }
            Backend::Memory(disk) => disk.write(w, done),
        }
        committed
    }

    /// What the store holds of `queue` (after every write handed over before).
    pub async fn load(&self, queue: &str) -> Result<Loaded, StoreError> {
        match &self.0 {
            Backend::Sqlite(jobs) => {
                let (done, result) = oneshot::channel();
                jobs.send(Job::Load(queue.to_owned(), done))
                    .map_err(|_| StoreError::Closed)?;
                result.await.map_err(|_| StoreError::Closed)?
            }
            Backend::Memory(disk) => Ok(disk.0.lock().live.load(queue)),
        }
    }

    /// The queues defined here ([`Write::Define`]), as written.
    pub async fn defs(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        match &self.0 {
            Backend::Sqlite(jobs) => {
                let (done, result) = oneshot::channel();
                jobs.send(Job::Defs(done)).map_err(|_| StoreError::Closed)?;
                result.await.map_err(|_| StoreError::Closed)?
            }
            Backend::Memory(disk) => Ok(disk.0.lock().live.defs()),
        }
    }
}

/// The writer thread: takes every job waiting (up to [`MAX_BATCH`]), runs them in one
/// transaction, commits (one fsync), then answers them all. Ends when every handle is gone.
fn writer(mut conn: Connection, jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(64);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit(&mut conn, &mut batch);
    }
}

/// Runs `batch` in one transaction and answers every job in it: writes with the commit's
/// outcome (all of them fail if any write or the commit does; none is then applied).
fn commit(conn: &mut Connection, batch: &mut Vec<Job>) {
    let tx = conn.transaction();
    let mut failed = tx.as_ref().err().map(|e| StoreError::Sqlite(e.to_string()));
    let mut answers = Vec::with_capacity(batch.len());
    // Each queue's next id, written once a batch (a send per message would double the
    // writer's statements): only the last one counts.
    let mut next = BTreeMap::new();
    for job in batch.drain(..) {
        let Ok(tx) = &tx else {
            answers.push(Answer::Failed(job));
            continue;
        };
        match job {
            Job::Write(w, done) => {
                if failed.is_none()
                    && let Err(e) = apply(tx, w, &mut next)
                {
                    failed = Some(StoreError::from(e));
                }
                answers.push(Answer::Write(done));
            }
            Job::Load(queue, done) => {
                let loaded = write_next(tx, &mut next).and_then(|()| load(tx, &queue));
                answers.push(Answer::Load(done, loaded));
            }
            Job::Defs(done) => answers.push(Answer::Defs(done, defs(tx))),
        }
    }
    if let (Ok(tx), None) = (tx, &failed) {
        failed = write_next(&tx, &mut next)
            .err()
            .or_else(|| tx.commit().err())
            .map(StoreError::from);
    }
    for answer in answers {
        match answer {
            Answer::Write(done) => {
                let _ = done.send(failed.clone().map_or(Ok(()), Err));
            }
            Answer::Load(done, r) => {
                let _ = done.send(r.map_err(StoreError::from));
            }
            Answer::Defs(done, r) => {
                let _ = done.send(r.map_err(StoreError::from));
            }
            Answer::Failed(job) => {
                let e = failed.clone().unwrap_or(StoreError::Closed);
                match job {
                    Job::Write(_, done) => drop(done.send(Err(e))),
                    Job::Load(_, done) => drop(done.send(Err(e))),
                    Job::Defs(done) => drop(done.send(Err(e))),
                }
            }
        }
    }
}

enum Answer {
    /// No transaction could be opened: answered with why.
    Failed(Job),
    Write(oneshot::Sender<Result<(), StoreError>>),
    Load(
        oneshot::Sender<Result<Loaded, StoreError>>,
        rusqlite::Result<Loaded>,
    ),
    Defs(
        oneshot::Sender<Result<Vec<Vec<u8>>, StoreError>>,
        rusqlite::Result<Vec<Vec<u8>>>,
    ),
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Writes the next ids gathered so far.
fn write_next(
    tx: &rusqlite::Transaction<'_>,
    next: &mut BTreeMap<Arc<str>, u64>,
) -> rusqlite::Result<()> {
    for (queue, next_id) in std::mem::take(next) {
        tx.prepare_cached("INSERT OR REPLACE INTO queue_next (queue, next_id) VALUES (?1, ?2)")?
            .execute(params![&*queue, int(next_id)])?;
    }
    Ok(())
}

/// Applies `w`; an insert's next id goes to `next`, written later in the batch.
fn apply(
    tx: &rusqlite::Transaction<'_>,
    w: Write,
    next: &mut BTreeMap<Arc<str>, u64>,
) -> rusqlite::Result<()> {
    match w {
        Write::Define { queue, entry } => {
            tx.prepare_cached("INSERT OR REPLACE INTO queue_defs (queue, entry) VALUES (?1, ?2)")?
                .execute(params![&*queue, entry])?;
        }
        Write::Insert {
            queue,
            row,
            dedup,
            next_id,
        } => {
            let m = &row.message;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO queue_messages (queue, id, payload, meta, priority, grp, \
                 fire_and_forget, deliveries, receives, expires_at, visible_at, dead, sent_ms, \
                 to_consumer) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                &*queue,
                int(m.id),
                &m.payload[..],
                m.meta.as_deref(),
                m.priority,
                m.group.as_deref(),
                m.fire_and_forget,
                m.deliveries,
                m.receives,
                m.expires_at.map(int),
                int(m.visible_at),
                m.dead,
                int(row.sent_ms),
                m.to.as_deref(),
            ])?;
            if let Some((d, until)) = dedup {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO queue_dedup (queue, dedup_id, id, until) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![&*queue, d, int(m.id), int(until)])?;
            }
            let n = next.entry(queue).or_insert(next_id);
            *n = (*n).max(next_id);
        }
        Write::Update {
            queue,
            id,
            deliveries,
            receives,
            visible_at,
        } => {
            tx.prepare_cached(
                "UPDATE queue_messages SET deliveries = ?3, receives = ?4, visible_at = ?5 \
                 WHERE queue = ?1 AND id = ?2",
            )?
            .execute(params![
                &*queue,
                int(id),
                deliveries,
                receives,
                int(visible_at)
            ])?;
        }
        Write::Dead {
            queue,
            id,
            dead,
            visible_at,
        } => {
            let sql = if dead {
                "UPDATE queue_messages SET dead = 1, expires_at = NULL, visible_at = ?3 \
                 WHERE queue = ?1 AND id = ?2"
            } else {
                "UPDATE queue_messages SET dead = 0, receives = 0, visible_at = ?3 \
                 WHERE queue = ?1 AND id = ?2"
            };
            tx.prepare_cached(sql)?
                .execute(params![&*queue, int(id), int(visible_at)])?;
        }
        Write::Delete { queue, id } => {
            tx.prepare_cached("DELETE FROM queue_messages WHERE queue = ?1 AND id = ?2")?
                .execute(params![&*queue, int(id)])?;
        }
        Write::Prune { queue, now } => {
            tx.prepare_cached("DELETE FROM queue_dedup WHERE queue = ?1 AND until < ?2")?
                .execute(params![&*queue, int(now)])?;
        }
        Write::Drop { queue } => {
            next.remove(&queue);
            for table in ["queue_messages", "queue_dedup", "queue_next", "queue_defs"] {
                tx.execute(&format!("DELETE FROM {table} WHERE queue = ?1"), [&*queue])?;
            }
        }
        Write::Barrier => {}
    }
    Ok(())
}

fn load(tx: &rusqlite::Transaction<'_>, queue: &str) -> rusqlite::Result<Loaded> {
    let rows = tx
        .prepare_cached(
            "SELECT id, payload, meta, priority, grp, fire_and_forget, deliveries, receives, \
             expires_at, visible_at, dead, sent_ms, to_consumer FROM queue_messages \
             WHERE queue = ?1 \
             ORDER BY id",
        )?
        .query_map([queue], |r| {
            let payload: Vec<u8> = r.get(1)?;
            let meta: Option<Vec<u8>> = r.get(2)?;
            Ok(Row {
                message: Stored {
                    id: uint(r.get(0)?),
                    payload: Arc::from(payload),
                    meta: meta.map(Arc::from),
                    priority: r.get(3)?,
                    group: r.get(4)?,
                    fire_and_forget: r.get(5)?,
                    deliveries: r.get(6)?,
                    receives: r.get(7)?,
                    expires_at: r.get::<_, Option<i64>>(8)?.map(uint),
                    visible_at: uint(r.get(9)?),
                    dead: r.get(10)?,
                    to: r.get::<_, Option<String>>(12)?.map(Arc::from),
                },
                sent_ms: uint(r.get(11)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<Row>>>()?;
    let dedup = tx
        .prepare_cached(
            "SELECT dedup_id, id, until FROM queue_dedup WHERE queue = ?1 ORDER BY dedup_id",
        )?
        .query_map([queue], |r| {
            Ok((r.get(0)?, uint(r.get(1)?), uint(r.get(2)?)))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next_id = tx
        .query_row(
            "SELECT next_id FROM queue_next WHERE queue = ?1",
            [queue],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map_or(1, uint);
    Ok(Loaded {
        rows,
        dedup,
        next_id,
    })
}

fn defs(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<Vec<Vec<u8>>> {
    tx.prepare_cached("SELECT entry FROM queue_defs ORDER BY queue")?
        .query_map([], |r| r.get(0))?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64) -> Box<Row> {
        Box::new(Row {
            message: Stored {
                id,
                payload: Arc::from(&b"\"x\""[..]),
                meta: None,
                priority: 0,
                group: Some("g".into()),
                fire_and_forget: false,
                deliveries: 0,
                receives: 0,
                expires_at: None,
                visible_at: 0,
                dead: false,
                to: (id == 3).then(|| Arc::from("c1")),
            },
            sent_ms: 5,
        })
    }

    /// The same writes give the same loaded state in both modes, and the SQLite file keeps
    /// it when opened again.
    async fn writes(store: &Store) {
        let q: Arc<str> = Arc::from("orders#1");
        let mut waits = Vec::new();
        for (key, entry) in [("orders#1", "orders"), ("other#9", "other")] {
            waits.push(store.write(Write::Define {
                queue: Arc::from(key),
                entry: entry.as_bytes().to_vec(),
            }));
        }
        for id in 1..=3 {
            waits.push(store.write(Write::Insert {
                queue: q.clone(),
                row: row(id),
                dedup: (id == 2).then(|| ("d2".to_owned(), 100)),
                next_id: id + 1,
            }));
        }
        waits.push(store.write(Write::Delete {
            queue: q.clone(),
            id: 1,
        }));
        waits.push(store.write(Write::Update {
            queue: q.clone(),
            id: 2,
            deliveries: 2,
            receives: 1,
            visible_at: 77,
        }));
        waits.push(store.write(Write::Dead {
            queue: q.clone(),
            id: 3,
            dead: true,
            visible_at: 0,
        }));
        waits.push(store.write(Write::Insert {
            queue: Arc::from("other#9"),
            row: row(1),
            dedup: None,
            next_id: 2,
        }));
        for w in waits {
            w.await.unwrap().unwrap();
        }
    }

    fn check(loaded: Loaded) {
        let ids: Vec<u64> = loaded.rows.iter().map(|r| r.message.id).collect();
        assert_eq!(ids, [2, 3]);
        let two = &loaded.rows[0].message;
        assert_eq!((two.deliveries, two.receives, two.visible_at), (2, 1, 77));
        assert!(loaded.rows[1].message.dead);
        assert_eq!(loaded.rows[1].message.to.as_deref(), Some("c1"));
        assert_eq!(loaded.rows[0].message.to, None);
        assert_eq!(loaded.dedup, [("d2".to_owned(), 2, 100)]);
        assert_eq!(loaded.next_id, 4);
    }

    /// A format-1 file (before messages were addressed) opens, gains the column, and keeps
    /// its rows.
    #[tokio::test]
    async fn a_format_1_file_gains_the_addressed_column() {
        let dir = std::env::temp_dir().join(format!("mpreg-qstore-v1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("queues.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE queue_messages (queue TEXT NOT NULL, id INTEGER NOT NULL, \
                 payload BLOB NOT NULL, meta BLOB, priority INTEGER NOT NULL, grp TEXT, \
                 fire_and_forget INTEGER NOT NULL, deliveries INTEGER NOT NULL, \
                 receives INTEGER NOT NULL, expires_at INTEGER, visible_at INTEGER NOT NULL, \
                 dead INTEGER NOT NULL, sent_ms INTEGER NOT NULL, PRIMARY KEY (queue, id)) \
                 WITHOUT ROWID;
                 INSERT INTO queue_messages VALUES ('q#1', 1, X'2278', NULL, 0, NULL, 0, 0, 0, \
                 NULL, 0, 0, 5);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let store = Store::sqlite(&path).unwrap();
        let loaded = store.load("q#1").await.unwrap();
        assert_eq!(loaded.rows.len(), 1);
        assert_eq!(loaded.rows[0].message.to, None);
        store
            .write(Write::Insert {
                queue: Arc::from("q#1"),
                row: row(3),
                dedup: None,
                next_id: 4,
            })
            .await
            .unwrap()
            .unwrap();
        let loaded = store.load("q#1").await.unwrap();
        assert_eq!(loaded.rows[1].message.to.as_deref(), Some("c1"));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The simulator's disk: an answered write survives a crash; one not yet synced is
    /// lost with its answer.
    #[tokio::test(start_paused = true)]
    async fn a_crash_loses_what_was_not_synced() {
        let disk = MemoryDisk::with_sync_delay(std::time::Duration::from_millis(2));
        let store = Store::memory(disk.clone());
        let insert = |id| Write::Insert {
            queue: Arc::from("q#1"),
            row: row(id),
            dedup: None,
            next_id: id + 1,
        };
        store.write(insert(1)).await.unwrap().unwrap();
        let lost = store.write(insert(2));
        assert_eq!(
            store.load("q#1").await.unwrap().rows.len(),
            2,
            "read as written"
        );
        disk.crash();
        assert!(lost.await.is_err(), "never answered");
        let loaded = store.load("q#1").await.unwrap();
        assert_eq!(loaded.rows.len(), 1);
        assert_eq!(loaded.next_id, 2);
        // Without a delay everything is synced at once: a crash loses nothing.
        let at_once = MemoryDisk::default();
        let kept = Store::memory(at_once.clone());
        kept.write(insert(1)).await.unwrap().unwrap();
        at_once.crash();
        assert_eq!(kept.load("q#1").await.unwrap().rows.len(), 1);
    }

    #[tokio::test]
    async fn both_modes_keep_what_was_committed() {
        let disk = MemoryDisk::default();
        let memory = Store::memory(disk.clone());
        writes(&memory).await;
        check(Store::memory(disk).load("orders#1").await.unwrap());

        let dir = std::env::temp_dir().join(format!("mpreg-qstore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("queues.sqlite");
        {
            let store = Store::sqlite(&path).unwrap();
            writes(&store).await;
            check(store.load("orders#1").await.unwrap());
        }
        let again = Store::sqlite(&path).unwrap();
        check(again.load("orders#1").await.unwrap());
        assert_eq!(
            again.defs().await.unwrap(),
            [b"orders".to_vec(), b"other".to_vec()]
        );
        again
            .write(Write::Prune {
                queue: Arc::from("orders#1"),
                now: 101,
            })
            .await
            .unwrap()
            .unwrap();
        again
            .write(Write::Drop {
                queue: Arc::from("other#9"),
            })
            .await
            .unwrap()
            .unwrap();
        assert!(again.load("orders#1").await.unwrap().dedup.is_empty());
        assert_eq!(again.defs().await.unwrap(), [b"orders".to_vec()]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
