//! Argument resolution: replace references with the results they name. Pure.

use serde_json::{Map, Value};

use super::plan::{NameIndex, explicit_ref, implicit_ref};

/// A canonical array index: digits only, no leading zero (so `01` and `+1` are keys, not 1).
fn array_index(seg: &str) -> Option<usize> {
    let canonical = !seg.is_empty()
        && seg.bytes().all(|b| b.is_ascii_digit())
        && (seg == "0" || !seg.starts_with('0'));
    canonical.then(|| seg.parse().ok()).flatten()
}

/// Follows `path` (dot-separated object keys or array indices) into `v`.
fn navigate<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(items) => array_index(seg).and_then(|i| items.get(i)),
        _ => None,
    })
}

/// The value a reference string denotes, if its command has a result and the path exists.
fn lookup<'v>(
    reference: &str,
    names: &NameIndex<'_>,
    results: &'v [Option<Value>],
) -> Option<&'v Value> {
    let i = implicit_ref(reference, names)?;
    let result = results[i].as_ref()?;
    match reference.split_once('.') {
        Some((_, path)) if names.get(reference).is_none() => navigate(result, path),
        _ => Some(result),
    }
}

/// The value of an explicit `{"$ref": "name[.path]"}`: `name` is everything before the
/// first dot, as the planner reads it.
fn lookup_explicit<'v>(
    reference: &str,
    names: &NameIndex<'_>,
    results: &'v [Option<Value>],
) -> Option<&'v Value> {
    let (head, path) = match reference.split_once('.') {
        Some((head, path)) => (head, Some(path)),
        None => (reference, None),
    };
    let result = results[names.get(head)?].as_ref()?;
    match path {
        Some(path) => navigate(result, path),
        None => Some(result),
    }
}

/// A copy of `v` with every reference replaced. An implicit `name.path` whose path does not
/// exist stays the literal string (as in the original); an explicit `{"$ref"}` to a missing
/// path becomes `null`.
pub fn resolve(v: &Value, names: &NameIndex<'_>, results: &[Option<Value>]) -> Value {
    match v {
        Value::String(s) => lookup(s, names, results)
            .cloned()
            .unwrap_or_else(|| v.clone()),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve(item, names, results))
                .collect(),
        ),
        Value::Object(map) => match explicit_ref(map) {
            Some(r) => lookup_explicit(r, names, results)
                .cloned()
                .unwrap_or(Value::Null),
            None => Value::Object(resolve_map(map, names, results)),
        },
        Value::Null | Value::Bool(_) | Value::Number(_) => v.clone(),
    }
}

/// [`resolve`] over every value of a map (keys are kept as they are).
pub fn resolve_map(
    map: &Map<String, Value>,
    names: &NameIndex<'_>,
    results: &[Option<Value>],
) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| (k.clone(), resolve(v, names, results)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn substitution_rules() {
        let names: NameIndex<'_> = [("a", 0), ("g", 1)].into_iter().collect();
        let results = vec![
            Some(json!(3)),
            Some(json!({"nested": {"v": 14}, "l": [5, 6]})),
        ];
        let v =
            json!(["a", "g.nested.v", "g.l.1", "g.missing", {"k": "a"}, {"$ref": "g.nope"}, "x"]);
        assert_eq!(
            resolve(&v, &names, &results),
            json!([3, 14, 6, "g.missing", {"k": 3}, null, "x"])
        );
    }
}
