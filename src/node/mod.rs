//! The node: binds through the [`Env`], serves WebSocket clients, drains on shutdown.

mod admission;
mod budget;
mod builtins;
mod catalog_watch;
mod conn;
mod control;
mod dashboard;
pub mod data_plane;
mod discovery;
mod fanout;
mod functions;
mod monitoring;
mod next;
mod peers;
mod worker;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Settings;
use crate::env::{Env, Listener};
use crate::registry::{Function, RegisterError, Registry};
use crate::rpc::ExecLimits;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid settings: {0}")]
    Settings(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error("cannot start the control plane: {0}")]
    Control(String),
    /// The cluster catalog refused a registration (the same on every replica).
    #[error("the cluster catalog refused it: {0}")]
    Refused(crate::control::CatalogError),
    #[error(transparent)]
    Secret(#[from] crate::fabric::SecretError),
    #[error("token settings: {0}")]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Live counters, read by `cluster_map` and the admin surfaces.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Client connections open (upgraded, or between the upgrade check and the upgrade).
    pub(crate) active_clients: AtomicUsize,
    /// Client upgrades refused because `max_connections` were open.
    pub(crate) clients_refused_full: std::sync::atomic::AtomicU64,
    /// Connections refused or failed at the TLS or WebSocket handshake (any path, any
    /// reason: a bad token, a full node, a timeout).
    pub(crate) handshakes_failed: std::sync::atomic::AtomicU64,
    /// Per connection, its requests still running (those that did not finish on their
    /// first poll). One counter per connection keeps the request path free of a shared,
    /// contended cache line; readers sum them.
    connections: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<ConnTally>>>,
    /// What connections that have closed added to the tallies.
    closed: ConnTally,
    /// Worker connections open (those that registered functions).
    pub(crate) workers: AtomicUsize,
    /// Steps this node forwarded to peers, from sending to the answer (or the failure).
    pub(crate) forwarded: crate::registry::stats::Latency,
    pub(crate) forwards_failed: std::sync::atomic::AtomicU64,
    next_connection: std::sync::atomic::AtomicU64,
    /// Steps other nodes forwarded here, running now.
    pub(crate) steps_running: AtomicUsize,
    /// Moving average (1/8 weight per sample) of how long forwarded steps took here, µs.
    step_latency_us: std::sync::atomic::AtomicU64,
    /// When the last forwarded step finished: an average older than [`LATENCY_MEMORY`] is
    /// not reported (routing would otherwise shun a node for one slow step long ago).
    last_step: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Calls routed to a worker connection that ended unanswered (timed out, cancelled).
    pub(crate) worker_calls_abandoned: std::sync::atomic::AtomicU64,
    /// Peer connections (Raft and forwarded steps) accepted since start: with one link per
    /// peer pair it stays near the number of peers; steady growth means connection churn.
    pub(crate) peer_links_accepted: std::sync::atomic::AtomicU64,
    /// Error replies by code. Counted only when a reply is an error, so the request path
    /// of a successful call writes no shared counter.
    pub(crate) errors: ErrorCounts,
}

/// One client connection's counters. Each connection writes only its own (no shared,
/// contended cache line on the request path); readers sum them, and a closing
/// connection's are folded into [`Stats`]'s `closed`.
#[derive(Debug, Default)]
pub(crate) struct ConnTally {
    /// Its requests still running (those that did not finish on their first poll).
    pub(crate) inflight: AtomicUsize,
    /// Bytes of the frames it received and of the replies queued to it.
    pub(crate) bytes_in: std::sync::atomic::AtomicU64,
    pub(crate) bytes_out: std::sync::atomic::AtomicU64,
    /// Steps per request it sent.
    pub(crate) dag_steps: crate::registry::stats::Sizes,
}

impl ConnTally {
    fn absorb(&self, other: &ConnTally) {
        let add = |a: &std::sync::atomic::AtomicU64, b: &std::sync::atomic::AtomicU64| {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        add(&self.bytes_in, &other.bytes_in);
        add(&self.bytes_out, &other.bytes_out);
        self.dag_steps.absorb(&other.dag_steps);
    }
}

/// How many error replies of each code the node sent, and the last few of them (for the
/// dashboard). Written only when a reply is an error.
#[derive(Default)]
pub(crate) struct ErrorCounts {
    counts: [std::sync::atomic::AtomicU64; crate::protocol::ErrorCode::ALL.len()],
    recent: std::sync::Mutex<std::collections::VecDeque<RecentError>>,
    /// Stamps the recent ones (set when the node starts).
    clock: std::sync::OnceLock<Arc<dyn crate::env::Clock>>,
}

impl std::fmt::Debug for ErrorCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorCounts").finish_non_exhaustive()
    }
}

/// One error reply, as the dashboard lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RecentError {
    pub(crate) at_ms: u64,
    pub(crate) code: i64,
    /// The request's `u`, cut to [`RECENT_TEXT_BYTES`].
    pub(crate) u: String,
    /// Its details, cut to [`RECENT_TEXT_BYTES`].
    pub(crate) message: String,
}

/// How many error replies the dashboard is shown, and how much of each.
const RECENT_ERRORS: usize = 32;
const RECENT_TEXT_BYTES: usize = 200;

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl ErrorCounts {
    pub(crate) fn stamp_with(&self, clock: Arc<dyn crate::env::Clock>) {
        let _ = self.clock.set(clock);
    }

    pub(crate) fn record(&self, code: i64, u: &Value, details: &Value) {
        if let Some(i) = crate::protocol::ErrorCode::ALL
            .iter()
            .position(|c| c.as_i64() == code)
        {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        let text = |v: &Value| match v {
            Value::String(s) => cut(s, RECENT_TEXT_BYTES),
            other => cut(&other.to_string(), RECENT_TEXT_BYTES),
        };
        let error = RecentError {
            at_ms: self.clock.get().map_or(0, |c| c.wall_ms()),
            code,
            u: text(u),
            message: text(details),
        };
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(error);
    }

    /// `(code, replies)` for every code.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        crate::protocol::ErrorCode::ALL
            .iter()
            .zip(&self.counts)
            .map(|(c, n)| (c.as_i64(), n.load(Ordering::Relaxed)))
    }

    /// The last error replies, newest first.
    pub(crate) fn recent(&self) -> Vec<RecentError> {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.iter().rev().cloned().collect()
    }
}

/// How long a node's step latency stays its "recent" latency without new steps.
const LATENCY_MEMORY: Duration = Duration::from_secs(10);

/// Whether a step that finished at `last` is recent at `now`.
fn recent(last: Option<tokio::time::Instant>, now: tokio::time::Instant) -> bool {
    last.is_some_and(|t| now.saturating_duration_since(t) <= LATENCY_MEMORY)
}

impl Shared {
    pub(crate) fn registry(&self) -> Arc<Registry> {
        self.functions.current()
    }
}

/// Counts a forwarded step as finished however its future ends (cancelled included).
struct StepDone<'a>(&'a Stats);

impl Drop for StepDone<'_> {
    fn drop(&mut self) {
        self.0.steps_running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    /// Registers a connection's counters; they count until `forget_connection`.
    pub(crate) fn track_connection(&self) -> (u64, Arc<ConnTally>) {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let tally = Arc::new(ConnTally::default());
        self.lock_connections().insert(id, tally.clone());
        (id, tally)
    }

    pub(crate) fn forget_connection(&self, id: u64) {
        let mut open = self.lock_connections();
        if let Some(tally) = open.remove(&id) {
            // Under the lock, so a reader never sees a connection in both or neither.
            self.closed.absorb(&tally);
        }
    }

    /// Every client connection's counters summed, closed ones included.
    pub(crate) fn client_totals(&self) -> ConnTally {
        let total = ConnTally::default();
        let open = self.lock_connections();
        total.absorb(&self.closed);
        for tally in open.values() {
            total.absorb(tally);
        }
        total
    }

    /// Requests running on the node now.
    pub(crate) fn inflight(&self) -> usize {
        let requests: usize = self
            .lock_connections()
            .values()
            .map(|c| c.inflight.load(Ordering::Relaxed))
            .sum();
        requests + self.steps_running.load(Ordering::Relaxed)
    }

    /// What heartbeats report of this node.
    pub(crate) fn load(&self, now: tokio::time::Instant) -> crate::routing::liveness::Load {
        crate::routing::liveness::Load {
            inflight: self.inflight() as u64,
            step_latency_us: if self.latency_is_recent(now) {
                self.step_latency_us.load(Ordering::Relaxed)
            } else {
                0
            },
        }
    }

    fn latency_is_recent(&self, now: tokio::time::Instant) -> bool {
        recent(*self.lock_last_step(), now)
    }

    fn lock_last_step(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        // One instant, written whole: a poisoned lock still holds a valid one.
        self.last_step
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Folds the duration of a forwarded step that finished at `now` into the moving
    /// average, which starts afresh after [`LATENCY_MEMORY`] without steps (racy updates
    /// may drop a sample; it is an estimate).
    fn step_took(&self, took: Duration, now: tokio::time::Instant) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let previous = self.lock_last_step().replace(now);
        let old = if recent(previous, now) {
            self.step_latency_us.load(Ordering::Relaxed)
        } else {
            0
        };
        let new = if old == 0 {
            sample.max(1)
        } else {
            (old - old / 8 + sample / 8).max(1)
        };
        self.step_latency_us.store(new, Ordering::Relaxed);
    }

    fn lock_connections(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Arc<ConnTally>>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Facts about this node, as built-ins report them.
pub(crate) struct NodeInfo {
    node_id: String,
    name: String,
    cluster_id: String,
    url: String,
    resources: BTreeSet<String>,
    /// Names of every registered function, built-ins included (set once they are).
    functions: std::sync::OnceLock<Vec<String>>,
    env: Env,
    stats: Arc<Stats>,
    control: Arc<control::Control>,
    /// What heartbeats say of the other members.
    detector: crate::fabric::heartbeat::SharedDetector,
    /// The bytes client connections hold.
    clients: Arc<budget::ClientBudget>,
    /// The functions served here (set once built, after the built-ins that read it).
    registry: std::sync::OnceLock<Arc<functions::Functions>>,
    /// Where `rpc_describe` sends its questions to other nodes (set once built).
    peers: std::sync::OnceLock<Arc<peers::Peers>>,
    /// The role discovery calls need, which `rpc_describe`'s questions to other nodes
    /// carry (they come from a caller who held it here).
    introspection_role: Option<String>,
    /// This node's topic subscriptions.
    pubsub: Arc<crate::pubsub::exchange::Exchange>,
    /// What the other members' clients subscribe to.
    remote_interest: Arc<crate::pubsub::interest::RemoteInterest>,
}

/// What every connection of a running node shares.
pub(crate) struct Shared {
    env: Env,
    /// What the built-ins and catalog watches read of the node.
    info: Arc<NodeInfo>,
    /// This node's topic subscriptions.
    pubsub: Arc<crate::pubsub::exchange::Exchange>,
    /// Where publishes go beyond this node.
    fanout: Arc<fanout::Fanout>,
    settings: Settings,
    /// The functions calls run against. A request takes the current set when it starts;
    /// registering at run time swaps in a new set.
    functions: Arc<functions::Functions>,
    limits: ExecLimits,
    stats: Arc<Stats>,
    /// This node's replica of the cluster catalog.
    control: Arc<control::Control>,
    /// Where steps this node cannot run go.
    peers: Arc<peers::Peers>,
    /// What serves the data plane: kept alive here, by the serving task, since the fabric
    /// holds it weakly (the node serves its peers until it stops, whoever holds the
    /// `RunningNode`).
    #[allow(dead_code)]
    data_plane: Arc<data_plane::DataPlane>,
    /// The bytes client connections hold (`budget.rs`).
    clients: Arc<budget::ClientBudget>,
    /// Checks clients' tokens (`None`: the node does not require them).
    tokens: Option<Arc<crate::auth::TokenVerifier>>,
    /// The port's TLS (`None`: plain `ws://`).
    tls: Option<crate::tls::NodeTls>,
    /// Refused upgrades (bad tokens, failed TLS handshakes), logged at most once per
    /// interval.
    refusals: crate::fabric::handshake::RefusalLog,
}

/// The node's token verifier, from its settings (`None` unless `auth_required`).
fn token_verifier(
    settings: &Settings,
) -> Result<Option<Arc<crate::auth::TokenVerifier>>, crate::auth::AuthError> {
    use crate::auth::token::KeySource;
    if !settings.auth_required {
        return Ok(None);
    }
    let source = match (&settings.jwt_secret_file, &settings.jwt_public_key_file) {
        (Some(secret), _) => KeySource::SecretFile(secret),
        (None, Some(public)) => KeySource::PublicKeyFile(public),
        // `Settings::validate` refuses this.
        (None, None) => return Err(crate::auth::AuthError::Missing),
    };
    let verifier = crate::auth::TokenVerifier::new(
        source,
        settings.jwt_issuer.as_deref(),
        settings.jwt_audience.as_deref(),
        settings.allowed_clients.clone(),
    )?;
    Ok(Some(Arc::new(verifier)))
}

/// Entry point: `Node::builder(settings)`.
pub struct Node;

impl Node {
    pub fn builder(settings: Settings) -> NodeBuilder {
        NodeBuilder {
            settings,
            env: None,
            disk: None,
            secret: None,
            next_protocol: false,
            registry: Registry::default(),
        }
    }
}

/// Collects the environment and user functions, then [`NodeBuilder::start`]s the node.
pub struct NodeBuilder {
    settings: Settings,
    env: Option<Env>,
    disk: Option<crate::control::raft::LogStore>,
    /// Set by [`NodeBuilder::cluster_secret`]; else read from `cluster_secret_file`.
    secret: Option<crate::fabric::ClusterSecret>,
    /// Behave as the next build would on the peer links (tests of rolling upgrades).
    next_protocol: bool,
    registry: Registry,
}

impl NodeBuilder {
    /// The environment to run in; production (`Env::production()`) by default.
    pub fn env(mut self, env: Env) -> NodeBuilder {
        self.env = Some(env);
        self
    }

    /// Registers a user function. The node's own `resources` are added to the function's.
    /// Keeps the Raft log on `disk` instead of what the settings say. The simulator uses
    /// this to crash a node and restart it on the same (in-memory) disk.
    pub fn memory_disk(mut self, disk: crate::control::raft::LogStore) -> NodeBuilder {
        self.disk = Some(disk);
        self
    }

    /// The cluster secret peers prove to each other, instead of reading the settings'
    /// `cluster_secret_file` (embedded nodes, the simulator).
    pub fn cluster_secret(mut self, secret: crate::fabric::ClusterSecret) -> NodeBuilder {
        self.secret = Some(secret);
        self
    }

    /// Speaks to peers as the next build would (a field and a message kind this build does
    /// not know; `control::raft::next`), so that one test binary can run a cluster of two
    /// builds.
    #[doc(hidden)]
    pub fn speak_next_protocol(mut self) -> NodeBuilder {
        self.next_protocol = true;
        self
    }

    pub fn register(&mut self, f: Function) -> Result<&mut NodeBuilder, RegisterError> {
        let f = f.add_resources(self.settings.resources.iter().cloned());
        self.registry.register(f)?;
        Ok(self)
    }

    /// [`NodeBuilder::register`] for chaining.
    pub fn function(mut self, f: Function) -> Result<NodeBuilder, RegisterError> {
        self.register(f)?;
        Ok(self)
    }

    /// Binds the listener and starts serving; returns once the node accepts connections.
    pub async fn start(self) -> Result<RunningNode, NodeError> {
        self.settings.validate()?;
        let secret = match (self.secret, &self.settings.cluster_secret_file) {
            (Some(secret), _) => secret,
            (None, Some(path)) => crate::fabric::ClusterSecret::from_file(path)?,
            (None, None) => crate::fabric::ClusterSecret::none(),
        };
        self.settings.check_peer_exposure(secret.is_set())?;
        if !secret.is_set() {
            tracing::warn!(
                "no cluster secret (--cluster-secret-file): peers are not authenticated, so \
                 any process that reaches this node's port can join its cluster"
            );
        }
        let tokens = token_verifier(&self.settings)?;
        if tokens.is_some() && !secret.is_set() {
            // Without a secret any process can open the peer endpoint, and a forwarded step
            // is the peer's word for who called: tokens would be bypassed.
            return Err(NodeError::Settings(crate::config::ConfigError::Invalid {
                key: "auth_required".to_owned(),
                reason: "needs a cluster secret (--cluster-secret-file): without one any \
                         process can speak to the peer endpoint and forward steps for any \
                         caller it claims"
                    .to_owned(),
            }));
        }
        let env = self.env.unwrap_or_else(Env::production);
        let tls = crate::tls::NodeTls::from_files(
            &crate::tls::NodeTlsFiles::from_settings(&self.settings),
            env.clock.clone(),
        )?;
        if tokens.is_some() && tls.is_none() && !self.settings.loopback_only() {
            tracing::warn!(
                "tokens are required but the port has no TLS (--tls-cert, --tls-key): tokens \
                 cross the network in clear text, and whoever sees one can replay it"
            );
        }
        let addr = self.settings.bind_addr();
        let bind_err = |source| NodeError::Bind {
            addr: addr.clone(),
            source,
        };
        let listener = env.net.listen(&addr).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        // The admin port binds now too, so that a taken port fails the start, not later.
        let monitoring = if self.settings.monitoring_enabled {
            let addr = self.settings.monitoring_addr();
            let bind_err = |source| NodeError::Bind {
                addr: addr.clone(),
                source,
            };
            let l = env.net.listen(&addr).await.map_err(bind_err)?;
            let bound = l.local_addr().map_err(bind_err)?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            Some((l, format!("{scheme}://{bound}")))
        } else {
            None
        };
        let url = match self.settings.advertised_urls.first() {
            Some(u) => u.clone(),
            None => {
                if local_addr.ip().is_unspecified() {
                    tracing::warn!(
                        bound = %local_addr,
                        "bound to every interface without --advertised-url: other nodes and \
                         cluster clients are told a loopback address, which only works on \
                         this machine"
                    );
                }
                advertised_url(local_addr, tls.is_some())
            }
        };
        // Raft ids are nonzero; a node with a data directory keeps the first one it drew.
        let fresh_id = (env.rng.next_u64() >> 1) | 1;
        let storage = match self.disk {
            Some(disk) => control::Storage::Memory(disk),
            None => control::Storage::Configured(&self.settings.persistence),
        };
        let control = Arc::new(
            control::Control::start(
                &env,
                storage,
                &self.settings,
                fresh_id,
                crate::transport::authority(&url),
                secret,
                tls.clone(),
                self.next_protocol,
            )
            .await
            .map_err(NodeError::Control)?,
        );
        let raft_id = control.id;
        let node_id = builtins::node_id(&self.settings.name, raft_id);
        let stats = Arc::new(Stats::default());
        stats.errors.stamp_with(env.clock.clone());
        let detector: crate::fabric::heartbeat::SharedDetector = Arc::default();
        let mut registry = self.registry;
        let mut resources = self.settings.resources.clone();
        resources.extend(registry.resources());
        let clients = Arc::new(budget::ClientBudget::new(
            self.settings.max_client_bytes,
            self.settings.max_connection_bytes,
        ));
        // What the other members' clients subscribe to, and where publishes go from here.
        let remote_interest = Arc::new(crate::pubsub::interest::RemoteInterest::default());
        let info = Arc::new(NodeInfo {
            remote_interest: remote_interest.clone(),
            clients: clients.clone(),
            node_id: node_id.clone(),
            name: self.settings.name.clone(),
            cluster_id: self.settings.cluster_id.clone(),
            url: url.clone(),
            resources,
            functions: std::sync::OnceLock::new(),
            env: env.clone(),
            stats: stats.clone(),
            control: control.clone(),
            detector: detector.clone(),
            registry: std::sync::OnceLock::new(),
            peers: std::sync::OnceLock::new(),
            pubsub: Arc::new(crate::pubsub::exchange::Exchange::new(
                crate::pubsub::backlog::Retention::from_settings(&self.settings),
                env.clock.wall_ms().saturating_mul(1024),
            )),
            introspection_role: self
                .settings
                .introspection_role
                .clone()
                .filter(|_| self.settings.auth_required),
        });
        // What the cluster looks like is for holders of `introspection_role`, when set.
        let introspect = |f: Function| match &self.settings.introspection_role {
            Some(role) if self.settings.auth_required => f.requires_role(role.clone()),
            _ => f,
        };
        // What `rpc_describe` says of them: the one optional request object most take.
        use crate::registry::signature::Param;
        let request = |f: Function, doc: &str| {
            f.declare_params(vec![Param::optional("request", "object")])
                .doc(doc)
        };
        let no_params = |f: Function, doc: &str| f.declare_params(vec![]).doc(doc);
        for f in [
            builtins::echo()
                .declare_params(vec![Param::new("arg", "any")])
                .doc("Returns its one argument"),
            builtins::echos().doc("Returns its positional arguments as a list"),
            introspect(no_params(
                builtins::list_peers(info.clone()),
                "The other members of the cluster",
            )),
            introspect(request(
                builtins::catalog_query(info.clone()),
                "The cluster's catalog entries that match",
            )),
            introspect(no_params(
                builtins::cluster_map(info.clone()),
                "The cluster's nodes, their status and load",
            )),
            introspect(request(
                builtins::rpc_list(info.clone()),
                "The cluster's functions",
            )),
            introspect(request(
                discovery::cluster_map_v2(info.clone()),
                "The cluster's nodes as snapshots, paged",
            )),
            introspect(request(
                discovery::rpc_describe(info.clone()),
                "The cluster's functions with their parameters",
            )),
            introspect(request(
                discovery::rpc_describe_local(info.clone()),
                "This node's functions with their parameters",
            )),
            introspect(request(
                discovery::rpc_report(info.clone()),
                "Counts of the cluster's functions by namespace and cluster",
            )),
            introspect(request(
                discovery::catalog_watch(info.clone()),
                "The topic the catalog's changes are published on",
            )),
        ] {
            // Built-ins offer the node's resources like every function. Their names are
            // reserved: no user function can take them.
            let _ =
                registry.register_builtin(f.add_resources(self.settings.resources.iter().cloned()));
        }
        let mut names: Vec<String> = registry.specs().map(|s| s.name.clone()).collect();
        names.dedup(); // specs come sorted by name
        let _ = info.functions.set(names);
        let registration = control::Registration {
            member: control::member(
                raft_id,
                &self.settings.name,
                &self.settings.cluster_id,
                &url,
                &self.settings.resources,
            ),
            functions: registry.specs().map(functions::entry).collect(),
            peers: self
                .settings
                .peers
                .iter()
                .map(|p| crate::transport::authority(p).to_owned())
                .collect(),
        };
        let (registered_tx, registered) = watch::channel(false);
        let functions = Arc::new(functions::Functions::new(
            registry,
            self.settings.resources.clone(),
            control.clone(),
            registered.clone(),
        ));
        let _ = info.registry.set(functions.clone());
        let limits = crate::rpc::ExecLimits::from_settings(&self.settings);
        let auth_required = self.settings.auth_required;
        let upgrade = self
            .next_protocol
            .then(|| Arc::new(next::UpgradeStats::default()));
        let (fanout, publish_jobs) = fanout::Fanout::new(
            control.clone(),
            remote_interest.clone(),
            info.pubsub.clone(),
            env.clock.clone(),
        );
        let fanout = Arc::new(fanout);
        let data_plane = {
            let (functions, step_stats, clock) =
                (functions.clone(), stats.clone(), env.clock.clone());
            let run: Box<dyn Fn(crate::rpc::Step) -> crate::registry::BoxFuture<_> + Send + Sync> =
                Box::new(move |step| {
                    let registry = functions.current();
                    let (stats, clock) = (step_stats.clone(), clock.clone());
                    Box::pin(async move {
                        stats.steps_running.fetch_add(1, Ordering::Relaxed);
                        let _done = StepDone(&stats);
                        let started = clock.now();
                        let outcome = crate::rpc::run_step(
                            &registry,
                            limits,
                            auth_required,
                            clock.as_ref(),
                            step,
                        )
                        .await;
                        let now = clock.now();
                        stats.step_took(now.saturating_duration_since(started), now);
                        outcome
                    })
                });
            let (stats, clock) = (stats.clone(), env.clock.clone());
            Arc::new(data_plane::DataPlane {
                load: Box::new(move || stats.load(clock.now())),
                run,
                next: upgrade.clone(),
                pubsub: info.pubsub.clone(),
                interest: remote_interest.clone(),
                clock: env.clock.clone(),
            })
        };
        // The data plane is served from here on: its handler is held weakly by the fabric
        // and kept alive by the serving task (`Shared`).
        let handler: Arc<dyn crate::fabric::PlaneHandler> = data_plane.clone();
        control
            .network
            .fabric()
            .serve(crate::fabric::Plane::Data, Arc::downgrade(&handler));
        let peers = Arc::new(peers::Peers {
            control: control.clone(),
            detector: detector.clone(),
            env: env.clone(),
            sent: Arc::default(),
            stats: stats.clone(),
        });
        let _ = info.peers.set(peers.clone());
        let shared = Arc::new(Shared {
            info: info.clone(),
            pubsub: info.pubsub.clone(),
            fanout: fanout.clone(),
            peers,
            control: control.clone(),
            limits,
            env,
            clients: clients.clone(),
            settings: self.settings,
            functions: functions.clone(),
            stats: stats.clone(),
            data_plane,
            tokens,
            tls,
            refusals: crate::fabric::handshake::RefusalLog::new("client connection"),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        // The admin server outlives the shutdown signal: `/readyz` says 503 while the node
        // drains, and it stops once the node has.
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let monitoring_url = monitoring.map(|(listener, url)| {
            let admin = monitoring::Admin::new(
                info.clone(),
                functions.clone(),
                shutdown_rx.clone(),
                shared.tokens.clone(),
                shared.settings.introspection_role.clone(),
                shared.settings.monitoring_enable_cors,
                shared.settings.persistence.clone(),
                stopped_rx.clone(),
            );
            tokio::spawn(monitoring::sample_hourly(admin.clone()));
            tokio::spawn(crate::admin::server::serve(
                listener,
                shared.tls.clone(),
                monitoring::router(admin),
                stopped_rx,
            ));
            tracing::info!(%url, "admin HTTP server listening");
            url
        });
        tokio::spawn(crate::control::raft::supervise(
            control.peer_service(),
            control.catalog.clone(),
            shutdown_rx.clone(),
        ));
        tokio::spawn(fanout::publishing(
            fanout.clone(),
            publish_jobs,
            shutdown_rx.clone(),
        ));
        tokio::spawn(fanout::advertise(
            control.clone(),
            info.pubsub.clone(),
            remote_interest,
            shared.env.clock.clone(),
            shutdown_rx.clone(),
        ));
        tokio::spawn(crate::fabric::heartbeat::run(
            heartbeats(&shared, detector, upgrade.clone()),
            shutdown_rx.clone(),
        ));
        let peers = registration.peers.clone();
        tokio::spawn(control::join_and_register(
            control.clone(),
            registration,
            shutdown_rx.clone(),
            registered_tx,
        ));
        let task = tokio::spawn(async move {
            serve(shared, listener, shutdown_rx, peers).await;
            stopped_tx.send_replace(true);
        });
        tracing::info!(%url, %node_id, "node listening");
        Ok(RunningNode {
            control,
            upgrade,
            stats,
            functions,
            registered,
            local_addr,
            url,
            monitoring_url,
            node_id,
            shutdown: Arc::new(shutdown_tx),
            task,
        })
    }
}

/// The heartbeat loop of this node: to every other member of its catalog, carrying its
/// load, as the data plane says it.
fn heartbeats(
    shared: &Shared,
    detector: crate::fabric::heartbeat::SharedDetector,
    next: Option<Arc<next::UpgradeStats>>,
) -> crate::fabric::heartbeat::Heartbeats {
    let control = shared.control.clone();
    let (stats, clock) = (shared.stats.clone(), shared.env.clock.clone());
    crate::fabric::heartbeat::Heartbeats {
        env: shared.env.clone(),
        fabric: shared.control.network.fabric().clone(),
        members: Box::new(move || control.peer_addrs()),
        load: Box::new(move || stats.load(clock.now())),
        beat: Arc::new(data_plane::DataBeat { next }),
        detector,
    }
}

/// The URL clients should use: a node bound to every interface (`0.0.0.0`, `::`) is
/// reachable on loopback at least, so it advertises that.
fn advertised_url(bound: SocketAddr, tls: bool) -> String {
    let ip = match bound.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let scheme = if tls { "wss" } else { "ws" };
    format!("{scheme}://{}", SocketAddr::new(ip, bound.port()))
}

/// A started node. Dropping it does not stop it; call [`RunningNode::shutdown`].
pub struct RunningNode {
    control: Arc<control::Control>,
    /// What this node saw of the other build, when it speaks the next one.
    upgrade: Option<Arc<next::UpgradeStats>>,
    stats: Arc<Stats>,
    functions: Arc<functions::Functions>,
    local_addr: SocketAddr,
    url: String,
    /// The admin HTTP server's URL, when it serves one.
    monitoring_url: Option<String>,
    node_id: String,
    /// Becomes true once this node and its functions are in the cluster catalog.
    registered: watch::Receiver<bool>,
    shutdown: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

/// Asks a node to drain and stop, from anywhere (a signal handler, a test).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

impl RunningNode {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://host:port` of this node.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin HTTP server's URL (`http://host:port`), when `monitoring_enabled`.
    pub fn monitoring_url(&self) -> Option<&str> {
        self.monitoring_url.as_deref()
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This node's id in the control plane (kept across restarts with SQLite).
    pub fn raft_id(&self) -> u64 {
        self.control.id
    }

    /// Peer connections this node has accepted since it started (see [`Stats`]).
    pub fn peer_links_accepted(&self) -> u64 {
        self.stats.peer_links_accepted.load(Ordering::Relaxed)
    }

    /// Peer connections open now, dialled or accepted: one per peer once they settle
    /// (two nodes that dial each other at once keep one of the two).
    /// What this node saw of the other build, when it speaks the next one
    /// ([`NodeBuilder::speak_next_protocol`]): heartbeats with and without the next build's
    /// field, `Gossip` answered, answered `Unsupported` by peers, served by peers.
    #[doc(hidden)]
    pub fn upgrade_stats(&self) -> [u64; 5] {
        self.upgrade.as_ref().map_or([0; 5], |u| u.read())
    }

    pub fn peer_connections(&self) -> usize {
        self.control.network.open_connections()
    }

    /// Live control-plane metrics: role, term, leader, membership, applied index.
    pub fn raft_metrics(&self) -> watch::Receiver<crate::control::raft::RaftMetrics> {
        self.control.raft.metrics()
    }

    /// This node's replica of the catalog.
    pub fn catalog(&self) -> crate::control::raft::CatalogStateMachine {
        self.control.catalog.clone()
    }

    /// Registers `f` on the running node and, once the node is in the cluster catalog,
    /// commits it there (so every node sees it). Calls on this node find it at once.
    pub async fn register(&self, f: Function) -> Result<(), NodeError> {
        let entries = self.functions.add_checked(vec![f])?;
        self.functions.publish(entries).await
    }

    /// Removes `name` (one `version`, or all) from the running node and from the catalog;
    /// returns how many versions were removed here.
    pub async fn unregister(
        &self,
        name: &str,
        version: Option<&semver::Version>,
    ) -> Result<usize, NodeError> {
        let which = vec![(name.to_owned(), version.cloned())];
        let removed = self.functions.remove(&which);
        self.functions.unpublish(which).await?;
        Ok(removed)
    }

    /// Waits until this node and its functions are in the cluster catalog (joining and
    /// registering are Raft commits that finish after `start` returns). Returns `false` if
    /// the node stopped first.
    pub async fn registered(&self) -> bool {
        let mut r = self.registered.clone();
        r.wait_for(|done| *done).await.is_ok()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Stops accepting, lets in-flight requests finish (up to `drain_timeout_ms`), closes
    /// every connection, and returns when the node is gone.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.wait().await;
    }

    /// Waits until the node has stopped (after a shutdown asked for elsewhere).
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "node task ended abnormally");
        }
    }
}

/// Resolves once shutdown has been asked for. (A helper so that the watch guard never lives
/// across an await of the caller, which would make its future `!Send`.)
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        // Every handle is gone (the `RunningNode` was dropped): nobody can ask for a stop
        // any more, so the node runs until its runtime ends.
        std::future::pending::<()>().await;
    }
}

/// Accepts connections until shutdown, then drains them.
/// How long a stopping node tries to leave the cluster before it gives up.
const LEAVE_DEADLINE: Duration = Duration::from_secs(5);

async fn serve(
    shared: Arc<Shared>,
    mut listener: Box<dyn Listener>,
    mut shutdown: watch::Receiver<bool>,
    peers: Vec<String>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stopping(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(conn::serve_connection(shared.clone(), stream, peer, shutdown.clone()));
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(ended) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = ended
                    && e.is_panic()
                {
                    // A node bug: that client's connection is gone, the node carries on.
                    tracing::error!(error = %e, "connection task panicked");
                }
            }
        }
    }
    // Leave the cluster while still accepting connections: the peers that commit the
    // departure reach this node through the listener. New clients are told to go away
    // (their connections see the shutdown signal).
    {
        let leave = shared.control.leave(&peers, LEAVE_DEADLINE);
        tokio::pin!(leave);
        loop {
            tokio::select! {
                biased;
                () = &mut leave => break,
                accepted = listener.accept() => if let Ok((stream, peer)) = accepted {
                    conns.spawn(conn::serve_connection(shared.clone(), stream, peer, shutdown.clone()));
                },
            }
        }
    }
    drop(listener);
    // The node has left the cluster (or given up): its peer links may close now.
    shared.control.network.close();
    let drain = Duration::from_millis(shared.settings.drain_timeout_ms);
    let drained =
        tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "drain timeout reached; cancelling the remaining requests"
        );
        conns.abort_all();
    }
    if let Err(e) = shared.control.raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not shut down cleanly");
    }
    tracing::info!("node stopped");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{LATENCY_MEMORY, Stats};

    #[test]
    fn step_latency_is_reported_while_recent_and_starts_afresh_after() {
        let stats = Stats::default();
        let t0 = Instant::now();
        assert_eq!(stats.load(t0).step_latency_us, 0, "no step yet");
        stats.step_took(Duration::from_millis(5), t0);
        assert_eq!(stats.load(t0).step_latency_us, 5_000);
        stats.step_took(Duration::from_millis(13), t0);
        assert_eq!(
            stats.load(t0).step_latency_us,
            6_000,
            "1/8 of the way to 13 ms"
        );
        let later = t0 + LATENCY_MEMORY + Duration::from_millis(1);
        assert_eq!(stats.load(later).step_latency_us, 0, "too old to count");
        stats.step_took(Duration::from_millis(1), later);
        assert_eq!(stats.load(later).step_latency_us, 1_000, "a fresh average");
    }
}
