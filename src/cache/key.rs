//! Cache keys: the original's `GlobalCacheKey` (namespace, identifier, version, tags) and
//! its text form `namespace:identifier:version`, which every level stores under; and keys
//! made from data or from a function call, which hash a canonical JSON form that any
//! language computes (docs/PROTOCOL.md, "Cache keys"), not a Python `repr`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;

/// The original's default key version.
pub const DEFAULT_VERSION: &str = "v1.0.0";

/// Hex digits of a made identifier: the original's `sha256(…)[:32]`.
const MADE_ID_HEX: usize = 32;

/// A cache key as the wire carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub identifier: String,
    #[serde(default = "default_version")]
    pub version: String,
    /// Carried back in replies; not part of the key (the original's L2 and L3 ignore them
    /// too, and one key meaning one entry at every level is what a user expects).
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

fn default_version() -> String {
    DEFAULT_VERSION.to_owned()
}

impl Default for CacheKey {
    fn default() -> Self {
        CacheKey {
            namespace: default_namespace(),
            identifier: String::new(),
            version: default_version(),
            tags: Vec::new(),
        }
    }
}

impl CacheKey {
    pub fn new(namespace: &str, identifier: &str, version: &str) -> CacheKey {
        CacheKey {
            namespace: namespace.to_owned(),
            identifier: identifier.to_owned(),
            version: version.to_owned(),
            tags: Vec::new(),
        }
    }

    /// `namespace:identifier:version`, the key every level stores under.
    pub fn text(&self) -> String {
        format!("{}:{}:{}", self.namespace, self.identifier, self.version)
    }

    /// Reads a key's text form back: the namespace is up to the first `:`, the version after
    /// the last, the identifier between (so identifiers may hold `:`, as `orders:A-100`
    /// does when typed at the CLI). A text with one `:` or none takes the default version;
    /// with none, the default namespace.
    pub fn parse(text: &str) -> CacheKey {
        let (namespace, rest) = match text.split_once(':') {
            Some((ns, rest)) => (ns, rest),
            None => return CacheKey::new(&default_namespace(), text, DEFAULT_VERSION),
        };
        match rest.rsplit_once(':') {
            Some((id, version)) if looks_like_version(version) => {
                CacheKey::new(namespace, id, version)
            }
            _ => CacheKey::new(namespace, rest, DEFAULT_VERSION),
        }
    }

    /// A key for `data`: its identifier hashes the canonical JSON of `data`.
    pub fn from_data(namespace: &str, data: &Value) -> CacheKey {
        CacheKey::new(namespace, &made_identifier(data), DEFAULT_VERSION)
    }

    /// A key for a call of `function` with `args` and `kwargs`: its identifier hashes the
    /// canonical JSON of `[function, args, kwargs]`.
    pub fn from_function_call(
        namespace: &str,
        function: &str,
        args: &Value,
        kwargs: &Value,
    ) -> CacheKey {
        let call = Value::Array(vec![
            Value::String(function.to_owned()),
            args.clone(),
            kwargs.clone(),
        ]);
        CacheKey::new(namespace, &made_identifier(&call), DEFAULT_VERSION)
    }
}

/// `v1.0.0`, `1.2`, `2`: what the CLI reads as a version after the last `:`.
fn looks_like_version(s: &str) -> bool {
    let digits = s.strip_prefix('v').unwrap_or(s);
    !digits.is_empty()
        && digits.starts_with(|c: char| c.is_ascii_digit())
        && digits
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
}

/// The canonical JSON text of `value`: object keys sorted by code point, no whitespace,
/// strings as serde_json escapes them (`"` `\` and control characters; everything else as
/// UTF-8), numbers as written for integers and in shortest round-trip form for floats.
/// Python's `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
/// gives the same text (test vectors in docs/PROTOCOL.md).
pub fn canonical_json(value: &Value) -> String {
    // serde_json's `Map` is a BTreeMap (the `preserve_order` feature is off), so its keys
    // serialize sorted by their UTF-8 bytes, which is code point order; `to_string` writes
    // no whitespace.
    serde_json::to_string(value).unwrap_or_default()
}

/// The first 32 hex digits of the SHA-256 of `value`'s canonical JSON.
pub fn made_identifier(value: &Value) -> String {
    hash_hex(canonical_json(value).as_bytes())
}

/// The first 32 hex digits of SHA-256 of `bytes`.
pub fn hash_hex(bytes: &[u8]) -> String {
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(MADE_ID_HEX);
    for b in digest.iter().take(MADE_ID_HEX / 2) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_text_form_reads_back() {
        let k = CacheKey::new("shop", "orders:A-100", "v1.0.0");
        assert_eq!(k.text(), "shop:orders:A-100:v1.0.0");
        assert_eq!(CacheKey::parse(&k.text()), k);
        assert_eq!(
            CacheKey::parse("orders:A-100"),
            CacheKey::new("orders", "A-100", DEFAULT_VERSION)
        );
        assert_eq!(
            CacheKey::parse("plain"),
            CacheKey::new("default", "plain", DEFAULT_VERSION)
        );
        assert_eq!(CacheKey::parse("a:b:2.1"), CacheKey::new("a", "b", "2.1"));
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [1, 2.5, "x"], "a": {"d": null, "c": true} }"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":true,"d":null},"b":[1,2.5,"x"]}"#
        );
        // The same data in another order is the same key.
        let w = json!({"a": {"c": true, "d": null}, "b": [1, 2.5, "x"]});
        assert_eq!(made_identifier(&v), made_identifier(&w));
        assert_eq!(made_identifier(&v).len(), 32);
    }
}
