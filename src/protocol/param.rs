//! A function parameter as the wire describes it: in a worker's registration and in
//! `rpc_describe`'s answers.

use serde::{Deserialize, Serialize};

/// The JSON types a parameter can be described with (`any`: whatever decodes).
pub const JSON_TYPES: [&str; 7] = [
    "string", "integer", "number", "boolean", "array", "object", "any",
];

/// One parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    /// One of [`JSON_TYPES`].
    #[serde(rename = "type")]
    pub json_type: String,
    /// Whether a call must give it (`Option` parameters may be left out).
    #[serde(default = "yes")]
    pub required: bool,
    /// The Rust type it decodes into (Rust functions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rust_type: Option<String>,
}

fn yes() -> bool {
    true
}

impl Param {
    /// A parameter a call must give.
    pub fn new(name: &str, json_type: &str) -> Param {
        Param {
            name: name.to_owned(),
            json_type: json_type.to_owned(),
            required: true,
            rust_type: None,
        }
    }

    /// A parameter a call may leave out.
    pub fn optional(name: &str, json_type: &str) -> Param {
        Param {
            required: false,
            ..Param::new(name, json_type)
        }
    }
}
