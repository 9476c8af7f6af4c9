//! Message shapes of the client protocol (docs/PROTOCOL.md).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ErrorCode;
use super::json::{Json, json_array, json_object};

/// One step of a request: call `fun` and name its result `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcCommand {
    /// The step's name: the key of its result in the reply and what other steps reference.
    pub name: String,
    /// The registered function to call.
    pub fun: String,
    /// Positional arguments (a JSON array, kept as text); a string equal to another step's
    /// name is replaced by its result.
    #[serde(default = "Json::empty_array", deserialize_with = "json_array")]
    pub args: Json,
    /// Keyword arguments (a JSON object, kept as text), matched to parameter names;
    /// references resolve here too.
    #[serde(default = "Json::empty_object", deserialize_with = "json_object")]
    pub kwargs: Json,
    /// Resources the executing function must have (a subset of its registered resources).
    #[serde(default)]
    pub locs: Vec<String>,
    /// Must equal the registered `function_id` when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_id: Option<String>,
    /// e.g. `>=1.0.0,<2.0.0`; the highest matching version runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_constraint: Option<String>,
    /// Federation target; accepted for compatibility, routing across clusters comes later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cluster: Option<String>,
}

impl RpcCommand {
    /// A step named `name` calling `fun` with no arguments.
    pub fn new(name: impl Into<String>, fun: impl Into<String>) -> RpcCommand {
        RpcCommand {
            name: name.into(),
            fun: fun.into(),
            args: Json::empty_array(),
            kwargs: Json::empty_object(),
            locs: Vec::new(),
            function_id: None,
            version_constraint: None,
            target_cluster: None,
        }
    }

    /// Sets the positional arguments (a JSON array; any other value becomes one argument).
    pub fn args(mut self, args: Value) -> RpcCommand {
        self.args = match args {
            Value::Array(_) => Json::from(args),
            other => Json::from(Value::Array(vec![other])),
        };
        self
    }

    pub fn kwarg(mut self, key: impl Into<String>, value: Value) -> RpcCommand {
        let mut kwargs: Map<String, Value> = self.kwargs.decode().unwrap_or_default();
        kwargs.insert(key.into(), value);
        self.kwargs = Json::from(Value::Object(kwargs));
        self
    }

    pub fn locs<I, S>(mut self, locs: I) -> RpcCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.locs = locs.into_iter().map(Into::into).collect();
        self
    }

    pub fn function_id(mut self, id: impl Into<String>) -> RpcCommand {
        self.function_id = Some(id.into());
        self
    }

    pub fn version_constraint(mut self, constraint: impl Into<String>) -> RpcCommand {
        self.version_constraint = Some(constraint.into());
        self
    }
}

/// A message's `role`. `"rpc"` is recognised without allocating: it is read for every
/// request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Rpc,
    Other(String),
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Role::Rpc => s.serialize_str("rpc"),
            Role::Other(r) => s.serialize_str(r),
        }
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Role;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a role string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Role, E> {
                Ok(match v {
                    "rpc" => Role::Rpc,
                    other => Role::Other(other.to_owned()),
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// `role: "rpc"`: run the commands as one dependency DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcRequest {
    /// Always `"rpc"` for this message; kept optional so a missing role gets its own error.
    #[serde(default)]
    pub role: Option<Role>,
    /// Client-chosen correlation id, echoed in the reply.
    pub u: String,
    pub cmds: Vec<RpcCommand>,
    /// Adds per-level results to the reply.
    #[serde(default)]
    pub return_intermediate_results: bool,
    /// Adds timing per level to the reply.
    #[serde(default)]
    pub include_execution_summary: bool,
    /// Lowers the node's request timeout for this request (mpreg extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The request's trace id, carried to every node it runs on and into their logs
    /// (mpreg extension; the node makes one when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl RpcRequest {
    pub fn new(u: impl Into<String>, cmds: Vec<RpcCommand>) -> RpcRequest {
        RpcRequest {
            role: Some(Role::Rpc),
            u: u.into(),
            cmds,
            return_intermediate_results: false,
            include_execution_summary: false,
            timeout_ms: None,
            trace_id: None,
        }
    }
}

/// `error` of a failed reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub code: i64,
    pub message: String,
    #[serde(default)]
    pub details: Value,
}

impl WireError {
    pub fn new(code: ErrorCode, details: impl Into<String>) -> WireError {
        WireError {
            code: code.as_i64(),
            message: code.title().to_owned(),
            details: Value::String(details.into()),
        }
    }
}

/// Results of one execution level (`return_intermediate_results`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntermediateResult {
    pub request_id: String,
    pub level_index: usize,
    pub level_results: Map<String, Value>,
    pub accumulated_results: Map<String, Value>,
    pub total_levels: usize,
    pub completed_levels: usize,
    pub timestamp: f64,
    pub execution_time_ms: f64,
}

/// Timing of a whole request (`include_execution_summary`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionSummary {
    pub request_id: String,
    pub total_execution_time_ms: f64,
    pub total_levels: usize,
    pub level_execution_times: Vec<f64>,
    pub bottleneck_level_index: usize,
    pub average_level_time_ms: f64,
    pub parallel_commands_executed: usize,
    pub cross_cluster_hops: usize,
    /// The request's trace id (mpreg extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Each command: where it ran and when (mpreg extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepTiming>,
}

/// One command of a summarised request: the node that ran it, when it started (since the
/// request started) and how long it took there, hop included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTiming {
    pub name: String,
    pub fun: String,
    pub level: usize,
    pub node_id: String,
    /// Whether it ran on another node than the one the client asked.
    pub forwarded: bool,
    pub started_ms: f64,
    pub duration_ms: f64,
    /// Whether its result came from the node's result cache instead of a run (mpreg
    /// extension; absent when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// The reply to an `rpc` request: `r` on success, `error` on failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcReply {
    #[serde(default)]
    pub role: Option<Cow<'static, str>>,
    /// The request's `u`, or `"unknown"` when it could not be read.
    pub u: Value,
    /// Results of every sink command (one no other command depends on), keyed by name.
    #[serde(default)]
    pub r: Option<Map<String, Value>>,
    #[serde(default)]
    pub error: Option<WireError>,
    #[serde(default)]
    pub intermediate_results: Vec<IntermediateResult>,
    #[serde(default)]
    pub execution_summary: Option<ExecutionSummary>,
}

impl RpcReply {
    pub fn success(u: Value, r: Map<String, Value>) -> RpcReply {
        RpcReply {
            role: Some(Cow::Borrowed("rpc-response")),
            u,
            r: Some(r),
            error: None,
            intermediate_results: Vec::new(),
            execution_summary: None,
        }
    }

    pub fn failure(u: Value, error: WireError) -> RpcReply {
        RpcReply {
            role: Some(Cow::Borrowed("rpc-response")),
            u,
            r: None,
            error: Some(error),
            intermediate_results: Vec::new(),
            execution_summary: None,
        }
    }

    /// The reply as JSON. Serialising plain JSON values cannot fail; should it ever, the
    /// reply degrades to an internal error rather than vanishing.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            let fallback = RpcReply::failure(
                self.u.clone(),
                WireError::new(ErrorCode::Internal, format!("reply encoding failed: {e}")),
            );
            serde_json::to_string(&fallback).unwrap_or_default()
        })
    }
}
