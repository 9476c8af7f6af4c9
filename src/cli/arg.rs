//! How the CLI reads a value its user typed: as JSON when it is JSON, else as a string
//! (`mpreg client call f 42 hi`, `--metadata k=v`).

use serde_json::Value;

/// A CLI argument as JSON: valid JSON as itself, anything else as a string.
pub fn parse_arg(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn args_are_json_or_strings() {
        assert_eq!(parse_arg("\"hi\""), json!("hi"));
        assert_eq!(parse_arg("hi"), json!("hi"));
        assert_eq!(parse_arg("42"), json!(42));
        assert_eq!(parse_arg("[1,{\"a\":2}]"), json!([1, {"a": 2}]));
    }
}
