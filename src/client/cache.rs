//! The cache from a client: `cache-request` messages (docs/PROTOCOL.md, "Cache") and their
//! `cache-response`s.
//!
//! ```no_run
//! # async fn f(client: mpreg::Client) -> Result<(), mpreg::ClientError> {
//! use std::time::Duration;
//! let cache = client.cache();
//! cache.put("orders:A-100", serde_json::json!({"status": "ready"}), Some(Duration::from_secs(600))).await?;
//! let hit = cache.get("orders:A-100").await?; // Some(entry), with the level that answered
//! cache.incr("stats:calls", 1).await?;
//! cache.invalidate("orders:*").await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::{Client, ClientError, Pending};
use crate::cache::CacheKey;
use crate::protocol::RpcReply;

/// A `cache-response`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheResponse {
    /// `hit`, `miss`, `conflict`, `error`, …
    pub status: String,
    /// The level that answered (`L1`, `L2`).
    pub level: Option<String>,
    /// The entry (`{key, value, creation_time, …}`), or an operation's answer in `value`.
    pub entry: Option<Value>,
    /// The whole message as the node sent it.
    pub raw: Value,
}

impl CacheResponse {
    /// The entry's value (or the operation's answer).
    pub fn value(&self) -> Option<&Value> {
        self.entry.as_ref().map(|e| &e["value"])
    }
}

/// The cache of the node a [`Client`] is connected to.
pub struct CacheClient<'c> {
    client: &'c Client,
}

impl Client {
    /// The node's cache.
    pub fn cache(&self) -> CacheClient<'_> {
        CacheClient { client: self }
    }
}

/// A key's object form for `text` (`namespace:identifier[:version]`).
pub fn key_json(text: &str) -> Value {
    let k = CacheKey::parse(text);
    json!({"namespace": k.namespace, "identifier": k.identifier, "version": k.version})
}

impl CacheClient<'_> {
    /// Sends `frame` (its `role` and `u` are set here) and returns the response; a status
    /// of `error` is [`ClientError::Cache`].
    pub async fn request(&self, mut frame: Value) -> Result<CacheResponse, ClientError> {
        let inner = &self.client.inner;
        let seq = inner
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        frame["role"] = json!("cache-request");
        frame["u"] = json!(format!("{}-{seq}", inner.prefix));
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = inner.pending.lock();
            if pending.closed {
                return Err(ClientError::Closed);
            }
            pending.cache.insert(seq, tx);
        }
        let wait = inner.default_timeout;
        let sent = inner.tx.send(Message::text(put_role_first(&frame))).await;
        let result = match sent {
            Err(_) => Err(ClientError::Closed),
            Ok(()) => match tokio::time::timeout(wait, rx).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(_)) => Err(ClientError::Closed),
                Err(_) => Err(ClientError::Timeout(wait)),
            },
        };
        inner.pending.lock().cache.remove(&seq);
        let raw = result?;
        let status = raw["status"].as_str().unwrap_or_default().to_owned();
        if status == "error" {
            let why = raw["error_message"].as_str().unwrap_or("refused");
            return Err(ClientError::Cache(why.to_owned()));
        }
        Ok(CacheResponse {
            status,
            level: raw["cache_level"].as_str().map(str::to_owned),
            entry: raw.get("entry").cloned(),
            raw,
        })
    }

    /// The entry under `key` (`namespace:identifier[:version]`), or `None` on a miss.
    pub async fn get(&self, key: &str) -> Result<Option<CacheResponse>, ClientError> {
        let r = self
            .request(json!({"operation": "get", "key": key_json(key)}))
            .await?;
        Ok((r.status == "hit").then_some(r))
    }

    /// Stores `value` under `key`, for `ttl` when given.
    pub async fn put(
        &self,
        key: &str,
        value: Value,
        ttl: Option<Duration>,
    ) -> Result<CacheResponse, ClientError> {
        let mut frame = json!({"operation": "put", "key": key_json(key), "value": value});
        if let Some(t) = ttl {
            frame["metadata"] = json!({"ttl_seconds": t.as_secs_f64()});
        }
        self.request(frame).await
    }

    /// Removes `key` (and what depends on it); whether it was there.
    pub async fn delete(&self, key: &str) -> Result<bool, ClientError> {
        let r = self
            .request(json!({"operation": "delete", "key": key_json(key)}))
            .await?;
        Ok(r.status == "hit")
    }

    /// Removes every key matching `pattern` (`orders:*`, or a namespace), and what depends
    /// on them; how many entries went.
    pub async fn invalidate(&self, pattern: &str) -> Result<u64, ClientError> {
        let r = self
            .request(json!({"operation": "invalidate", "invalidation_pattern": pattern}))
            .await?;
        Ok(r.value().and_then(|v| v["removed"].as_u64()).unwrap_or(0))
    }

    /// Adds `by` to the number under `key` (a missing key starts from 0, as Redis `INCRBY`);
    /// the new value.
    pub async fn incr(&self, key: &str, by: i64) -> Result<Value, ClientError> {
        let r = self
            .request(json!({"operation": "atomic", "key": key_json(key),
                "atomic_operation": {"operation_type": "increment", "increment_by": by,
                                     "create_if_missing": true, "initial_value": 0}}))
            .await?;
        Ok(r.value().cloned().unwrap_or(Value::Null))
    }

    /// The cache's figures (per level, per operation).
    pub async fn stats(&self) -> Result<Value, ClientError> {
        let r = self.request(json!({"operation": "stats"})).await?;
        Ok(r.value().cloned().unwrap_or(Value::Null))
    }
}

/// The frame's text with `role` first, so the node reads it on its short path.
fn put_role_first(frame: &Value) -> String {
    let mut text = String::from(r#"{"role":"cache-request""#);
    if let Some(m) = frame.as_object() {
        for (k, v) in m.iter().filter(|(k, _)| k.as_str() != "role") {
            text.push(',');
            text.push_str(&Value::String(k.clone()).to_string());
            text.push(':');
            text.push_str(&v.to_string());
        }
    }
    text.push('}');
    text
}

/// Hands a `cache-response` to the request waiting for it.
pub(super) fn dispatch(bytes: &[u8], reply: &RpcReply, pending: &Pending) {
    let seq = reply
        .u
        .as_str()
        .and_then(|u| u.rsplit_once('-'))
        .and_then(|(_, n)| n.parse::<u64>().ok());
    let Some(tx) = seq.and_then(|s| pending.lock().cache.remove(&s)) else {
        return;
    };
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        let _ = tx.send(v);
    }
}
