//! What a function takes, as `rpc_describe` reports it: each parameter's name, JSON type
//! and whether it must be given, read from the Rust signature (the parameter types'
//! names) or from what a worker declared when it registered.
pub use crate::protocol::param::{JSON_TYPES, Param};

/// A function's parameters, and whether it takes any number of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signature {
    pub params: Vec<Param>,
    /// A raw function (`Function::raw`, or a worker's without declared parameters): it
    /// takes whatever it is given.
    pub variadic: bool,
}

impl Signature {
    /// From parameter names and the Rust types' names (`std::any::type_name`).
    pub fn from_rust(names: &[String], types: &[&'static str]) -> Signature {
        let params = names
            .iter()
            .zip(types)
            .map(|(name, rust)| {
                let (json_type, optional) = json_type_of(rust);
                Param {
                    name: name.clone(),
                    json_type: json_type.to_owned(),
                    required: !optional,
                    rust_type: Some(short(rust)),
                }
            })
            .collect();
        Signature {
            params,
            variadic: false,
        }
    }
}

/// `alloc::vec::Vec<alloc::string::String>` → `Vec<String>`: every path segment but the
/// last dropped, inside generics too.
fn short(rust: &str) -> String {
    let mut out = String::with_capacity(rust.len());
    let mut word = String::new();
    for c in rust.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(&word));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(&word));
    out
}

/// The JSON type a Rust type decodes from, and whether it is optional (`Option<T>`).
/// Types it does not know (a user's struct or enum) are `any`: a struct decodes from an
/// object, but an enum may decode from a string.
pub fn json_type_of(rust: &str) -> (&'static str, bool) {
    let s = short(rust);
    let s = s.trim();
    if let Some(inner) = s.strip_prefix("Option<").and_then(|r| r.strip_suffix('>')) {
        return (json_type_of(inner).0, true);
    }
    let head = s.split('<').next().unwrap_or(s);
    let t = match head {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64" | "u128"
        | "usize" => "integer",
        "f32" | "f64" => "number",
        "bool" => "boolean",
        "String" | "str" | "&str" | "char" | "Cow" => "string",
        "Vec" | "VecDeque" | "HashSet" | "BTreeSet" | "IndexSet" => "array",
        "HashMap" | "BTreeMap" | "Map" | "IndexMap" => "object",
        _ if s.starts_with('[') || s.starts_with('(') => "array",
        _ => "any",
    };
    (t, false)
}

/// Checks a worker's declared parameters: at most `max` of them, names and types bounded
/// and known.
pub fn check_declared(params: &[Param], max: usize, max_name: usize) -> Result<(), String> {
    if params.len() > max {
        return Err(format!(
            "{} parameters declared; at most {max}",
            params.len()
        ));
    }
    for p in params {
        if p.name.is_empty() || p.name.len() > max_name {
            return Err(format!(
                "a parameter name must be 1 to {max_name} bytes, got {}",
                p.name.len()
            ));
        }
        if !JSON_TYPES.contains(&p.json_type.as_str()) {
            return Err(format!(
                "parameter {}: type must be one of {}, got {:?}",
                p.name,
                JSON_TYPES.join(", "),
                p.json_type
            ));
        }
        if p.rust_type.is_some() {
            return Err(format!(
                "parameter {}: rust_type is not for workers",
                p.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_types_map_to_json_types() {
        let cases = [
            (std::any::type_name::<i64>(), ("integer", false)),
            (std::any::type_name::<u8>(), ("integer", false)),
            (std::any::type_name::<f64>(), ("number", false)),
            (std::any::type_name::<bool>(), ("boolean", false)),
            (std::any::type_name::<String>(), ("string", false)),
            (std::any::type_name::<Vec<String>>(), ("array", false)),
            (std::any::type_name::<[u8; 4]>(), ("array", false)),
            (std::any::type_name::<(i64, String)>(), ("array", false)),
            (
                std::any::type_name::<std::collections::BTreeMap<String, i64>>(),
                ("object", false),
            ),
            (
                std::any::type_name::<serde_json::Map<String, serde_json::Value>>(),
                ("object", false),
            ),
            (std::any::type_name::<serde_json::Value>(), ("any", false)),
            (std::any::type_name::<Option<i64>>(), ("integer", true)),
            (std::any::type_name::<Option<Vec<u8>>>(), ("array", true)),
        ];
        for (rust, want) in cases {
            assert_eq!(json_type_of(rust), want, "{rust}");
        }
        assert_eq!(
            short(std::any::type_name::<Option<Vec<String>>>()),
            "Option<Vec<String>>"
        );
    }

    #[test]
    fn declared_parameters_are_bounded_and_typed() {
        let p = |name: &str, t: &str| Param {
            name: name.into(),
            json_type: t.into(),
            required: true,
            rust_type: None,
        };
        assert!(check_declared(&[p("x", "integer")], 4, 8).is_ok());
        assert!(check_declared(&[p("x", "int")], 4, 8).is_err());
        assert!(check_declared(&[p("", "any")], 4, 8).is_err());
        assert!(check_declared(&[p("muchtoolong", "any")], 4, 8).is_err());
        assert!(check_declared(&vec![p("x", "any"); 5], 4, 8).is_err());
    }
}
