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

/// Deepest value (arrays/objects) a resolved argument or a step's result may be. Incoming
/// messages are capped by the JSON parser at 128 levels; staying at 124 for values keeps
/// every reply (3 levels of envelope) parseable by clients with the same cap.
pub const MAX_VALUE_DEPTH: usize = 124;

/// What resolving a request's references may still copy. Each reference copies the value it
/// names, so without a bound a tiny request (`b = [a, a]`, `c = [b, b]`, …) grows
/// exponentially.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Bytes left to copy: string bytes plus 16 per value node.
    pub bytes_left: usize,
}

/// Resolution stopped at a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("resolved arguments exceed the request's copy budget ({0} bytes)")]
    Bytes(usize),
    #[error("a value nests deeper than {MAX_VALUE_DEPTH} levels")]
    Depth,
}

impl Budget {
    fn charge(&mut self, bytes: usize, total: usize) -> Result<(), LimitError> {
        self.bytes_left = self
            .bytes_left
            .checked_sub(bytes)
            .ok_or(LimitError::Bytes(total))?;
        Ok(())
    }
}

/// Whether `v` nests deeper than `max` (iterative: `v` may be arbitrarily deep).
pub fn deeper_than(v: &Value, max: usize) -> bool {
    if !matches!(v, Value::Array(_) | Value::Object(_)) {
        return false; // the common scalar result: no walk, no allocation
    }
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(m) => Box::new(m.values()),
            _ => continue,
        };
        if d + 1 > max {
            return true;
        }
        stack.extend(children.map(|c| (c, d + 1)));
    }
    false
}

/// `v` copied within `budget` and [`MAX_VALUE_DEPTH`] (counting from `depth`).
fn copy_within(
    v: &Value,
    budget: &mut Budget,
    total: usize,
    depth: usize,
) -> Result<Value, LimitError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(LimitError::Depth);
    }
    Ok(match v {
        Value::String(s) => {
            budget.charge(16 + s.len(), total)?;
            v.clone()
        }
        Value::Array(items) => {
            budget.charge(16, total)?;
            Value::Array(
                items
                    .iter()
                    .map(|i| copy_within(i, budget, total, depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        Value::Object(m) => {
            budget.charge(16, total)?;
            let mut out = Map::new();
            for (k, i) in m {
                budget.charge(16 + k.len(), total)?;
                out.insert(k.clone(), copy_within(i, budget, total, depth + 1)?);
            }
            Value::Object(out)
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {
            budget.charge(16, total)?;
            v.clone()
        }
    })
}

/// A copy of `v` with every reference replaced, within `budget` (`total` is its original
/// size, for the error) and [`MAX_VALUE_DEPTH`] counted from `depth`. An implicit
/// `name.path` whose path does not exist stays the literal string (as in the original); an
/// explicit `{"$ref"}` to a missing path becomes `null`.
pub fn resolve_within(
    v: &Value,
    names: &NameIndex<'_>,
    results: &[Option<Value>],
    budget: &mut Budget,
    total: usize,
    depth: usize,
) -> Result<Value, LimitError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(LimitError::Depth);
    }
    Ok(match v {
        Value::String(s) => match lookup(s, names, results) {
            Some(found) => copy_within(found, budget, total, depth)?,
            None => copy_within(v, budget, total, depth)?,
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve_within(item, names, results, budget, total, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => match explicit_ref(map) {
            Some(r) => match lookup_explicit(r, names, results) {
                Some(found) => copy_within(found, budget, total, depth)?,
                None => Value::Null,
            },
            None => {
                let mut out = Map::new();
                for (k, item) in map {
                    out.insert(
                        k.clone(),
                        resolve_within(item, names, results, budget, total, depth + 1)?,
                    );
                }
                Value::Object(out)
            }
        },
        Value::Null | Value::Bool(_) | Value::Number(_) => v.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn budgets_stop_exponential_copies_and_deep_values() {
        let names: NameIndex<'_> = [("a", 0)].into_iter().collect();
        let results = vec![Some(json!("x".repeat(1000)))];
        let mut budget = Budget { bytes_left: 2500 };
        let two = json!(["a", "a"]);
        assert!(resolve_within(&two, &names, &results, &mut budget, 2500, 0).is_ok());
        assert_eq!(
            resolve_within(&two, &names, &results, &mut budget, 2500, 0),
            Err(LimitError::Bytes(2500))
        );
        let mut deep = json!("a");
        for _ in 0..MAX_VALUE_DEPTH + 1 {
            deep = json!([deep]);
        }
        let mut budget = Budget {
            bytes_left: usize::MAX,
        };
        assert_eq!(
            resolve_within(&deep, &names, &results, &mut budget, 0, 0),
            Err(LimitError::Depth)
        );
        assert!(deeper_than(&deep, MAX_VALUE_DEPTH));
        assert!(!deeper_than(&json!([[1]]), 2));
        assert!(deeper_than(&json!([[[1]]]), 2));
    }

    fn resolve(v: &Value, names: &NameIndex<'_>, results: &[Option<Value>]) -> Value {
        let mut unlimited = Budget {
            bytes_left: usize::MAX,
        };
        resolve_within(v, names, results, &mut unlimited, usize::MAX, 0).unwrap()
    }

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
