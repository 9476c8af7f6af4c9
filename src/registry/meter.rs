//! What generic JSON parameters cost. A parameter typed `serde_json::Value` (or a list or
//! map of them) is decoded into a tree, which costs 32 bytes or more per element however
//! small its text. The connection that sent the request pays for it: while the call runs,
//! the tree's bytes count against that connection's budget (`data::client_budget`), so a client
//! cannot make the node build trees without bound.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Map, Value};

tokio::task_local! {
    /// The tree bytes of the requests running for one connection.
    static TREES: Arc<AtomicUsize>;
}

/// Runs `work` (a request) charging the trees its calls decode to `meter`.
pub async fn metered<F: Future>(meter: Arc<AtomicUsize>, work: F) -> F::Output {
    TREES.scope(meter, work).await
}

/// The approximate heap bytes of a tree: 32 per node, the bytes of its strings, and 64 per
/// object entry (key and map node). Iterative: trees may be deep.
pub fn tree_bytes(v: &Value) -> usize {
    let mut total = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total += 32;
        match v {
            Value::String(s) => total += s.len(),
            Value::Array(items) => stack.extend(items.iter()),
            Value::Object(m) => {
                total += m.keys().map(|k| 64 + k.len()).sum::<usize>();
                stack.extend(m.values());
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    total
}

/// The tree bytes of a decoded parameter, when its type is a tree (`Value`, `Vec<Value>`,
/// `Map<String, Value>`, `Option<Value>`); `None` for typed parameters.
pub fn tree_bytes_of<T: Any>(v: &T) -> Option<usize> {
    let any = v as &dyn Any;
    if let Some(v) = any.downcast_ref::<Value>() {
        return Some(tree_bytes(v));
    }
    if let Some(v) = any.downcast_ref::<Option<Value>>() {
        return Some(v.as_ref().map_or(0, tree_bytes));
    }
    if let Some(v) = any.downcast_ref::<Vec<Value>>() {
        return Some(v.iter().map(tree_bytes).sum());
    }
    any.downcast_ref::<Map<String, Value>>()
        .map(|m| m.iter().map(|(k, v)| 64 + k.len() + tree_bytes(v)).sum())
}

/// Bytes charged to the running request's connection until dropped (with the call).
pub struct TreeCharge {
    meter: Option<Arc<AtomicUsize>>,
    bytes: usize,
}

impl TreeCharge {
    pub fn new(bytes: usize) -> TreeCharge {
        let meter = if bytes == 0 {
            None
        } else {
            TREES.try_with(Arc::clone).ok()
        };
        if let Some(m) = &meter {
            m.fetch_add(bytes, Ordering::Relaxed);
        }
        TreeCharge { meter, bytes }
    }
}

impl Drop for TreeCharge {
    fn drop(&mut self) {
        if let Some(m) = &self.meter {
            m.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trees_are_priced_and_typed_values_are_not() {
        assert_eq!(tree_bytes(&json!(1)), 32);
        assert_eq!(tree_bytes(&json!(["ab", 1])), 32 + 34 + 32);
        assert_eq!(tree_bytes(&json!({"k": null})), 32 + 65 + 32);
        assert_eq!(tree_bytes_of(&vec![json!(1), json!(2)]), Some(64));
        assert_eq!(tree_bytes_of(&7i64), None);
        assert_eq!(tree_bytes_of(&vec![1.0f64]), None);
    }

    #[tokio::test]
    async fn a_charge_lasts_as_long_as_the_call_and_only_inside_a_metered_request() {
        let meter = Arc::new(AtomicUsize::new(0));
        let seen = metered(meter.clone(), async {
            let charge = TreeCharge::new(100);
            let during = meter.load(Ordering::Relaxed);
            drop(charge);
            during
        })
        .await;
        assert_eq!((seen, meter.load(Ordering::Relaxed)), (100, 0));
        // Outside a request (a forwarded step, a test), nothing is charged.
        drop(TreeCharge::new(100));
        assert_eq!(meter.load(Ordering::Relaxed), 0);
    }
}
