//! The worker side of a client connection: functions the connection registered, served by
//! sending `call` messages down that connection and waiting for its `call-result`s. When
//! the connection ends, its functions leave the node and the catalog, and calls still
//! waiting fail with 1018 (the worker may have run them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use semver::Version;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::control::FunctionEntry;
use crate::protocol::{CallResult, Json, RegisterRequest, WorkerCall};
use crate::registry::{CallArgs, CallError, Function};

/// Calls queued for the worker before the node stops taking more (backpressure on callers).
const QUEUED_CALLS: usize = 1024;

/// Most functions one connection may serve, and the longest name, `function_id` and
/// version, the most resources and the longest resource of each: registrations live in
/// this node's registry and in every node's catalog replica.
pub(super) const MAX_FUNCTIONS: usize = 256;
const MAX_NAME_BYTES: usize = 128;
const MAX_VERSION_BYTES: usize = 64;
const MAX_RESOURCES: usize = 32;
const MAX_RESOURCE_BYTES: usize = 64;
/// Most parameters a function may declare, the longest name of one, the longest doc.
const MAX_PARAMS: usize = 32;
const MAX_PARAM_BYTES: usize = 64;
const MAX_DOC_BYTES: usize = 1024;
/// Longest time a worker may ask its results be kept: a day.
const MAX_RESULT_TTL_SECONDS: f64 = 86_400.0;

type Waiters = Mutex<BTreeMap<String, oneshot::Sender<Result<Json, CallError>>>>;

pub(super) struct Worker {
    /// Messages for the worker; the connection writes them out.
    pub(super) outbox: mpsc::Receiver<Message>,
    sender: mpsc::Sender<Message>,
    waiters: Arc<Waiters>,
    next_call: Arc<AtomicU64>,
    /// What this connection registered, to remove when it ends.
    served: Vec<(String, Option<Version>)>,
    stats: Arc<crate::data::stats::Stats>,
}

impl Worker {
    pub(super) fn new(stats: Arc<crate::data::stats::Stats>) -> Worker {
        let (sender, outbox) = mpsc::channel(QUEUED_CALLS);
        Worker {
            outbox,
            sender,
            waiters: Arc::default(),
            next_call: Arc::default(),
            served: Vec::new(),
            stats,
        }
    }

    /// Refuses a registration beyond this connection's bounds (see [`MAX_FUNCTIONS`]).
    pub(super) fn check(&self, req: &RegisterRequest) -> Result<(), String> {
        let total = self.served.len() + req.functions.len();
        if total > MAX_FUNCTIONS {
            return Err(format!(
                "a connection may serve at most {MAX_FUNCTIONS} functions; this one would serve {total}"
            ));
        }
        for f in &req.functions {
            let long = |what: &str, v: &str, max: usize| {
                (v.len() > max).then(|| {
                    format!(
                        "function `{}`: {what} is longer than {max} bytes",
                        short(&f.name)
                    )
                })
            };
            let too_long = long("name", &f.name, MAX_NAME_BYTES)
                .or_else(|| {
                    long(
                        "function_id",
                        f.function_id.as_deref().unwrap_or(""),
                        MAX_NAME_BYTES,
                    )
                })
                .or_else(|| long("version", &f.version, MAX_VERSION_BYTES))
                .or_else(|| {
                    f.resources
                        .iter()
                        .find_map(|r| long("a resource", r, MAX_RESOURCE_BYTES))
                })
                .or_else(|| {
                    f.roles
                        .iter()
                        .find_map(|r| long("a role", r, crate::auth::MAX_ROLE_BYTES))
                })
                .or_else(|| long("doc", f.doc.as_deref().unwrap_or(""), MAX_DOC_BYTES));
            if let Some(why) = too_long {
                return Err(why);
            }
            if f.roles.len() > MAX_RESOURCES {
                return Err(format!(
                    "function `{}`: at most {MAX_RESOURCES} roles",
                    short(&f.name)
                ));
            }
            if f.resources.len() > MAX_RESOURCES {
                return Err(format!(
                    "function `{}`: at most {MAX_RESOURCES} resources",
                    short(&f.name)
                ));
            }
            if let Some(c) = &f.cache
                && !(c.ttl_seconds.is_finite()
                    && (0.0..=MAX_RESULT_TTL_SECONDS).contains(&c.ttl_seconds))
            {
                return Err(format!(
                    "function `{}`: cache.ttl_seconds must be from 0 to {MAX_RESULT_TTL_SECONDS}",
                    short(&f.name)
                ));
            }
            if let Some(params) = &f.params {
                crate::registry::signature::check_declared(params, MAX_PARAMS, MAX_PARAM_BYTES)
                    .map_err(|e| format!("function `{}`: {e}", short(&f.name)))?;
            }
        }
        Ok(())
    }

    /// Node functions that forward each call to this worker.
    pub(super) fn functions(&self, req: &RegisterRequest) -> Vec<Function> {
        req.functions
            .iter()
            .map(|f| {
                let (sender, waiters, next, stats) = (
                    self.sender.clone(),
                    self.waiters.clone(),
                    self.next_call.clone(),
                    self.stats.clone(),
                );
                let (name, version) = (f.name.clone(), f.version.clone());
                let mut function = Function::hosted(f.name.clone(), move |args: CallArgs| {
                    let u = format!("call-{}", next.fetch_add(1, Ordering::Relaxed));
                    call(
                        sender.clone(),
                        waiters.clone(),
                        stats.clone(),
                        u,
                        name.clone(),
                        version.clone(),
                        args,
                    )
                })
                .version(f.version.clone())
                .resources(f.resources.iter().cloned())
                .requires_roles(f.roles.iter().cloned())
                .idempotent(f.idempotent);
                if let Some(id) = &f.function_id {
                    function = function.function_id(id.clone());
                }
                if let Some(params) = &f.params {
                    function = function.declare_params(params.clone());
                }
                if let Some(doc) = &f.doc {
                    function = function.doc(doc.clone());
                }
                if let Some(cache) = &f.cache {
                    function = function.cache(Duration::from_secs_f64(cache.ttl_seconds));
                }
                function
            })
            .collect()
    }

    /// Remembers what was registered, to remove it when the connection ends.
    pub(super) fn serving(&mut self, entries: &[FunctionEntry]) {
        self.served.extend(
            entries
                .iter()
                .map(|e| (e.name.clone(), Some(e.version.clone()))),
        );
    }

    /// Hands the worker's answer to the call waiting for it (a late answer to a call
    /// that was cancelled is dropped).
    pub(super) fn answer(&self, result: CallResult) {
        let outcome = match result.failure() {
            Some(message) => Err(CallError::Failed(message)),
            None => Ok(result.r),
        };
        if let Some(waiter) = self.waiters.lock().remove(&result.u) {
            let _ = waiter.send(outcome);
        }
    }

    /// The connection ended: fails the waiting calls and returns what to unregister.
    pub(super) fn end(self) -> Vec<(String, Option<Version>)> {
        self.waiters.lock().clear();
        self.served
    }
}

/// One call to the worker: queue the message, wait for the answer.
async fn call(
    sender: mpsc::Sender<Message>,
    waiters: Arc<Waiters>,
    stats: Arc<crate::data::stats::Stats>,
    u: String,
    fun: String,
    version: String,
    args: CallArgs,
) -> Result<Json, CallError> {
    let message = serde_json::to_string(&WorkerCall {
        role: "call",
        u: &u,
        fun: &fun,
        version: &version,
        args: &args.args,
        kwargs: &args.kwargs,
    })
    .map_err(|e| CallError::Failed(e.to_string()))?;
    let (tx, rx) = oneshot::channel();
    waiters.lock().insert(u.clone(), tx);
    let mut waiting = Waiting {
        waiters,
        stats,
        sender: sender.clone(),
        u,
        sent: false,
        answered: false,
    };
    sender
        .send(Message::text(message))
        .await
        .map_err(|_| CallError::Unavailable("the worker serving it has disconnected".into()))?;
    waiting.sent = true;
    let outcome = rx.await.map_err(|_| {
        CallError::Lost("the worker serving it disconnected during the call".into())
    })?;
    waiting.answered = true;
    outcome
}

/// However a call ends, its waiter goes; one that left unanswered is cancelled.
struct Waiting {
    waiters: Arc<Waiters>,
    stats: Arc<crate::data::stats::Stats>,
    sender: mpsc::Sender<Message>,
    u: String,
    sent: bool,
    answered: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.u);
        if self.sent && !self.answered {
            // Timed out at the request's deadline, cancelled, or lost with the worker.
            self.stats
                .worker_calls_abandoned
                .fetch_add(1, Ordering::Relaxed);
            let cancel = json!({"role": "cancel", "u": self.u}).to_string();
            let _ = self.sender.try_send(Message::text(cancel));
        }
    }
}

/// At most 64 characters of `name`, for messages.
fn short(name: &str) -> String {
    name.chars().take(64).collect()
}
