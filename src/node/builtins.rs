//! Functions every node offers: `echo`, `echos`, `list_peers`, `cluster_map`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::NodeInfo;
use crate::registry::{CallArgs, CallError, Function};

/// `echo(arg)`: returns its one argument (positional, or keyword `arg`).
pub(super) fn echo() -> Function {
    Function::raw("echo", |mut call: CallArgs| async move {
        match (call.args.len(), call.kwargs.remove("arg")) {
            (1, None) => Ok(call.args.swap_remove(0)),
            (0, Some(v)) if call.kwargs.is_empty() => Ok(v),
            (n, kw) => Err(CallError::InvalidArguments(format!(
                "echo takes exactly one argument, got {}",
                n + usize::from(kw.is_some()) + call.kwargs.len()
            ))),
        }
    })
}

/// `echos(*args)`: returns its positional arguments as a list.
pub(super) fn echos() -> Function {
    Function::raw("echos", |call: CallArgs| async move {
        if call.kwargs.is_empty() {
            Ok(Value::Array(call.args))
        } else {
            Err(CallError::InvalidArguments(
                "echos takes positional arguments only".to_owned(),
            ))
        }
    })
}

/// `list_peers()`: the other members this node knows (none yet: single-node clusters).
pub(super) fn list_peers(_info: Arc<NodeInfo>) -> Function {
    Function::raw("list_peers", |_call: CallArgs| async move { Ok(json!([])) })
}

/// `cluster_map()`: the nodes of the cluster in the shape the original's
/// `MPREGClusterClient` reads (`cluster_id`, `generated_at`, `nodes[]`).
pub(super) fn cluster_map(info: Arc<NodeInfo>) -> Function {
    Function::raw("cluster_map", move |_call: CallArgs| {
        let info = info.clone();
        async move { Ok(info.cluster_map()) }
    })
}

impl NodeInfo {
    fn cluster_map(&self) -> Value {
        let inflight = self.stats.inflight();
        let clients = self.stats.active_clients.load(Ordering::Relaxed);
        json!({
            "cluster_id": self.cluster_id,
            "generated_at": self.env.wall_seconds(),
            "nodes": [{
                "node_id": self.node_id,
                "name": self.name,
                "cluster_id": self.cluster_id,
                "region": "",
                "advertised_urls": [self.url],
                "resources": self.resources,
                "functions": self.functions,
                "status": "ok",
                "is_local": true,
                "load": {
                    "load_score": inflight as f64,
                    "active_clients": clients,
                    "inflight_requests": inflight,
                },
            }],
        })
    }
}
