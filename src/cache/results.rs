//! Cached results of cacheable functions (`Function::cache`, a worker's `"cache":
//! {"ttl_seconds": …}`), kept in L1 under `mpreg.rpc:<hash>:<version>`, where the hash is
//! the made identifier of the function id and its arguments (canonical JSON, `key.rs`;
//! `Results::key`), so the same arguments, positional or by name, in any key order, are
//! the same call. Calls run "single
//! flight": the first of identical calls runs the function, and the others that arrive
//! while it runs wait for its result instead of running it again (Go's singleflight,
//! Caffeine's `get(key, loader)`). Errors are handed to those waiting but never kept. When
//! the call that runs is dropped (its client left, its deadline passed), one of those
//! waiting runs it instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::key::made_identifier;
use super::service::CacheService;
use crate::protocol::Json;
use crate::registry::{CallArgs, CallError, CallFuture, RegisteredFunction, ResultCache};

/// The namespace results are kept under.
pub const RESULT_NAMESPACE: &str = "mpreg.rpc";

type Waiters = Vec<oneshot::Sender<Result<Json, CallError>>>;

/// The node's result cache.
pub struct Results {
    cache: Arc<CacheService>,
    /// Keys being computed, with the calls waiting for each. Bounded by the calls running
    /// on the node (each waiter is one).
    flights: Mutex<BTreeMap<String, Waiters>>,
}

impl Results {
    pub fn new(cache: Arc<CacheService>) -> Results {
        Results {
            cache,
            flights: Mutex::new(BTreeMap::new()),
        }
    }

    /// The key of `f` called with `args`; `None` if the arguments do not parse or bind (the
    /// call then runs uncached, and the function reports the error). A function with named
    /// parameters keys on the arguments bound to them, so `f(12)` and `f(x=12)` are one
    /// call: `[function_id, {param: value, …}]`; a variadic one on `[function_id, args,
    /// kwargs]`.
    pub fn key(f: &RegisteredFunction, args: &CallArgs) -> Option<String> {
        use serde_json::Value;
        let parsed = |text: &str| serde_json::from_str::<Value>(text).ok();
        let arguments = if f.params.is_empty() {
            Value::Array(vec![parsed(args.args.get())?, parsed(args.kwargs.get())?])
        } else {
            let bound = args.bind(&f.params).ok()?;
            let mut named = serde_json::Map::new();
            for (name, v) in f.params.iter().zip(bound) {
                if let Some(v) = v {
                    named.insert(name.clone(), parsed(v.get())?);
                }
            }
            Value::Object(named)
        };
        let call = Value::Array(vec![Value::String(f.spec.function_id.clone()), arguments]);
        Some(format!(
            "{RESULT_NAMESPACE}:{}:{}",
            made_identifier(&call),
            f.spec.version
        ))
    }

    /// Joins the flight for `key` if one is under way (the receiver), or starts it.
    fn join(&self, key: &str) -> Option<oneshot::Receiver<Result<Json, CallError>>> {
        let mut flights = self.flights.lock();
        let joined = match flights.get_mut(key) {
            Some(waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Some(rx)
            }
            None => {
                flights.insert(key.to_owned(), Vec::new());
                None
            }
        };
        self.cache
            .flights
            .running
            .store(flights.len() as u64, Ordering::Relaxed);
        joined
    }
}

/// Counts a call waiting for another's run while it waits (however its wait ends).
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicU64) -> Waiting<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Ends a flight however its call ends: dropped unfinished, its waiters see their
/// channel close and one of them runs the call.
struct Flight<'a> {
    results: &'a Results,
    key: &'a str,
}

impl Flight<'_> {
    fn land(self, result: &Result<Json, CallError>) {
        for w in self.take().into_iter().flatten() {
            let _ = w.send(result.clone());
        }
    }

    /// Ends the flight; those waiting for it.
    fn take(&self) -> Option<Waiters> {
        let mut flights = self.results.flights.lock();
        let waiters = flights.remove(self.key);
        let running = &self.results.cache.flights.running;
        running.store(flights.len() as u64, Ordering::Relaxed);
        waiters
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        // Landed already, or dropped unfinished: either way the flight is over.
        self.take();
    }
}

impl ResultCache for Results {
    fn call<'a>(
        &'a self,
        f: &'a RegisteredFunction,
        args: CallArgs,
        compute: Box<dyn FnOnce(CallArgs) -> CallFuture<'a> + Send + 'a>,
    ) -> CallFuture<'a, (Result<Json, CallError>, bool)> {
        Box::pin(async move {
            let (Some(ttl), Some(key)) = (f.cache_ttl, Results::key(f, &args)) else {
                return (compute(args).await, false);
            };
            loop {
                if let Some(text) = self.cache.memory_get(&key)
                    && let Ok(value) = Json::from_text(text.to_string())
                {
                    return (Ok(value), true);
                }
                match self.join(&key) {
                    Some(wait) => {
                        let counted = Waiting::new(&self.cache.flights.waiting);
                        let landed = wait.await;
                        drop(counted);
                        match landed {
                            Ok(result) => return (result, true),
                            // The call that ran was dropped: ask again (the next may run it).
                            Err(_) => continue,
                        }
                    }
                    None => {
                        let flight = Flight {
                            results: self,
                            key: &key,
                        };
                        let result = compute(args).await;
                        if let Ok(v) = &result {
                            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                            self.cache.memory_put(&key, Arc::from(v.get()), ttl_ms);
                        }
                        flight.land(&result);
                        return (result, false);
                    }
                }
            }
        })
    }
}
