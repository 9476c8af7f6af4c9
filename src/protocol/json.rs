//! [`Json`]: a JSON value kept as the text it arrived as.
//!
//! Arguments and results travel through the node as text, not as a `serde_json::Value`
//! tree: a tree costs 32 bytes or more per element however small its text (an 18 MiB array
//! of zeros became ~950 MiB), while text costs its own length. A function decodes its
//! arguments straight from the text into its parameter types; references are found and
//! substituted on the text (`rpc::resolve`); a forwarded step or a worker call sends the
//! text as it is.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// Valid JSON text (checked when it was parsed or produced).
#[derive(Clone)]
pub struct Json(Repr);

/// The text, or one of the constants every request without `args` or `kwargs` has (kept
/// without an allocation or a parse).
#[derive(Clone)]
enum Repr {
    Text(Box<RawValue>),
    Null,
    EmptyArray,
    EmptyObject,
}

/// What a JSON text is, from its first character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    /// "an array", "a string", … for error messages.
    pub fn described(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }

    /// The kind of the JSON text `s` (valid JSON, possibly with leading whitespace).
    pub fn of(s: &str) -> Kind {
        match s.trim_start().as_bytes().first() {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') | None => Kind::Null,
            Some(_) => Kind::Number,
        }
    }
}

impl Json {
    pub fn null() -> Json {
        Json(Repr::Null)
    }

    pub fn empty_array() -> Json {
        Json(Repr::EmptyArray)
    }

    pub fn empty_object() -> Json {
        Json(Repr::EmptyObject)
    }

    /// Serializes `v` (compact).
    pub fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Json, serde_json::Error> {
        serde_json::value::to_raw_value(v).map(Json::from)
    }

    /// A tree as text. A `Value` always serializes.
    pub fn from_value(v: &Value) -> Json {
        Json::encode(v).unwrap_or_else(|_| Json::null())
    }

    /// Checks that `text` is one JSON value and keeps it.
    pub fn from_text(text: String) -> Result<Json, serde_json::Error> {
        RawValue::from_string(text).map(Json::from)
    }

    /// The text of a sub-value of an already checked JSON text (a slice the tokenizer or
    /// serde delimited), kept without parsing it again.
    pub(crate) fn from_checked(text: &RawValue) -> Json {
        Json(Repr::Text(text.to_owned()))
    }

    pub fn get(&self) -> &str {
        match &self.0 {
            Repr::Text(raw) => raw.get(),
            Repr::Null => "null",
            Repr::EmptyArray => "[]",
            Repr::EmptyObject => "{}",
        }
    }

    pub fn len(&self) -> usize {
        self.get().len()
    }

    pub fn is_empty(&self) -> bool {
        self.get().is_empty()
    }

    pub fn kind(&self) -> Kind {
        Kind::of(self.get())
    }

    /// Decodes the text into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.get())
    }

    /// The text as a tree: costs a tree's memory, for callers that want one.
    pub fn to_value(&self) -> Value {
        self.decode().unwrap_or(Value::Null)
    }

    /// `[]` or `{}` (whitespace allowed inside).
    pub fn is_empty_container(&self) -> bool {
        is_empty(self.get(), Kind::Array) || is_empty(self.get(), Kind::Object)
    }

    pub fn into_string(self) -> String {
        match self.0 {
            Repr::Text(raw) => String::from(Box::<str>::from(raw)),
            constant => Json(constant).get().to_owned(),
        }
    }
}

impl From<Value> for Json {
    fn from(v: Value) -> Json {
        Json::from_value(&v)
    }
}

impl From<&Value> for Json {
    fn from(v: &Value) -> Json {
        Json::from_value(v)
    }
}

impl From<Box<RawValue>> for Json {
    fn from(raw: Box<RawValue>) -> Json {
        Json(Repr::Text(raw))
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.get() == other.get()
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match &self.0 {
            Repr::Text(raw) => raw.serialize(s),
            Repr::Null => s.serialize_unit(),
            Repr::EmptyArray => s.serialize_seq(Some(0))?.end(),
            Repr::EmptyObject => s.serialize_map(Some(0))?.end(),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        Box::<RawValue>::deserialize(d).map(Json::from)
    }
}

/// Whether the JSON text `text` is an empty array (`Kind::Array`) or object
/// (`Kind::Object`), whitespace allowed inside.
pub(crate) fn is_empty(text: &str, kind: Kind) -> bool {
    let (open, close) = match kind {
        Kind::Array => ('[', ']'),
        Kind::Object => ('{', '}'),
        _ => return false,
    };
    let t = text.trim();
    t.strip_prefix(open)
        .and_then(|r| r.strip_suffix(close))
        .is_some_and(|inner| inner.trim().is_empty())
}

/// A serde_json error's message without the " at line L column C" it adds when parsing
/// text (messages name fields and parameters instead).
pub fn plain_error(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rsplit_once(" at line ") {
        Some((msg, place))
            if place
                .split_once(" column ")
                .is_some_and(|(l, c)| l.parse::<u64>().is_ok() && c.parse::<u64>().is_ok()) =>
        {
            msg.to_owned()
        }
        _ => s,
    }
}

/// Deserializes a [`Json`] that must be an array (`args`).
pub(crate) fn json_array<'de, D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
    of_kind(d, Kind::Array)
}

/// Deserializes a [`Json`] that must be an object (`kwargs`).
pub(crate) fn json_object<'de, D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
    of_kind(d, Kind::Object)
}

fn of_kind<'de, D: Deserializer<'de>>(d: D, want: Kind) -> Result<Json, D::Error> {
    let j = Json::deserialize(d)?;
    match j.kind() {
        k if k == want => Ok(j),
        k => Err(serde::de::Error::custom(format!(
            "expected {}, got {}",
            want.described(),
            k.described()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_empty_containers() {
        let j: Json = serde_json::from_str(" [ 1, {\"a\": 2} ]").unwrap();
        assert_eq!(j.kind(), Kind::Array);
        assert_eq!(j.get(), "[ 1, {\"a\": 2} ]");
        assert!(Json::from_text("[ ]".into()).unwrap().is_empty_container());
        assert!(Json::from_text("{\n}".into()).unwrap().is_empty_container());
        assert!(!Json::from_text("[0]".into()).unwrap().is_empty_container());
        assert!(Json::from_text("[1".into()).is_err());
        assert_eq!(
            Json::from(serde_json::json!({"k": [1]})).get(),
            r#"{"k":[1]}"#
        );
        for c in [Json::null(), Json::empty_array(), Json::empty_object()] {
            assert_eq!(serde_json::to_string(&c).unwrap(), c.get());
            assert_eq!(Json::from_text(c.clone().into_string()).unwrap(), c);
        }
    }
}
