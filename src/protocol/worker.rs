//! Worker connections: a client connection that registers functions and serves the calls
//! the node routes to it (docs/PROTOCOL.md, "Worker connections").
//!
//! ```text
//! worker → node  {"role":"register","u":"r1","functions":[{"name":"resize","resources":["gpu"]}]}
//! node → worker  {"u":"r1","r":{"registered":[{"name":"resize","version":"1.0.0",…}]},"error":null}
//! node → worker  {"role":"call","u":"call-1","fun":"resize","version":"1.0.0","args":[…],"kwargs":{}}
//! worker → node  {"role":"call-result","u":"call-1","r":…}   or   …,"error":{"message":"…"}}
//! node → worker  {"role":"cancel","u":"call-1"}   (the caller stopped waiting)
//! ```

use serde::{Deserialize, Serialize};

use super::json::{Json, Kind};

/// `role: "register"`: the functions this connection serves from now until it closes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RegisterRequest {
    pub u: String,
    pub functions: Vec<WorkerFunction>,
}

/// One function a worker offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerFunction {
    pub name: String,
    /// Defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_id: Option<String>,
    #[serde(default = "default_version")]
    pub version: String,
    /// Added to the node's own resources.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Safe to run twice for one request.
    #[serde(default)]
    pub idempotent: bool,
    /// Roles a caller needs one of, on a node that requires tokens (none: anyone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Its parameters (`[{name, type, required}]`), as `rpc_describe` reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<super::param::Param>>,
    /// One line on what it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// Its results may be cached: `{"ttl_seconds": 60}` (`Function::cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<ResultCaching>,
}

/// How long a worker's function's results are kept for identical calls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResultCaching {
    pub ttl_seconds: f64,
}

fn default_version() -> String {
    "1.0.0".to_owned()
}

/// `role: "call"`: the node asks the worker to run one function.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerCall<'a> {
    pub role: &'static str,
    pub u: &'a str,
    pub fun: &'a str,
    pub version: &'a str,
    pub args: &'a Json,
    pub kwargs: &'a Json,
}

/// `role: "call-result"`: the worker's answer to a call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CallResult {
    pub u: String,
    #[serde(default = "Json::null")]
    pub r: Json,
    /// Present when the call failed; its `message` (or the whole value) is reported.
    #[serde(default)]
    pub error: Option<Json>,
}

impl CallResult {
    /// The worker's failure, in words, if it reported one.
    pub fn failure(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct WithMessage {
            message: String,
        }
        let error = self.error.as_ref()?;
        match error.kind() {
            Kind::Null => None,
            Kind::Object => Some(match error.decode::<WithMessage>() {
                Ok(m) => m.message,
                Err(_) => error.get().to_owned(),
            }),
            Kind::String => Some(error.decode().unwrap_or_default()),
            _ => Some(error.get().to_owned()),
        }
    }
}
