//! Executes a planned request: every step starts as soon as the steps it needs have
//! finished, so independent steps run concurrently and no level waits for its slowest member.

use std::collections::BTreeSet;
use std::task::Poll;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures_util::future::Either;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;

use super::forward::{Cluster, ForwardError, Route, Step, StepOutcome};
use super::plan::{Plan, check_single, name_index, plan};
use super::reply::{Done, Level, Levels, Reply};
use super::resolve::{Budget, LimitError, MAX_VALUE_DEPTH, depth_of, resolve};
use super::trace::{self, Trace};
use crate::auth::Access;
use crate::control::NodeId;
use crate::env::Clock;
use crate::protocol::{
    ErrorCode, ExecutionSummary, Json, Kind, RpcCommand, RpcReply, RpcRequest, StepTiming,
    WireError,
};
use crate::registry::stats::Caller;
use crate::registry::{
    CallArgs, CallError, Handler, Query, RegisteredFunction, Registry, ResultCache,
    VersionConstraint,
};
use crate::routing::NoRoute;
use tokio::time::Instant;

/// Per-request limits, from the node's settings.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    pub max_commands: usize,
    /// Bytes that resolving references may copy in one request (see `resolve::Budget`).
    pub max_resolved_bytes: usize,
    /// Applies when the request sets no lower `timeout_ms`.
    pub request_timeout: Duration,
}

impl ExecLimits {
    /// The limits a node's settings give its requests.
    pub fn from_settings(s: &crate::config::Settings) -> ExecLimits {
        ExecLimits {
            max_commands: s.max_commands_per_request,
            // References may copy up to four messages' worth of data per request.
            max_resolved_bytes: s.max_message_bytes.saturating_mul(4),
            request_timeout: Duration::from_millis(s.request_timeout_ms),
        }
    }
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

/// Runs `req` against `registry` alone and builds the reply (success or error), as a
/// client reads it.
pub async fn execute(
    registry: &Registry,
    clock: &dyn Clock,
    limits: ExecLimits,
    req: RpcRequest,
) -> RpcReply {
    execute_in(
        registry,
        None,
        clock,
        limits,
        &Access::Open,
        Trace::default(),
        req,
    )
    .await
    .to_rpc_reply()
}

/// Runs `req` on this node for a caller with `access`, sending the steps it has no
/// function for to the nodes `cluster` chooses, and builds the reply (success or error).
/// The request is traced by its own `trace_id`, or else by `made`.
pub async fn execute_in(
    registry: &Registry,
    cluster: Option<&dyn Cluster>,
    clock: &dyn Clock,
    limits: ExecLimits,
    access: &Access,
    made: Trace,
    mut req: RpcRequest,
) -> Reply {
    // `u` moves out of the request and into the reply, whatever the outcome.
    let u = std::mem::take(&mut req.u);
    let trace = match req.trace_id.take() {
        None => made,
        Some(given) => match trace::check(&given) {
            Ok(()) => Trace::Given(given),
            Err(why) => {
                return Reply::failure(
                    Value::String(u),
                    WireError::new(ErrorCode::InvalidRequest, why),
                );
            }
        },
    };
    let timed = req.return_intermediate_results || req.include_execution_summary;
    let env = Here {
        registry,
        cluster,
        clock,
        access,
        trace: &trace,
    };
    let outcome = if req.cmds.len() == 1 && !timed {
        run_single(env, limits, req).await
    } else {
        // Boxed so that the common single call's future stays small (it is moved into
        // its task and wrappers; the general executor's state is ~1 KiB).
        Box::pin(run(env, limits, req, &u)).await
    };
    match outcome {
        Ok(done) => Reply::success(Value::String(u), done),
        Err(e) => {
            tracing::debug!(trace_id = %trace, %u, code = e.code.as_i64(), error = %e.message, "request failed");
            Reply::failure(
                Value::String(u),
                WireError {
                    code: e.code.as_i64(),
                    message: e.code.title().to_owned(),
                    details: Value::String(e.message),
                },
            )
        }
    }
}

/// What a request runs against on this node.
#[derive(Clone, Copy)]
struct Here<'r> {
    registry: &'r Registry,
    /// The other nodes; `None` runs everything here.
    cluster: Option<&'r dyn Cluster>,
    clock: &'r dyn Clock,
    /// What the caller may call: checked here for the commands this node runs; carried in
    /// the steps it forwards, for their nodes to check.
    access: &'r Access,
    /// The request's trace id, for log lines and the steps it forwards.
    trace: &'r Trace,
}

/// Where one command runs.
enum Binding<'r> {
    /// Here: this node has a matching function (the local node is preferred, no hop).
    Local(&'r RegisteredFunction),
    /// Here, served by a worker connection that may go away mid-call: such a call can move
    /// to another node (see [`hosted_step`]).
    Hosted(&'r RegisteredFunction, Option<VersionConstraint>),
    /// On another node. The route found while binding serves a step that starts at once
    /// (a single call); a step that waits for others is routed when it starts, since
    /// liveness may change meanwhile.
    Remote(Option<VersionConstraint>, Route),
}

fn want<'c>(cmd: &'c RpcCommand, constraint: Option<&'c VersionConstraint>) -> Query<'c> {
    Query::call(&cmd.fun, cmd.function_id.as_deref(), constraint, &cmd.locs)
}

/// Finds every command's function (here or on some node) before anything runs, so a typo
/// costs nothing. "Not found" is this moment's answer; nothing remembers it.
fn bind_functions<'r>(here: Here<'r>, req: &RpcRequest) -> Result<Vec<Binding<'r>>, ExecError> {
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
            let local = here.registry.find(Query::call(
                &c.fun,
                c.function_id.as_deref(),
                constraint.as_ref(),
                &c.locs,
            ));
            if let Ok(f) = local
                && !here.access.may_call(&f.spec.roles)
            {
                return Err(forbidden(here.access, c, &f.spec.roles));
            }
            let missing = match local {
                Ok(f) if f.handler.hosted_elsewhere() => {
                    return Ok(Binding::Hosted(f, constraint));
                }
                Ok(f) => return Ok(Binding::Local(f)),
                Err(e) => e,
            };
            let Some(cluster) = here.cluster else {
                return Err(ExecError::new(
                    ErrorCode::CommandNotFound,
                    missing.to_string(),
                ));
            };
            match cluster.route(want(c, constraint.as_ref()), &[]) {
                Ok(route) => Ok(Binding::Remote(constraint, route)),
                Err(NoRoute::NotFound) => Err(ExecError::new(
                    ErrorCode::CommandNotFound,
                    missing.to_string(),
                )),
                Err(NoRoute::AllDown) => Err(ExecError::new(
                    ErrorCode::ClusterUnavailable,
                    format!(
                        "command `{}` (fun `{}`): every node that offers it is down",
                        c.name, c.fun
                    ),
                )),
            }
        })
        .collect()
}

/// The refusal of `cmd` to a caller without any of `roles`.
fn forbidden(access: &Access, cmd: &RpcCommand, roles: &BTreeSet<String>) -> ExecError {
    ExecError::new(
        ErrorCode::Forbidden,
        format!(
            "command `{}` (fun `{}`): {} holds none of the roles it needs ({})",
            cmd.name,
            cmd.fun,
            access.describe(),
            roles
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// Runs `cmd` on another node. A step that never reached its node, or reached one that
/// no longer has the function, goes to the next choice; one whose node failed after
/// receiving it is retried only when the function is idempotent (it may have run), and
/// otherwise fails the request with 1018.
async fn remote_step(
    here: Here<'_>,
    cmd: &RpcCommand,
    constraint: Option<&VersionConstraint>,
    args: CallArgs,
    deadline: Instant,
    mut first: Option<Route>,
) -> Result<(Json, NodeId), ExecError> {
    let Some(cluster) = here.cluster else {
        return Err(ExecError::new(
            ErrorCode::CommandNotFound,
            format!("{} (no other node to run it)", cmd.fun),
        ));
    };
    let fail = |code, why: String| {
        ExecError::new(
            code,
            format!("command `{}` (fun `{}`): {why}", cmd.name, cmd.fun),
        )
    };
    let args_json = format!("[{},{}]", args.args, args.kwargs);
    let mut tried: Vec<crate::control::NodeId> = Vec::new();
    let mut last_failure = String::new();
    loop {
        let routed = match first.take() {
            Some(r) => Ok(r),
            None => cluster.route(want(cmd, constraint), &tried),
        };
        let route = match routed {
            Ok(r) => r,
            Err(_) if !tried.is_empty() => {
                return Err(fail(
                    ErrorCode::ClusterUnavailable,
                    format!("no node could take it; the last one tried: {last_failure}"),
                ));
            }
            Err(NoRoute::NotFound) => {
                return Err(fail(ErrorCode::CommandNotFound, "no node offers it".into()));
            }
            Err(NoRoute::AllDown) => {
                return Err(fail(
                    ErrorCode::ClusterUnavailable,
                    "every node that offers it is down".into(),
                ));
            }
        };
        let left = deadline.saturating_duration_since(here.clock.now());
        let step = Step {
            fun: cmd.fun.clone(),
            function_id: cmd.function_id.clone(),
            version: route.version.clone(),
            locs: cmd.locs.clone(),
            args_json: args_json.clone(),
            timeout_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            caller: here.access.identity().cloned(),
            trace_id: Some(here.trace.to_string()),
        };
        // The target gives up at the deadline and says so; the grace covers the trip back.
        let wait = left + STEP_REPLY_GRACE;
        match cluster.forward(route.node, step, wait).await {
            Ok(StepOutcome::Done(json)) => {
                return Json::from_text(json)
                    .map(|v| (v, route.node))
                    .map_err(|e| fail(ErrorCode::Internal, format!("unreadable result: {e}")));
            }
            Ok(StepOutcome::Failed { code, message }) => {
                let code = ErrorCode::from_i64(code).unwrap_or(ErrorCode::ExecutionFailed);
                return Err(fail(code, format!("on node {}: {message}", route.node)));
            }
            Ok(StepOutcome::NotHere(why)) => {
                last_failure = format!("node {} no longer has it ({why})", route.node);
            }
            Err(ForwardError::NotSent(why)) => {
                last_failure = format!("node {} unreachable ({why})", route.node);
            }
            // Lost with the node, or with the worker serving it there.
            Ok(StepOutcome::Lost(why)) | Err(ForwardError::Lost(why)) if route.idempotent => {
                last_failure = format!("node {} failed mid-call ({why})", route.node);
            }
            Ok(StepOutcome::Lost(why)) | Err(ForwardError::Lost(why)) => {
                return Err(fail(
                    ErrorCode::StepLost,
                    format!(
                        "node {} failed while running it ({why}); it may have run, and \
                         `{}` is not registered as idempotent, so it was not retried",
                        route.node, cmd.fun
                    ),
                ));
            }
        }
        tracing::info!(trace_id = %here.trace, cmd = %cmd.name, fun = %cmd.fun, why = %last_failure, "step goes to another node");
        tried.push(route.node);
    }
}

/// Calls a function a worker connection serves here. A call that never reached the worker
/// (it was leaving) moves to another node that offers the function, and so does an
/// idempotent one the worker took with it when it disconnected; a non-idempotent lost call
/// fails with 1018, as a lost step does. With no other offer the worker's error stands.
async fn hosted_step(
    here: Here<'_>,
    cmd: &RpcCommand,
    constraint: Option<&VersionConstraint>,
    f: &RegisteredFunction,
    args: CallArgs,
    deadline: Instant,
) -> Result<(Json, Option<NodeId>), ExecError> {
    let copy = args.clone();
    // Why it moves, and the code it fails with if nowhere else offers it.
    let called = call_counted(
        f,
        args,
        here.clock,
        Caller::Client,
        here.registry.result_cache(),
    );
    let (moved, code) = match called.await.map(|(v, _)| v) {
        Err(CallError::Unavailable(why)) => (why, ErrorCode::ClusterUnavailable),
        Err(CallError::Lost(why)) if f.spec.idempotent => (why, ErrorCode::StepLost),
        other => return other.map(|v| (v, None)).map_err(|e| step_error(cmd, e)),
    };
    tracing::info!(trace_id = %here.trace, cmd = %cmd.name, fun = %cmd.fun, why = %moved, "a worker's call goes to another node");
    match remote_step(here, cmd, constraint, copy, deadline, None).await {
        Err(e) if e.code == ErrorCode::CommandNotFound => Err(ExecError::new(
            code,
            format!(
                "command `{}` (fun `{}`): {moved}; no other node offers it",
                cmd.name, cmd.fun
            ),
        )),
        other => other.map(|(v, node)| (v, Some(node))),
    }
}

/// Runs one command as it was bound. `reuse_route`: a remote command goes where binding
/// routed it instead of being routed again.
async fn run_bound(
    here: Here<'_>,
    cmd: &RpcCommand,
    binding: &Binding<'_>,
    args: CallArgs,
    deadline: Instant,
    reuse_route: bool,
) -> Result<(Json, Option<NodeId>), ExecError> {
    match binding {
        Binding::Local(f) => call_counted(
            f,
            args,
            here.clock,
            Caller::Client,
            here.registry.result_cache(),
        )
        .await
        .map(|(v, _)| (v, None))
        .map_err(|e| step_error(cmd, e)),
        Binding::Hosted(f, constraint) => {
            hosted_step(here, cmd, constraint.as_ref(), f, args, deadline).await
        }
        Binding::Remote(constraint, route) => {
            let first = reuse_route.then(|| route.clone());
            remote_step(here, cmd, constraint.as_ref(), args, deadline, first)
                .await
                .map(|(v, node)| (v, Some(node)))
        }
    }
}

/// How long past the request's deadline the entry node waits for a forwarded step's answer
/// (the target stops at the deadline and replies; this is the reply's trip).
const STEP_REPLY_GRACE: Duration = Duration::from_secs(2);

/// Runs a step another node sent here: the exact version it chose, or nothing (`NotHere`).
/// Where tokens are required (`auth_required`), the caller the step carries must hold a
/// role the function names.
pub async fn run_step(
    registry: &Registry,
    limits: ExecLimits,
    auth_required: bool,
    clock: &dyn Clock,
    mut step: Step,
) -> StepOutcome {
    let trace = step.trace_id.take();
    let trace_id = trace.as_deref().unwrap_or("");
    let fun = step.fun.clone();
    let outcome = run_step_traced(registry, limits, auth_required, clock, step).await;
    match &outcome {
        StepOutcome::Done(_) => tracing::debug!(trace_id, %fun, "ran a step forwarded here"),
        other => {
            tracing::debug!(trace_id, %fun, outcome = ?other, "a step forwarded here did not succeed");
        }
    }
    outcome
}

async fn run_step_traced(
    registry: &Registry,
    limits: ExecLimits,
    auth_required: bool,
    clock: &dyn Clock,
    step: Step,
) -> StepOutcome {
    let version = VersionConstraint::exactly(&step.version);
    let function = match registry.find(Query::call(
        &step.fun,
        step.function_id.as_deref(),
        Some(&version),
        &step.locs,
    )) {
        Ok(f) => f.clone(),
        Err(e) => return StepOutcome::NotHere(e.to_string()),
    };
    let failed = |code: ErrorCode, message: String| StepOutcome::Failed {
        code: code.as_i64(),
        message,
    };
    let access = Access::of_step(auth_required, step.caller);
    if !access.may_call(&function.spec.roles) {
        let roles: Vec<&str> = function.spec.roles.iter().map(String::as_str).collect();
        return failed(
            ErrorCode::Forbidden,
            format!(
                "{} holds none of the roles `{}` needs ({})",
                access.describe(),
                step.fun,
                roles.join(", ")
            ),
        );
    }
    let (args, kwargs) = match serde_json::from_str::<(Json, Json)>(&step.args_json) {
        Ok((a, k)) if a.kind() == Kind::Array && k.kind() == Kind::Object => (a, k),
        Ok(_) => {
            return failed(
                ErrorCode::MalformedMessage,
                "step arguments: not [array, object]".into(),
            );
        }
        Err(e) => return failed(ErrorCode::MalformedMessage, format!("step arguments: {e}")),
    };
    let timeout = Duration::from_millis(step.timeout_ms).min(limits.request_timeout);
    let hosted = function.handler.hosted_elsewhere();
    let call = async {
        let value = match call_counted(
            &function,
            CallArgs { args, kwargs },
            clock,
            Caller::Peer,
            registry.result_cache(),
        )
        .await
        {
            Ok((value, _)) => value,
            // The worker serving it here went away: before the call reached it (nothing
            // ran, another node may take it), or during it (the caller decides, by
            // idempotence).
            Err(CallError::Unavailable(why)) if hosted => return Ok(StepOutcome::NotHere(why)),
            Err(CallError::Lost(why)) if hosted => return Ok(StepOutcome::Lost(why)),
            Err(e) => return Err(ExecError::new(call_error_code(&e), e.to_string())),
        };
        if depth_of(value.get()) > MAX_VALUE_DEPTH {
            return Err(ExecError::new(
                ErrorCode::LimitExceeded,
                format!("its result nests deeper than {MAX_VALUE_DEPTH} levels"),
            ));
        }
        Ok(StepOutcome::Done(value.into_string()))
    };
    match with_deadline(call, timeout).await {
        Ok(outcome) => outcome,
        Err(e) => failed(e.code, e.message),
    }
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
    here: Here<'_>,
    limits: ExecLimits,
    mut req: RpcRequest,
) -> Result<Done, ExecError> {
    check_single(&req.cmds[0]).map_err(|e| ExecError::new(e.code(), e.to_string()))?;
    let binding = bind_functions(here, &req)?.pop();
    let timeout = request_timeout(&req, limits);
    let cmd = &mut req.cmds[0];
    let args = take_args(cmd);
    let value = match binding {
        Some(Binding::Local(function)) => {
            let call = async {
                let (value, _) = call_counted(
                    function,
                    args,
                    here.clock,
                    Caller::Client,
                    here.registry.result_cache(),
                )
                .await
                .map_err(|e| step_error(cmd, e))?;
                check_result(cmd, value)
            };
            with_deadline(call, timeout).await?
        }
        Some(binding) => {
            let deadline = here.clock.now() + timeout;
            // Boxed: this path's state would otherwise grow every local call's future. A
            // single call starts at once, so the route found while binding still serves.
            let call = Box::pin(async {
                let (value, _) = run_bound(here, cmd, &binding, args, deadline, true).await?;
                check_result(cmd, value)
            });
            with_deadline(call, timeout).await?
        }
        None => return Err(ExecError::new(ErrorCode::EmptyRequest, "no command")),
    };
    Ok(Done {
        r: vec![(std::mem::take(&mut req.cmds[0].name), value)],
        ..Done::default()
    })
}

/// Moves a command's arguments out (its name stays, for the reply).
fn take_args(cmd: &mut RpcCommand) -> CallArgs {
    CallArgs {
        args: std::mem::replace(&mut cmd.args, Json::empty_array()),
        kwargs: std::mem::replace(&mut cmd.kwargs, Json::empty_object()),
    }
}

/// Plans and runs `req`; the reply's `u` is filled in by the caller.
async fn run(
    here: Here<'_>,
    limits: ExecLimits,
    mut req: RpcRequest,
    u: &str,
) -> Result<Done, ExecError> {
    let clock = here.clock;
    let timed = req.return_intermediate_results || req.include_execution_summary;
    let plan = plan(&req.cmds, limits.max_commands)
        .map_err(|e| ExecError::new(e.code(), e.to_string()))?;
    let functions = bind_functions(here, &req)?;
    let timeout = request_timeout(&req, limits);
    let remote = functions
        .iter()
        .any(|b| matches!(b, Binding::Remote(..) | Binding::Hosted(..)));
    let started = (timed || remote).then(|| clock.now());
    let deadline = started.map(|s| s + timeout);
    // The arguments move out of the request; names stay for the reply.
    let args: Vec<CallArgs> = req.cmds.iter_mut().map(take_args).collect();
    let cached: Vec<std::sync::atomic::AtomicBool> = req
        .cmds
        .iter()
        .map(|_| std::sync::atomic::AtomicBool::new(false))
        .collect();
    let outcome = {
        let flow = Dataflow {
            max_resolved_bytes: limits.max_resolved_bytes,
            req: &req,
            plan: &plan,
            functions: &functions,
            here,
            deadline,
            clock: timed.then_some(clock),
            cached: &cached,
        };
        with_deadline(flow.run(args), timeout).await?
    };
    Ok(build_reply(req, u, &plan, outcome, started, here, &cached))
}

/// Calls `f` for `caller`, counting the call and its time in the function's stats. A
/// cacheable function ([`crate::registry::Function::cache`]) goes through `results`, which
/// may answer without running it: the flag says so.
async fn call_counted(
    f: &RegisteredFunction,
    args: CallArgs,
    clock: &dyn Clock,
    caller: Caller,
    results: Option<&dyn ResultCache>,
) -> Result<(Json, bool), CallError> {
    if let (Some(_), Some(cache)) = (f.cache_ttl, results) {
        let compute = Box::new(move |args| {
            Box::pin(call_timed(f, args, clock, caller)) as crate::registry::CallFuture<'_>
        });
        let (result, cached) = cache.call(f, args, compute).await;
        let counter = if cached {
            &f.stats.cache_hits
        } else {
            &f.stats.cache_misses
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return result.map(|v| (v, cached));
    }
    call_timed(f, args, clock, caller).await.map(|v| (v, false))
}

/// Runs `f` once, counting the call and its time in the function's stats.
async fn call_timed(
    f: &RegisteredFunction,
    args: CallArgs,
    clock: &dyn Clock,
    caller: Caller,
) -> Result<Json, CallError> {
    let started = clock.now();
    let result = call_guarded(&*f.handler, args).await;
    let took = clock.now().saturating_duration_since(started);
    f.stats.record(caller, result.is_ok(), took);
    result
}

/// Calls `handler`. A function that panics fails its step like one that returned an
/// error; the node and the other requests carry on. `call` itself may run user code
/// (argument decoding, a closure's body before its first await), so it is guarded as well
/// as the future it returns.
fn call_guarded(
    handler: &dyn Handler,
    args: CallArgs,
) -> impl Future<Output = Result<Json, CallError>> + use<> {
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
    results: Vec<Option<Json>>,
    started_at: Vec<Option<tokio::time::Instant>>,
    finished_at: Vec<Option<tokio::time::Instant>>,
    /// Where each step ran (`None`: here).
    ran_on: Vec<Option<NodeId>>,
}

struct Dataflow<'a> {
    max_resolved_bytes: usize,
    req: &'a RpcRequest,
    plan: &'a Plan,
    functions: &'a [Binding<'a>],
    here: Here<'a>,
    /// When the request runs out of time (set when any step is remote).
    deadline: Option<Instant>,
    /// Set when the reply reports timings.
    clock: Option<&'a dyn Clock>,
    /// Which steps' results came from the result cache (for the execution summary).
    cached: &'a [std::sync::atomic::AtomicBool],
}

impl<'a> Dataflow<'a> {
    async fn run(self, mut args: Vec<CallArgs>) -> Result<Outcome, ExecError> {
        let n = self.req.cmds.len();
        let mut results: Vec<Option<Json>> = vec![None; n];
        let mut finished_at = vec![None; n];
        let mut started_at = vec![None; n];
        let mut ran_on = vec![None; n];
        let now = || self.clock.map(|c| c.now());
        if n == 1 {
            // The common single call: no scheduling structures at all.
            started_at[0] = now();
            let (_, result) = self.start(0, std::mem::take(&mut args[0])).await;
            let (value, node) = result?;
            results[0] = Some(check_result(&self.req.cmds[0], value)?);
            finished_at[0] = now();
            ran_on[0] = node;
            return Ok(Outcome {
                results,
                started_at,
                finished_at,
                ran_on,
            });
        }
        // Names are unique: `plan` checked them.
        let names = name_index(&self.req.cmds).unwrap_or_default();
        let mut waiting: Vec<usize> = self.plan.deps.iter().map(Vec::len).collect();
        let mut running = super::Unordered::new();
        let total = self.max_resolved_bytes;
        let mut budget = Budget { bytes_left: total };
        for i in (0..n).filter(|&i| waiting[i] == 0) {
            started_at[i] = now();
            running.push(self.start(i, std::mem::take(&mut args[i])));
        }
        while let Some((i, result)) = running.next().await {
            let (value, node) = result?;
            results[i] = Some(check_result(&self.req.cmds[i], value)?);
            finished_at[i] = now();
            ran_on[i] = node;
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
                    let mut resolved =
                        |a: &Json| resolve(a, &names, &results, &mut budget, total).map_err(limit);
                    let args = resolved(&raw.args)?;
                    let kwargs = resolved(&raw.kwargs)?;
                    started_at[d] = now();
                    running.push(self.start(d, CallArgs { args, kwargs }));
                }
            }
        }
        Ok(Outcome {
            results,
            started_at,
            finished_at,
            ran_on,
        })
    }

    /// Starts step `i` with its final arguments, here or on another node.
    fn start(
        &self,
        i: usize,
        args: CallArgs,
    ) -> impl Future<Output = (usize, Result<(Json, Option<NodeId>), ExecError>)> + use<'a> {
        let cmd = &self.req.cmds[i];
        match &self.functions[i] {
            Binding::Local(f) => {
                let here = self.here;
                let call = call_counted(
                    f,
                    args,
                    here.clock,
                    Caller::Client,
                    here.registry.result_cache(),
                );
                let cached = &self.cached[i];
                Either::Left(async move {
                    let result = call.await.map(|(v, hit)| {
                        cached.store(hit, std::sync::atomic::Ordering::Relaxed);
                        (v, None)
                    });
                    (i, result.map_err(|e| step_error(cmd, e)))
                })
            }
            // A step that waited for others is routed when it starts: liveness may have
            // changed since binding.
            binding => {
                let (here, deadline) = (self.here, self.deadline);
                Either::Right(
                    async move {
                        let deadline = deadline.unwrap_or_else(|| here.clock.now());
                        (
                            i,
                            run_bound(here, cmd, binding, args, deadline, false).await,
                        )
                    }
                    .boxed(),
                )
            }
        }
    }
}

/// A step's result, refused when it nests deeper than a reply may
/// ([`MAX_VALUE_DEPTH`]): such a value could not be parsed by clients, or copied safely.
fn check_result(cmd: &RpcCommand, value: Json) -> Result<Json, ExecError> {
    // Nesting deeper than the limit takes more than twice its bytes.
    if value.len() > 2 * MAX_VALUE_DEPTH && depth_of(value.get()) > MAX_VALUE_DEPTH {
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

fn call_error_code(e: &CallError) -> ErrorCode {
    match e {
        CallError::InvalidArgument { .. } | CallError::InvalidArguments(_) => {
            ErrorCode::InvalidArguments
        }
        CallError::Failed(_) => ErrorCode::ExecutionFailed,
        CallError::Unavailable(_) => ErrorCode::ClusterUnavailable,
        CallError::Lost(_) => ErrorCode::StepLost,
        CallError::Denied(_) => ErrorCode::Forbidden,
    }
}

fn step_error(cmd: &RpcCommand, e: CallError) -> ExecError {
    ExecError::new(
        call_error_code(&e),
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
    here: Here<'_>,
    cached: &[std::sync::atomic::AtomicBool],
) -> Done {
    let clock = here.clock;
    let mut done = Done::default();
    if let Some(started) = started {
        let mut level_ms = Vec::with_capacity(plan.levels.len());
        let mut levels = Vec::new();
        let mut level_start = started;
        for level in &plan.levels {
            let level_end = level
                .iter()
                .filter_map(|&i| outcome.finished_at[i])
                .max()
                .unwrap_or(level_start);
            let ms = ms_between(level_start, level_end);
            level_ms.push(ms);
            if req.return_intermediate_results {
                // Each result once; the reply's writer repeats earlier levels as it writes
                // (and stops at the message limit).
                let results = level
                    .iter()
                    .map(|&i| {
                        let v = outcome.results[i].clone().unwrap_or_else(Json::null);
                        (req.cmds[i].name.clone(), v)
                    })
                    .collect();
                levels.push(Level {
                    results,
                    timestamp: (clock.wall_ms() as f64 - ms_between(level_end, clock.now()))
                        / 1000.0,
                    execution_time_ms: ms,
                });
            }
            level_start = level_start.max(level_end);
        }
        if req.return_intermediate_results {
            done.levels = Some(Levels {
                request_id: u.to_owned(),
                levels,
            });
        }
        if req.include_execution_summary {
            let name = |node| match here.cluster {
                Some(c) => c.node_name(node),
                None => "local".to_owned(),
            };
            let mut steps = Vec::with_capacity(req.cmds.len());
            for (k, level) in plan.levels.iter().enumerate() {
                for &i in level {
                    let (Some(a), Some(b)) = (outcome.started_at[i], outcome.finished_at[i]) else {
                        continue;
                    };
                    steps.push(StepTiming {
                        name: req.cmds[i].name.clone(),
                        fun: req.cmds[i].fun.clone(),
                        level: k,
                        node_id: name(outcome.ran_on[i]),
                        forwarded: outcome.ran_on[i].is_some(),
                        cached: cached[i].load(std::sync::atomic::Ordering::Relaxed),
                        started_ms: ms_between(started, a),
                        duration_ms: ms_between(a, b),
                    });
                }
            }
            let bottleneck = level_ms
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(k, _)| k);
            done.summary = Some(ExecutionSummary {
                request_id: u.to_owned(),
                total_execution_time_ms: ms_between(started, clock.now()),
                total_levels: plan.levels.len(),
                average_level_time_ms: level_ms.iter().sum::<f64>() / level_ms.len() as f64,
                level_execution_times: level_ms,
                bottleneck_level_index: bottleneck,
                // The original reports every executed command here (2 for a two-step chain).
                parallel_commands_executed: req.cmds.len(),
                cross_cluster_hops: 0,
                trace_id: Some(here.trace.to_string()),
                steps,
            });
        }
    }
    done.r = plan
        .sinks
        .iter()
        .map(|&i| {
            let v = outcome.results[i].take().unwrap_or_else(Json::null);
            (std::mem::take(&mut req.cmds[i].name), v)
        })
        .collect();
    done
}
