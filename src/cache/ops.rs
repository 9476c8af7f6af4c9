//! The original's `atomic` and `structure` operations as pure functions of an entry's value:
//! the value in (or none), the value to store and the answer out. The service applies the
//! result under the level's lock, so each is atomic on this node. Semantics follow Redis
//! where the original leaves them open (docs/PROTOCOL.md, "Cache").

use serde_json::{Map, Number, Value};

use super::key::canonical_json;
use super::request::{AtomicKind, AtomicOperation, StructureOperation};

/// What an operation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Store this value; the answer is `answer`.
    Store { value: Value, answer: Value },
    /// Nothing changes; the answer is `answer`.
    Read(Value),
    /// A test failed: nothing changes; the current value (null if none) is the answer.
    Conflict(Value),
    /// The key has no value and the operation does not create one.
    Missing,
    /// Extend the entry's time-to-live by this many seconds.
    ExtendTtl(f64),
}

/// An operation that cannot apply to this value or these arguments.
pub type OpError = String;

/// Applies an atomic operation to `current`.
pub fn atomic(op: &AtomicOperation, current: Option<&Value>) -> Result<Applied, OpError> {
    let new_value = || op.new_value.clone().unwrap_or(Value::Null);
    match op.operation_type {
        // Set when the current value is the expected one; a missing key counts as `null`,
        // so `expected_value: null` sets only when nothing is there (Redis SETNX).
        AtomicKind::TestAndSet => {
            let expected = op.expected_value.clone().unwrap_or(Value::Null);
            if current.unwrap_or(&Value::Null) == &expected {
                let v = new_value();
                Ok(Applied::Store {
                    answer: v.clone(),
                    value: v,
                })
            } else {
                Ok(Applied::Conflict(current.cloned().unwrap_or(Value::Null)))
            }
        }
        // Swap when the key holds the expected value; a missing key never matches unless
        // `create_if_missing`.
        AtomicKind::CompareAndSwap => match current {
            None if op.create_if_missing => {
                let v = new_value();
                Ok(Applied::Store {
                    answer: v.clone(),
                    value: v,
                })
            }
            None => Ok(Applied::Missing),
            Some(c) if Some(c) == op.expected_value.as_ref() => {
                let v = new_value();
                Ok(Applied::Store {
                    answer: v.clone(),
                    value: v,
                })
            }
            Some(c) => Ok(Applied::Conflict(c.clone())),
        },
        AtomicKind::Increment | AtomicKind::Decrement => {
            let by = op.increment_by.clone().unwrap_or(Value::from(1));
            let by = if op.operation_type == AtomicKind::Decrement {
                negate(&by)?
            } else {
                by
            };
            let start = match current {
                Some(c) => c.clone(),
                None if op.create_if_missing => op.initial_value.clone().unwrap_or(Value::from(0)),
                None => return Ok(Applied::Missing),
            };
            let v = add(&start, &by)?;
            Ok(Applied::Store {
                answer: v.clone(),
                value: v,
            })
        }
        AtomicKind::Append | AtomicKind::Prepend => {
            let part = new_value();
            let start = match current {
                Some(c) => c.clone(),
                None if op.create_if_missing => op.initial_value.clone().unwrap_or_else(|| {
                    if part.is_array() {
                        Value::Array(vec![])
                    } else {
                        Value::String(String::new())
                    }
                }),
                None => return Ok(Applied::Missing),
            };
            let v = join(start, part, op.operation_type == AtomicKind::Append)?;
            Ok(Applied::Store {
                answer: v.clone(),
                value: v,
            })
        }
        AtomicKind::ExtendTtl => match (current, op.ttl_seconds) {
            (None, _) => Ok(Applied::Missing),
            (Some(_), Some(s)) if s.is_finite() && s > 0.0 => Ok(Applied::ExtendTtl(s)),
            (Some(_), _) => Err("extend_ttl needs a positive `ttl_seconds`".to_owned()),
        },
    }
}

fn negate(v: &Value) -> Result<Value, OpError> {
    match v.as_i64() {
        Some(i) => i
            .checked_neg()
            .map(Value::from)
            .ok_or_else(|| "increment_by out of range".to_owned()),
        None => v
            .as_f64()
            .and_then(|f| Number::from_f64(-f))
            .map(Value::Number)
            .ok_or_else(|| "increment_by must be a number".to_owned()),
    }
}

/// `a + b`: integers stay integers (an overflow is refused, as Redis does); a float on
/// either side makes a float.
fn add(a: &Value, b: &Value) -> Result<Value, OpError> {
    let not_number = |v: &Value| format!("the value is not a number: {}", short(v));
    if !a.is_number() {
        return Err(not_number(a));
    }
    if !b.is_number() {
        return Err(format!("increment_by must be a number, got {}", short(b)));
    }
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x
            .checked_add(y)
            .map(Value::from)
            .ok_or_else(|| "increment or decrement would overflow a 64-bit integer".to_owned());
    }
    let sum = a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0);
    Number::from_f64(sum)
        .map(Value::Number)
        .ok_or_else(|| "the sum is not a finite number".to_owned())
}

fn join(start: Value, part: Value, at_end: bool) -> Result<Value, OpError> {
    match (start, part) {
        (Value::String(s), Value::String(p)) => {
            Ok(Value::String(if at_end { s + &p } else { p + &s }))
        }
        (Value::Array(mut a), part) => {
            let items = match part {
                Value::Array(items) => items,
                one => vec![one],
            };
            if at_end {
                a.extend(items);
                Ok(Value::Array(a))
            } else {
                let mut out = items;
                out.extend(a);
                Ok(Value::Array(out))
            }
        }
        (s, p) => Err(format!(
            "append and prepend join strings to strings or values to lists; the value is {} and the part {}",
            short(&s),
            short(&p)
        )),
    }
}

/// A value for an error message, cut short.
fn short(v: &Value) -> String {
    let mut t = canonical_json(v);
    if t.len() > 60 {
        let mut end = 57;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
        t.push_str("...");
    }
    t
}

/// Structure types served: the original's set, map (hash), list and counter.
pub const STRUCTURES: [&str; 4] = ["set", "map", "list", "counter"];

/// Applies a structure operation to `current` (none: an empty structure).
pub fn structure(op: &StructureOperation, current: Option<&Value>) -> Result<Applied, OpError> {
    match op.structure_type.as_str() {
        "set" => set_op(op, current),
        "map" => map_op(op, current),
        "list" => list_op(op, current),
        "counter" => counter_op(op, current),
        other => Err(format!(
            "structure_type `{other}` is not served; this node serves {}",
            STRUCTURES.join(", ")
        )),
    }
}

fn typed<'v, T>(
    current: Option<&'v Value>,
    kind: &str,
    pick: impl Fn(&'v Value) -> Option<T>,
    empty: T,
) -> Result<T, OpError> {
    match current {
        None => Ok(empty),
        Some(v) => pick(v).ok_or_else(|| format!("the key holds {}, not a {kind}", short(v))),
    }
}

fn unknown(op: &StructureOperation, known: &[&str]) -> OpError {
    format!(
        "`{}` is not a {} operation (one of {})",
        op.operation,
        op.structure_type,
        known.join(", ")
    )
}

/// A set is kept as a list of distinct values in canonical order.
fn set_op(op: &StructureOperation, current: Option<&Value>) -> Result<Applied, OpError> {
    let items = typed(current, "set", |v| v.as_array().cloned(), Vec::new())?;
    let mut by_text: std::collections::BTreeMap<String, Value> =
        items.into_iter().map(|v| (canonical_json(&v), v)).collect();
    let store = |m: std::collections::BTreeMap<String, Value>, answer: Value| Applied::Store {
        value: Value::Array(m.into_values().collect()),
        answer,
    };
    Ok(match op.operation.as_str() {
        "add" => {
            let before = by_text.len();
            for v in &op.values {
                by_text.insert(canonical_json(v), v.clone());
            }
            let added = by_text.len() - before;
            store(by_text, Value::from(added))
        }
        "remove" => {
            let before = by_text.len();
            for v in &op.values {
                by_text.remove(&canonical_json(v));
            }
            let removed = before - by_text.len();
            store(by_text, Value::from(removed))
        }
        "contains" => Applied::Read(Value::Array(
            op.values
                .iter()
                .map(|v| Value::Bool(by_text.contains_key(&canonical_json(v))))
                .collect(),
        )),
        "members" => Applied::Read(Value::Array(by_text.into_values().collect())),
        "size" => Applied::Read(Value::from(by_text.len())),
        _ => {
            return Err(unknown(
                op,
                &["add", "remove", "contains", "members", "size"],
            ));
        }
    })
}

fn map_op(op: &StructureOperation, current: Option<&Value>) -> Result<Applied, OpError> {
    let mut map = typed(current, "map", |v| v.as_object().cloned(), Map::new())?;
    Ok(match op.operation.as_str() {
        "set" => {
            let n = op.field_updates.len();
            map.extend(op.field_updates.clone());
            Applied::Store {
                value: Value::Object(map),
                answer: Value::from(n),
            }
        }
        "get" => Applied::Read(Value::Object(
            op.fields
                .iter()
                .map(|f| (f.clone(), map.get(f).cloned().unwrap_or(Value::Null)))
                .collect(),
        )),
        "delete" => {
            let removed = op
                .fields
                .iter()
                .filter(|f| map.remove(*f).is_some())
                .count();
            Applied::Store {
                value: Value::Object(map),
                answer: Value::from(removed),
            }
        }
        "keys" => Applied::Read(Value::Array(
            map.keys().cloned().map(Value::String).collect(),
        )),
        "get_all" => Applied::Read(Value::Object(map)),
        "size" => Applied::Read(Value::from(map.len())),
        _ => {
            return Err(unknown(
                op,
                &["set", "get", "delete", "keys", "get_all", "size"],
            ));
        }
    })
}

fn list_op(op: &StructureOperation, current: Option<&Value>) -> Result<Applied, OpError> {
    let mut list = typed(current, "list", |v| v.as_array().cloned(), Vec::new())?;
    let store = |list: Vec<Value>, answer: Value| Applied::Store {
        value: Value::Array(list),
        answer,
    };
    Ok(match op.operation.as_str() {
        "append" | "push" | "push_right" => {
            list.extend(op.values.iter().cloned());
            let n = list.len();
            store(list, Value::from(n))
        }
        "prepend" | "push_left" => {
            let mut out = op.values.clone();
            out.reverse();
            out.extend(list);
            let n = out.len();
            store(out, Value::from(n))
        }
        "pop" | "pop_right" => {
            let v = list.pop().unwrap_or(Value::Null);
            store(list, v)
        }
        "pop_left" => {
            let v = if list.is_empty() {
                Value::Null
            } else {
                list.remove(0)
            };
            store(list, v)
        }
        "get" => {
            let i = op.index.unwrap_or(0);
            Applied::Read(position(i, list.len()).map_or(Value::Null, |i| list[i].clone()))
        }
        "range" => {
            let bound = |name: &str, default: i64| {
                op.range_spec
                    .get(name)
                    .and_then(Value::as_i64)
                    .unwrap_or(default)
            };
            // Redis LRANGE: both ends inclusive, negative counts from the end.
            let len = list.len() as i64;
            let start = bound("start", 0);
            let stop = bound("stop", -1);
            let start = if start < 0 {
                (len + start).max(0)
            } else {
                start
            };
            let stop = if stop < 0 {
                len + stop
            } else {
                stop.min(len - 1)
            };
            let items = if start > stop || start >= len {
                Vec::new()
            } else {
                list[start as usize..=stop as usize].to_vec()
            };
            let limit = op.limit.unwrap_or(usize::MAX);
            Applied::Read(Value::Array(items.into_iter().take(limit).collect()))
        }
        "size" | "len" => Applied::Read(Value::from(list.len())),
        _ => {
            return Err(unknown(
                op,
                &[
                    "append", "prepend", "pop", "pop_left", "get", "range", "size",
                ],
            ));
        }
    })
}

/// Index `i` (negative from the end) into a list of `len`.
fn position(i: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if i < 0 { len + i } else { i };
    (0..len).contains(&i).then_some(i as usize)
}

fn counter_op(op: &StructureOperation, current: Option<&Value>) -> Result<Applied, OpError> {
    let n = typed(
        current,
        "counter",
        |v| v.is_number().then(|| v.clone()),
        Value::from(0),
    )?;
    let by = op.values.first().cloned().unwrap_or(Value::from(1));
    Ok(match op.operation.as_str() {
        "increment" => {
            let v = add(&n, &by)?;
            Applied::Store {
                answer: v.clone(),
                value: v,
            }
        }
        "decrement" => {
            let v = add(&n, &negate(&by)?)?;
            Applied::Store {
                answer: v.clone(),
                value: v,
            }
        }
        "get" => Applied::Read(n),
        "reset" => Applied::Store {
            value: Value::from(0),
            answer: Value::from(0),
        },
        _ => return Err(unknown(op, &["increment", "decrement", "get", "reset"])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn atomic_op(v: Value) -> AtomicOperation {
        serde_json::from_value(v).unwrap()
    }

    fn structure_op(v: Value) -> StructureOperation {
        serde_json::from_value(v).unwrap()
    }

    fn stored(a: Applied) -> Value {
        match a {
            Applied::Store { value, .. } => value,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn increments_create_from_the_initial_value_as_redis_incr_does() {
        let op = atomic_op(json!({"operation_type": "increment", "increment_by": 5,
            "create_if_missing": true, "initial_value": 10}));
        assert_eq!(stored(atomic(&op, None).unwrap()), json!(15));
        assert_eq!(stored(atomic(&op, Some(&json!(1))).unwrap()), json!(6));
        let plain = atomic_op(json!({"operation_type": "increment"}));
        assert_eq!(atomic(&plain, None).unwrap(), Applied::Missing);
        assert!(atomic(&plain, Some(&json!("x"))).is_err());
        assert!(atomic(&plain, Some(&json!(i64::MAX))).is_err());
        let dec = atomic_op(json!({"operation_type": "decrement", "increment_by": 0.5}));
        assert_eq!(stored(atomic(&dec, Some(&json!(2))).unwrap()), json!(1.5));
    }

    #[test]
    fn compare_and_swap_and_test_and_set() {
        let cas = atomic_op(json!({"operation_type": "compare_and_swap",
            "expected_value": "a", "new_value": "b"}));
        assert_eq!(stored(atomic(&cas, Some(&json!("a"))).unwrap()), json!("b"));
        assert_eq!(
            atomic(&cas, Some(&json!("z"))).unwrap(),
            Applied::Conflict(json!("z"))
        );
        assert_eq!(atomic(&cas, None).unwrap(), Applied::Missing);
        let setnx = atomic_op(json!({"operation_type": "test_and_set", "new_value": 1}));
        assert_eq!(stored(atomic(&setnx, None).unwrap()), json!(1));
        assert!(matches!(
            atomic(&setnx, Some(&json!(1))).unwrap(),
            Applied::Conflict(_)
        ));
    }

    #[test]
    fn append_joins_strings_and_lists() {
        let app = atomic_op(json!({"operation_type": "append", "new_value": "c"}));
        assert_eq!(
            stored(atomic(&app, Some(&json!("ab"))).unwrap()),
            json!("abc")
        );
        let pre = atomic_op(json!({"operation_type": "prepend", "new_value": [0]}));
        assert_eq!(
            stored(atomic(&pre, Some(&json!([1, 2]))).unwrap()),
            json!([0, 1, 2])
        );
        assert!(atomic(&app, Some(&json!(3))).is_err());
    }

    #[test]
    fn structures() {
        let add =
            structure_op(json!({"structure_type": "set", "operation": "add", "values": [2, 1, 2]}));
        let s = stored(structure(&add, None).unwrap());
        assert_eq!(s, json!([1, 2]));
        let put = structure_op(json!({"structure_type": "map", "operation": "set",
            "field_updates": {"a": 1}}));
        let m = stored(structure(&put, None).unwrap());
        let get = structure_op(
            json!({"structure_type": "map", "operation": "get", "fields": ["a", "b"]}),
        );
        assert_eq!(
            structure(&get, Some(&m)).unwrap(),
            Applied::Read(json!({"a": 1, "b": null}))
        );
        let push = structure_op(
            json!({"structure_type": "list", "operation": "append", "values": [1, 2, 3]}),
        );
        let l = stored(structure(&push, None).unwrap());
        let range = structure_op(json!({"structure_type": "list", "operation": "range",
            "range_spec": {"start": 1, "stop": -1}}));
        assert_eq!(
            structure(&range, Some(&l)).unwrap(),
            Applied::Read(json!([2, 3]))
        );
        let inc = structure_op(
            json!({"structure_type": "counter", "operation": "increment", "values": [3]}),
        );
        assert_eq!(stored(structure(&inc, None).unwrap()), json!(3));
        let zset = structure_op(json!({"structure_type": "sorted_set", "operation": "add"}));
        assert!(structure(&zset, None).unwrap_err().contains("not served"));
        assert!(
            structure(&add, Some(&json!({"a": 1})))
                .unwrap_err()
                .contains("not a set")
        );
    }
}
