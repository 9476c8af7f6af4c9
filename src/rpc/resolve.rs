//! References in arguments, found and substituted on the JSON text: no value tree is
//! built, and a substitution copies the result's text once. Pure.
//!
//! A reference is a string value (not an object key) equal to a command's name or to
//! `name.path…`, or an object that is exactly `{"$ref": "name[.path…]"}`.

use std::borrow::Cow;

use super::names::{NameIndex, implicit_ref};
use crate::protocol::Json;
use crate::protocol::jscan::{Lexer, Tok, Token, str_value};

/// Deepest value (arrays/objects) a resolved argument or a step's result may be. Incoming
/// messages are capped at 127 levels; staying at 124 for values keeps every reply (3
/// levels of envelope) parseable by clients with the same cap.
pub const MAX_VALUE_DEPTH: usize = 124;

/// A reference found in an argument text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref<'a> {
    /// A string value that may name a command (`name` or `name.path`).
    Implicit(Cow<'a, str>),
    /// `{"$ref": target}`.
    Explicit(Cow<'a, str>),
}

/// A reference and where it is: its byte span in the text and the containers around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'a> {
    pub reference: Ref<'a>,
    pub start: usize,
    pub end: usize,
    pub depth: usize,
}

/// If the object opening at `open` is exactly `{"$ref": "<string>"}`: its target and the
/// end of the object.
fn explicit_at<'a>(text: &'a str, open: &Token) -> Option<(Cow<'a, str>, usize)> {
    let rest = text[open.start + 1..].trim_start();
    // Cheap test first: almost no object starts with a key beginning `"$` or an escape.
    if !(rest.starts_with("\"$") || rest.starts_with("\"\\")) {
        return None;
    }
    let sub = &text[open.start..];
    let mut l = Lexer::new(sub);
    let _open = l.next_token().ok()??;
    let key = l.next_token().ok()??;
    if key.tok != Tok::Key || str_value(sub, &key) != "$ref" {
        return None;
    }
    let target = l.next_token().ok()??;
    let close = l.next_token().ok()??;
    if target.tok != Tok::Str || close.tok != Tok::ObjEnd {
        return None;
    }
    let value = match str_value(sub, &target) {
        Cow::Borrowed(_) => {
            Cow::Borrowed(&text[open.start + target.start + 1..open.start + target.end - 1])
        }
        Cow::Owned(s) => Cow::Owned(s),
    };
    Some((value, open.start + close.end))
}

/// Every reference candidate in `text` (a checked JSON value), in order. Strings inside an
/// explicit reference object are not candidates themselves.
pub fn references(text: &str) -> impl Iterator<Item = Found<'_>> {
    let mut lexer = Lexer::new(text);
    // Inside an explicit reference: the lexer skips its tokens until this offset.
    let mut skip_to = 0usize;
    std::iter::from_fn(move || {
        loop {
            let depth = lexer.depth();
            let t = lexer.next_token().ok()??;
            if t.start < skip_to {
                continue;
            }
            match t.tok {
                Tok::Str => {
                    return Some(Found {
                        reference: Ref::Implicit(str_value(text, &t)),
                        start: t.start,
                        end: t.end,
                        depth,
                    });
                }
                Tok::ObjBegin => {
                    if let Some((target, end)) = explicit_at(text, &t) {
                        skip_to = end;
                        return Some(Found {
                            reference: Ref::Explicit(target),
                            start: t.start,
                            end,
                            depth,
                        });
                    }
                }
                _ => {}
            }
        }
    })
}

/// A canonical array index: digits only, no leading zero (so `01` and `+1` are keys, not 1).
fn array_index(seg: &str) -> Option<usize> {
    let canonical = !seg.is_empty()
        && seg.bytes().all(|b| b.is_ascii_digit())
        && (seg == "0" || !seg.starts_with('0'));
    canonical.then(|| seg.parse().ok()).flatten()
}

/// Reads one value from `l` and returns its span; `None` at the end of the container.
fn value_span(l: &mut Lexer<'_>) -> Option<(usize, usize)> {
    let first = l.next_token().ok()??;
    match first.tok {
        Tok::ObjEnd | Tok::ArrEnd => None,
        Tok::ObjBegin | Tok::ArrBegin => {
            let depth = l.depth();
            loop {
                let t = l.next_token().ok()??;
                if matches!(t.tok, Tok::ObjEnd | Tok::ArrEnd) && l.depth() < depth {
                    return Some((first.start, t.end));
                }
            }
        }
        _ => Some((first.start, first.end)),
    }
}

/// The text of the member `seg` of the object or array `text`.
fn child<'t>(text: &'t str, seg: &str) -> Option<&'t str> {
    let mut l = Lexer::new(text);
    match l.next_token().ok()??.tok {
        Tok::ObjBegin => loop {
            let key = l.next_token().ok()??;
            if key.tok != Tok::Key {
                return None;
            }
            let hit = str_value(text, &key) == seg;
            let (s, e) = value_span(&mut l)?;
            if hit {
                return Some(&text[s..e]);
            }
        },
        Tok::ArrBegin => {
            let want = array_index(seg)?;
            for _ in 0..want {
                value_span(&mut l)?;
            }
            value_span(&mut l).map(|(s, e)| &text[s..e])
        }
        _ => None,
    }
}

/// Follows `path` (dot-separated object keys or array indices) into `text`.
fn navigate<'t>(text: &'t str, path: &str) -> Option<&'t str> {
    path.split('.').try_fold(text, child)
}

/// The text a reference denotes, if its command has a result and the path exists (`Err`
/// for an explicit reference to a missing path, which becomes `null`).
fn lookup<'v>(
    reference: &Ref<'_>,
    names: &NameIndex<'_>,
    results: &'v [Option<Json>],
) -> Option<Result<&'v str, ()>> {
    match reference {
        Ref::Implicit(s) => {
            let i = implicit_ref(s, names)?;
            let result = results[i].as_ref()?.get();
            match s.split_once('.') {
                Some((_, path)) if names.get(s).is_none() => navigate(result, path).map(Ok),
                _ => Some(Ok(result)),
            }
        }
        Ref::Explicit(r) => {
            let (head, path) = match r.split_once('.') {
                Some((head, path)) => (head, Some(path)),
                None => (r.as_ref(), None),
            };
            let result = results[names.get(head)?].as_ref()?.get();
            Some(match path {
                Some(path) => navigate(result, path).ok_or(()),
                None => Ok(result),
            })
        }
    }
}

/// How deeply `text` (checked JSON) nests, counting brackets outside strings.
pub fn depth_of(text: &str) -> usize {
    let b = text.as_bytes();
    if !matches!(text.trim_start().as_bytes().first(), Some(b'[' | b'{')) {
        return 0; // a scalar, the common result
    }
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

/// What resolving a request's references may still copy. Each reference copies the text it
/// names, so without a bound a tiny request (`b = [a, a]`, `c = [b, b]`, …) grows
/// exponentially.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Bytes of resolved argument text left to write.
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

/// `text` (an argument list or keyword object) with every reference replaced by the text it
/// names, within `budget` (`total` is its original size, for the error) and
/// [`MAX_VALUE_DEPTH`] (counted from the list's elements). An implicit `name.path` whose
/// path does not exist stays the literal string (as in the original); an explicit
/// `{"$ref"}` to a missing path becomes `null`.
pub fn resolve(
    text: &Json,
    names: &NameIndex<'_>,
    results: &[Option<Json>],
    budget: &mut Budget,
    total: usize,
) -> Result<Json, LimitError> {
    let src = text.get();
    let mut out = String::new();
    let mut copied = 0usize;
    for found in references(src) {
        let Some(value) = lookup(&found.reference, names, results) else {
            continue;
        };
        let value = value.unwrap_or("null");
        if found.depth.saturating_sub(1) + depth_of(value) > MAX_VALUE_DEPTH {
            return Err(LimitError::Depth);
        }
        budget.charge(found.start - copied + value.len(), total)?;
        out.push_str(&src[copied..found.start]);
        out.push_str(value);
        copied = found.end;
    }
    if copied == 0 {
        return Ok(text.clone());
    }
    budget.charge(src.len() - copied, total)?;
    out.push_str(&src[copied..]);
    // Valid JSON spliced into valid JSON at value positions is valid JSON.
    Ok(Json::from_text(out).unwrap_or_else(|e| {
        debug_assert!(false, "resolution produced invalid JSON: {e}");
        Json::null()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn j(v: serde_json::Value) -> Json {
        Json::from(v)
    }

    fn resolved(v: serde_json::Value, names: &NameIndex<'_>, results: &[Option<Json>]) -> Json {
        let mut unlimited = Budget {
            bytes_left: usize::MAX,
        };
        resolve(&j(v), names, results, &mut unlimited, usize::MAX).unwrap()
    }

    #[test]
    fn budgets_stop_exponential_copies_and_deep_values() {
        let names: NameIndex<'_> = [("a", 0)].into_iter().collect();
        let results = vec![Some(j(json!("x".repeat(1000))))];
        let mut budget = Budget { bytes_left: 2500 };
        let two = j(json!(["a", "a"]));
        assert!(resolve(&two, &names, &results, &mut budget, 2500).is_ok());
        assert_eq!(
            resolve(&two, &names, &results, &mut budget, 2500),
            Err(LimitError::Bytes(2500))
        );
        let mut deep = json!("a");
        for _ in 0..MAX_VALUE_DEPTH {
            deep = json!([deep]);
        }
        let mut budget = Budget {
            bytes_left: usize::MAX,
        };
        let results = vec![Some(j(json!([1])))];
        assert_eq!(
            resolve(&j(json!([deep])), &names, &results, &mut budget, 0),
            Err(LimitError::Depth)
        );
        assert_eq!(depth_of(r#"[{"a":"[[["},[]]"#), 2);
    }

    #[test]
    fn substitution_rules() {
        let names: NameIndex<'_> = [("a", 0), ("g", 1)].into_iter().collect();
        let results = vec![
            Some(j(json!(3))),
            Some(j(json!({"nested": {"v": 14}, "l": [5, [6, 7]]}))),
        ];
        let v = json!(["a", "g.nested.v", "g.l.1", "g.missing", {"k": "a", "a": 1}, {"$ref": "g.nope"}, "x", {"$ref": "a"}]);
        assert_eq!(
            resolved(v, &names, &results).to_value(),
            json!([3, 14, [6, 7], "g.missing", {"k": 3, "a": 1}, null, "x", 3])
        );
        let untouched = j(json!(["x", {"$ref": 1}]));
        assert_eq!(resolved(untouched.to_value(), &names, &results), untouched);
    }

    #[test]
    fn references_are_found_with_their_depth() {
        let found: Vec<_> = references(r#"["a", {"b": ["c"], "$ref": "d"}, {"$ref": "e.f"}]"#)
            .map(|f| (f.reference, f.depth))
            .collect();
        assert_eq!(
            found,
            [
                (Ref::Implicit("a".into()), 1),
                (Ref::Implicit("c".into()), 3),
                (Ref::Implicit("d".into()), 2),
                (Ref::Explicit("e.f".into()), 1),
            ]
        );
    }
}
