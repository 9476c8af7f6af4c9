//! Turning typed async Rust functions into handlers that take JSON arguments.

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::protocol::{Json, plain_error};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The JSON arguments of one call, after dependency resolution, as text: a function
/// decodes them straight into its parameter types, without a tree in between.
#[derive(Debug, Clone, PartialEq)]
pub struct CallArgs {
    /// A JSON array.
    pub args: Json,
    /// A JSON object.
    pub kwargs: Json,
}

impl Default for CallArgs {
    fn default() -> Self {
        CallArgs {
            args: Json::empty_array(),
            kwargs: Json::empty_object(),
        }
    }
}

impl CallArgs {
    /// Arguments given as trees (tests, clients).
    pub fn from_values(args: Vec<Value>, kwargs: Map<String, Value>) -> CallArgs {
        CallArgs {
            args: Json::from(Value::Array(args)),
            kwargs: Json::from(Value::Object(kwargs)),
        }
    }

    /// Matches positional and keyword arguments to the parameters `params`, borrowing each
    /// argument's text. Reads at most one argument more than there are parameters, so a
    /// call with millions of arguments costs nothing before it is refused.
    pub fn bind<P: AsRef<str>>(&self, params: &[P]) -> Result<Vec<Option<&RawValue>>, CallError> {
        let n = params.len();
        let bad = |e: serde_json::Error| CallError::InvalidArguments(plain_error(&e));
        let mut de = serde_json::Deserializer::from_str(self.args.get());
        let (given, total) = de.deserialize_seq(Positional { n }).map_err(bad)?;
        if total > n {
            return Err(CallError::InvalidArguments(format!(
                "takes {n} argument(s) but {total} positional were given"
            )));
        }
        let mut slots: Vec<Option<&RawValue>> = given.into_iter().map(Some).collect();
        slots.resize(n, None);
        if self.kwargs.is_empty_container() {
            return Ok(slots);
        }
        let mut de = serde_json::Deserializer::from_str(self.kwargs.get());
        de.deserialize_map(Keywords {
            params,
            slots: &mut slots,
        })
        .map_err(|e| CallError::InvalidArguments(plain_error(&e)))?;
        Ok(slots)
    }

    /// How many positional and keyword arguments there are (counted, not kept).
    pub fn count(&self) -> (usize, usize) {
        let positional =
            serde_json::from_str::<Vec<IgnoredAny>>(self.args.get()).map_or(0, |v| v.len());
        let keywords = serde_json::from_str::<std::collections::BTreeMap<String, IgnoredAny>>(
            self.kwargs.get(),
        )
        .map_or(0, |m| m.len());
        (positional, keywords)
    }
}

/// Reads up to `n` elements of an array as text, and counts the rest.
struct Positional {
    n: usize,
}

impl<'de> Visitor<'de> for Positional {
    type Value = (Vec<&'de RawValue>, usize);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of arguments")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut given = Vec::with_capacity(self.n.min(16));
        while given.len() < self.n {
            match seq.next_element::<&'de RawValue>()? {
                Some(a) => given.push(a),
                None => break,
            }
        }
        let mut total = given.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            total += 1;
        }
        Ok((given, total))
    }
}

/// Places keyword arguments in their parameters' slots; stops at the first that fits none.
struct Keywords<'s, 'de, P> {
    params: &'s [P],
    slots: &'s mut Vec<Option<&'de RawValue>>,
}

impl<'de, P: AsRef<str>> Visitor<'de> for Keywords<'_, 'de, P> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of keyword arguments")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<&'de RawValue>()?;
            match self.params.iter().position(|p| p.as_ref() == key) {
                Some(i) if self.slots[i].is_none() => self.slots[i] = Some(value),
                Some(_) => {
                    return Err(A::Error::custom(format!(
                        "got multiple values for parameter `{key}`"
                    )));
                }
                None => {
                    let names: Vec<&str> = self.params.iter().map(AsRef::as_ref).collect();
                    return Err(A::Error::custom(format!(
                        "unexpected keyword argument `{key}` (parameters: {})",
                        names.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Why a call did not produce a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// One argument does not decode into its parameter's type (or is missing).
    #[error("parameter `{param}` (position {position}, type {expected}): {detail}")]
    InvalidArgument {
        param: String,
        position: usize,
        expected: &'static str,
        detail: String,
    },
    /// The argument list as a whole does not fit (too many, unknown keyword, …).
    #[error("{0}")]
    InvalidArguments(String),
    /// The function ran and returned an error.
    #[error("{0}")]
    Failed(String),
    /// A built-in needed the control plane and it could not answer, or the worker serving
    /// the function is gone before the call reached it (code 1017).
    #[error("{0}")]
    Unavailable(String),
    /// Whatever ran the call went away before answering: it may have run (code 1018).
    #[error("{0}")]
    Lost(String),
    /// The caller may not see what it asked for: a namespace policy denies it (code 1021).
    #[error("{0}")]
    Denied(String),
}

/// A callable registered function.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, args: CallArgs) -> BoxFuture<Result<Json, CallError>>;

    /// Its calls run in another process (a worker connection) that can go away in the
    /// middle of one. The executor then keeps a copy of the arguments, so that a call that
    /// never reached it ([`CallError::Unavailable`]), or an idempotent one lost with it
    /// ([`CallError::Lost`]), can move to another node.
    fn hosted_elsewhere(&self) -> bool {
        false
    }
}

/// Implemented for async functions and closures of up to eight JSON-decodable parameters
/// returning `Result<impl Serialize, impl Display>`. `M` only disambiguates the impls.
pub trait IntoHandler<M>: Send + Sync + 'static {
    /// How many parameters the function takes.
    fn arity() -> usize;
    /// The Rust types of its parameters (`std::any::type_name`), for `rpc_describe`.
    fn param_types() -> Vec<&'static str>;
    /// Wraps the function; `params` are the parameter names used for keyword arguments and
    /// error messages.
    fn into_handler(self, params: Arc<[String]>) -> Arc<dyn Handler>;
}

struct Typed<F, M> {
    f: F,
    params: Arc<[String]>,
    _args: PhantomData<fn() -> M>,
}

/// Decodes one slot straight from its text; a missing argument decodes as `null`, which
/// only `Option` accepts.
fn decode<T: DeserializeOwned>(
    params: &[String],
    position: usize,
    slot: Option<&RawValue>,
) -> Result<T, CallError> {
    serde_json::from_str(slot.map_or("null", RawValue::get)).map_err(|e| {
        CallError::InvalidArgument {
            param: params[position].clone(),
            position,
            expected: short_type_name::<T>(),
            detail: if slot.is_none() {
                "missing required argument".to_owned()
            } else {
                plain_error(&e)
            },
        }
    })
}

/// `alloc::vec::Vec<alloc::string::String>` → `Vec<String>`.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    // Leak-free shortening is only possible for names without generics; keep the full name
    // when it has them, trimmed of the common std prefixes.
    match full.rfind("::") {
        Some(i) if !full.contains('<') => &full[i + 2..],
        _ => full,
    }
}

async fn finish<R: Serialize, E: Display>(
    fut: impl Future<Output = Result<R, E>>,
) -> Result<Json, CallError> {
    match fut.await {
        Ok(r) => Json::encode(&r)
            .map_err(|e| CallError::Failed(format!("result is not representable as JSON: {e}"))),
        Err(e) => Err(CallError::Failed(e.to_string())),
    }
}

macro_rules! typed_handler {
    ($n:expr; $($T:ident $v:ident $i:tt),*) => {
        impl<F, Fut, R, E, $($T,)*> IntoHandler<($($T,)*)> for F
        where
            F: Fn($($T),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<R, E>> + Send + 'static,
            R: Serialize + 'static,
            E: Display + 'static,
            $($T: DeserializeOwned + Send + 'static,)*
        {
            fn arity() -> usize {
                $n
            }

            fn param_types() -> Vec<&'static str> {
                vec![$(std::any::type_name::<$T>()),*]
            }

            fn into_handler(self, params: Arc<[String]>) -> Arc<dyn Handler> {
                Arc::new(Typed::<F, ($($T,)*)> { f: self, params, _args: PhantomData })
            }
        }

        impl<F, Fut, R, E, $($T,)*> Handler for Typed<F, ($($T,)*)>
        where
            F: Fn($($T),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<R, E>> + Send + 'static,
            R: Serialize + 'static,
            E: Display + 'static,
            $($T: DeserializeOwned + Send + 'static,)*
        {
            #[allow(unused_mut, unused_variables)]
            fn call(&self, args: CallArgs) -> BoxFuture<Result<Json, CallError>> {
                let mut slots = match args.bind(&self.params) {
                    Ok(s) => s,
                    Err(e) => return Box::pin(std::future::ready(Err(e))),
                };
                let mut trees = 0usize;
                $(
                    let $v: $T = match decode(&self.params, $i, slots[$i].take()) {
                        Ok(v) => v,
                        Err(e) => return Box::pin(std::future::ready(Err(e))),
                    };
                    trees += super::meter::tree_bytes_of(&$v).unwrap_or(0);
                )*
                // Generic JSON parameters' trees count against the caller's budget until
                // the call ends (`meter.rs`).
                let charge = super::meter::TreeCharge::new(trees);
                let call = finish((self.f)($($v),*));
                Box::pin(async move {
                    let _charge = charge;
                    call.await
                })
            }
        }
    };
}

typed_handler!(0;);
typed_handler!(1; A1 a1 0);
typed_handler!(2; A1 a1 0, A2 a2 1);
typed_handler!(3; A1 a1 0, A2 a2 1, A3 a3 2);
typed_handler!(4; A1 a1 0, A2 a2 1, A3 a3 2, A4 a4 3);
typed_handler!(5; A1 a1 0, A2 a2 1, A3 a3 2, A4 a4 3, A5 a5 4);
typed_handler!(6; A1 a1 0, A2 a2 1, A3 a3 2, A4 a4 3, A5 a5 4, A6 a6 5);
typed_handler!(7; A1 a1 0, A2 a2 1, A3 a3 2, A4 a4 3, A5 a5 4, A6 a6 5, A7 a7 6);
typed_handler!(8; A1 a1 0, A2 a2 1, A3 a3 2, A4 a4 3, A5 a5 4, A6 a6 5, A7 a7 6, A8 a8 7);

/// A handler over the raw argument lists, for variadic functions such as `echos`.
pub(crate) struct Raw<F>(pub(crate) F);

impl<F, Fut> Handler for Raw<F>
where
    F: Fn(CallArgs) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Json, CallError>> + Send + 'static,
{
    fn call(&self, args: CallArgs) -> BoxFuture<Result<Json, CallError>> {
        Box::pin((self.0)(args))
    }
}

/// A handler whose calls run in another process (see [`Handler::hosted_elsewhere`]).
pub(crate) struct Hosted<H>(pub(crate) H);

impl<H: Handler> Handler for Hosted<H> {
    fn call(&self, args: CallArgs) -> BoxFuture<Result<Json, CallError>> {
        self.0.call(args)
    }

    fn hosted_elsewhere(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(n: &[&str]) -> Arc<[String]> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn call_now(h: &Arc<dyn Handler>, args: Value, kwargs: Value) -> Result<Value, CallError> {
        let args = CallArgs::from_values(
            args.as_array().cloned().unwrap_or_default(),
            kwargs.as_object().cloned().unwrap_or_default(),
        );
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(h.call(args))
            .map(|j| j.to_value())
    }

    #[test]
    fn positional_keyword_and_optional_arguments() {
        let h = (|a: i64, b: i64, scale: Option<i64>| async move {
            Ok::<_, String>((a + b) * scale.unwrap_or(1))
        })
        .into_handler(names(&["a", "b", "scale"]));
        assert_eq!(call_now(&h, json!([2, 3]), json!({})), Ok(json!(5)));
        assert_eq!(
            call_now(&h, json!([2]), json!({"b": 3, "scale": 10})),
            Ok(json!(50))
        );
    }

    #[test]
    fn mismatches_name_the_parameter() {
        let h = (|a: i64, b: String| async move { Ok::<_, String>(format!("{a}{b}")) })
            .into_handler(names(&["count", "label"]));
        match call_now(&h, json!(["x", "y"]), json!({})) {
            Err(CallError::InvalidArgument {
                param, position, ..
            }) => {
                assert_eq!((param.as_str(), position), ("count", 0));
            }
            other => panic!("{other:?}"),
        }
        match call_now(&h, json!([1]), json!({})) {
            Err(CallError::InvalidArgument { param, detail, .. }) => {
                assert_eq!(param, "label");
                assert!(detail.contains("missing"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            call_now(&h, json!([1, "a", 3]), json!({})),
            Err(CallError::InvalidArguments(_))
        ));
        assert!(matches!(
            call_now(&h, json!([1, "a"]), json!({"nope": 1})),
            Err(CallError::InvalidArguments(_))
        ));
        assert!(matches!(
            call_now(&h, json!([1, "a"]), json!({"count": 1})),
            Err(CallError::InvalidArguments(_))
        ));
    }

    #[test]
    fn function_errors_are_failures() {
        let h = (|| async { Err::<i64, _>("boom") }).into_handler(names(&[]));
        assert_eq!(
            call_now(&h, json!([]), json!({})),
            Err(CallError::Failed("boom".into()))
        );
    }
}
