//! The original's `cache-request` and `cache-response` messages (docs/PROTOCOL.md, "Cache"),
//! read under the node's bounds ([`CacheLimits`]).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::key::CacheKey;

/// Levels this build serves; L3 and L4 (cluster and federated) come with the cluster cache.
pub const SERVED_LEVELS: [Level; 2] = [Level::L1, Level::L2];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    L1,
    L2,
    L3,
    L4,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::L1 => "L1",
            Level::L2 => "L2",
            Level::L3 => "L3",
            Level::L4 => "L4",
        }
    }
}

/// `operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Get,
    Put,
    Delete,
    Invalidate,
    Query,
    Stats,
    Atomic,
    Structure,
    Namespace,
}

/// `options`: which levels, and the original's other fields (carried, and read where this
/// build has a meaning for them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CacheOptions {
    #[serde(default = "default_levels")]
    pub cache_levels: Vec<Level>,
    #[serde(default = "yes")]
    pub include_metadata: bool,
    #[serde(default)]
    pub consistency_level: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub replication_factor: Option<u64>,
    #[serde(default)]
    pub prefer_local: Option<bool>,
    #[serde(default)]
    pub max_staleness_seconds: Option<f64>,
}

fn default_levels() -> Vec<Level> {
    SERVED_LEVELS.to_vec()
}

fn yes() -> bool {
    true
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            cache_levels: default_levels(),
            include_metadata: true,
            consistency_level: None,
            timeout_ms: None,
            replication_factor: None,
            prefer_local: None,
            max_staleness_seconds: None,
        }
    }
}

/// `metadata`: what a put says about its entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CacheMetadata {
    #[serde(default)]
    pub ttl_seconds: Option<f64>,
    #[serde(default)]
    pub computation_cost_ms: Option<f64>,
    /// Keys (as objects or as text) whose invalidation takes this entry too.
    #[serde(default)]
    pub dependencies: Vec<KeyRef>,
    #[serde(default)]
    pub replication_policy: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub size_estimate_bytes: Option<u64>,
}

/// A key named in a dependency list: the original sends key objects; text forms are
/// accepted too.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum KeyRef {
    Text(String),
    Key(CacheKey),
}

impl KeyRef {
    pub fn text(&self) -> String {
        match self {
            KeyRef::Text(t) => t.clone(),
            KeyRef::Key(k) => k.text(),
        }
    }
}

/// `atomic_operation`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AtomicOperation {
    pub operation_type: AtomicKind,
    #[serde(default)]
    pub expected_value: Option<Value>,
    #[serde(default)]
    pub new_value: Option<Value>,
    #[serde(default)]
    pub increment_by: Option<Value>,
    #[serde(default)]
    pub ttl_seconds: Option<f64>,
    #[serde(default)]
    pub create_if_missing: bool,
    #[serde(default)]
    pub initial_value: Option<Value>,
    #[serde(default)]
    pub conditions: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtomicKind {
    TestAndSet,
    CompareAndSwap,
    Increment,
    Decrement,
    Append,
    Prepend,
    ExtendTtl,
}

/// `structure_operation`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StructureOperation {
    pub structure_type: String,
    pub operation: String,
    #[serde(default)]
    pub values: Vec<Value>,
    #[serde(default)]
    pub fields: Vec<String>,
    #[serde(default)]
    pub field_updates: Map<String, Value>,
    #[serde(default)]
    pub index: Option<i64>,
    #[serde(default)]
    pub range_spec: Map<String, Value>,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `namespace_operation`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NamespaceOperation {
    pub operation_type: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default = "every")]
    pub pattern: String,
    #[serde(default)]
    pub max_entries: Option<usize>,
    #[serde(default)]
    pub dry_run: bool,
}

fn every() -> String {
    "*".to_owned()
}

/// One `cache-request`.
#[derive(Debug, Clone, Deserialize)]
pub struct CacheRequest {
    pub u: String,
    pub operation: Operation,
    #[serde(default)]
    pub key: CacheKey,
    #[serde(default)]
    pub options: CacheOptions,
    /// Kept as its text: stored as written, never parsed for a put.
    #[serde(default)]
    pub value: Option<Box<RawValue>>,
    #[serde(default)]
    pub metadata: CacheMetadata,
    /// The code's name; the original's spec example says `pattern`: both are read.
    #[serde(default, alias = "pattern")]
    pub invalidation_pattern: Option<String>,
    #[serde(default)]
    pub atomic_operation: Option<AtomicOperation>,
    #[serde(default)]
    pub structure_operation: Option<StructureOperation>,
    #[serde(default)]
    pub namespace_operation: Option<NamespaceOperation>,
}

/// `status` of a `cache-response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Hit,
    Miss,
    Error,
    Partial,
    Timeout,
    Conflict,
}

/// `entry` of a `cache-response`.
#[derive(Debug, Clone)]
pub struct EntryView {
    /// The entry's tags, shown when the request's key carries none (the key shown is the
    /// request's).
    pub tags: std::sync::Arc<[String]>,
    /// JSON text, shared with the entry it shows (written as it is).
    pub value: std::sync::Arc<str>,
    pub creation_time: f64,
    pub access_count: u64,
    pub last_access_time: f64,
    pub computation_cost_ms: f64,
    pub size_bytes: u64,
    pub dependencies: Vec<String>,
    pub ttl_seconds: Option<f64>,
    /// `options.include_metadata`: false shows the key and value alone.
    pub metadata: bool,
}

/// A `cache-response`, less the fields the service stamps (`u`, `timestamp`,
/// `operation_id`).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub level: Option<super::request::Level>,
    pub entry: Option<EntryView>,
    pub error: Option<String>,
    /// Levels the request named that this build does not serve (an mpreg extension field).
    pub unserved: Vec<Level>,
}

impl Outcome {
    pub fn status(status: Status) -> Outcome {
        Outcome {
            status,
            level: None,
            entry: None,
            error: None,
            unserved: Vec::new(),
        }
    }

    pub fn error(message: impl Into<String>) -> Outcome {
        Outcome {
            error: Some(message.into()),
            ..Outcome::status(Status::Error)
        }
    }

    pub fn hit(level: Level, entry: EntryView) -> Outcome {
        Outcome {
            level: Some(level),
            entry: Some(entry),
            ..Outcome::status(Status::Hit)
        }
    }
}

/// Appends `v` as JSON (a string escaped, a float in shortest form), without an
/// intermediate string.
fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing JSON of plain values into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

fn push_key(out: &mut Vec<u8>, key: &CacheKey, tags: &[String]) {
    out.extend_from_slice(br#"{"namespace":"#);
    push_json(out, &key.namespace);
    out.extend_from_slice(br#","identifier":"#);
    push_json(out, &key.identifier);
    out.extend_from_slice(br#","version":"#);
    push_json(out, &key.version);
    out.extend_from_slice(br#","tags":"#);
    push_json(out, if key.tags.is_empty() { tags } else { &key.tags });
    out.push(b'}');
}

fn push_entry(out: &mut Vec<u8>, key: &CacheKey, e: &EntryView) {
    out.extend_from_slice(br#""entry":{"key":"#);
    push_key(out, key, &e.tags);
    out.extend_from_slice(br#","value":"#);
    out.extend_from_slice(e.value.as_bytes());
    if e.metadata {
        out.extend_from_slice(br#","creation_time":"#);
        push_json(out, &e.creation_time);
        out.extend_from_slice(br#","access_count":"#);
        push_json(out, &e.access_count);
        out.extend_from_slice(br#","last_access_time":"#);
        push_json(out, &e.last_access_time);
        out.extend_from_slice(br#","computation_cost_ms":"#);
        push_json(out, &e.computation_cost_ms);
        out.extend_from_slice(br#","size_bytes":"#);
        push_json(out, &e.size_bytes);
        out.extend_from_slice(br#","dependencies":"#);
        push_json(out, &e.dependencies);
        out.extend_from_slice(br#","ttl_seconds":"#);
        push_json(out, &e.ttl_seconds);
    }
    out.extend_from_slice(b"},");
}

/// A response's `operation_id`: the answering cache's prefix and its count (`prefix-n`).
pub struct OperationId<'a>(pub &'a str, pub Option<u64>);

/// The `cache-response` text for `outcome` to a request about `key`, written field by
/// field (the hot path of a get: no tree is built, the value's text is copied once);
/// `performance` only when `lookup_ms` is given (the original marks it optional).
pub fn response_text(
    u: &str,
    key: &CacheKey,
    operation_id: OperationId<'_>,
    timestamp: f64,
    lookup_ms: Option<f64>,
    outcome: &Outcome,
) -> String {
    let value_len = outcome.entry.as_ref().map_or(0, |e| e.value.len());
    let mut out = Vec::with_capacity(256 + u.len() + value_len);
    out.extend_from_slice(br#"{"role":"cache-response","u":"#);
    push_json(&mut out, u);
    out.extend_from_slice(br#","timestamp":"#);
    push_json(&mut out, &timestamp);
    out.extend_from_slice(br#","version":"2.0","status":"#);
    push_json(&mut out, &outcome.status);
    out.extend_from_slice(br#","operation_id":""#);
    // The prefix is the node's id in hex: nothing to escape.
    out.extend_from_slice(operation_id.0.as_bytes());
    if let Some(n) = operation_id.1 {
        out.push(b'-');
        push_json(&mut out, &n);
    }
    out.extend_from_slice(b"\",");
    if let Some(level) = outcome.level {
        out.extend_from_slice(br#""cache_level":""#);
        out.extend_from_slice(level.name().as_bytes());
        out.extend_from_slice(b"\",");
    }
    if let Some(e) = &outcome.entry {
        push_entry(&mut out, key, e);
    }
    if let Some(ms) = lookup_ms {
        out.extend_from_slice(br#""performance":{"lookup_time_ms":"#);
        push_json(&mut out, &ms);
        out.extend_from_slice(br#","network_hops":0},"#);
    }
    if let Some(why) = &outcome.error {
        out.extend_from_slice(br#""error_message":"#);
        push_json(&mut out, why);
        out.push(b',');
    }
    if !outcome.unserved.is_empty() {
        out.extend_from_slice(br#""unserved_levels":"#);
        push_json(&mut out, &outcome.unserved);
        out.push(b',');
    }
    // Every field above ends with a comma: the last one's becomes the closing brace.
    if let Some(last) = out.last_mut() {
        *last = b'}';
    }
    // Only JSON text and the stored values' (checked) text were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Reads a `cache-request` frame (JSON already checked for depth and duplicate keys).
pub fn decode(text: &str) -> Result<CacheRequest, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_originals_put_reads_and_missing_parts_default() {
        let put = r#"{"role":"cache-request","u":"u1","timestamp":1.0,"version":"2.0","operation":"put",
            "key":{"namespace":"shop","identifier":"k","version":"v1.0.0","tags":[]},
            "options":{"include_metadata":true,"consistency_level":"eventual","timeout_ms":5000,
              "cache_levels":["L1","L2","L3","L4"],"replication_factor":2,"prefer_local":true,
              "max_staleness_seconds":300.0},
            "value":1, "metadata":{"ttl_seconds":60,"dependencies":[{"namespace":"a","identifier":"b"}]}}"#;
        let r = decode(put).unwrap();
        assert_eq!(r.operation, Operation::Put);
        assert_eq!(r.key.text(), "shop:k:v1.0.0");
        assert_eq!(r.options.cache_levels.len(), 4);
        assert_eq!(r.metadata.dependencies[0].text(), "a:b:v1.0.0");
        let bare = decode(r#"{"u":"u2","operation":"stats"}"#).unwrap();
        assert_eq!(bare.options.cache_levels, SERVED_LEVELS.to_vec());
        assert_eq!(bare.key.namespace, "default");
        let spec = decode(r#"{"u":"u3","operation":"invalidate","pattern":"orders:*"}"#).unwrap();
        assert_eq!(spec.invalidation_pattern.as_deref(), Some("orders:*"));
    }
}
