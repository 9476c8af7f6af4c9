//! The cache at the IO edge: L1 in memory under a lock held only between awaits, L2 on the
//! database's thread (`env::sqlite`), and each `cache-request` answered from them. A get
//! asks the levels it names in order and copies an L2 hit into L1; a put writes each level
//! it names; a delete or an invalidation removes the keys from every level and then the
//! entries that depend on them, transitively (bounded by `MAX_CASCADE`).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::Value;

use super::disk::{self, DiskEntry, DiskState};
use super::figures::Counters;
use super::key::CacheKey;
use super::memory::{Entry, Memory};
use super::ops::{self, Applied};
use super::pattern::Pattern;
use super::request::{
    AtomicOperation, CacheRequest, EntryView, Level, NamespaceOperation, Operation, Outcome,
    SERVED_LEVELS, Status, StructureOperation,
};
use crate::env::Clock;
use crate::env::sqlite::{DbError, Durability, SqliteDb};

/// Keys one delete or invalidation removes at most, cascade included; more is refused
/// (the request says so) rather than holding the level's lock without bound.
pub const MAX_CASCADE: usize = 100_000;
/// Most dependencies one entry names.
pub const MAX_DEPENDENCIES: usize = 32;
/// Most tags one key carries.
pub const MAX_TAGS: usize = 32;
/// Longest time-to-live: ten years, in seconds.
const MAX_TTL_SECONDS: f64 = 315_360_000.0;
/// Entries one expiry sweep removes per level (the rest wait for the next tick).
const SWEEP_LIMIT: usize = 10_000;

/// Levels a request is served from (a bit each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LevelSet(u8);

impl LevelSet {
    const L1_ONLY: LevelSet = LevelSet(1);

    fn bit(l: Level) -> u8 {
        match l {
            Level::L1 => 1,
            Level::L2 => 2,
            Level::L3 => 4,
            Level::L4 => 8,
        }
    }

    fn contains(self, l: &Level) -> bool {
        self.0 & LevelSet::bit(*l) != 0
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The cache's bounds, from the node's settings (`cache_*`, `persistent_cache_size_mb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// L1's bytes (`cache_capacity_mb`).
    pub memory_bytes: u64,
    /// L2's bytes (`persistent_cache_size_mb`).
    pub disk_bytes: u64,
    pub max_value_bytes: usize,
    pub max_key_bytes: usize,
    /// Keys one `query` or `list_keys` returns at most.
    pub max_list_entries: usize,
    pub patterns: super::pattern::PatternLimits,
}

impl CacheLimits {
    pub fn from_settings(s: &crate::config::Settings) -> CacheLimits {
        CacheLimits {
            memory_bytes: s.cache_capacity_mb.saturating_mul(1 << 20),
            disk_bytes: s.persistent_cache_size_mb.saturating_mul(1 << 20),
            max_value_bytes: s.cache_max_value_bytes,
            max_key_bytes: s.cache_max_key_bytes,
            max_list_entries: s.cache_max_list_entries,
            patterns: super::pattern::PatternLimits {
                max_bytes: s.cache_max_pattern_bytes,
                max_wildcards: s.cache_max_pattern_wildcards,
            },
        }
    }
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            memory_bytes: 512 << 20,
            disk_bytes: 1000 << 20,
            max_value_bytes: 1 << 20,
            max_key_bytes: 1024,
            max_list_entries: 1000,
            patterns: super::pattern::PatternLimits::default(),
        }
    }
}

/// L2: the file's database thread and what it tallies.
struct Disk {
    db: SqliteDb,
    state: Arc<DiskState>,
}

/// A node's cache.
pub struct CacheService {
    memory: Mutex<Memory>,
    disk: Option<Disk>,
    /// Atomic and structure operations run one at a time (their read and write may
    /// straddle an await on L2).
    atomics: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
    limits: CacheLimits,
    /// `operation_id`s: this service's prefix and a count.
    id_prefix: String,
    next_id: AtomicU64,
    pub(crate) counters: Counters,
    /// Cacheable calls running, and identical calls waiting for them (`results.rs`).
    pub(crate) flights: Flights,
}

/// Result-cache calls under way.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    pub(crate) running: AtomicU64,
    pub(crate) waiting: AtomicU64,
}

/// Why the cache could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cache file: {0}")]
    Db(#[from] DbError),
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
}

impl CacheService {
    /// A cache with L1 only (memory persistence mode); `seed` seeds L1's hasher (the
    /// node's RNG).
    pub fn in_memory(
        limits: CacheLimits,
        clock: Arc<dyn Clock>,
        id_prefix: String,
        seed: u64,
    ) -> Self {
        CacheService {
            memory: Mutex::new(Memory::new(limits.memory_bytes, seed)),
            disk: None,
            atomics: tokio::sync::Mutex::new(()),
            clock,
            limits,
            id_prefix,
            next_id: AtomicU64::new(0),
            counters: Counters::default(),
            flights: Flights::default(),
        }
    }

    /// A cache with L2 in the SQLite file at `path` (created if needed).
    pub async fn open(
        path: &std::path::Path,
        limits: CacheLimits,
        clock: Arc<dyn Clock>,
        id_prefix: String,
        seed: u64,
    ) -> Result<CacheService, OpenError> {
        // A cache need not survive power loss: commits sync at checkpoints only.
        let db = SqliteDb::open(path, Durability::Normal)?;
        let state = Arc::new(DiskState::new(limits.disk_bytes));
        let s = state.clone();
        db.call(move |conn| Ok(disk::open(conn, &s))).await??;
        Ok(CacheService {
            disk: Some(Disk { db, state }),
            ..CacheService::in_memory(limits, clock, id_prefix, seed)
        })
    }

    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    /// Whether L2 is there.
    pub fn has_disk(&self) -> bool {
        self.disk.is_some()
    }

    fn now_ms(&self) -> u64 {
        self.clock.wall_ms()
    }

    /// Answers one `cache-request` with the `cache-response` text.
    pub async fn handle(&self, req: CacheRequest) -> String {
        let started = self.clock.now();
        let outcome = self.outcome(&req).await;
        self.counters.record(req.operation, outcome.status);
        let took = self.clock.now().saturating_duration_since(started);
        self.response(
            &req.u,
            &req.key,
            Some(took.as_secs_f64() * 1000.0),
            &outcome,
        )
    }

    /// Answers `req` at once when it needs no await: a get or put that asks L1 alone (the
    /// common request, kept off the general path's large future); `None` otherwise.
    pub fn answer_now(&self, req: &CacheRequest) -> Option<String> {
        if !matches!(req.operation, Operation::Get | Operation::Put) {
            return None;
        }
        let (levels, unserved) = self.levels(&req.options.cache_levels);
        if levels != LevelSet::L1_ONLY {
            return None;
        }
        // Timed only when the answer shows it (with its metadata).
        let started = req.options.include_metadata.then(|| self.clock.now());
        let mut outcome = match self.check(req, levels) {
            Err(why) => Outcome::error(why),
            Ok(()) if req.operation == Operation::Get => {
                self.get_memory(&req.key, req.options.include_metadata)
            }
            Ok(()) => match self.put_entry(req) {
                Err(why) => Outcome::error(why),
                Ok(entry) => self.put_memory(&req.key, entry, req.options.include_metadata),
            },
        };
        outcome.unserved = unserved;
        self.counters.record(req.operation, outcome.status);
        // Without metadata, the key and value alone: no performance figures either.
        let lookup_ms = started.map(|s| {
            let took = self.clock.now().saturating_duration_since(s);
            took.as_secs_f64() * 1000.0
        });
        Some(self.response(&req.u, &req.key, lookup_ms, &outcome))
    }

    /// L1's answer to a get: a hit, or a miss.
    fn get_memory(&self, key: &CacheKey, metadata: bool) -> Outcome {
        let text = key.text();
        let now = self.now_ms();
        match self
            .memory
            .lock()
            .get_with(&text, now, |e| view(&text, e, metadata))
        {
            Some(v) => Outcome::hit(Level::L1, v),
            None => Outcome::status(Status::Miss),
        }
    }

    /// Stores `entry` in L1.
    fn put_memory(&self, key: &CacheKey, entry: Entry, metadata: bool) -> Outcome {
        let text = key.text();
        let v = view(&text, &entry, metadata);
        self.memory.lock().put(Arc::from(text.as_str()), entry);
        Outcome::hit(Level::L1, v)
    }

    /// The entry a put stores, within bounds.
    fn put_entry(&self, req: &CacheRequest) -> Result<Entry, String> {
        let Some(value) = &req.value else {
            return Err("`put` needs a `value` (JSON; null is not stored)".to_owned());
        };
        self.entry(req, Arc::from(value.get()), self.now_ms())
    }

    /// The `cache-response` refusing a request that could not be read or may not run.
    pub fn refusal(&self, u: &str, why: String) -> String {
        self.response(u, &CacheKey::default(), Some(0.0), &Outcome::error(why))
    }

    fn response(
        &self,
        u: &str,
        key: &CacheKey,
        lookup_ms: Option<f64>,
        outcome: &Outcome,
    ) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = super::request::OperationId(&self.id_prefix, Some(n));
        let now = self.now_ms() as f64 / 1000.0;
        super::request::response_text(u, key, id, now, lookup_ms, outcome)
    }

    /// What `req` does.
    pub async fn outcome(&self, req: &CacheRequest) -> Outcome {
        let (levels, unserved) = self.levels(&req.options.cache_levels);
        let mut outcome = match self.check(req, levels) {
            Err(why) => Outcome::error(why),
            Ok(()) => match req.operation {
                Operation::Get => {
                    self.get(&req.key, levels, req.options.include_metadata)
                        .await
                }
                Operation::Put => self.put(req, levels).await,
                Operation::Delete => self.delete(&req.key).await,
                Operation::Invalidate => self.invalidate(req).await,
                Operation::Query => self.query(req).await,
                Operation::Stats => self.stats(),
                Operation::Atomic => match &req.atomic_operation {
                    Some(op) => self.atomic(req, op, levels).await,
                    None => Outcome::error("an `atomic` request needs `atomic_operation`"),
                },
                Operation::Structure => match &req.structure_operation {
                    Some(op) => self.structure(req, op, levels).await,
                    None => Outcome::error("a `structure` request needs `structure_operation`"),
                },
                Operation::Namespace => match &req.namespace_operation {
                    Some(op) => self.namespace(req, op).await,
                    None => Outcome::error("a `namespace` request needs `namespace_operation`"),
                },
            },
        };
        outcome.unserved = unserved;
        outcome
    }

    /// The levels of `asked` this node serves, and those it does not (no allocation
    /// unless some are not served).
    fn levels(&self, asked: &[Level]) -> (LevelSet, Vec<Level>) {
        let mut served = LevelSet(0);
        let mut unserved = Vec::new();
        for &l in asked {
            if SERVED_LEVELS.contains(&l) && (l != Level::L2 || self.disk.is_some()) {
                served.0 |= LevelSet::bit(l);
            } else if !unserved.contains(&l) {
                unserved.push(l);
            }
        }
        unserved.sort();
        (served, unserved)
    }

    /// The request's key and levels within bounds.
    fn check(&self, req: &CacheRequest, levels: LevelSet) -> Result<(), String> {
        let keyed = !matches!(
            req.operation,
            Operation::Stats | Operation::Invalidate | Operation::Query | Operation::Namespace
        );
        if keyed && levels.is_empty() {
            return Err(format!(
                "none of the levels asked for ({}) is served here: L1 is memory, L2 the \
                 node's SQLite file (persistence mode sqlite); L3 (cluster) and L4 \
                 (federated) are not served yet",
                req.options
                    .cache_levels
                    .iter()
                    .map(|l| l.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let key = &req.key;
        if key.namespace.is_empty() || key.namespace.contains(':') {
            return Err("a key's namespace must be non-empty and hold no `:`".to_owned());
        }
        if key.version.contains(':') {
            return Err("a key's version must hold no `:`".to_owned());
        }
        if keyed && key.identifier.is_empty() {
            return Err(format!(
                "`{}` needs a key with an identifier",
                operation_name(req.operation)
            ));
        }
        // The text form's length, without making it.
        let text = key.namespace.len() + key.identifier.len() + key.version.len() + 2;
        if text > self.limits.max_key_bytes {
            return Err(format!(
                "the key is {text} bytes; at most {} (cache_max_key_bytes)",
                self.limits.max_key_bytes
            ));
        }
        if key.tags.len() > MAX_TAGS {
            return Err(format!("a key carries at most {MAX_TAGS} tags"));
        }
        Ok(())
    }

    /// The entry under `key`, from the first level of `levels` that has it.
    async fn get(&self, key: &CacheKey, levels: LevelSet, metadata: bool) -> Outcome {
        if levels.contains(&Level::L1) {
            let found = self.get_memory(key, metadata);
            if found.status == Status::Hit || !levels.contains(&Level::L2) {
                return found;
            }
        } else if !levels.contains(&Level::L2) {
            return Outcome::status(Status::Miss);
        }
        let text = key.text();
        let now = self.now_ms();
        match self.disk_get(&text, now).await {
            Err(why) => Outcome::error(why),
            Ok(None) => Outcome::status(Status::Miss),
            Ok(Some(found)) => {
                let entry = from_disk(&found);
                let v = view(&text, &entry, metadata);
                if levels.contains(&Level::L1) {
                    self.memory.lock().put(Arc::from(text.as_str()), entry);
                }
                Outcome::hit(Level::L2, v)
            }
        }
    }

    async fn put(&self, req: &CacheRequest, levels: LevelSet) -> Outcome {
        match self.put_entry(req) {
            Err(why) => Outcome::error(why),
            Ok(entry) => {
                let metadata = req.options.include_metadata;
                self.store(&req.key, entry, levels, metadata).await
            }
        }
    }

    /// Builds the entry a put of `value` stores, within bounds.
    fn entry(&self, req: &CacheRequest, value: Arc<str>, now: u64) -> Result<Entry, String> {
        if value.len() > self.limits.max_value_bytes {
            return Err(format!(
                "the value is {} bytes; at most {} (cache_max_value_bytes)",
                value.len(),
                self.limits.max_value_bytes
            ));
        }
        let m = &req.metadata;
        if m.dependencies.len() > MAX_DEPENDENCIES {
            return Err(format!(
                "an entry names at most {MAX_DEPENDENCIES} dependencies"
            ));
        }
        let deps: Vec<String> = m.dependencies.iter().map(|d| d.text()).collect();
        if let Some(long) = deps.iter().find(|d| d.len() > self.limits.max_key_bytes) {
            return Err(format!(
                "a dependency's key is {} bytes; at most {}",
                long.len(),
                self.limits.max_key_bytes
            ));
        }
        let expires = ttl_deadline(m.ttl_seconds, now)?;
        let mut entry = Entry::new(value, now, expires);
        entry.tags = req.key.tags.clone().into();
        entry.dependencies = deps.into();
        entry.computation_cost_ms = m
            .computation_cost_ms
            .filter(|c| c.is_finite())
            .unwrap_or(0.0);
        Ok(entry)
    }

    /// Writes `entry` under `key` to each of `levels`.
    async fn store(
        &self,
        key: &CacheKey,
        entry: Entry,
        levels: LevelSet,
        metadata: bool,
    ) -> Outcome {
        let text = key.text();
        let v = view(&text, &entry, metadata);
        if levels.contains(&Level::L2) {
            let row = to_disk(key, &text, &entry);
            if let Err(why) = self.disk_call(move |c, s| disk::put(c, s, &row)).await {
                return Outcome::error(why);
            }
        }
        let mut level = Level::L2;
        if levels.contains(&Level::L1) {
            self.memory.lock().put(Arc::from(text.as_str()), entry);
            level = Level::L1;
        }
        Outcome::hit(level, v)
    }

    async fn delete(&self, key: &CacheKey) -> Outcome {
        match self.remove_cascade(vec![key.text()]).await {
            Err(why) => Outcome::error(why),
            Ok((0, _)) => Outcome::status(Status::Miss),
            Ok((n, truncated)) => counted(n, truncated),
        }
    }

    /// Removes `keys` from every level, and then whatever depends on them; how many
    /// entries went, and whether the cascade stopped at its bound.
    async fn remove_cascade(&self, keys: Vec<String>) -> Result<(usize, bool), String> {
        let mut queue: VecDeque<String> = keys.into();
        let mut seen: BTreeSet<String> = queue.iter().cloned().collect();
        let mut removed = 0;
        while let Some(k) = queue.pop_front() {
            let (in_memory, mut next) = {
                let mut m = self.memory.lock();
                let gone = m.remove(&k).is_some();
                (gone, m.dependents(&k))
            };
            let mut on_disk = false;
            if self.disk.is_some() {
                let key = k.clone();
                let (gone, deps) = self
                    .disk_call(move |c, s| {
                        Ok((disk::remove(c, s, &key)?, disk::dependents(c, &key)?))
                    })
                    .await?;
                on_disk = gone;
                next.extend(deps.into_iter().map(|d| Arc::from(d.as_str())));
            }
            removed += usize::from(in_memory || on_disk);
            for d in next {
                if seen.len() >= MAX_CASCADE {
                    return Ok((removed, true));
                }
                if seen.insert(d.to_string()) {
                    queue.push_back(d.to_string());
                }
            }
        }
        Ok((removed, false))
    }

    async fn invalidate(&self, req: &CacheRequest) -> Outcome {
        let pattern = match &req.invalidation_pattern {
            None => return self.delete(&req.key).await,
            Some(p) => match Pattern::parse(p, self.limits.patterns) {
                Ok(p) => p,
                Err(e) => return Outcome::error(e.to_string()),
            },
        };
        match self.matching(None, &pattern, MAX_CASCADE).await {
            Err(why) => Outcome::error(why),
            Ok((keys, truncated)) => match self.remove_cascade(keys).await {
                Err(why) => Outcome::error(why),
                Ok((n, more)) => counted(n, truncated || more),
            },
        }
    }

    /// Keys at every level matching `pattern` (in `namespace`, when given), in order, at
    /// most `limit`; and whether there were more.
    async fn matching(
        &self,
        namespace: Option<&str>,
        pattern: &Pattern,
        limit: usize,
    ) -> Result<(Vec<String>, bool), String> {
        let now = self.now_ms();
        let mut keys: BTreeSet<String> = {
            let m = self.memory.lock();
            m.keys()
                .filter(|k| m.peek(k, now).is_some())
                .filter(|k| {
                    let ns = k.split(':').next().unwrap_or_default();
                    namespace.is_none_or(|n| n == ns) && pattern.matches(k, ns)
                })
                .map(|k| k.to_string())
                .collect()
        };
        if self.disk.is_some() {
            let (ns, glob, by_ns) = (
                namespace.map(str::to_owned),
                pattern.glob().to_owned(),
                pattern.namespace().map(str::to_owned),
            );
            let found = self
                .disk_call(move |c, _| {
                    let mut found = disk::keys_matching(c, ns.as_deref(), &glob, limit + 1)?;
                    if let Some(n) = by_ns.filter(|n| ns.as_deref().is_none_or(|x| x == n)) {
                        found.extend(disk::keys_matching(c, Some(&n), "*", limit + 1)?);
                    }
                    Ok(found)
                })
                .await?;
            keys.extend(found);
        }
        let truncated = keys.len() > limit;
        Ok((keys.into_iter().take(limit).collect(), truncated))
    }

    async fn query(&self, req: &CacheRequest) -> Outcome {
        let text = req.invalidation_pattern.as_deref().unwrap_or("*");
        let pattern = match Pattern::parse(text, self.limits.patterns) {
            Ok(p) => p,
            Err(e) => return Outcome::error(e.to_string()),
        };
        let ns = req.key.namespace.clone();
        self.list(&ns, &pattern, self.limits.max_list_entries).await
    }

    async fn list(&self, ns: &str, pattern: &Pattern, limit: usize) -> Outcome {
        match self.matching(Some(ns), pattern, limit).await {
            Err(why) => Outcome::error(why),
            Ok((keys, truncated)) => {
                answer(serde_json::json!({"namespace": ns, "keys": keys, "truncated": truncated}))
            }
        }
    }

    fn stats(&self) -> Outcome {
        answer(self.snapshot().to_json())
    }

    /// The figures of both levels (`stats`, `/metrics`, `/metrics/cache`).
    pub fn snapshot(&self) -> super::figures::Snapshot {
        let m = self.memory.lock();
        super::figures::Snapshot {
            memory: super::figures::LevelFigures {
                entries: m.len() as u64,
                bytes: m.bytes(),
                capacity_bytes: m.capacity(),
                counts: m.counts(),
            },
            disk: self.disk.as_ref().map(|d| super::figures::LevelFigures {
                entries: d.state.entries.load(Ordering::Relaxed),
                bytes: d.state.bytes.load(Ordering::Relaxed),
                capacity_bytes: d.state.capacity,
                counts: d.state.counts(),
            }),
            operations: self.counters.snapshot(),
            results_running: self.flights.running.load(Ordering::Relaxed),
            results_waiting: self.flights.waiting.load(Ordering::Relaxed),
        }
    }

    /// The current value under `key` at the first of `levels` holding it.
    async fn current(&self, key: &CacheKey, levels: LevelSet) -> Result<Option<Entry>, String> {
        let text = key.text();
        let now = self.now_ms();
        if levels.contains(&Level::L1)
            && let Some(e) = self.memory.lock().peek(&text, now).map(Entry::copy)
        {
            return Ok(Some(e));
        }
        if !levels.contains(&Level::L2) {
            return Ok(None);
        }
        Ok(self.disk_get(&text, now).await?.map(|d| from_disk(&d)))
    }

    /// The entry under `key` and its value read as JSON.
    async fn current_value(
        &self,
        key: &CacheKey,
        levels: LevelSet,
    ) -> Result<(Option<Entry>, Option<Value>), String> {
        let current = self.current(key, levels).await?;
        let value = current.as_ref().map(|e| parse(&e.value)).transpose()?;
        Ok((current, value))
    }

    async fn atomic(&self, req: &CacheRequest, op: &AtomicOperation, levels: LevelSet) -> Outcome {
        let _one = self.atomics.lock().await;
        let (current, value) = match self.current_value(&req.key, levels).await {
            Ok(c) => c,
            Err(why) => return Outcome::error(why),
        };
        let applied = match ops::atomic(op, value.as_ref()) {
            Ok(a) => a,
            Err(why) => return Outcome::error(why),
        };
        let applied = match applied {
            Applied::ExtendTtl(seconds) => {
                let Some(mut e) = current else {
                    return Outcome::status(Status::Miss);
                };
                let from = e.expires_ms.unwrap_or_else(|| self.now_ms());
                e.expires_ms = Some(from.saturating_add((seconds * 1000.0) as u64));
                return self.store(&req.key, e, levels, true).await;
            }
            other => other,
        };
        // A new entry takes the request's metadata; an existing one keeps its own.
        let ttl = op.ttl_seconds.or(req.metadata.ttl_seconds);
        self.apply(req, applied, current, ttl, levels).await
    }

    async fn structure(
        &self,
        req: &CacheRequest,
        op: &StructureOperation,
        levels: LevelSet,
    ) -> Outcome {
        let _one = self.atomics.lock().await;
        let (current, value) = match self.current_value(&req.key, levels).await {
            Ok(c) => c,
            Err(why) => return Outcome::error(why),
        };
        match ops::structure(op, value.as_ref()) {
            Err(why) => Outcome::error(why),
            Ok(applied) => {
                self.apply(req, applied, current, req.metadata.ttl_seconds, levels)
                    .await
            }
        }
    }

    /// Stores what an atomic or structure operation made, and answers with its result.
    async fn apply(
        &self,
        req: &CacheRequest,
        applied: Applied,
        current: Option<Entry>,
        ttl: Option<f64>,
        levels: LevelSet,
    ) -> Outcome {
        match applied {
            Applied::Missing => Outcome::status(Status::Miss),
            Applied::Read(answer_value) => answer(answer_value),
            Applied::Conflict(now_value) => Outcome {
                status: Status::Conflict,
                ..answer(now_value)
            },
            Applied::ExtendTtl(_) => Outcome::error("extend_ttl applies to atomic operations"),
            Applied::Store {
                value,
                answer: answer_value,
            } => {
                let now = self.now_ms();
                let text: Arc<str> = Arc::from(value.to_string());
                let entry = match current {
                    Some(mut e) if text.len() <= self.limits.max_value_bytes => {
                        e.value = text;
                        e
                    }
                    _ => match ttl_deadline(ttl, now) {
                        Err(why) => return Outcome::error(why),
                        Ok(expires) => {
                            let mut fresh = Entry::new(text, now, expires);
                            fresh.tags = req.key.tags.clone().into();
                            fresh
                        }
                    },
                };
                if entry.value.len() > self.limits.max_value_bytes {
                    return Outcome::error(format!(
                        "the result would be {} bytes; at most {} (cache_max_value_bytes)",
                        entry.value.len(),
                        self.limits.max_value_bytes
                    ));
                }
                let stored = self.store(&req.key, entry, levels, true).await;
                if stored.status == Status::Error {
                    return stored;
                }
                Outcome {
                    level: stored.level,
                    ..answer(answer_value)
                }
            }
        }
    }

    async fn namespace(&self, req: &CacheRequest, op: &NamespaceOperation) -> Outcome {
        let ns = op
            .namespace
            .clone()
            .unwrap_or_else(|| req.key.namespace.clone());
        if ns.is_empty() || ns.contains(':') {
            return Outcome::error("a namespace must be non-empty and hold no `:`");
        }
        let pattern = match Pattern::parse(&op.pattern, self.limits.patterns) {
            Ok(p) => p,
            Err(e) => return Outcome::error(e.to_string()),
        };
        let limit = op
            .max_entries
            .unwrap_or(self.limits.max_list_entries)
            .min(self.limits.max_list_entries);
        match op.operation_type.as_str() {
            "list_keys" => self.list(&ns, &pattern, limit).await,
            "clear" => match self.matching(Some(&ns), &pattern, MAX_CASCADE).await {
                Err(why) => Outcome::error(why),
                Ok((keys, truncated)) if op.dry_run => {
                    answer(serde_json::json!({"would_remove": keys.len(), "truncated": truncated}))
                }
                Ok((keys, truncated)) => match self.remove_cascade(keys).await {
                    Err(why) => Outcome::error(why),
                    Ok((n, more)) => counted(n, truncated || more),
                },
            },
            "statistics" => self.namespace_statistics(&ns).await,
            "backup" | "restore" => Outcome::error(format!(
                "namespace `{}` is not served: a cache is rebuilt, not restored",
                op.operation_type
            )),
            other => Outcome::error(format!(
                "`{other}` is not a namespace operation (clear, statistics, list_keys)"
            )),
        }
    }

    async fn namespace_statistics(&self, ns: &str) -> Outcome {
        let (entries, bytes) = {
            let m = self.memory.lock();
            let prefix = format!("{ns}:");
            m.keys()
                .filter(|k| k.starts_with(&prefix))
                .filter_map(|k| m.peek(k, self.now_ms()).map(|e| e.weight(k)))
                .fold((0u64, 0u64), |(n, b), w| (n + 1, b + w))
        };
        let mut figures = serde_json::json!({
            "namespace": ns,
            "L1": {"entries": entries, "bytes": bytes},
        });
        if self.disk.is_some() {
            let n = ns.to_owned();
            match self
                .disk_call(move |c, _| disk::namespace_size(c, &n))
                .await
            {
                Ok((entries, bytes)) => {
                    figures["L2"] = serde_json::json!({"entries": entries, "bytes": bytes});
                }
                Err(why) => return Outcome::error(why),
            }
        }
        answer(figures)
    }

    /// Removes expired entries from both levels (the node's tick).
    pub async fn sweep(&self) {
        let now = self.now_ms();
        self.memory.lock().expire(now, SWEEP_LIMIT);
        if self.disk.is_some()
            && let Err(e) = self
                .disk_call(move |c, s| disk::expire(c, s, now, SWEEP_LIMIT))
                .await
        {
            tracing::warn!(error = %e, "cache: sweeping L2 failed");
        }
    }

    async fn disk_get(&self, key: &str, now: u64) -> Result<Option<DiskEntry>, String> {
        let key = key.to_owned();
        self.disk_call(move |c, s| disk::get(c, s, &key, now)).await
    }

    /// Runs `f` on L2's thread.
    async fn disk_call<R, F>(&self, f: F) -> Result<R, String>
    where
        R: Send + 'static,
        F: FnOnce(&rusqlite::Connection, &DiskState) -> Result<R, disk::DiskError> + Send + 'static,
    {
        let Some(d) = &self.disk else {
            return Err("L2 is not served: the node runs in memory persistence mode".to_owned());
        };
        let state = d.state.clone();
        match d.db.call(move |conn| Ok(f(conn, &state))).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("cache file: {e}")),
        }
    }

    /// The L1 entry under `key` if live (the RPC result cache's lookup).
    pub(crate) fn memory_get(&self, key: &str) -> Option<Arc<str>> {
        let now = self.now_ms();
        self.memory.lock().get_with(key, now, |e| e.value.clone())
    }

    /// Stores a result in L1 for `ttl_ms` (the RPC result cache).
    pub(crate) fn memory_put(&self, key: &str, value: Arc<str>, ttl_ms: u64) {
        if value.len() > self.limits.max_value_bytes {
            return;
        }
        let now = self.now_ms();
        let entry = Entry::new(value, now, Some(now.saturating_add(ttl_ms)));
        self.memory.lock().put(Arc::from(key), entry);
    }
}

/// How often expired entries are swept out of both levels.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Sweeps expired entries until the node stops.
pub async fn sweeping(cache: Arc<CacheService>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => cache.sweep().await,
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Get => "get",
        Operation::Put => "put",
        Operation::Delete => "delete",
        Operation::Invalidate => "invalidate",
        Operation::Query => "query",
        Operation::Stats => "stats",
        Operation::Atomic => "atomic",
        Operation::Structure => "structure",
        Operation::Namespace => "namespace",
    }
}

/// The deadline of an entry made at `now` with `ttl_seconds`.
fn ttl_deadline(ttl_seconds: Option<f64>, now: u64) -> Result<Option<u64>, String> {
    match ttl_seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= MAX_TTL_SECONDS => {
            Ok(Some(now.saturating_add((s * 1000.0).ceil() as u64)))
        }
        Some(s) => Err(format!(
            "ttl_seconds must be above 0 and at most {MAX_TTL_SECONDS} (ten years), got {s}"
        )),
    }
}

fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("the stored value is not JSON: {e}"))
}

/// How the reply shows `e`, stored under `key`.
fn view(text: &str, e: &Entry, metadata: bool) -> EntryView {
    EntryView {
        tags: e.tags.clone(),
        value: e.value.clone(),
        creation_time: e.created_ms as f64 / 1000.0,
        access_count: e.access_count.get(),
        last_access_time: e.last_access_ms.get() as f64 / 1000.0,
        computation_cost_ms: e.computation_cost_ms,
        // Computed only when shown.
        size_bytes: if metadata { e.weight(text) } else { 0 },
        dependencies: if metadata {
            e.dependencies.to_vec()
        } else {
            Vec::new()
        },
        ttl_seconds: e
            .expires_ms
            .map(|t| t.saturating_sub(e.created_ms) as f64 / 1000.0),
        metadata,
    }
}

/// A result (stats, a listing, an operation's answer) in a reply's `entry.value`.
fn answer(value: Value) -> Outcome {
    let text = value.to_string();
    let mut o = Outcome::status(Status::Hit);
    o.entry = Some(EntryView {
        tags: Arc::new([]),
        value: Arc::from(text.as_str()),
        creation_time: 0.0,
        access_count: 0,
        last_access_time: 0.0,
        computation_cost_ms: 0.0,
        size_bytes: text.len() as u64,
        dependencies: Vec::new(),
        ttl_seconds: None,
        metadata: true,
    });
    o
}

/// The answer of a removal: how many entries went.
fn counted(n: usize, truncated: bool) -> Outcome {
    answer(serde_json::json!({"removed": n, "truncated": truncated}))
}

fn to_disk(key: &CacheKey, text: &str, e: &Entry) -> DiskEntry {
    DiskEntry {
        key: text.to_owned(),
        namespace: key.namespace.clone(),
        value: e.value.to_string(),
        tags: e.tags.to_vec(),
        dependencies: e.dependencies.to_vec(),
        created_ms: e.created_ms,
        expires_ms: e.expires_ms,
        cost_ms: e.computation_cost_ms,
        access_count: e.access_count.get(),
        last_used_ms: e.last_access_ms.get(),
    }
}

fn from_disk(d: &DiskEntry) -> Entry {
    let mut e = Entry::new(Arc::from(d.value.as_str()), d.created_ms, d.expires_ms);
    e.tags = d.tags.clone().into();
    e.dependencies = d.dependencies.clone().into();
    e.computation_cost_ms = d.cost_ms;
    e.access_count.set(d.access_count);
    e.last_access_ms.set(d.last_used_ms);
    e
}
