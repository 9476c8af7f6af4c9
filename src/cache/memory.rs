//! L1: entries in memory, bounded in bytes. The store is `quick_cache`'s unsynchronised
//! cache (S3-FIFO: O(1) hits that only set a bit, scan resistant, weighted by each entry's
//! bytes, no threads and no clock of its own), chosen over `moka`, whose expiry reads
//! `std::time::Instant` and runs housekeeping on wall-time triggers, which the simulator
//! cannot drive. Time-to-live is ours: each entry's deadline in an ordered index, checked
//! when the entry is read and swept by [`Memory::expire`] on the node's tick. The time
//! comes in as an argument (milliseconds on the node's clock), so this is pure.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use quick_cache::{Lifecycle, OptionsBuilder, Weighter};

/// What one entry costs beyond its key's and value's bytes: its fields, the allocation
/// headers of its key and value, its slot in the table and in the deadline index, and
/// S3-FIFO's ghost record. Measured: 500k entries of 64-byte values grew a release node's
/// RSS by 155.8 MB, 311 bytes an entry of which 86 are key and value text. Counting it in
/// the weight keeps the bound honest for many small entries.
pub const ENTRY_OVERHEAD: u64 = 224;

/// One cached value and what the original reports of it.
#[derive(Debug)]
pub struct Entry {
    /// JSON text.
    pub value: Arc<str>,
    pub tags: Arc<[String]>,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub computation_cost_ms: f64,
    /// Keys (text form) whose invalidation takes this entry too.
    pub dependencies: Arc<[String]>,
    pub access_count: Cell<u64>,
    pub last_access_ms: Cell<u64>,
}

impl Entry {
    pub fn new(value: Arc<str>, created_ms: u64, expires_ms: Option<u64>) -> Entry {
        Entry {
            value,
            tags: Arc::new([]),
            created_ms,
            expires_ms,
            computation_cost_ms: 0.0,
            dependencies: Arc::new([]),
            access_count: Cell::new(0),
            last_access_ms: Cell::new(created_ms),
        }
    }

    /// Bytes charged for this entry under `key`.
    pub fn weight(&self, key: &str) -> u64 {
        let listed = |l: &[String]| l.iter().map(|s| s.len() as u64 + 24).sum::<u64>();
        // The key is held twice when the entry expires (table and expiry index).
        let key_bytes = key.len() as u64 * if self.expires_ms.is_some() { 2 } else { 1 };
        key_bytes
            + self.value.len() as u64
            + listed(&self.tags)
            + listed(&self.dependencies)
            + ENTRY_OVERHEAD
    }

    pub fn live_at(&self, now_ms: u64) -> bool {
        self.expires_ms.is_none_or(|t| now_ms < t)
    }

    /// A copy for a reply or for another level (counters as they stand).
    pub fn copy(&self) -> Entry {
        Entry {
            value: self.value.clone(),
            tags: self.tags.clone(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            computation_cost_ms: self.computation_cost_ms,
            dependencies: self.dependencies.clone(),
            access_count: Cell::new(self.access_count.get()),
            last_access_ms: Cell::new(self.last_access_ms.get()),
        }
    }
}

#[derive(Clone, Copy, Default)]
struct ByBytes;

impl Weighter<Arc<str>, Entry> for ByBytes {
    fn weight(&self, key: &Arc<str>, val: &Entry) -> u64 {
        val.weight(key)
    }
}

/// Collects what an insert evicted, so the expiry index forgets it.
#[derive(Clone, Copy, Default)]
struct Evictions;

impl Lifecycle<Arc<str>, Entry> for Evictions {
    type RequestState = Vec<(Arc<str>, Entry)>;

    fn on_evict(&self, state: &mut Self::RequestState, key: Arc<str>, val: Entry) {
        state.push((key, val));
    }
}

/// foldhash seeded by the caller: from the node's RNG, so random in production (crafted
/// keys cannot aim at one bucket) and fixed in a simulation's run (quick_cache's own
/// default is seeded by the OS, which would make eviction order differ between runs).
type Seeded = foldhash::fast::FixedState;

/// Counters of one level (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelCounts {
    pub hits: u64,
    pub misses: u64,
    /// Pushed out to stay within the byte bound.
    pub evictions: u64,
    /// Removed because their time-to-live ran out.
    pub expirations: u64,
}

/// The memory level.
pub struct Memory {
    entries: quick_cache::unsync::Cache<Arc<str>, Entry, ByBytes, Seeded, Evictions>,
    /// (deadline, key) of every entry that expires.
    expiry: BTreeSet<(u64, Arc<str>)>,
    /// For each key that entries depend on, those entries (a cascade's index).
    dependents: BTreeMap<Arc<str>, BTreeSet<Arc<str>>>,
    counts: LevelCounts,
    capacity: u64,
}

impl Memory {
    /// A level holding at most `capacity_bytes` (entries weighed by [`Entry::weight`]),
    /// its table hashed with `seed`.
    pub fn new(capacity_bytes: u64, seed: u64) -> Memory {
        // An estimate for the table's first allocation; it grows as entries come.
        let estimated = (capacity_bytes / 1024).clamp(16, 1 << 16) as usize;
        let options = OptionsBuilder::new()
            .estimated_items_capacity(estimated)
            .weight_capacity(capacity_bytes.max(1))
            .build()
            .unwrap_or_else(|_| unreachable!("the options set are valid"));
        Memory {
            entries: quick_cache::unsync::Cache::with_options(
                options,
                ByBytes,
                Seeded::with_seed(seed),
                Evictions,
            ),
            expiry: BTreeSet::new(),
            dependents: BTreeMap::new(),
            counts: LevelCounts::default(),
            capacity: capacity_bytes,
        }
    }

    /// `f` of the live entry under `key` (its use recorded), counted as a hit or a miss;
    /// an expired one is removed. One table lookup for a hit.
    pub fn get_with<R>(
        &mut self,
        key: &str,
        now_ms: u64,
        f: impl FnOnce(&Entry) -> R,
    ) -> Option<R> {
        let mut expired = false;
        let found = match self.entries.get(key) {
            Some(e) if e.live_at(now_ms) => {
                e.access_count.set(e.access_count.get() + 1);
                e.last_access_ms.set(now_ms);
                Some(f(e))
            }
            Some(_) => {
                expired = true;
                None
            }
            None => None,
        };
        if expired {
            self.remove(key);
            self.counts.expirations += 1;
        }
        match found {
            Some(_) => self.counts.hits += 1,
            None => self.counts.misses += 1,
        }
        found
    }

    /// The live entry under `key` without counting or touching it.
    pub fn peek(&self, key: &str, now_ms: u64) -> Option<&Entry> {
        self.entries.peek(key).filter(|e| e.live_at(now_ms))
    }

    /// Stores `entry` under `key` (replacing what was there), evicting others as the byte
    /// bound requires. Returns the keys evicted. An entry larger than the whole level is
    /// not kept (it is reported evicted at once).
    pub fn put(&mut self, key: Arc<str>, entry: Entry) -> Vec<Arc<str>> {
        self.remove(&key);
        if let Some(t) = entry.expires_ms {
            self.expiry.insert((t, key.clone()));
        }
        for dep in entry.dependencies.iter() {
            self.dependents
                .entry(Arc::from(dep.as_str()))
                .or_default()
                .insert(key.clone());
        }
        let mut evicted = Vec::new();
        self.entries
            .insert_with_lifecycle(key.clone(), entry, &mut evicted);
        let mut keys = Vec::with_capacity(evicted.len());
        for (k, e) in evicted {
            self.forget(&k, &e);
            self.counts.evictions += 1;
            keys.push(k);
        }
        keys
    }

    /// Removes what the indexes hold of `key`'s entry `e`.
    fn forget(&mut self, key: &Arc<str>, e: &Entry) {
        if let Some(t) = e.expires_ms {
            self.expiry.remove(&(t, key.clone()));
        }
        for dep in e.dependencies.iter() {
            if let Some(set) = self.dependents.get_mut(dep.as_str()) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(dep.as_str());
                }
            }
        }
    }

    /// Removes `key`; whether it was there (expired or not).
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let (k, e) = self.entries.remove(key)?;
        self.forget(&k, &e);
        Some(e)
    }

    /// Keys of the entries that depend on `key`.
    pub fn dependents(&self, key: &str) -> Vec<Arc<str>> {
        self.dependents
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Removes every entry whose deadline is at or before `now_ms`, at most `limit` of
    /// them (a tick's work is bounded); returns their keys.
    pub fn expire(&mut self, now_ms: u64, limit: usize) -> Vec<Arc<str>> {
        let mut gone = Vec::new();
        while gone.len() < limit {
            let Some((t, k)) = self.expiry.first().cloned() else {
                break;
            };
            if t > now_ms {
                break;
            }
            if self.remove(&k).is_none() {
                self.expiry.remove(&(t, k.clone()));
            }
            self.counts.expirations += 1;
            gone.push(k);
        }
        gone
    }

    /// Every key held (expired ones included until swept), in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held, as weighed.
    pub fn bytes(&self) -> u64 {
        self.entries.weight()
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn counts(&self) -> LevelCounts {
        self.counts
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.expiry.clear();
        self.dependents.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: &str, expires: Option<u64>) -> Entry {
        Entry::new(Arc::from(v), 0, expires)
    }

    #[test]
    fn entries_expire_on_read_and_on_sweep() {
        let mut m = Memory::new(1 << 20, 7);
        m.put(Arc::from("a"), entry("1", Some(100)));
        m.put(Arc::from("b"), entry("2", Some(200)));
        m.put(Arc::from("c"), entry("3", None));
        assert!(m.get_with("a", 99, |_| ()).is_some());
        assert!(
            m.get_with("a", 100, |_| ()).is_none(),
            "expired at its deadline"
        );
        assert_eq!(m.expire(250, 10), vec![Arc::<str>::from("b")]);
        assert_eq!(m.len(), 1);
        assert!(m.get_with("c", u64::MAX - 1, |_| ()).is_some());
        assert_eq!(m.counts().expirations, 2);
    }

    #[test]
    fn the_byte_bound_holds_and_evictions_leave_the_index() {
        let mut m = Memory::new(64 * 1024, 7);
        let value: Arc<str> = Arc::from("x".repeat(100));
        for i in 0..10_000u64 {
            m.put(
                Arc::from(format!("k{i}")),
                Entry::new(value.clone(), 0, Some(1_000 + i)),
            );
            assert!(
                m.bytes() <= m.capacity(),
                "{} > {}",
                m.bytes(),
                m.capacity()
            );
        }
        assert!(m.counts().evictions > 9_000);
        assert_eq!(m.expiry.len(), m.len(), "the index holds only what is kept");
    }

    #[test]
    fn an_overwrite_charges_only_the_new_size() {
        let mut m = Memory::new(1 << 20, 7);
        m.put(Arc::from("k"), entry(&"a".repeat(1000), None));
        let one = m.bytes();
        m.put(Arc::from("k"), entry(&"a".repeat(1000), None));
        assert_eq!(m.bytes(), one);
    }
}
