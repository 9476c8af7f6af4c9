//! L2: entries in a SQLite file of their own (`cache.sqlite` in the data directory), which
//! survives restarts. Bounded in bytes: a put over the bound removes the least recently
//! used entries until it fits. Deadlines are wall-clock milliseconds (they must mean the
//! same after a restart), indexed, checked on read and swept on the node's tick.
//! Dependencies live in a table of their own, indexed by the key depended on, so a cascade
//! finds an entry's dependents without a scan. Patterns are SQLite `GLOB`s, with the same
//! meaning as `pattern.rs` gives them in memory (`*` and `?`), and a literal prefix uses
//! the key's index.
//!
//! These are plain functions over a connection: the service runs them on the database's
//! thread (`env::sqlite`), one at a time, so [`DiskState`] is only ever changed by one of
//! them at once.

use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, params};

use super::memory::LevelCounts;

/// The file's layout version (SQLite `user_version`); a newer one is refused.
pub const CACHE_FORMAT: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cache_entries (
    key TEXT PRIMARY KEY, namespace TEXT NOT NULL, value TEXT NOT NULL,
    tags TEXT NOT NULL, dependencies TEXT NOT NULL, created_ms INTEGER NOT NULL,
    expires_ms INTEGER, cost_ms REAL NOT NULL, size INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL, access_count INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cache_expiry ON cache_entries(expires_ms) WHERE expires_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS cache_lru ON cache_entries(last_used_ms);
CREATE INDEX IF NOT EXISTS cache_namespace ON cache_entries(namespace);
CREATE TABLE IF NOT EXISTS cache_deps (dep TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (dep, key)) WITHOUT ROWID;
";

/// Rows one eviction pass reads at a time.
const EVICT_BATCH: usize = 64;

/// An entry as the file holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskEntry {
    pub key: String,
    pub namespace: String,
    /// JSON text.
    pub value: String,
    pub tags: Vec<String>,
    pub dependencies: Vec<String>,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub cost_ms: f64,
    pub access_count: u64,
    pub last_used_ms: u64,
}

impl DiskEntry {
    /// Bytes charged for it: what its row holds.
    pub fn size(&self) -> u64 {
        let listed = |l: &[String]| l.iter().map(|s| s.len() as u64 + 3).sum::<u64>();
        (self.key.len() + self.namespace.len() + self.value.len()) as u64
            + listed(&self.tags)
            + listed(&self.dependencies) * 2
            + 64
    }
}

/// What the thread keeps beside the file: its bytes, bound and counters (read by metrics).
#[derive(Debug, Default)]
pub struct DiskState {
    pub bytes: AtomicU64,
    pub entries: AtomicU64,
    pub capacity: u64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    pub expirations: AtomicU64,
}

impl DiskState {
    pub fn new(capacity: u64) -> DiskState {
        DiskState {
            capacity,
            ..DiskState::default()
        }
    }

    pub fn counts(&self) -> LevelCounts {
        LevelCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
        }
    }

    fn add(&self, size: u64) {
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.entries.fetch_add(1, Ordering::Relaxed);
    }

    fn sub(&self, size: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(size))
            });
        let _ = self
            .entries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DiskError {
    #[error("cache file: {0}")]
    Sqlite(String),
    #[error(
        "the cache file was written by a newer mpreg (format {found}; this build reads up to \
         {CACHE_FORMAT}): run that build, or delete cache.sqlite (it holds only a cache)"
    )]
    NewerFormat { found: i64 },
}

impl From<rusqlite::Error> for DiskError {
    fn from(e: rusqlite::Error) -> DiskError {
        DiskError::Sqlite(e.to_string())
    }
}

/// Creates the tables and reads the bytes and entries the file holds into `state`.
pub fn open(conn: &Connection, state: &DiskState) -> Result<(), DiskError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > CACHE_FORMAT {
        return Err(DiskError::NewerFormat { found });
    }
    conn.execute_batch(SCHEMA)?;
    conn.pragma_update(None, "user_version", CACHE_FORMAT)?;
    let (bytes, entries): (i64, i64) = conn.query_row(
        "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM cache_entries",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    state
        .bytes
        .store(u64::try_from(bytes).unwrap_or(0), Ordering::Relaxed);
    state
        .entries
        .store(u64::try_from(entries).unwrap_or(0), Ordering::Relaxed);
    Ok(())
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn list_text(l: &[String]) -> String {
    serde_json::to_string(l).unwrap_or_else(|_| "[]".to_owned())
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DiskEntry> {
    let tags: String = r.get(3)?;
    let deps: String = r.get(4)?;
    Ok(DiskEntry {
        key: r.get(0)?,
        namespace: r.get(1)?,
        value: r.get(2)?,
        tags: list(&tags),
        dependencies: list(&deps),
        created_ms: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
        expires_ms: r
            .get::<_, Option<i64>>(6)?
            .map(|t| u64::try_from(t).unwrap_or(0)),
        cost_ms: r.get(7)?,
        access_count: u64::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
        last_used_ms: u64::try_from(r.get::<_, i64>(9)?).unwrap_or(0),
    })
}

const COLUMNS: &str = "key, namespace, value, tags, dependencies, created_ms, expires_ms, \
                       cost_ms, access_count, last_used_ms";

/// The live entry under `key` (its use recorded); an expired one is removed.
pub fn get(
    conn: &Connection,
    state: &DiskState,
    key: &str,
    now_ms: u64,
) -> Result<Option<DiskEntry>, DiskError> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM cache_entries WHERE key = ?1"
        ))?
        .query_row([key], read_row)
        .optional()?;
    match row {
        None => {
            state.misses.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        }
        Some(e) if e.expires_ms.is_some_and(|t| t <= now_ms) => {
            remove(conn, state, key)?;
            state.expirations.fetch_add(1, Ordering::Relaxed);
            state.misses.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        }
        Some(mut e) => {
            state.hits.fetch_add(1, Ordering::Relaxed);
            e.access_count += 1;
            e.last_used_ms = now_ms;
            conn.prepare_cached(
                "UPDATE cache_entries SET access_count = ?2, last_used_ms = ?3 WHERE key = ?1",
            )?
            .execute(params![key, as_i64(e.access_count), as_i64(now_ms)])?;
            Ok(Some(e))
        }
    }
}

/// Stores `e` (replacing an entry under its key), then evicts the least recently used
/// entries while the file holds more than its bound. Returns the keys evicted; an entry
/// larger than the whole bound is not stored (and reported evicted).
pub fn put(conn: &Connection, state: &DiskState, e: &DiskEntry) -> Result<Vec<String>, DiskError> {
    remove(conn, state, &e.key)?;
    let size = e.size();
    if size > state.capacity {
        state.evictions.fetch_add(1, Ordering::Relaxed);
        return Ok(vec![e.key.clone()]);
    }
    let tx = conn.unchecked_transaction()?;
    tx.prepare_cached(&format!(
        "INSERT INTO cache_entries ({COLUMNS}, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?
    .execute(params![
        e.key,
        e.namespace,
        e.value,
        list_text(&e.tags),
        list_text(&e.dependencies),
        as_i64(e.created_ms),
        e.expires_ms.map(as_i64),
        e.cost_ms,
        as_i64(e.access_count),
        as_i64(e.last_used_ms),
        as_i64(size),
    ])?;
    for dep in &e.dependencies {
        tx.prepare_cached("INSERT OR IGNORE INTO cache_deps (dep, key) VALUES (?1, ?2)")?
            .execute(params![dep, e.key])?;
    }
    tx.commit()?;
    state.add(size);
    evict(conn, state)
}

/// Removes least recently used entries until the bytes are within the bound.
fn evict(conn: &Connection, state: &DiskState) -> Result<Vec<String>, DiskError> {
    let mut gone = Vec::new();
    while state.bytes.load(Ordering::Relaxed) > state.capacity {
        let victims: Vec<String> = conn
            .prepare_cached("SELECT key FROM cache_entries ORDER BY last_used_ms LIMIT ?1")?
            .query_map([EVICT_BATCH as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if victims.is_empty() {
            break;
        }
        for k in victims {
            if state.bytes.load(Ordering::Relaxed) <= state.capacity {
                break;
            }
            if remove(conn, state, &k)? {
                state.evictions.fetch_add(1, Ordering::Relaxed);
                gone.push(k);
            }
        }
    }
    Ok(gone)
}

/// Removes `key`; whether it was there.
pub fn remove(conn: &Connection, state: &DiskState, key: &str) -> Result<bool, DiskError> {
    let size: Option<i64> = conn
        .prepare_cached("DELETE FROM cache_entries WHERE key = ?1 RETURNING size")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    let Some(size) = size else {
        return Ok(false);
    };
    conn.prepare_cached("DELETE FROM cache_deps WHERE key = ?1")?
        .execute([key])?;
    state.sub(u64::try_from(size).unwrap_or(0));
    Ok(true)
}

/// Keys whose entries depend on `key`.
pub fn dependents(conn: &Connection, key: &str) -> Result<Vec<String>, DiskError> {
    Ok(conn
        .prepare_cached("SELECT key FROM cache_deps WHERE dep = ?1")?
        .query_map([key], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Keys matching `glob` (SQLite GLOB), optionally only in `namespace`, at most `limit`,
/// in key order.
pub fn keys_matching(
    conn: &Connection,
    namespace: Option<&str>,
    glob: &str,
    limit: usize,
) -> Result<Vec<String>, DiskError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let keys = match namespace {
        Some(ns) => conn
            .prepare_cached(
                "SELECT key FROM cache_entries WHERE namespace = ?1 AND key GLOB ?2 \
                 ORDER BY key LIMIT ?3",
            )?
            .query_map(params![ns, glob, limit], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
        None => conn
            .prepare_cached(
                "SELECT key FROM cache_entries WHERE key GLOB ?1 ORDER BY key LIMIT ?2",
            )?
            .query_map(params![glob, limit], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
    };
    Ok(keys)
}

/// Entries and bytes held in `namespace`.
pub fn namespace_size(conn: &Connection, namespace: &str) -> Result<(u64, u64), DiskError> {
    let (n, bytes): (i64, i64) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM cache_entries WHERE namespace = ?1",
        )?
        .query_row([namespace], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((
        u64::try_from(n).unwrap_or(0),
        u64::try_from(bytes).unwrap_or(0),
    ))
}

/// Removes up to `limit` entries whose deadline is at or before `now_ms`; returns their keys.
pub fn expire(
    conn: &Connection,
    state: &DiskState,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<String>, DiskError> {
    let due: Vec<String> = conn
        .prepare_cached(
            "SELECT key FROM cache_entries WHERE expires_ms IS NOT NULL AND expires_ms <= ?1 \
             ORDER BY expires_ms LIMIT ?2",
        )?
        .query_map(
            params![as_i64(now_ms), i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    for k in &due {
        if remove(conn, state, k)? {
            state.expirations.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(due)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str, expires: Option<u64>, used: u64) -> DiskEntry {
        DiskEntry {
            key: key.to_owned(),
            namespace: key.split(':').next().unwrap_or_default().to_owned(),
            value: value.to_owned(),
            tags: vec![],
            dependencies: vec![],
            created_ms: 0,
            expires_ms: expires,
            cost_ms: 0.0,
            access_count: 0,
            last_used_ms: used,
        }
    }

    fn db(capacity: u64) -> (Connection, DiskState) {
        let conn = Connection::open_in_memory().unwrap();
        let state = DiskState::new(capacity);
        open(&conn, &state).unwrap();
        (conn, state)
    }

    #[test]
    fn the_bound_evicts_the_least_recently_used() {
        let (conn, state) = db(1000);
        for i in 0..20 {
            put(
                &conn,
                &state,
                &entry(&format!("a:{i:02}:v1"), &"x".repeat(50), None, i),
            )
            .unwrap();
            assert!(state.bytes.load(Ordering::Relaxed) <= 1000);
        }
        // The oldest went first; the newest is there.
        assert!(get(&conn, &state, "a:00:v1", 100).unwrap().is_none());
        assert!(get(&conn, &state, "a:19:v1", 100).unwrap().is_some());
        assert!(state.counts().evictions > 0);
    }

    #[test]
    fn expiry_on_read_and_sweep_and_a_reopen_keeps_the_tally() {
        let (conn, state) = db(1 << 20);
        put(&conn, &state, &entry("a:x:v1", "1", Some(50), 0)).unwrap();
        put(&conn, &state, &entry("a:y:v1", "2", Some(80), 0)).unwrap();
        put(&conn, &state, &entry("a:z:v1", "3", None, 0)).unwrap();
        assert!(get(&conn, &state, "a:x:v1", 60).unwrap().is_none());
        assert_eq!(expire(&conn, &state, 100, 10).unwrap(), vec!["a:y:v1"]);
        let again = DiskState::new(1 << 20);
        open(&conn, &again).unwrap();
        assert_eq!(again.entries.load(Ordering::Relaxed), 1);
        assert_eq!(
            again.bytes.load(Ordering::Relaxed),
            state.bytes.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn dependencies_and_globs() {
        let (conn, state) = db(1 << 20);
        let mut child = entry("b:child:v1", "1", None, 0);
        child.dependencies = vec!["a:parent:v1".to_owned()];
        put(&conn, &state, &child).unwrap();
        put(&conn, &state, &entry("a:parent:v1", "1", None, 0)).unwrap();
        assert_eq!(
            dependents(&conn, "a:parent:v1").unwrap(),
            vec!["b:child:v1"]
        );
        assert_eq!(
            keys_matching(&conn, None, "a:*", 10).unwrap(),
            vec!["a:parent:v1"]
        );
        assert_eq!(keys_matching(&conn, Some("b"), "*", 10).unwrap().len(), 1);
        remove(&conn, &state, "b:child:v1").unwrap();
        assert!(dependents(&conn, "a:parent:v1").unwrap().is_empty());
    }
}
