//! Executes a planned request: every step starts as soon as the steps it needs have
//! finished, so independent steps run concurrently and no level waits for its slowest member.

use std::task::Poll;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde_json::{Map, Value};

use super::plan::{Plan, check_single, name_index, plan};
use super::resolve::{Budget, LimitError, MAX_VALUE_DEPTH, deeper_than, resolve_within};
use crate::env::Clock;
use crate::protocol::{
    ErrorCode, ExecutionSummary, IntermediateResult, RpcCommand, RpcReply, RpcRequest, WireError,
};
use crate::registry::{
    CallArgs, CallError, Handler, Query, RegisteredFunction, Registry, VersionConstraint,
};

/// Per-request limits, from the node's settings.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    pub max_commands: usize,
    /// Bytes that resolving references may copy in one request (see `resolve::Budget`).
    pub max_resolved_bytes: usize,
    /// Applies when the request sets no lower `timeout_ms`.
    pub request_timeout: Duration,
}

impl Default for ExecLimits {
    fn default() -> Self {
        ExecLimits {
            max_commands: 1000,
            max_resolved_bytes: 64 << 20,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a request failed, with its wire code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ExecError {
    pub code: ErrorCode,
    pub message: String,
}

impl ExecError {
    fn new(code: ErrorCode, message: impl Into<String>) -> ExecError {
        ExecError {
            code,
            message: message.into(),
        }
    }
}

/// Runs `req` against `registry` and builds the reply (success or error).
pub async fn execute(
    registry: &Registry,
    clock: &dyn Clock,
    limits: ExecLimits,
    mut req: RpcRequest,
) -> RpcReply {
    // `u` moves out of the request and into the reply, whatever the outcome.
    let u = std::mem::take(&mut req.u);
    let timed = req.return_intermediate_results || req.include_execution_summary;
    let outcome = if req.cmds.len() == 1 && !timed {
        run_single(registry, limits, req).await
    } else {
        // Boxed so that the common single call's future stays small (it is moved into
        // its task and wrappers; the general executor's state is ~1 KiB).
        Box::pin(run(registry, clock, limits, req, &u)).await
    };
    match outcome {
        Ok(mut reply) => {
            reply.u = Value::String(u);
            reply
        }
        Err(e) => RpcReply::failure(
            Value::String(u),
            WireError {
                code: e.code.as_i64(),
                message: e.code.title().to_owned(),
                details: Value::String(e.message),
            },
        ),
    }
}

/// Finds every command's function before anything runs, so a typo costs nothing.
fn bind_functions<'r>(
    registry: &'r Registry,
    req: &RpcRequest,
) -> Result<Vec<&'r RegisteredFunction>, ExecError> {
    req.cmds
        .iter()
        .map(|c| {
            let constraint = c
                .version_constraint
                .as_deref()
                .map(VersionConstraint::parse)
                .transpose()
                .map_err(|e| {
                    ExecError::new(
                        ErrorCode::InvalidVersionConstraint,
                        format!("command `{}`: {e}", c.name),
                    )
                })?;
            registry
                .find(Query {
                    name: &c.fun,
                    function_id: c.function_id.as_deref(),
                    version: constraint.as_ref(),
                    locs: &c.locs,
                })
                .map(|f| &**f)
                .map_err(|e| ExecError::new(ErrorCode::CommandNotFound, e.to_string()))
        })
        .collect()
}

/// The deadline of `req`: the node's, or less if the request asks for less.
fn request_timeout(req: &RpcRequest, limits: ExecLimits) -> Duration {
    req.timeout_ms
        .map(Duration::from_millis)
        .map_or(limits.request_timeout, |t| t.min(limits.request_timeout))
}

/// One command and no timing asked for, the common call: the same checks and semantics as
/// [`run`] without building a plan or any per-step bookkeeping.
async fn run_single(
    registry: &Registry,
    limits: ExecLimits,
    mut req: RpcRequest,
) -> Result<RpcReply, ExecError> {
    check_single(&req.cmds[0]).map_err(|e| ExecError::new(e.code(), e.to_string()))?;
    let function = bind_functions(registry, &req)?[0];
    let timeout = request_timeout(&req, limits);
    let cmd = &mut req.cmds[0];
    let args = CallArgs {
        args: std::mem::take(&mut cmd.args),
        kwargs: std::mem::take(&mut cmd.kwargs),
    };
    let call = async {
        let value = call_guarded(&*function.handler, args)
            .await
            .map_err(|e| step_error(cmd, e))?;
        check_result(cmd, value)
    };
    let value = with_deadline(call, timeout).await?;
    let mut r = Map::new();
    r.insert(std::mem::take(&mut req.cmds[0].name), value);
    Ok(RpcReply::success(Value::Null, r))
}

/// Plans and runs `req`; the reply's `u` is filled in by the caller.
async fn run(
    registry: &Registry,
    clock: &dyn Clock,
    limits: ExecLimits,
    mut req: RpcRequest,
    u: &str,
) -> Result<RpcReply, ExecError> {
    let timed = req.return_intermediate_results || req.include_execution_summary;
    let plan = plan(&req.cmds, limits.max_commands)
        .map_err(|e| ExecError::new(e.code(), e.to_string()))?;
    let functions = bind_functions(registry, &req)?;
    let timeout = request_timeout(&req, limits);
    let started = timed.then(|| clock.now());
    // The arguments move out of the request; names stay for the reply.
    let args: Vec<CallArgs> = req
        .cmds
        .iter_mut()
        .map(|c| CallArgs {
            args: std::mem::take(&mut c.args),
            kwargs: std::mem::take(&mut c.kwargs),
        })
        .collect();
    let outcome = {
        let flow = Dataflow {
            max_resolved_bytes: limits.max_resolved_bytes,
            req: &req,
            plan: &plan,
            functions: &functions,
            clock: timed.then_some(clock),
        };
        with_deadline(flow.run(args), timeout).await?
    };
    Ok(build_reply(req, u, &plan, outcome, started, clock))
}

/// Calls `handler`. A function that panics fails its step like one that returned an
/// error; the node and the other requests carry on. `call` itself may run user code
/// (argument decoding, a closure's body before its first await), so it is guarded as well
/// as the future it returns.
fn call_guarded(
    handler: &dyn Handler,
    args: CallArgs,
) -> impl Future<Output = Result<Value, CallError>> + use<> {
    let call = std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(args)));
    async move {
        let result = match call {
            Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        result.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".to_owned());
            Err(CallError::Failed(format!("function panicked: {what}")))
        })
    }
}

/// Awaits `work`, arming the request timer only if it does not finish on its first poll:
/// most calls (echo, pure functions) do, and a timer costs a lock on the timer wheel.
async fn with_deadline<T>(
    work: impl Future<Output = Result<T, ExecError>>,
    timeout: Duration,
) -> Result<T, ExecError> {
    tokio::pin!(work);
    match std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await {
        Poll::Ready(outcome) => outcome,
        Poll::Pending => tokio::time::timeout(timeout, work).await.map_err(|_| {
            ExecError::new(
                ErrorCode::TimeoutOrBadRole,
                format!(
                    "RPC execution timed out after {:.1} seconds",
                    timeout.as_secs_f64()
                ),
            )
        })?,
    }
}

/// Results and (when asked for) finish times of every step.
struct Outcome {
    results: Vec<Option<Value>>,
    finished_at: Vec<Option<tokio::time::Instant>>,
}

struct Dataflow<'a> {
    max_resolved_bytes: usize,
    req: &'a RpcRequest,
    plan: &'a Plan,
    functions: &'a [&'a RegisteredFunction],
    clock: Option<&'a dyn Clock>,
}

impl Dataflow<'_> {
    async fn run(self, mut args: Vec<CallArgs>) -> Result<Outcome, ExecError> {
        let n = self.req.cmds.len();
        let mut results: Vec<Option<Value>> = vec![None; n];
        let mut finished_at = vec![None; n];
        if n == 1 {
            // The common single call: no scheduling structures at all.
            let (_, result) = self.start(0, std::mem::take(&mut args[0])).await;
            let value = result.map_err(|e| self.step_error(0, e))?;
            results[0] = Some(check_result(&self.req.cmds[0], value)?);
            finished_at[0] = self.clock.map(|c| c.now());
            return Ok(Outcome {
                results,
                finished_at,
            });
        }
        // Names are unique: `plan` checked them.
        let names = name_index(&self.req.cmds).unwrap_or_default();
        let mut waiting: Vec<usize> = self.plan.deps.iter().map(Vec::len).collect();
        let mut running = FuturesUnordered::new();
        let total = self.max_resolved_bytes;
        let mut budget = Budget { bytes_left: total };
        for i in (0..n).filter(|&i| waiting[i] == 0) {
            running.push(self.start(i, std::mem::take(&mut args[i])));
        }
        while let Some((i, result)) = running.next().await {
            let value = result.map_err(|e| self.step_error(i, e))?;
            results[i] = Some(check_result(&self.req.cmds[i], value)?);
            if let Some(clock) = self.clock {
                finished_at[i] = Some(clock.now());
            }
            for &d in &self.plan.dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    // Its dependencies have finished: substitute their results.
                    let raw = std::mem::take(&mut args[d]);
                    let limit = |e: LimitError| {
                        let cmd = &self.req.cmds[d];
                        ExecError::new(
                            ErrorCode::LimitExceeded,
                            format!("command `{}` (fun `{}`): {e}", cmd.name, cmd.fun),
                        )
                    };
                    let mut resolve = |a: &Value| {
                        resolve_within(a, &names, &results, &mut budget, total, 0).map_err(limit)
                    };
                    let args = raw
                        .args
                        .iter()
                        .map(&mut resolve)
                        .collect::<Result<_, _>>()?;
                    let mut kwargs = Map::new();
                    for (k, v) in &raw.kwargs {
                        kwargs.insert(k.clone(), resolve(v)?);
                    }
                    running.push(self.start(d, CallArgs { args, kwargs }));
                }
            }
        }
        Ok(Outcome {
            results,
            finished_at,
        })
    }

    /// Starts step `i` with its final arguments.
    fn start(
        &self,
        i: usize,
        args: CallArgs,
    ) -> impl Future<Output = (usize, Result<Value, CallError>)> + use<> {
        let call = call_guarded(&*self.functions[i].handler, args);
        async move { (i, call.await) }
    }

    fn step_error(&self, i: usize, e: CallError) -> ExecError {
        step_error(&self.req.cmds[i], e)
    }
}

/// A step's result, refused when it nests deeper than a reply may
/// ([`MAX_VALUE_DEPTH`]): such a value could not be parsed by clients, or copied safely.
fn check_result(cmd: &RpcCommand, value: Value) -> Result<Value, ExecError> {
    if deeper_than(&value, MAX_VALUE_DEPTH) {
        return Err(ExecError::new(
            ErrorCode::LimitExceeded,
            format!(
                "command `{}` (fun `{}`): its result nests deeper than {MAX_VALUE_DEPTH} levels",
                cmd.name, cmd.fun
            ),
        ));
    }
    Ok(value)
}

fn step_error(cmd: &RpcCommand, e: CallError) -> ExecError {
    let code = match e {
        CallError::InvalidArgument { .. } | CallError::InvalidArguments(_) => {
            ErrorCode::InvalidArguments
        }
        CallError::Failed(_) => ErrorCode::ExecutionFailed,
        CallError::Unavailable(_) => ErrorCode::ClusterUnavailable,
    };
    ExecError::new(
        code,
        format!("command `{}` (fun `{}`): {e}", cmd.name, cmd.fun),
    )
}

fn ms_between(a: tokio::time::Instant, b: tokio::time::Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64() * 1000.0
}

fn build_reply(
    mut req: RpcRequest,
    u: &str,
    plan: &Plan,
    mut outcome: Outcome,
    started: Option<tokio::time::Instant>,
    clock: &dyn Clock,
) -> RpcReply {
    let mut intermediate = Vec::new();
    let mut summary = None;
    if let Some(started) = started {
        let mut level_ms = Vec::with_capacity(plan.levels.len());
        let mut accumulated = Map::new();
        let mut level_start = started;
        for (k, level) in plan.levels.iter().enumerate() {
            let level_end = level
                .iter()
                .filter_map(|&i| outcome.finished_at[i])
                .max()
                .unwrap_or(level_start);
            level_ms.push(ms_between(level_start, level_end));
            if req.return_intermediate_results {
                let level_results: Map<String, Value> = level
                    .iter()
                    .map(|&i| {
                        let v = outcome.results[i].clone().unwrap_or(Value::Null);
                        (req.cmds[i].name.clone(), v)
                    })
                    .collect();
                accumulated.extend(level_results.clone());
                intermediate.push(IntermediateResult {
                    request_id: u.to_owned(),
                    level_index: k,
                    level_results,
                    accumulated_results: accumulated.clone(),
                    total_levels: plan.levels.len(),
                    completed_levels: k + 1,
                    timestamp: (clock.wall_ms() as f64 - ms_between(level_end, clock.now()))
                        / 1000.0,
                    execution_time_ms: level_ms[k],
                });
            }
            level_start = level_start.max(level_end);
        }
        if req.include_execution_summary {
            let bottleneck = level_ms
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(k, _)| k);
            summary = Some(ExecutionSummary {
                request_id: u.to_owned(),
                total_execution_time_ms: ms_between(started, clock.now()),
                total_levels: plan.levels.len(),
                average_level_time_ms: level_ms.iter().sum::<f64>() / level_ms.len() as f64,
                level_execution_times: level_ms,
                bottleneck_level_index: bottleneck,
                // The original reports every executed command here (2 for a two-step chain).
                parallel_commands_executed: req.cmds.len(),
                cross_cluster_hops: 0,
            });
        }
    }
    let r: Map<String, Value> = plan
        .sinks
        .iter()
        .map(|&i| {
            let v = outcome.results[i].take().unwrap_or(Value::Null);
            (std::mem::take(&mut req.cmds[i].name), v)
        })
        .collect();
    let mut reply = RpcReply::success(Value::Null, r);
    reply.intermediate_results = intermediate;
    reply.execution_summary = summary;
    reply
}
