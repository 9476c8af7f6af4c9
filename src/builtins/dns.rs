//! The DNS registry's built-ins, in the original's shapes (its `dns_registry.py`):
//! `dns_register`, `dns_unregister`, `dns_list` and `dns_describe`, each taking one object.
//! Registrations are catalog entries committed through Raft, so every member's gateway
//! answers for them; checked here (`dns::registry`) before they are proposed, and against
//! the catalog's cluster-wide bounds when applied.

use std::sync::Arc;

use serde_json::json;

use super::args::{paginate, request, with_next};
use super::{COMMIT_WITHIN, commit_error};
use crate::control::CatalogCommand;
use crate::control::replica::CommitError;
use crate::dns::registry::{self, Accepted, KeyRequest, ListRequest, RegisterRequest};
use crate::protocol::json::Json;
use crate::registry::{CallArgs, CallError, Function};
use crate::view::NodeView;

/// This group's built-ins.
pub(crate) fn functions(view: &Arc<NodeView>) -> Vec<Function> {
    use super::{guarded, takes_request};
    let v = || view.clone();
    [
        (
            register(v()),
            "Registers a service for DNS discovery (replaces one with the same key)",
        ),
        (unregister(v()), "Removes a service registration"),
        (
            list("dns_list", v()),
            "The registered services, filtered and paged",
        ),
        (
            list("dns_describe", v()),
            "The registered services, filtered and paged (as dns_list)",
        ),
    ]
    .into_iter()
    .map(|(f, doc)| guarded(view, takes_request(f, doc)))
    .collect()
}

/// A version-4 UUID from the node's seeded RNG (the original's `registration_id`).
fn uuid4(view: &NodeView) -> String {
    let hi = view.env.rng.next_u64();
    let lo = view.env.rng.next_u64();
    let hi = (hi & 0xffff_ffff_ffff_0fff) | 0x4000; // version 4
    let lo = (lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000; // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

fn register(view: Arc<NodeView>) -> Function {
    Function::raw("dns_register", move |call: CallArgs| {
        let view = view.clone();
        async move {
            let req: RegisterRequest = request("dns_register", &call)?;
            let service = registry::service(
                &req,
                Accepted {
                    node: view.control.id,
                    cluster_id: &view.cluster_id,
                    registration_id: uuid4(&view),
                    now_ms: view.env.clock.wall_ms(),
                },
            )
            .map_err(|e| CallError::InvalidArguments(format!("dns_register: {e}")))?;
            let reply = json!({
                "registration_id": service.registration_id,
                "service": registry::service_json(&service),
                "registered_at": registry::seconds(service.registered_at_ms),
            });
            view.control
                .propose_within(CatalogCommand::RegisterService(service), COMMIT_WITHIN)
                .await
                .map_err(|e| commit_error("registration", e))?;
            Ok(Json::from(reply))
        }
    })
}

fn unregister(view: Arc<NodeView>) -> Function {
    Function::raw("dns_unregister", move |call: CallArgs| {
        let view = view.clone();
        async move {
            let req: KeyRequest = request("dns_unregister", &call)?;
            let key = registry::key(&req.name, &req.namespace, &req.protocol, req.port)
                .map_err(|e| CallError::InvalidArguments(format!("dns_unregister: {e}")))?;
            let known = view
                .control
                .catalog
                .read(|s| s.catalog.service(&key).is_some());
            let removed = if known {
                match view
                    .control
                    .propose_within(CatalogCommand::UnregisterService(key), COMMIT_WITHIN)
                    .await
                {
                    Ok(()) => true,
                    // Gone meanwhile (another node's unregister): not removed by this call.
                    Err(CommitError::Refused(crate::control::CatalogError::UnknownService(_))) => {
                        false
                    }
                    Err(e) => return Err(commit_error("registration", e)),
                }
            } else {
                false
            };
            Ok(Json::from(json!({
                "removed": removed,
                "generated_at": view.env.wall_seconds(),
            })))
        }
    })
}

/// `dns_list` and `dns_describe`: the same items, as in the original.
fn list(name: &'static str, view: Arc<NodeView>) -> Function {
    Function::raw(name, move |call: CallArgs| {
        let view = view.clone();
        async move {
            let req: ListRequest = request(name, &call)?;
            let items = view.control.catalog.read(|s| {
                // The namespace policy: a namespace filter the caller may not see answers
                // nothing, services in namespaces it may not see are left out (audited).
                let mut gate = super::policy::Gate::new(&view, name, s.catalog.policy());
                if !gate.request(req.namespace.as_deref()) {
                    return Vec::new();
                }
                s.catalog
                    .services()
                    .filter_map(|svc| {
                        let node_id = s.catalog.node_id_of(svc.registered_by);
                        (req.keeps(svc, &node_id) && gate.item(&svc.key.namespace))
                            .then(|| registry::endpoint_json(svc, &node_id))
                    })
                    .collect::<Vec<_>>()
            });
            let (page, next) = paginate(items, req.page_token.as_deref(), req.limit);
            Ok(Json::from(with_next(
                json!({"generated_at": view.env.wall_seconds(), "items": page}),
                next,
            )))
        }
    })
}
