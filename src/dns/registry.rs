//! Service registrations as the original's `dns_register` takes them: checked under stated
//! bounds, then turned into the catalog's [`DnsService`]; and the catalog's entries back
//! into the original's reply shapes. Pure: the caller supplies the node, the time and the
//! registration id.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::names::{MAX_LABEL, is_label};
use crate::control::catalog::{DnsService, NodeId, ServiceKey};

/// Targets per registration (the issue asks for at least 64).
pub const MAX_TARGETS: usize = 64;
/// Tags, and capabilities, per registration.
pub const MAX_TAGS: usize = 64;
/// Bytes of metadata per registration: keys plus values as JSON text.
pub const MAX_METADATA_BYTES: usize = 4096;
/// A TXT string holds 255 bytes: `key=value` must fit in one.
const MAX_TXT_STRING: usize = 255;
/// The TTL a registration without one gets: the original's `fabric_catalog_ttl_seconds`.
pub const DEFAULT_TTL_SECONDS: u32 = 120;
const MAX_TTL_SECONDS: u32 = 86_400;
/// A host name's most bytes (RFC 1035, in text form without the final dot).
const MAX_NAME: usize = 253;

/// The original's scopes; `cluster` is read as `zone`.
const SCOPES: [&str; 4] = ["local", "zone", "region", "global"];

/// `dns_register`'s request, with the original's field names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default)]
    pub port: i64,
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub weight: i64,
    #[serde(default)]
    pub ttl_seconds: Option<f64>,
}

fn tcp() -> String {
    "tcp".into()
}

/// `dns_unregister`'s request: the registration's key.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeyRequest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default)]
    pub port: i64,
}

/// Why a registration is refused; nothing is changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("`{field}` must be a DNS label (letters, digits, `-`, `_`; 1 to 63 bytes): {value:?}")]
    NotLabel { field: &'static str, value: String },
    #[error("`port` must be 1 to 65535, not {0}")]
    Port(i64),
    #[error("`targets` must name at least one host or address")]
    NoTargets,
    #[error("at most {MAX_TARGETS} targets, not {0}")]
    TooManyTargets(usize),
    #[error("target {0:?} is neither an IP address nor a host name")]
    Target(String),
    #[error("at most {MAX_TAGS} {field}, not {count}")]
    TooManyTags { field: &'static str, count: usize },
    #[error("metadata holds {0} bytes, over {MAX_METADATA_BYTES}")]
    MetadataBytes(usize),
    #[error(
        "metadata `{0}` must be a string, number or boolean, and `key=value` at most 255 bytes"
    )]
    Metadata(String),
    #[error("`{field}` must be 0 to 65535, not {value}")]
    Range { field: &'static str, value: i64 },
    #[error("`ttl_seconds` must be 1 to {MAX_TTL_SECONDS}, not {0}")]
    Ttl(String),
    #[error("unsupported scope {0:?}: one of local, zone (cluster), region, global")]
    Scope(String),
}

/// The registration's key, checked.
pub fn key(name: &str, namespace: &str, protocol: &str, port: i64) -> Result<ServiceKey, Invalid> {
    label("name", name)?;
    for part in namespace.split('.') {
        label("namespace", part).map_err(|_| Invalid::NotLabel {
            field: "namespace",
            value: namespace.to_owned(),
        })?;
    }
    label("protocol", protocol)?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(Invalid::Port(port))?;
    Ok(ServiceKey {
        namespace: namespace.to_ascii_lowercase(),
        name: name.to_ascii_lowercase(),
        protocol: protocol.to_ascii_lowercase(),
        port,
    })
}

fn label(field: &'static str, value: &str) -> Result<(), Invalid> {
    if is_label(value) {
        Ok(())
    } else {
        Err(Invalid::NotLabel {
            field,
            value: value.chars().take(80).collect(),
        })
    }
}

/// Who registers, and when: what the request does not say.
pub struct Accepted<'a> {
    pub node: NodeId,
    pub cluster_id: &'a str,
    pub registration_id: String,
    pub now_ms: u64,
}

/// The catalog entry `req` asks for, or why it is refused.
pub fn service(req: &RegisterRequest, by: Accepted<'_>) -> Result<DnsService, Invalid> {
    let key = key(&req.name, &req.namespace, &req.protocol, req.port)?;
    Ok(DnsService {
        key,
        targets: targets(&req.targets)?,
        scope: scope(req.scope.as_deref())?,
        tags: tags("tags", &req.tags)?,
        capabilities: tags("capabilities", &req.capabilities)?,
        metadata: metadata(&req.metadata)?,
        priority: u16_field("priority", req.priority)?,
        weight: u16_field("weight", req.weight)?,
        ttl_seconds: ttl(req.ttl_seconds)?,
        registered_by: by.node,
        cluster_id: by.cluster_id.to_owned(),
        registration_id: by.registration_id,
        registered_at_ms: by.now_ms,
    })
}

fn targets(given: &[String]) -> Result<Vec<String>, Invalid> {
    if given.is_empty() {
        return Err(Invalid::NoTargets);
    }
    if given.len() > MAX_TARGETS {
        return Err(Invalid::TooManyTargets(given.len()));
    }
    let mut out = BTreeSet::new();
    for t in given {
        let t = t.trim().trim_end_matches('.');
        let ok = t.parse::<IpAddr>().is_ok()
            || (t.len() <= MAX_NAME && t.split('.').all(is_label) && !t.is_empty());
        if !ok {
            return Err(Invalid::Target(t.chars().take(80).collect()));
        }
        out.insert(match t.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => t.to_ascii_lowercase(),
        });
    }
    Ok(out.into_iter().collect())
}

fn scope(s: Option<&str>) -> Result<String, Invalid> {
    let s = s.map(|s| s.trim().to_ascii_lowercase()).unwrap_or_default();
    match s.as_str() {
        "" | "cluster" => Ok("zone".into()),
        s if SCOPES.contains(&s) => Ok(s.to_owned()),
        s => Err(Invalid::Scope(s.chars().take(40).collect())),
    }
}

fn tags(field: &'static str, given: &[String]) -> Result<BTreeSet<String>, Invalid> {
    if given.len() > MAX_TAGS {
        return Err(Invalid::TooManyTags {
            field,
            count: given.len(),
        });
    }
    given
        .iter()
        .map(|t| {
            let ok = !t.is_empty() && t.len() <= MAX_LABEL && !t.contains([',', '=']);
            ok.then(|| t.clone()).ok_or_else(|| Invalid::NotLabel {
                field,
                value: t.chars().take(80).collect(),
            })
        })
        .collect()
}

fn metadata(given: &Map<String, Value>) -> Result<BTreeMap<String, String>, Invalid> {
    let mut out = BTreeMap::new();
    let mut bytes = 0usize;
    for (k, v) in given {
        let text = match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => v.to_string(),
            _ => return Err(Invalid::Metadata(k.chars().take(80).collect())),
        };
        bytes = bytes.saturating_add(k.len() + text.len());
        if bytes > MAX_METADATA_BYTES {
            return Err(Invalid::MetadataBytes(bytes));
        }
        if k.is_empty() || k.contains('=') || k.len() + 1 + txt_value(&text).len() > MAX_TXT_STRING
        {
            return Err(Invalid::Metadata(k.chars().take(80).collect()));
        }
        out.insert(k.clone(), text);
    }
    Ok(out)
}

fn u16_field(field: &'static str, value: i64) -> Result<u16, Invalid> {
    u16::try_from(value).map_err(|_| Invalid::Range { field, value })
}

fn ttl(t: Option<f64>) -> Result<u32, Invalid> {
    match t {
        None => Ok(DEFAULT_TTL_SECONDS),
        Some(t) if t.is_finite() && (1.0..=f64::from(MAX_TTL_SECONDS)).contains(&t) => Ok(t as u32),
        Some(t) => Err(Invalid::Ttl(t.to_string())),
    }
}

/// A metadata value as TXT shows it: strings without their quotes, the rest as JSON.
pub fn txt_value(json_text: &str) -> String {
    match serde_json::from_str::<Value>(json_text) {
        Ok(Value::String(s)) => s,
        _ => json_text.to_owned(),
    }
}

fn metadata_json(m: &BTreeMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| {
                let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()));
                (k.clone(), value)
            })
            .collect(),
    )
}

/// The `service` object of `dns_register`'s reply.
pub fn service_json(s: &DnsService) -> Value {
    json!({
        "name": s.key.name,
        "namespace": s.key.namespace,
        "protocol": s.key.protocol,
        "port": s.key.port,
        "targets": s.targets,
        "scope": s.scope,
        "tags": s.tags,
        "capabilities": s.capabilities,
        "metadata": metadata_json(&s.metadata),
        "priority": s.priority,
        "weight": s.weight,
        "ttl_seconds": s.ttl_seconds,
    })
}

/// An item of `dns_list` and `dns_describe` (the original's `ServiceEndpoint.to_dict()`);
/// `node_id` is the registering member's.
pub fn endpoint_json(s: &DnsService, node_id: &str) -> Value {
    let mut v = service_json(s);
    if let Value::Object(m) = &mut v {
        m.insert("node_id".into(), json!(node_id));
        m.insert("cluster_id".into(), json!(s.cluster_id));
        m.insert("advertised_at".into(), json!(seconds(s.registered_at_ms)));
    }
    v
}

/// Milliseconds since the epoch as the original's float seconds.
pub fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// `dns_list`'s and `dns_describe`'s filters, with the original's names.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListRequest {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub port: Option<i64>,
    pub scope: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    pub cluster_id: Option<String>,
    pub node_id: Option<String>,
    pub limit: Option<usize>,
    pub page_token: Option<String>,
}

impl ListRequest {
    /// Whether `s` (registered by `node_id`) passes every filter given.
    pub fn keeps(&self, s: &DnsService, node_id: &str) -> bool {
        let eq = |want: &Option<String>, have: &str| {
            want.as_deref()
                .is_none_or(|w| w.is_empty() || w.eq_ignore_ascii_case(have))
        };
        eq(&self.namespace, &s.key.namespace)
            && eq(&self.name, &s.key.name)
            && eq(&self.protocol, &s.key.protocol)
            && self.port.is_none_or(|p| p == i64::from(s.key.port))
            && eq(&self.scope, &s.scope)
            && eq(&self.cluster_id, &s.cluster_id)
            && eq(&self.node_id, node_id)
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.capabilities.iter().all(|c| s.capabilities.contains(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by() -> Accepted<'static> {
        Accepted {
            node: NodeId(1),
            cluster_id: "c",
            registration_id: "r".into(),
            now_ms: 1_500,
        }
    }

    fn req(v: Value) -> RegisterRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_plain_registration_as_the_original_client_sends_it() {
        let r = req(
            json!({"name":"web","namespace":"shop","protocol":"tcp","port":8080,
            "targets":["10.0.0.7","10.0.0.7","a.example."],"metadata":{"v":2,"env":"prod"},
            "priority":0,"weight":0}),
        );
        let s = service(&r, by()).unwrap();
        assert_eq!(s.targets, vec!["10.0.0.7", "a.example"]);
        assert_eq!(s.ttl_seconds, DEFAULT_TTL_SECONDS);
        assert_eq!(s.scope, "zone");
        let j = service_json(&s);
        assert_eq!(j["metadata"], json!({"env":"prod","v":2}));
        assert_eq!(j["port"], 8080);
        let e = endpoint_json(&s, "n1");
        assert_eq!(e["advertised_at"], 1.5);
        assert_eq!(e["node_id"], "n1");
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let base = json!({"name":"web","namespace":"shop","port":8080,"targets":["10.0.0.7"]});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            service(&req(b), by()).unwrap_err()
        };
        assert!(matches!(with("name", json!("")), Invalid::NotLabel { .. }));
        assert!(matches!(
            with("name", json!("a b")),
            Invalid::NotLabel { .. }
        ));
        assert!(matches!(
            with("namespace", json!("a..b")),
            Invalid::NotLabel { .. }
        ));
        assert_eq!(with("port", json!(0)), Invalid::Port(0));
        assert_eq!(with("port", json!(65536)), Invalid::Port(65536));
        assert_eq!(with("targets", json!([])), Invalid::NoTargets);
        let many: Vec<String> = (0..65).map(|i| format!("10.0.0.{i}")).collect();
        assert_eq!(with("targets", json!(many)), Invalid::TooManyTargets(65));
        let ok: Vec<String> = (0..64).map(|i| format!("10.0.0.{i}")).collect();
        let mut b = base.clone();
        b["targets"] = json!(ok);
        assert_eq!(service(&req(b), by()).unwrap().targets.len(), 64);
        assert!(matches!(
            with("targets", json!(["bad host"])),
            Invalid::Target(_)
        ));
        assert!(matches!(
            with("metadata", json!({"k": [1]})),
            Invalid::Metadata(_)
        ));
        let big: Map<String, Value> = (0..100)
            .map(|i| (format!("k{i}"), json!("x".repeat(60))))
            .collect();
        assert!(matches!(
            with("metadata", Value::Object(big)),
            Invalid::MetadataBytes(_)
        ));
        assert!(matches!(with("priority", json!(-1)), Invalid::Range { .. }));
        assert!(matches!(with("ttl_seconds", json!(0)), Invalid::Ttl(_)));
        assert!(matches!(with("scope", json!("galaxy")), Invalid::Scope(_)));
        let tags: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        assert!(matches!(
            with("tags", json!(tags)),
            Invalid::TooManyTags { .. }
        ));
    }

    #[test]
    fn list_filters() {
        let s = service(
            &req(
                json!({"name":"web","namespace":"shop","port":8080,"targets":["h.example"],
                "tags":["a","b"]}),
            ),
            by(),
        )
        .unwrap();
        let f = |v: Value| {
            serde_json::from_value::<ListRequest>(v)
                .unwrap()
                .keeps(&s, "n1")
        };
        assert!(f(json!({})));
        assert!(f(json!({"namespace":"shop","tags":["a"]})));
        assert!(!f(json!({"tags":["c"]})));
        assert!(!f(json!({"port":80})));
        assert!(f(json!({"node_id":"n1"})));
        assert!(!f(json!({"node_id":"n2"})));
    }
}
