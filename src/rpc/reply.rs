//! The reply to a request as the node writes it: results stay JSON text, and the whole
//! reply is written straight into a buffer capped at the node's message limit. Per-level
//! results (`return_intermediate_results`) repeat every earlier level's results, so their
//! size grows with the square of the chain's length; they are never built as values, and
//! writing stops the moment the cap is crossed, so a reply costs at most the cap however
//! long the chain.

use std::io;

use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::protocol::{ErrorCode, ExecutionSummary, Json, RpcReply, WireError};

/// A request's reply.
#[derive(Debug)]
pub struct Reply {
    /// The request's `u`, or `"unknown"` when it could not be read.
    pub u: Value,
    pub outcome: Result<Done, WireError>,
}

/// What a request that ran produced.
#[derive(Debug, Default)]
pub struct Done {
    /// Results of the sink commands, by name (names are unique).
    pub r: Vec<(String, Json)>,
    /// Per-level results, when asked for.
    pub levels: Option<Levels>,
    pub summary: Option<ExecutionSummary>,
}

/// `intermediate_results`, as the original reports them.
#[derive(Debug)]
pub struct Levels {
    pub request_id: String,
    pub levels: Vec<Level>,
}

#[derive(Debug)]
pub struct Level {
    /// This level's commands and results.
    pub results: Vec<(String, Json)>,
    pub timestamp: f64,
    pub execution_time_ms: f64,
}

/// The reply did not fit in the node's message limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reply exceeds max_message_bytes ({0})")]
pub struct TooBig(pub usize);

/// A buffer that refuses to grow past `max` bytes.
struct Capped {
    buf: Vec<u8>,
    max: usize,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            return Err(io::Error::other("reply cap"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Reply {
    pub fn success(u: Value, done: Done) -> Reply {
        Reply {
            u,
            outcome: Ok(done),
        }
    }

    pub fn failure(u: Value, error: WireError) -> Reply {
        Reply {
            u,
            outcome: Err(error),
        }
    }

    /// The reply as JSON text of at most `max` bytes.
    pub fn to_text_within(&self, max: usize) -> Result<String, TooBig> {
        if let Some(bound) = self.size_bound()
            && bound <= max
        {
            // Cannot exceed the cap: serde_json's own buffer is faster than a capped one.
            return serde_json::to_string(self).map_err(|_| TooBig(max));
        }
        let mut out = Capped {
            buf: Vec::with_capacity(128),
            max,
        };
        serde_json::to_writer(&mut out, self).map_err(|_| TooBig(max))?;
        // serde_json writes only valid UTF-8.
        String::from_utf8(out.buf).map_err(|_| TooBig(max))
    }

    /// An upper bound of the reply's length when it is cheap to know (no per-level
    /// results): the results' text, and what escaping names and messages may add.
    fn size_bound(&self) -> Option<usize> {
        const ENVELOPE: usize = 256;
        let u = self.u.as_str().map_or(64, |u| 6 * u.len());
        match &self.outcome {
            Ok(done) if done.levels.is_none() => {
                let r: usize = done.r.iter().map(|(k, v)| 6 * k.len() + v.len() + 4).sum();
                // A summary is a handful of numbers per level.
                let summary = done.summary.as_ref().map_or(0, |s| {
                    6 * s.request_id.len() + 32 * s.level_execution_times.len() + 512
                });
                Some(ENVELOPE + u + r + summary)
            }
            Ok(_) => None,
            Err(e) => {
                let details = match &e.details {
                    Value::String(d) => 6 * d.len(),
                    _ => return None,
                };
                Some(ENVELOPE + u + 6 * e.message.len() + details)
            }
        }
    }

    /// The reply as JSON text of at most `max` bytes; a larger one is replaced by a 1016
    /// error (clients apply the same limit and would otherwise drop the connection).
    pub fn to_text(&self, max: usize) -> String {
        self.to_text_within(max).unwrap_or_else(|e| {
            let too_big = Reply::failure(
                self.u.clone(),
                WireError::new(ErrorCode::LimitExceeded, e.to_string()),
            );
            too_big.to_text_within(usize::MAX).unwrap_or_default()
        })
    }

    /// The reply as a client reads it.
    pub fn to_rpc_reply(&self) -> RpcReply {
        serde_json::from_str(&self.to_text(usize::MAX)).unwrap_or_else(|e| {
            RpcReply::failure(
                self.u.clone(),
                WireError::new(ErrorCode::Internal, format!("unreadable reply: {e}")),
            )
        })
    }
}

/// Serializes `(name, value)` pairs as an object with sorted keys (as a `serde_json::Map`).
fn sorted_map<'a, S: Serializer>(
    s: S,
    pairs: impl Iterator<Item = &'a (String, Json)>,
) -> Result<S::Ok, S::Error> {
    let mut refs: Vec<&(String, Json)> = pairs.collect();
    refs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut m = s.serialize_map(Some(refs.len()))?;
    for (k, v) in refs {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

struct Results<'a>(&'a [(String, Json)]);

impl Serialize for Results<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        sorted_map(s, self.0.iter())
    }
}

/// Levels `0..=k`'s results together.
struct Accumulated<'a>(&'a [Level]);

impl Serialize for Accumulated<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        sorted_map(s, self.0.iter().flat_map(|l| l.results.iter()))
    }
}

struct LevelView<'a> {
    all: &'a Levels,
    k: usize,
}

impl Serialize for LevelView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let level = &self.all.levels[self.k];
        let mut st = s.serialize_struct("IntermediateResult", 8)?;
        st.serialize_field("request_id", &self.all.request_id)?;
        st.serialize_field("level_index", &self.k)?;
        st.serialize_field("level_results", &Results(&level.results))?;
        st.serialize_field(
            "accumulated_results",
            &Accumulated(&self.all.levels[..=self.k]),
        )?;
        st.serialize_field("total_levels", &self.all.levels.len())?;
        st.serialize_field("completed_levels", &(self.k + 1))?;
        st.serialize_field("timestamp", &level.timestamp)?;
        st.serialize_field("execution_time_ms", &level.execution_time_ms)?;
        st.end()
    }
}

struct LevelsView<'a>(Option<&'a Levels>);

impl Serialize for LevelsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some(all) = self.0 else {
            return s.serialize_seq(Some(0))?.end();
        };
        let mut seq = s.serialize_seq(Some(all.levels.len()))?;
        for k in 0..all.levels.len() {
            seq.serialize_element(&LevelView { all, k })?;
        }
        seq.end()
    }
}

impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The shape and field order of `RpcReply`.
        let mut st = s.serialize_struct("RpcReply", 6)?;
        st.serialize_field("role", "rpc-response")?;
        st.serialize_field("u", &self.u)?;
        match &self.outcome {
            Ok(done) => {
                st.serialize_field("r", &Results(&done.r))?;
                st.serialize_field("error", &None::<WireError>)?;
                st.serialize_field("intermediate_results", &LevelsView(done.levels.as_ref()))?;
                st.serialize_field("execution_summary", &done.summary)?;
            }
            Err(e) => {
                st.serialize_field("r", &None::<()>)?;
                st.serialize_field("error", e)?;
                st.serialize_field("intermediate_results", &LevelsView(None))?;
                st.serialize_field("execution_summary", &None::<ExecutionSummary>)?;
            }
        }
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn j(v: Value) -> Json {
        Json::from(v)
    }

    #[test]
    fn same_text_as_the_client_shape() {
        let reply = Reply::success(
            json!("u1"),
            Done {
                r: vec![("b".into(), j(json!([1]))), ("a".into(), j(json!("x")))],
                ..Done::default()
            },
        );
        let mut r = serde_json::Map::new();
        r.insert("a".into(), json!("x"));
        r.insert("b".into(), json!([1]));
        let expected = serde_json::to_string(&RpcReply::success(json!("u1"), r)).unwrap();
        assert_eq!(reply.to_text(usize::MAX), expected);
        let failed = Reply::failure(json!("u2"), WireError::new(ErrorCode::Internal, "x"));
        let expected = serde_json::to_string(&RpcReply::failure(
            json!("u2"),
            WireError::new(ErrorCode::Internal, "x"),
        ))
        .unwrap();
        assert_eq!(failed.to_text(usize::MAX), expected);
    }

    /// Levels of a chain: level k has one 1 KiB result, and level k's entry repeats the
    /// k + 1 results so far.
    fn chain(levels: usize) -> Reply {
        let value = j(json!("v".repeat(1024)));
        let levels = (0..levels)
            .map(|k| Level {
                results: vec![(format!("s{k}"), value.clone())],
                timestamp: 0.0,
                execution_time_ms: 0.0,
            })
            .collect();
        Reply::success(
            json!("c"),
            Done {
                levels: Some(Levels {
                    request_id: "c".into(),
                    levels,
                }),
                ..Done::default()
            },
        )
    }

    #[test]
    fn intermediate_results_stop_at_the_cap() {
        let small = chain(3).to_rpc_reply();
        assert_eq!(small.intermediate_results.len(), 3);
        assert_eq!(small.intermediate_results[2].accumulated_results.len(), 3);
        // 1,000 levels would be ~500 MB written whole; the cap stops writing at 1 MiB.
        let err = chain(1000).to_text_within(1 << 20);
        assert_eq!(err, Err(TooBig(1 << 20)));
        let text = chain(1000).to_text(1 << 20);
        assert!(text.contains("1016") && text.len() < 300, "{text}");
    }
}
