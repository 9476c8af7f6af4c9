//! The request conventions the original's discovery calls share, used by every group of
//! built-ins that answers in its shapes: one request object (`args[0]`, keywords, or both),
//! its scopes, `"offset:limit"` page tokens, and namespaces as dotted prefixes.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::protocol::json::Json;
use crate::registry::{CallArgs, CallError};

/// The original's default and largest page.
pub(super) const DEFAULT_PAGE: usize = 200;
pub(super) const MAX_PAGE: usize = 2000;

/// The request of a discovery call: `args[0]` (an object), keywords, or both merged.
pub(super) fn request<T: DeserializeOwned + Default>(
    name: &str,
    call: &CallArgs,
) -> Result<T, CallError> {
    let bad = |e: String| CallError::InvalidArguments(format!("{name}: {e}"));
    // Positionals only: keywords are the request's fields (or `request=` itself), which
    // `bind` would refuse as unknown parameters.
    let positional = CallArgs {
        args: call.args.clone(),
        kwargs: Json::empty_object(),
    };
    let slots = positional
        .bind(&["request"])
        .map_err(|e| bad(e.to_string()))?;
    let mut kwargs: Map<String, Value> = if call.kwargs.is_empty_container() {
        Map::new()
    } else {
        call.kwargs
            .decode()
            .map_err(|e| bad(crate::protocol::plain_error(&e)))?
    };
    let as_object = |v: Value| match v {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m),
        _ => Err(bad("the request must be an object".into())),
    };
    let mut fields = match (slots.first().copied().flatten(), kwargs.remove("request")) {
        (Some(_), Some(_)) => {
            return Err(bad("got multiple values for parameter `request`".into()));
        }
        (Some(r), None) => as_object(
            serde_json::from_str(r.get())
                .map_err(|e| bad(format!("the request must be an object: {e}")))?,
        )?,
        (None, Some(v)) => as_object(v)?,
        (None, None) => Map::new(),
    };
    fields.extend(kwargs);
    if fields.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| bad(e.to_string()))
}

/// The original's scopes, narrowest first; every function and node here is `zone`.
pub(super) const SCOPES: [&str; 4] = ["local", "zone", "region", "global"];
pub(super) const OUR_SCOPE: &str = "zone";

/// A requested scope, normalized as the original does (`cluster` is `zone`); `None`: any.
pub(super) fn scope(s: Option<&str>) -> Result<Option<usize>, CallError> {
    let Some(s) = s.map(|s| s.trim().to_ascii_lowercase()) else {
        return Ok(None);
    };
    if s.is_empty() {
        return Ok(None);
    }
    let s = if s == "cluster" { "zone".to_owned() } else { s };
    SCOPES
        .iter()
        .position(|x| *x == s)
        .map(Some)
        .ok_or_else(|| {
            CallError::InvalidArguments(format!(
                "unsupported discovery scope {s:?}: one of local, zone (cluster), region, global"
            ))
        })
}

/// Whether something of our scope passes a `wanted` scope filter.
pub(super) fn in_scope(wanted: Option<usize>) -> bool {
    wanted.is_none_or(|w| SCOPES.iter().position(|s| *s == OUR_SCOPE) >= Some(w))
}

/// `(offset, limit)` from the original's `"offset:limit"` tokens (malformed: from 0).
pub(super) fn page(token: Option<&str>, limit: Option<usize>) -> (usize, usize) {
    let (offset, from_token) = token
        .and_then(|t| t.split_once(':'))
        .map_or((0, None), |(o, l)| {
            (o.parse().unwrap_or(0), l.parse::<usize>().ok())
        });
    let limit = limit
        .or(from_token)
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, MAX_PAGE);
    (offset, limit)
}

/// A page of `items` and the token of the next one, if any.
pub(super) fn paginate(
    items: Vec<Value>,
    token: Option<&str>,
    limit: Option<usize>,
) -> (Vec<Value>, Value) {
    let (offset, limit) = page(token, limit);
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    let next = if offset.saturating_add(limit) < total {
        json!(format!("{}:{limit}", offset + limit))
    } else {
        Value::Null
    };
    (page, next)
}

/// Inserts `next_page_token` only when there is a next page (the original omits it).
pub(super) fn with_next(mut v: Value, next: Value) -> Value {
    if !next.is_null()
        && let Value::Object(m) = &mut v
    {
        m.insert("next_page_token".into(), next);
    }
    v
}

/// A function's namespace as the original derives it: its name up to the last dot.
pub(super) fn namespace_of(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(ns, _)| ns)
}

pub(super) fn in_namespace(ns: &str, filter: Option<&str>) -> bool {
    filter.is_none_or(|f| ns == f || ns.strip_prefix(f).is_some_and(|r| r.starts_with('.')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Ask {
        name: Option<String>,
        limit: Option<usize>,
    }

    #[test]
    fn requests_come_as_an_object_as_keywords_or_both() {
        let call = |args: Vec<Value>, kw: Value| {
            let Value::Object(kw) = kw else { panic!() };
            request::<Ask>("t", &CallArgs::from_values(args, kw))
        };
        let want = |n: &str, l| Ask {
            name: Some(n.into()),
            limit: l,
        };
        assert_eq!(call(vec![], json!({})).unwrap(), Ask::default());
        assert_eq!(call(vec![json!(null)], json!({})).unwrap(), Ask::default());
        assert_eq!(
            call(vec![json!({"name": "a"})], json!({})).unwrap(),
            want("a", None)
        );
        assert_eq!(
            call(vec![], json!({"name": "a", "limit": 2})).unwrap(),
            want("a", Some(2))
        );
        assert_eq!(
            call(vec![], json!({"request": {"name": "a"}})).unwrap(),
            want("a", None)
        );
        // Keywords win over the object's fields.
        assert_eq!(
            call(vec![json!({"name": "a", "limit": 1})], json!({"name": "b"})).unwrap(),
            want("b", Some(1))
        );
        assert!(call(vec![json!({}), json!({})], json!({})).is_err());
        assert!(call(vec![json!({})], json!({"request": {}})).is_err());
        assert!(call(vec![json!(3)], json!({})).is_err());
        assert!(call(vec![], json!({"request": [1]})).is_err());
    }

    #[test]
    fn pages_follow_the_originals_tokens() {
        assert_eq!(page(None, None), (0, DEFAULT_PAGE));
        assert_eq!(page(Some("10:5"), None), (10, 5));
        assert_eq!(page(Some("10:5"), Some(3)), (10, 3));
        assert_eq!(page(Some("junk"), None), (0, DEFAULT_PAGE));
        assert_eq!(page(None, Some(1_000_000)), (0, MAX_PAGE));
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let (p, next) = paginate(items.clone(), None, Some(2));
        assert_eq!((p, next), (vec![json!(0), json!(1)], json!("2:2")));
        let (p, next) = paginate(items, Some("4:2"), None);
        assert_eq!((p, next), (vec![json!(4)], Value::Null));
    }

    #[test]
    fn scopes_and_namespaces_as_the_original_reads_them() {
        assert_eq!(scope(Some(" Cluster ")).ok(), Some(Some(1)));
        assert_eq!(scope(Some("")).ok(), Some(None));
        assert!(scope(Some("planet")).is_err());
        assert!(in_scope(Some(0)) && in_scope(Some(1)) && !in_scope(Some(2)));
        assert_eq!(namespace_of("svc.market.quote"), "svc.market");
        assert_eq!(namespace_of("echo"), "");
        assert!(in_namespace("svc.market", Some("svc")));
        assert!(!in_namespace("svcx", Some("svc")));
    }
}
