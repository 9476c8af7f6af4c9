//! Namespace policies at the edge (the original's `namespace_policy.py` and
//! `discovery_monitoring.py` calls): `namespace_policy_validate`, `namespace_policy_apply`,
//! `namespace_policy_export`, `namespace_policy_audit`, `namespace_status` and
//! `discovery_access_audit`, and [`Gate`], the one check the discovery calls make.
//!
//! Unlike the original, where a policy is a setting of the node it was applied to, the
//! policy is a catalog entry: applied through Raft, every member enforces the same one, on
//! its discovery calls and its DNS answers alike. Every denial is audited, the items a
//! listing leaves out included (the original audits only denied request filters).
//!
//! The viewer is the node's own cluster, as in the original for client connections (a
//! request's `viewer_cluster_id` is not trusted); there is no tenant mode, so a request's
//! `viewer_tenant_id` is not trusted either and rules' `visibility_tenants` admit no one.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::args::request;
use super::{COMMIT_WITHIN, commit_error};
use crate::control::CatalogCommand;
use crate::control::policy::{
    AccessDenial, AuditLog, CutoverWindow, NamespacePolicy, PolicyChange, PolicyRule, validate,
};
use crate::protocol::json::Json;
use crate::registry::{CallArgs, CallError, Function};
use crate::view::NodeView;

/// This group's built-ins.
pub(crate) fn functions(view: &Arc<NodeView>) -> Vec<Function> {
    use super::{guarded, takes_nothing, takes_request};
    let v = || view.clone();
    vec![
        guarded(
            view,
            takes_request(
                namespace_status(v()),
                "Whether this caller may discover a namespace, and the rule that says so",
            ),
        ),
        guarded(
            view,
            takes_request(
                change("namespace_policy_validate", v()),
                "Checks namespace policy rules without applying them",
            ),
        ),
        guarded(
            view,
            takes_request(
                change("namespace_policy_apply", v()),
                "Replaces the cluster's namespace policy (committed through the catalog)",
            ),
        ),
        guarded(
            view,
            takes_nothing(export(v()), "The cluster's namespace policy as it stands"),
        ),
        guarded(
            view,
            takes_request(
                policy_audit(v()),
                "The policy validations and applications asked of this node",
            ),
        ),
        guarded(
            view,
            takes_request(
                access_audit(v()),
                "The discovery denials on this node (calls and DNS answers)",
            ),
        ),
    ]
}

/// The namespace check of one discovery call: what the caller asked for as a whole
/// ([`Gate::request`]) and each item of the answer ([`Gate::item`]); every denial is
/// audited, once per namespace per call.
pub(crate) struct Gate<'a> {
    view: &'a NodeView,
    event: &'static str,
    policy: &'a NamespacePolicy,
    audited: BTreeSet<String>,
}

impl<'a> Gate<'a> {
    pub(crate) fn new(
        view: &'a NodeView,
        event: &'static str,
        policy: &'a NamespacePolicy,
    ) -> Self {
        Gate {
            view,
            event,
            policy,
            audited: BTreeSet::new(),
        }
    }

    /// Whether the caller may see `namespace` (empty: everyone's); a denial is audited.
    pub(crate) fn item(&mut self, namespace: &str) -> bool {
        if namespace.is_empty() {
            return true;
        }
        let d = self.policy.decide(namespace, &self.view.cluster_id, None);
        if !d.allowed && self.audited.insert(namespace.to_owned()) {
            self.view.access_audit.record(AccessDenial {
                event: self.event.to_owned(),
                timestamp: self.view.env.wall_seconds(),
                viewer_cluster_id: self.view.cluster_id.clone(),
                viewer_tenant_id: None,
                namespace: namespace.to_owned(),
                reason: d.reason,
            });
        }
        d.allowed
    }

    /// Whether the caller may see the namespace filter it gave (none: yes).
    pub(crate) fn request(&mut self, filter: Option<&str>) -> bool {
        filter
            .map(str::trim)
            .is_none_or(|ns| ns.is_empty() || self.item(ns))
    }
}

/// The policy in force (a copy: calls that check outside the catalog's lock).
pub(crate) fn policy_now(view: &NodeView) -> NamespacePolicy {
    view.control.catalog.read(|s| s.catalog.policy().clone())
}

/// A watch (`event`) on a namespace the caller may not see is refused, and audited (the
/// original's 403, `discovery_access_denied`; here the stable 1021). No namespace: allowed.
pub(crate) fn refuse_hidden(
    view: &NodeView,
    event: &'static str,
    namespace: Option<&str>,
) -> Result<(), CallError> {
    let Some(ns) = namespace.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(());
    };
    if Gate::new(view, event, &policy_now(view)).item(ns) {
        return Ok(());
    }
    Err(CallError::Denied(format!(
        "discovery_access_denied: {event} denied for namespace {ns}"
    )))
}

// ---- rules as the original writes them ------------------------------------------------

fn strings(v: &Value, key: &str) -> Result<Vec<String>, String> {
    match &v[key] {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("`{key}` holds {other}, not a string")),
            })
            .collect(),
        other => Err(format!("`{key}` must be a list of strings, not {other}")),
    }
}

/// Float seconds as ms (the original's window times).
fn ms(v: &Value, key: &str) -> Result<Option<i64>, String> {
    match &v[key] {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| Some((f * 1000.0).round() as i64))
            .ok_or_else(|| format!("`{key}` is out of range")),
        other => Err(format!("`{key}` must be seconds, not {other}")),
    }
}

/// A list that may be given as one object, as the original accepts; non-objects skipped.
fn objects(v: &Value) -> Vec<&Value> {
    match v {
        Value::Object(_) => vec![v],
        Value::Array(items) => items.iter().filter(|i| i.is_object()).collect(),
        _ => Vec::new(),
    }
}

fn rule_from(v: &Value) -> Result<PolicyRule, String> {
    let windows = objects(&v["cutover_windows"])
        .into_iter()
        .map(|w| {
            Ok(CutoverWindow {
                starts_at_ms: ms(w, "starts_at")?.unwrap_or(0),
                ends_at_ms: ms(w, "ends_at")?,
                export_scopes: strings(w, "export_scopes")?,
                allow_summaries: w["allow_summaries"].as_bool(),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(PolicyRule {
        namespace: v["namespace"].as_str().unwrap_or_default().to_owned(),
        owners: strings(v, "owners")?,
        visibility: strings(v, "visibility")?,
        visibility_tenants: strings(v, "visibility_tenants")?,
        export_scopes: strings(v, "export_scopes")?,
        allow_summaries: v["allow_summaries"].as_bool().unwrap_or(false),
        cutover_windows: windows,
        policy_version: v["policy_version"].as_str().map(str::to_owned),
    })
}

/// A rule as the original's `to_dict` writes it (empty tenants, windows and version left
/// out; the other lists always there).
pub(crate) fn rule_json(r: &PolicyRule) -> Value {
    let mut m = Map::new();
    m.insert("namespace".into(), json!(r.namespace));
    m.insert("owners".into(), json!(r.owners));
    m.insert("visibility".into(), json!(r.visibility));
    if !r.visibility_tenants.is_empty() {
        m.insert("visibility_tenants".into(), json!(r.visibility_tenants));
    }
    m.insert("export_scopes".into(), json!(r.export_scopes));
    m.insert("allow_summaries".into(), json!(r.allow_summaries));
    if !r.cutover_windows.is_empty() {
        let windows: Vec<Value> = r
            .cutover_windows
            .iter()
            .map(|w| {
                let mut m = Map::new();
                m.insert("starts_at".into(), json!(w.starts_at_ms as f64 / 1000.0));
                if let Some(e) = w.ends_at_ms {
                    m.insert("ends_at".into(), json!(e as f64 / 1000.0));
                }
                if !w.export_scopes.is_empty() {
                    m.insert("export_scopes".into(), json!(w.export_scopes));
                }
                if let Some(a) = w.allow_summaries {
                    m.insert("allow_summaries".into(), json!(a));
                }
                Value::Object(m)
            })
            .collect();
        m.insert("cutover_windows".into(), Value::Array(windows));
    }
    if let Some(v) = &r.policy_version {
        m.insert("policy_version".into(), json!(v));
    }
    Value::Object(m)
}

// ---- the calls ------------------------------------------------------------------------

/// The original's `NamespacePolicyApplyRequest` (validate takes it too).
#[derive(Debug, Default, Deserialize)]
struct ApplyRequest {
    rules: Option<Value>,
    enabled: Option<bool>,
    default_allow: Option<bool>,
    actor: Option<String>,
}

/// Most rules a request may carry before they are read one by one.
const MAX_RULES_READ: usize = crate::control::policy::MAX_RULES + 1;

/// `namespace_policy_validate` and `namespace_policy_apply`.
fn change(name: &'static str, view: Arc<NodeView>) -> Function {
    let applying = name == "namespace_policy_apply";
    Function::raw(name, move |call: CallArgs| {
        let view = view.clone();
        async move {
            let req: ApplyRequest = request(name, &call)?;
            let current = policy_now(&view);
            let rules = match &req.rules {
                None => current.rules.clone(),
                Some(v) => objects(v)
                    .into_iter()
                    .take(MAX_RULES_READ)
                    .map(rule_from)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| CallError::InvalidArguments(format!("{name}: {e}")))?,
            };
            let errors = validate(&rules);
            let valid = errors.is_empty();
            view.policy_audit.record(PolicyChange {
                event: if applying { "apply" } else { "validate" },
                timestamp: view.env.wall_seconds(),
                actor: req.actor.clone(),
                valid,
                rule_count: rules.len(),
                errors: errors.clone(),
            });
            let generated_at = view.env.wall_seconds();
            if !applying {
                return Ok(Json::from(json!({
                    "valid": valid, "generated_at": generated_at,
                    "rule_count": rules.len(), "errors": errors,
                })));
            }
            if !valid {
                return Ok(Json::from(json!({
                    "applied": false, "valid": false, "generated_at": generated_at,
                    "rule_count": rules.len(), "errors": errors,
                })));
            }
            let rule_count = rules.len();
            let policy = NamespacePolicy {
                enabled: req.enabled.unwrap_or(current.enabled),
                default_allow: req.default_allow.unwrap_or(current.default_allow),
                rules,
            };
            view.control
                .propose_within(CatalogCommand::SetNamespacePolicy(policy), COMMIT_WITHIN)
                .await
                .map_err(|e| commit_error("policy", e))?;
            Ok(Json::from(json!({
                "applied": true, "valid": true, "generated_at": generated_at,
                "rule_count": rule_count, "errors": [],
            })))
        }
    })
}

/// `namespace_policy_export()`: `{enabled, default_allow, generated_at, rule_count, rules}`.
fn export(view: Arc<NodeView>) -> Function {
    Function::raw("namespace_policy_export", move |_call: CallArgs| {
        let view = view.clone();
        async move {
            // The original ignores what it is given.
            let p = policy_now(&view);
            Ok(Json::from(json!({
                "enabled": p.enabled,
                "default_allow": p.default_allow,
                "generated_at": view.env.wall_seconds(),
                "rule_count": p.rules.len(),
                "rules": p.rules.iter().map(rule_json).collect::<Vec<_>>(),
            })))
        }
    })
}

#[derive(Debug, Default, Deserialize)]
struct LimitRequest {
    limit: Option<i64>,
}

/// An audit call: `{generated_at, entries}`, the newest `limit` entries of `log`, oldest
/// first, each as `entry` writes it.
fn audit_call<T: Clone + Send + 'static>(
    name: &'static str,
    view: Arc<NodeView>,
    log: fn(&NodeView) -> &AuditLog<T>,
    entry: fn(T) -> Value,
) -> Function {
    Function::raw(name, move |call: CallArgs| {
        let view = view.clone();
        async move {
            let req: LimitRequest = request(name, &call)?;
            let entries: Vec<Value> = log(&view)
                .newest(req.limit)
                .into_iter()
                .map(entry)
                .collect();
            Ok(Json::from(json!({
                "generated_at": view.env.wall_seconds(),
                "entries": entries,
            })))
        }
    })
}

/// `namespace_policy_audit({limit?})`: this node's validations and applications.
fn policy_audit(view: Arc<NodeView>) -> Function {
    audit_call(
        "namespace_policy_audit",
        view,
        |v| &v.policy_audit,
        |e| {
            let mut m = Map::new();
            m.insert("event".into(), json!(e.event));
            m.insert("timestamp".into(), json!(e.timestamp));
            if let Some(a) = e.actor {
                m.insert("actor".into(), json!(a));
            }
            m.insert("valid".into(), json!(e.valid));
            m.insert("rule_count".into(), json!(e.rule_count));
            if !e.errors.is_empty() {
                m.insert("errors".into(), json!(e.errors));
            }
            Value::Object(m)
        },
    )
}

/// `discovery_access_audit({limit?})`: each denial with the original's fields.
fn access_audit(view: Arc<NodeView>) -> Function {
    audit_call(
        "discovery_access_audit",
        view,
        |v| &v.access_audit,
        |e| {
            let mut m = Map::new();
            m.insert("event".into(), json!(e.event));
            m.insert("timestamp".into(), json!(e.timestamp));
            m.insert("viewer_cluster_id".into(), json!(e.viewer_cluster_id));
            if let Some(t) = e.viewer_tenant_id {
                m.insert("viewer_tenant_id".into(), json!(t));
            }
            if !e.namespace.is_empty() {
                m.insert("namespace".into(), json!(e.namespace));
            }
            m.insert("allowed".into(), json!(false));
            m.insert("reason".into(), json!(e.reason));
            Value::Object(m)
        },
    )
}

#[derive(Debug, Default, Deserialize)]
struct StatusRequest {
    #[serde(default)]
    namespace: String,
}

/// `namespace_status({namespace?})`: `{namespace?, generated_at, viewer_cluster_id,
/// viewer_tenant_id, allowed, reason, rule?}`; a denial is audited.
fn namespace_status(view: Arc<NodeView>) -> Function {
    Function::raw("namespace_status", move |call: CallArgs| {
        let view = view.clone();
        async move {
            let req: StatusRequest = request("namespace_status", &call)?;
            let ns = req.namespace.trim().to_owned();
            let policy = policy_now(&view);
            let d = policy.decide(&ns, &view.cluster_id, None);
            if !ns.is_empty() {
                Gate::new(&view, "namespace_status", &policy).item(&ns);
            }
            let mut m = Map::new();
            if !ns.is_empty() {
                m.insert("namespace".into(), json!(ns));
            }
            m.insert("generated_at".into(), json!(view.env.wall_seconds()));
            m.insert("viewer_cluster_id".into(), json!(view.cluster_id));
            m.insert("viewer_tenant_id".into(), Value::Null);
            m.insert("allowed".into(), json!(d.allowed));
            m.insert("reason".into(), json!(d.reason));
            if let Some(r) = d.rule {
                m.insert("rule".into(), rule_json(r));
            }
            Ok(Json::from(Value::Object(m)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_and_write_as_the_original() {
        let v = json!({"namespace": "svc.secret", "visibility": ["secure"],
            "visibility_tenants": "tenant-a", "policy_version": "v1",
            "cutover_windows": {"starts_at": 1.5, "ends_at": 2.25, "allow_summaries": true}});
        let r = rule_from(&v).unwrap();
        assert_eq!(r.visibility_tenants, ["tenant-a"]);
        assert_eq!(r.cutover_windows[0].starts_at_ms, 1500);
        assert_eq!(
            rule_json(&r),
            json!({"namespace": "svc.secret", "owners": [], "visibility": ["secure"],
                "visibility_tenants": ["tenant-a"], "export_scopes": [], "allow_summaries": false,
                "cutover_windows": [{"starts_at": 1.5, "ends_at": 2.25, "allow_summaries": true}],
                "policy_version": "v1"})
        );
        assert!(rule_from(&json!({"namespace": "a", "owners": [1]})).is_err());
        assert!(
            rule_from(&json!({"namespace": "a", "cutover_windows": [{"starts_at": "x"}]})).is_err()
        );
        assert_eq!(objects(&json!([{"a": 1}, 2, "x"])).len(), 1);
    }
}
