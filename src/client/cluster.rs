//! A client of the whole cluster: starts from seed URLs, learns every node from
//! `cluster_map`, talks to one live node at a time, and moves to another when that node
//! goes away, retrying only what is safe to retry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mpreg::ClientError> {
//! use serde_json::json;
//! let cluster = mpreg::ClusterClient::connect(&["ws://127.0.0.1:9001", "ws://127.0.0.1:9002"]).await?;
//! let sum = cluster.call("add", json!([2, 3])).await?;
//! // Safe to run twice: retried on another node even if the first one died mid-call.
//! let score = cluster.call("score", json!([7])).retry(mpreg::Retry::Always).await?;
//! # Ok(()) }
//! ```
//!
//! What is retried on another node: a request that never left (the connection was already
//! gone), one the node refused while draining (1020), and one left unanswered when a
//! draining node closed the connection (it answers everything it ran before it closes). A
//! request whose connection broke otherwise may have run, so it fails with
//! [`ClientError::Closed`] unless the caller says it may run twice ([`Retry::Always`]).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Client, ClientError, single_call, single_result};
use crate::env::Env;
use crate::protocol::{ErrorCode, RpcCommand, RpcReply, RpcRequest};

/// Which failed requests may be sent again (to another node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retry {
    /// Only requests that certainly did not run (the default).
    #[default]
    IfNotSent,
    /// Also requests whose node failed after receiving them: for idempotent work.
    Always,
}

/// How many nodes a request tries before giving up.
const MAX_ATTEMPTS: usize = 8;
/// How long connecting to one node (and asking it for `cluster_map`) may take: a node
/// behind a partition never answers, and the next one should be tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct ClusterClient {
    env: Env,
    /// The token and TLS trust every connection presents.
    options: super::ConnectOptions,
    state: tokio::sync::Mutex<State>,
}

struct State {
    /// Seeds first, then nodes learned from `cluster_map`; no duplicates.
    known: Vec<String>,
    /// Where the next connection attempt starts (round robin over `known`).
    next: usize,
    current: Option<Client>,
}

impl ClusterClient {
    /// Connects to the first reachable seed and learns the rest of the cluster.
    pub async fn connect<S: AsRef<str>>(seeds: &[S]) -> Result<ClusterClient, ClientError> {
        ClusterClient::connect_with(&Env::production(), seeds).await
    }

    /// [`ClusterClient::connect`] through `env` (the simulator passes its own).
    pub async fn connect_with<S: AsRef<str>>(
        env: &Env,
        seeds: &[S],
    ) -> Result<ClusterClient, ClientError> {
        ClusterClient::connect_with_options(env, seeds, &super::ConnectOptions::default()).await
    }

    /// [`ClusterClient::connect_with`], every connection presenting `options` (a token,
    /// TLS trust such as a CA file).
    pub async fn connect_with_options<S: AsRef<str>>(
        env: &Env,
        seeds: &[S],
        options: &super::ConnectOptions,
    ) -> Result<ClusterClient, ClientError> {
        let mut known: Vec<String> = Vec::new();
        for s in seeds {
            let url = s.as_ref().trim_end_matches('/').to_owned();
            if !known.contains(&url) {
                known.push(url);
            }
        }
        if known.is_empty() {
            return Err(ClientError::InvalidUrl {
                url: String::new(),
                reason: "no seed URLs given".into(),
            });
        }
        let cluster = ClusterClient {
            env: env.clone(),
            options: options.clone(),
            state: tokio::sync::Mutex::new(State {
                known,
                next: 0,
                current: None,
            }),
        };
        cluster.live().await?;
        Ok(cluster)
    }

    /// The URL of the node requests go to now, if connected.
    pub async fn url(&self) -> Option<String> {
        let state = self.state.lock().await;
        state.current.as_ref().map(|c| c.url().to_owned())
    }

    /// Every node URL this client knows (seeds and what `cluster_map` said).
    pub async fn known_urls(&self) -> Vec<String> {
        self.state.lock().await.known.clone()
    }

    /// Asks the current node for `cluster_map` and adds the nodes it lists.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let client = self.live().await?;
        let map = client.call("cluster_map", Value::Array(vec![])).await?;
        let mut state = self.state.lock().await;
        learn(&mut state.known, &map);
        Ok(())
    }

    /// A call of `fun` with positional `args`; configure it, then `.await` it.
    pub fn call(&self, fun: impl Into<String>, args: Value) -> ClusterCallBuilder<'_> {
        ClusterCallBuilder {
            cluster: self,
            cmd: RpcCommand::new("", fun).args(args),
            timeout: None,
            retry: Retry::default(),
        }
    }

    /// Runs a multi-command request (never retried once sent); returns the sinks' results.
    pub async fn request(&self, cmds: Vec<RpcCommand>) -> Result<Map<String, Value>, ClientError> {
        let reply = self
            .send(RpcRequest::new(String::new(), cmds), None, Retry::IfNotSent)
            .await?;
        reply
            .r
            .ok_or_else(|| ClientError::Protocol("reply has neither `r` nor `error`".into()))
    }

    /// Sends `req` to a live node, moving to another node and resending as `retry` allows.
    pub async fn send(
        &self,
        req: RpcRequest,
        timeout: Option<Duration>,
        retry: Retry,
    ) -> Result<RpcReply, ClientError> {
        let mut last = ClientError::Closed;
        for _ in 0..MAX_ATTEMPTS {
            let client = match self.live().await {
                Ok(c) => c,
                Err(e) => return Err(e),
            };
            match client.send_tracked(req.clone(), timeout).await {
                Ok(reply) => return Ok(reply),
                Err(f) => {
                    let again = match &f.error {
                        ClientError::Closed => !f.sent || retry == Retry::Always,
                        ClientError::Rpc { code, .. } => *code == ErrorCode::ShuttingDown.as_i64(),
                        _ => false,
                    };
                    if !again {
                        return Err(f.error);
                    }
                    self.forget(&client).await;
                    last = f.error;
                }
            }
        }
        Err(last)
    }

    /// A client of the same cluster (the nodes known so far, the same options) with
    /// connections of its own.
    pub(super) async fn detached(&self) -> ClusterClient {
        let state = self.state.lock().await;
        ClusterClient {
            env: self.env.clone(),
            options: self.options.clone(),
            state: tokio::sync::Mutex::new(State {
                known: state.known.clone(),
                next: state.next,
                current: None,
            }),
        }
    }

    /// Drops the current connection: the next request connects anew.
    pub(super) async fn drop_current(&self) {
        self.state.lock().await.current = None;
    }

    /// The current connection, or a new one to the next reachable node.
    pub(super) async fn live(&self) -> Result<Client, ClientError> {
        let mut state = self.state.lock().await;
        if let Some(c) = state.current.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        state.current = None;
        let mut last = None;
        for _ in 0..state.known.len() {
            let url = state.known[state.next % state.known.len()].clone();
            state.next = (state.next + 1) % state.known.len();
            let connect = tokio::time::timeout(
                CONNECT_TIMEOUT,
                Client::connect_with_options(&self.env, &url, &self.options),
            );
            match connect.await {
                Ok(Ok(client)) => {
                    // Learn the cluster from it; a node that cannot answer is still usable.
                    let map = client
                        .call("cluster_map", Value::Array(vec![]))
                        .timeout(CONNECT_TIMEOUT)
                        .await;
                    if let Ok(map) = map {
                        learn(&mut state.known, &map);
                    }
                    state.current = Some(client.clone());
                    return Ok(client);
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(ClientError::Connect {
                        url: url.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no answer within {CONNECT_TIMEOUT:?}"),
                        ),
                    });
                }
            }
        }
        Err(last.unwrap_or(ClientError::Closed))
    }

    /// Drops `client` if it is still the current connection (it failed).
    async fn forget(&self, client: &Client) {
        let mut state = self.state.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|c| std::sync::Arc::ptr_eq(&c.inner, &client.inner))
        {
            state.current = None;
        }
    }
}

/// Adds the nodes of a `cluster_map` reply to `known` (those marked down are listed too:
/// they may come back, and connecting skips the unreachable).
fn learn(known: &mut Vec<String>, map: &Value) {
    // A client that reached the cluster over TLS never moves to plain WebSocket (where its
    // token would cross in clear text), whatever a node advertises.
    let is_tls = |url: &str| crate::ids::NodeUrl::parse(url).is_ok_and(|u| u.is_tls());
    let secure = known.iter().any(|k| is_tls(k));
    let urls = map["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["advertised_urls"].as_array())
        .flatten()
        .filter_map(Value::as_str);
    for url in urls {
        let url = url.trim_end_matches('/');
        if secure && !is_tls(url) {
            continue;
        }
        if !known.iter().any(|k| k == url) {
            known.push(url.to_owned());
        }
    }
}

/// A call through the cluster client being configured; `.await` sends it.
pub struct ClusterCallBuilder<'c> {
    cluster: &'c ClusterClient,
    cmd: RpcCommand,
    timeout: Option<Duration>,
    retry: Retry,
}

impl ClusterCallBuilder<'_> {
    super::call_setters!();

    /// Which failures are retried on another node (default: only what did not run).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }
}

impl<'c> IntoFuture for ClusterCallBuilder<'c> {
    type Output = Result<Value, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'c>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let (req, name) = single_call(self.cmd);
            single_result(
                self.cluster.send(req, self.timeout, self.retry).await?,
                &name,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_client_that_came_over_tls_learns_only_tls_urls() {
        let map = json!({"nodes": [
            {"advertised_urls": ["wss://b:2/"]},
            {"advertised_urls": ["ws://c:3"]},
            {"advertised_urls": ["wss://a:1"]},
        ]});
        let mut known = vec!["wss://a:1".to_owned()];
        super::learn(&mut known, &map);
        assert_eq!(known, ["wss://a:1", "wss://b:2"]);
        let mut plain = vec!["ws://a:1".to_owned()];
        super::learn(&mut plain, &map);
        assert_eq!(plain, ["ws://a:1", "wss://b:2", "ws://c:3", "wss://a:1"]);
    }
}
