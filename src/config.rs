//! Node settings, layered: defaults < TOML file (`[mpreg]` table) < environment (`MPREG_*`)
//! < command-line flags. Each layer is a [`SettingsLayer`] of optional values; applying
//! one overrides only what it sets. Parsing is pure: the environment arrives as a list of
//! pairs, so tests need not touch the process environment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::rpc::ExecLimits;

/// Resolved node settings. Names follow the original's `MPREGSettings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Interface to listen on.
    pub host: String,
    /// Port for clients (and, later, peers); 0 picks a free one.
    pub port: u16,
    /// Human-readable node name.
    pub name: String,
    /// Nodes with the same cluster id form one cluster.
    pub cluster_id: String,
    /// Resources this node offers; every function registered on it inherits them.
    pub resources: BTreeSet<String>,
    /// Other nodes to join (`ws://host:port`).
    pub peers: Vec<String>,
    /// `tracing` filter, e.g. `info` or `mpreg=debug`.
    pub log_level: String,
    /// How log lines are written: readable text, or one JSON object per line.
    pub log_format: LogFormat,
    /// Largest WebSocket message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Most commands one request may carry.
    pub max_commands_per_request: usize,
    /// Deadline of a whole request unless it asks for less.
    pub request_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout_ms: u64,
    /// Requests one connection may have running before the node stops reading from it.
    pub max_inflight_per_connection: usize,
    /// Bytes one client connection may hold (frames of its running requests, replies not
    /// yet written) before the node stops reading from it.
    pub max_connection_bytes: usize,
    /// Bytes all client connections together may hold; shared fairly among them
    /// (`node::budget`).
    pub max_client_bytes: usize,
    /// Client connections (WebSocket, workers included) the node serves at once; beyond,
    /// the upgrade is refused with 503 and counted.
    pub max_connections: usize,
    /// Largest control-plane snapshot a node takes from its leader or its disk, in bytes.
    pub max_snapshot_bytes: usize,
    /// A client whose replies wait this long without any being written (it stopped
    /// reading) is disconnected.
    pub reply_stall_timeout_ms: u64,
    /// Bytes of topic notifications that may wait for one subscribing connection.
    pub pubsub_queue_bytes: usize,
    /// What happens to a subscriber whose queue is full.
    pub pubsub_slow_subscriber: SlowSubscriber,
    /// What the node keeps of the messages published on it, for late subscribers that ask
    /// for a backlog: at most this many messages and bytes per topic, none older than
    /// this, and at most this many bytes in all (0: no backlog).
    pub pubsub_backlog_messages: usize,
    pub pubsub_backlog_bytes: usize,
    pub pubsub_backlog_seconds: u64,
    pub pubsub_backlog_total_bytes: usize,
    /// Where the node keeps its durable state (`[mpreg.persistence_config]`).
    pub persistence: PersistenceConfig,
    /// URLs other nodes and clients reach this node at (`ws://host:port`); empty: derived
    /// from the bound address (0.0.0.0 becomes 127.0.0.1, so set this on multi-host clusters).
    pub advertised_urls: Vec<String>,
    /// Most members that vote in the control plane; the others are learners.
    pub voters: usize,
    /// A voter unreachable this long is replaced by a live learner.
    pub replace_voter_after_ms: u64,
    /// How often the Raft leader heartbeats its followers.
    pub raft_heartbeat_ms: u64,
    /// A follower that hears no leader for this long (randomized up to twice as long)
    /// starts an election. Well above the heartbeat and a loaded disk's fsync, so that a
    /// busy leader is not deposed.
    pub raft_election_timeout_ms: u64,
    /// File holding the cluster secret every member proves in its peer hello
    /// (`fabric::handshake`); the same file on every node. `None`: peers are not
    /// authenticated (development), which a node refuses off loopback unless
    /// `insecure_peers` says so.
    pub cluster_secret_file: Option<std::path::PathBuf>,
    /// Serve peers without a cluster secret on a non-loopback interface.
    pub insecure_peers: bool,
    /// Clients must present a valid token (JWT) on the WebSocket upgrade (`auth`).
    pub auth_required: bool,
    /// HS256 tokens: the file holding the secret they are signed with.
    pub jwt_secret_file: Option<PathBuf>,
    /// RS256 or EdDSA tokens: the PEM public key they are checked with.
    pub jwt_public_key_file: Option<PathBuf>,
    /// Token subjects (`sub`) that may connect; empty: any holder of a valid token.
    pub allowed_clients: BTreeSet<String>,
    /// Tokens must carry this `iss`.
    pub jwt_issuer: Option<String>,
    /// Tokens must carry this `aud`.
    pub jwt_audience: Option<String>,
    /// The role `cluster_map`, `list_peers` and `catalog_query` need when tokens are
    /// required; `None`: any authenticated client may call them.
    pub introspection_role: Option<String>,
    /// The node's TLS certificate chain (PEM); with `tls_key_file`, the port serves only
    /// TLS (`wss://`), to clients and peers alike.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Clients (and peers) must show a certificate signed by this CA (mTLS).
    pub tls_client_ca_file: Option<PathBuf>,
    /// Peers verify each other against this CA: a dialled node's certificate, and a
    /// dialling peer's.
    pub tls_peer_ca_file: Option<PathBuf>,
    /// Serve the admin HTTP server (health, readiness, metrics, status). Off for embedded
    /// nodes; `mpreg-node` turns it on.
    pub monitoring_enabled: bool,
    /// Its interface; `None`: the node's `host`.
    pub monitoring_host: Option<String>,
    /// Its port; 0 picks a free one (printed as `MPREG_MONITORING_URL`).
    pub monitoring_port: u16,
    /// Answer with `Access-Control-Allow-Origin: *` (the original's default), so a page of
    /// another origin may read the JSON endpoints.
    pub monitoring_enable_cors: bool,
}

/// What happens to a subscriber whose notifications do not fit its queue
/// (`pubsub_queue_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowSubscriber {
    /// The oldest waiting notifications are dropped (counted in `/metrics`).
    #[default]
    DropOldest,
    /// The connection is closed (1008, "subscriber too slow").
    Disconnect,
}

impl std::str::FromStr for SlowSubscriber {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "drop_oldest" => Ok(SlowSubscriber::DropOldest),
            "disconnect" => Ok(SlowSubscriber::Disconnect),
            other => Err(format!(
                "`{other}` is not a slow-subscriber policy (drop_oldest or disconnect)"
            )),
        }
    }
}

/// How the node writes its log lines (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines (colored on a terminal).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, spans), for log
    /// collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not a log format (text or json)")),
        }
    }
}

/// `memory`: nothing survives a restart. `sqlite`: the node's id and its Raft log (vote,
/// entries, commit index) live in `data_dir/sqlite_filename`, so a restarted node rejoins
/// as itself and catches up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PersistenceMode {
    Memory,
    Sqlite,
}

impl std::str::FromStr for PersistenceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" => Ok(PersistenceMode::Memory),
            "sqlite" => Ok(PersistenceMode::Sqlite),
            other => Err(format!(
                "`{other}` is not a persistence mode (memory or sqlite)"
            )),
        }
    }
}

/// The original's `persistence_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistenceConfig {
    pub mode: PersistenceMode,
    pub data_dir: std::path::PathBuf,
    pub sqlite_filename: String,
}

impl Default for PersistenceConfig {
    /// Memory for embedded nodes (tests, examples); the `mpreg-node` command line defaults
    /// to `sqlite` in `./mpreg-data`.
    fn default() -> Self {
        PersistenceConfig {
            mode: PersistenceMode::Memory,
            data_dir: "mpreg-data".into(),
            sqlite_filename: "mpreg.sqlite".to_owned(),
        }
    }
}

impl PersistenceConfig {
    /// The database file in `sqlite` mode.
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self.data_dir.join(&self.sqlite_filename)
    }
}

/// `[mpreg.persistence_config]` as a layer: unset keys keep the value below.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PersistenceLayer {
    pub mode: Option<PersistenceMode>,
    pub data_dir: Option<std::path::PathBuf>,
    pub sqlite_filename: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            host: "127.0.0.1".to_owned(),
            port: 9000,
            name: "mpreg-node".to_owned(),
            cluster_id: "default-cluster".to_owned(),
            resources: BTreeSet::new(),
            peers: Vec::new(),
            // openraft narrates elections and membership changes at info; keep those quiet
            // unless asked for.
            log_level: "info,openraft=error".to_owned(),
            log_format: LogFormat::Text,
            max_message_bytes: 20 * 1024 * 1024,
            max_commands_per_request: 1000,
            request_timeout_ms: 30_000,
            drain_timeout_ms: 10_000,
            max_inflight_per_connection: 1024,
            // A few maximal messages per connection, and 1 GiB for all clients: a node on a
            // 2-core, 24 GiB machine keeps most of its memory for the functions it runs.
            max_connection_bytes: 64 * 1024 * 1024,
            max_client_bytes: 1024 * 1024 * 1024,
            // Each connection holds a task, its socket and its WebSocket buffers (some tens
            // of KiB idle) and a file descriptor: 10k stay well inside a node's memory and a
            // service's usual descriptor limit (65536), with room for peers and files, and
            // keep every connection's fair share of max_client_bytes at 100 KiB or more.
            max_connections: 10_000,
            max_snapshot_bytes: crate::control::raft::DEFAULT_MAX_SNAPSHOT_BYTES,
            reply_stall_timeout_ms: 10_000,
            pubsub_queue_bytes: 1024 * 1024,
            pubsub_slow_subscriber: SlowSubscriber::DropOldest,
            // The original's retention (1000 messages per topic, an hour), bounded in bytes.
            pubsub_backlog_messages: 1000,
            pubsub_backlog_bytes: 1024 * 1024,
            pubsub_backlog_seconds: 3600,
            pubsub_backlog_total_bytes: 64 * 1024 * 1024,
            persistence: PersistenceConfig::default(),
            advertised_urls: Vec::new(),
            voters: 3,
            replace_voter_after_ms: 30_000,
            raft_heartbeat_ms: 100,
            raft_election_timeout_ms: 1_000,
            cluster_secret_file: None,
            insecure_peers: false,
            auth_required: false,
            jwt_secret_file: None,
            jwt_public_key_file: None,
            allowed_clients: BTreeSet::new(),
            jwt_issuer: None,
            jwt_audience: None,
            introspection_role: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_peer_ca_file: None,
            monitoring_enabled: false,
            monitoring_host: None,
            monitoring_port: 0,
            monitoring_enable_cors: true,
        }
    }
}

impl Settings {
    /// Applies layers in order, later ones winning.
    pub fn layered<'a>(layers: impl IntoIterator<Item = &'a SettingsLayer>) -> Settings {
        let mut s = Settings::default();
        for layer in layers {
            s.apply(layer);
        }
        s
    }

    pub fn apply(&mut self, l: &SettingsLayer) {
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                dst.clone_from(v);
            }
        }
        set(&mut self.host, &l.host);
        set(&mut self.port, &l.port);
        set(&mut self.name, &l.name);
        set(&mut self.cluster_id, &l.cluster_id);
        set(&mut self.resources, &l.resources);
        set(&mut self.peers, &l.peers);
        set(&mut self.log_level, &l.log_level);
        set(&mut self.log_format, &l.log_format);
        set(&mut self.max_message_bytes, &l.max_message_bytes);
        set(
            &mut self.max_commands_per_request,
            &l.max_commands_per_request,
        );
        set(&mut self.request_timeout_ms, &l.request_timeout_ms);
        set(&mut self.drain_timeout_ms, &l.drain_timeout_ms);
        set(
            &mut self.max_inflight_per_connection,
            &l.max_inflight_per_connection,
        );
        set(&mut self.max_connection_bytes, &l.max_connection_bytes);
        set(&mut self.max_client_bytes, &l.max_client_bytes);
        set(&mut self.max_connections, &l.max_connections);
        set(&mut self.max_snapshot_bytes, &l.max_snapshot_bytes);
        set(&mut self.reply_stall_timeout_ms, &l.reply_stall_timeout_ms);
        set(&mut self.pubsub_queue_bytes, &l.pubsub_queue_bytes);
        set(&mut self.pubsub_slow_subscriber, &l.pubsub_slow_subscriber);
        set(
            &mut self.pubsub_backlog_messages,
            &l.pubsub_backlog_messages,
        );
        set(&mut self.pubsub_backlog_bytes, &l.pubsub_backlog_bytes);
        set(&mut self.pubsub_backlog_seconds, &l.pubsub_backlog_seconds);
        set(
            &mut self.pubsub_backlog_total_bytes,
            &l.pubsub_backlog_total_bytes,
        );
        set(&mut self.advertised_urls, &l.advertised_urls);
        set(&mut self.voters, &l.voters);
        set(&mut self.replace_voter_after_ms, &l.replace_voter_after_ms);
        set(&mut self.raft_heartbeat_ms, &l.raft_heartbeat_ms);
        set(
            &mut self.raft_election_timeout_ms,
            &l.raft_election_timeout_ms,
        );
        if l.cluster_secret_file.is_some() {
            self.cluster_secret_file.clone_from(&l.cluster_secret_file);
        }
        set(&mut self.insecure_peers, &l.insecure_peers);
        fn set_some<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
            if src.is_some() {
                dst.clone_from(src);
            }
        }
        set(&mut self.auth_required, &l.auth_required);
        set_some(&mut self.jwt_secret_file, &l.jwt_secret_file);
        set_some(&mut self.jwt_public_key_file, &l.jwt_public_key_file);
        set(&mut self.allowed_clients, &l.allowed_clients);
        set_some(&mut self.jwt_issuer, &l.jwt_issuer);
        set_some(&mut self.jwt_audience, &l.jwt_audience);
        set_some(&mut self.introspection_role, &l.introspection_role);
        set_some(&mut self.tls_cert_file, &l.tls_cert_file);
        set_some(&mut self.tls_key_file, &l.tls_key_file);
        set_some(&mut self.tls_client_ca_file, &l.tls_client_ca_file);
        set_some(&mut self.tls_peer_ca_file, &l.tls_peer_ca_file);
        set(&mut self.monitoring_enabled, &l.monitoring_enabled);
        set_some(&mut self.monitoring_host, &l.monitoring_host);
        set(&mut self.monitoring_port, &l.monitoring_port);
        set(&mut self.monitoring_enable_cors, &l.monitoring_enable_cors);
        if let Some(p) = &l.persistence_config {
            set(&mut self.persistence.mode, &p.mode);
            set(&mut self.persistence.data_dir, &p.data_dir);
            set(&mut self.persistence.sqlite_filename, &p.sqlite_filename);
        }
    }

    /// `host:port` to bind.
    pub fn bind_addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `host:port` the admin server binds.
    pub fn monitoring_addr(&self) -> String {
        let host = self.monitoring_host.as_deref().unwrap_or(&self.host);
        format!("{host}:{}", self.monitoring_port)
    }

    /// How the node shapes the membership when it leads.
    pub fn membership_policy(&self) -> crate::control::raft::MembershipPolicy {
        crate::control::raft::MembershipPolicy {
            max_voters: self.voters,
            replace_voter_after: Duration::from_millis(self.replace_voter_after_ms),
        }
    }

    /// What the node keeps for backlogs (`pubsub_backlog_*`).
    pub fn backlog_retention(&self) -> crate::pubsub::backlog::Retention {
        crate::pubsub::backlog::Retention {
            topic_messages: self.pubsub_backlog_messages,
            topic_bytes: self.pubsub_backlog_bytes,
            max_age_ms: self.pubsub_backlog_seconds.saturating_mul(1000),
            total_bytes: self.pubsub_backlog_total_bytes,
        }
    }

    pub fn exec_limits(&self) -> ExecLimits {
        ExecLimits {
            max_commands: self.max_commands_per_request,
            // References may copy up to four messages' worth of data per request.
            max_resolved_bytes: self.max_message_bytes.saturating_mul(4),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
        }
    }

    /// Checks values no layer can be trusted to get right.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                reason: why.to_owned(),
            })
        };
        if self.host.is_empty() {
            return bad("host", "must not be empty");
        }
        if self.max_message_bytes < 1024 {
            return bad("max_message_bytes", "must be at least 1024");
        }
        if self.max_commands_per_request == 0 {
            return bad("max_commands_per_request", "must be at least 1");
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms", "must be at least 1");
        }
        let scheme = if self.tls_enabled() {
            "wss://"
        } else {
            "ws://"
        };
        if let Some(bad_url) = self
            .advertised_urls
            .iter()
            .find(|u| !u.starts_with(scheme) || u.len() <= scheme.len())
        {
            return Err(ConfigError::Invalid {
                key: "advertised_urls".to_owned(),
                reason: format!(
                    "`{bad_url}` is not a {scheme}host:port URL{}",
                    if self.tls_enabled() {
                        " (the node serves only TLS)"
                    } else {
                        " (wss:// needs tls_cert_file and tls_key_file)"
                    }
                ),
            });
        }
        self.validate_security()?;
        if self.raft_heartbeat_ms == 0 || self.raft_election_timeout_ms <= self.raft_heartbeat_ms {
            return bad(
                "raft_election_timeout_ms",
                "must be above raft_heartbeat_ms, which must be at least 1",
            );
        }
        if self.voters == 0 {
            return bad("voters", "must be at least 1");
        }
        if self.max_connection_bytes < 1024 || self.max_client_bytes < self.max_connection_bytes {
            return bad(
                "max_connection_bytes",
                "must be at least 1024 and at most max_client_bytes",
            );
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if !(1024..=1 << 30).contains(&self.max_snapshot_bytes) {
            return bad(
                "max_snapshot_bytes",
                "must be at least 1024 and at most 1073741824 (1 GiB)",
            );
        }
        if self.reply_stall_timeout_ms == 0 {
            return bad("reply_stall_timeout_ms", "must be at least 1");
        }
        if self.pubsub_queue_bytes < 1024 || self.pubsub_queue_bytes > self.max_connection_bytes {
            return bad(
                "pubsub_queue_bytes",
                "must be at least 1024 and at most max_connection_bytes",
            );
        }
        if self.pubsub_backlog_bytes > self.pubsub_backlog_total_bytes {
            return bad(
                "pubsub_backlog_bytes",
                "must be at most pubsub_backlog_total_bytes",
            );
        }
        if self.pubsub_backlog_seconds > 7 * 24 * 3600 {
            return bad("pubsub_backlog_seconds", "must be at most 604800 (a week)");
        }
        if self.max_inflight_per_connection == 0 {
            return bad("max_inflight_per_connection", "must be at least 1");
        }
        Ok(())
    }

    /// Whether the node serves TLS (`wss://`) on its port.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some()
    }

    /// The TLS files, for `tls::NodeTls`.
    pub fn tls_files(&self) -> crate::tls::NodeTlsFiles {
        crate::tls::NodeTlsFiles {
            cert: self.tls_cert_file.clone(),
            key: self.tls_key_file.clone(),
            client_ca: self.tls_client_ca_file.clone(),
            peer_ca: self.tls_peer_ca_file.clone(),
        }
    }

    /// Token and TLS settings that only make sense together.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                reason: why.to_owned(),
            })
        };
        match (
            self.auth_required,
            &self.jwt_secret_file,
            &self.jwt_public_key_file,
        ) {
            (true, None, None) => {
                return bad(
                    "auth_required",
                    "needs jwt_secret_file (HS256) or jwt_public_key_file (RS256, EdDSA) to check tokens with",
                );
            }
            (_, Some(_), Some(_)) => {
                return bad(
                    "jwt_secret_file",
                    "and jwt_public_key_file are both set: tokens are checked with one key",
                );
            }
            (false, Some(_), _) | (false, _, Some(_)) => {
                return bad(
                    "auth_required",
                    "is off, but a token key is set: turn it on (--auth-required), or tokens are not checked at all",
                );
            }
            _ => {}
        }
        if !self.auth_required
            && (!self.allowed_clients.is_empty()
                || self.introspection_role.is_some()
                || self.jwt_issuer.is_some()
                || self.jwt_audience.is_some())
        {
            return bad(
                "auth_required",
                "is off, but allowed_clients, jwt_issuer, jwt_audience or introspection_role is set: they apply only to tokens",
            );
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return bad("tls_cert_file", "and tls_key_file go together");
        }
        if !self.tls_enabled()
            && (self.tls_client_ca_file.is_some() || self.tls_peer_ca_file.is_some())
        {
            return bad(
                "tls_client_ca_file",
                "and tls_peer_ca_file need the node's own certificate (tls_cert_file, tls_key_file)",
            );
        }
        Ok(())
    }

    /// Whether the node listens on loopback only (`host` is a loopback address or
    /// `localhost`), where only this machine's processes reach its peer endpoint.
    pub fn loopback_only(&self) -> bool {
        is_loopback_host(&self.host)
    }

    /// Refuses to serve unauthenticated peers beyond loopback unless told to: anyone who
    /// reaches the port could otherwise join, vote and write the catalog.
    pub fn check_peer_exposure(&self, has_secret: bool) -> Result<(), ConfigError> {
        if has_secret || self.insecure_peers || self.loopback_only() {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: "cluster_secret_file".to_owned(),
            reason: format!(
                "is not set, and the node listens on `{}`, beyond loopback: anyone who \
                 reaches the port could join the cluster, vote and write its catalog. Give \
                 every node the same secret (--cluster-secret-file FILE; e.g. `openssl rand \
                 -hex 32 > FILE`), or pass --insecure-peers to run without one",
                self.host
            ),
        })
    }
}

/// Why [`read_small_file`] read nothing.
#[derive(Debug)]
pub enum SmallFileError {
    Io(std::io::Error),
    /// The file holds more than the limit (it is not the file the setting meant).
    TooLarge,
}

/// The bytes of a file a setting names (a key, a certificate, a secret), read only up to
/// `max_bytes`: a setting pointing at a large file costs no more than that.
pub fn read_small_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, SmallFileError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(SmallFileError::Io)?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(SmallFileError::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(SmallFileError::TooLarge);
    }
    Ok(bytes)
}

/// Whether `host` (a name or an IP address, IPv6 optionally in brackets) is loopback: only
/// this machine's processes reach it.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One layer of settings; `None` leaves the value below it in place.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SettingsLayer {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub name: Option<String>,
    pub cluster_id: Option<String>,
    pub resources: Option<BTreeSet<String>>,
    pub peers: Option<Vec<String>>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub max_message_bytes: Option<usize>,
    pub max_commands_per_request: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub drain_timeout_ms: Option<u64>,
    pub max_inflight_per_connection: Option<usize>,
    pub max_connection_bytes: Option<usize>,
    pub max_client_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_snapshot_bytes: Option<usize>,
    pub reply_stall_timeout_ms: Option<u64>,
    pub pubsub_queue_bytes: Option<usize>,
    pub pubsub_slow_subscriber: Option<SlowSubscriber>,
    pub pubsub_backlog_messages: Option<usize>,
    pub pubsub_backlog_bytes: Option<usize>,
    pub pubsub_backlog_seconds: Option<u64>,
    pub pubsub_backlog_total_bytes: Option<usize>,
    pub persistence_config: Option<PersistenceLayer>,
    pub advertised_urls: Option<Vec<String>>,
    pub voters: Option<usize>,
    pub replace_voter_after_ms: Option<u64>,
    pub raft_heartbeat_ms: Option<u64>,
    pub raft_election_timeout_ms: Option<u64>,
    pub cluster_secret_file: Option<std::path::PathBuf>,
    pub insecure_peers: Option<bool>,
    pub auth_required: Option<bool>,
    pub jwt_secret_file: Option<PathBuf>,
    pub jwt_public_key_file: Option<PathBuf>,
    pub allowed_clients: Option<BTreeSet<String>>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub introspection_role: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_client_ca_file: Option<PathBuf>,
    pub tls_peer_ca_file: Option<PathBuf>,
    pub monitoring_enabled: Option<bool>,
    pub monitoring_host: Option<String>,
    /// The original allows `null` here (pick a port): read as 0.
    #[serde(default, deserialize_with = "port_or_null")]
    pub monitoring_port: Option<u16>,
    pub monitoring_enable_cors: Option<bool>,
    /// Settings of the original that this node does not act on (yet); reported, not fatal,
    /// so the original's files load.
    #[serde(flatten)]
    pub ignored: BTreeMap<String, toml::Value>,
}

/// A port, or the original's `null` for "pick one" (0).
fn port_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Ok(Some(Option::<u16>::deserialize(d)?.unwrap_or(0)))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Toml { path: String, message: String },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("setting `{key}` {reason}")]
    Invalid { key: String, reason: String },
}

/// The `[mpreg]` table of a settings file.
#[derive(Deserialize)]
struct TomlFile {
    #[serde(default)]
    mpreg: Option<SettingsLayer>,
}

impl SettingsLayer {
    /// Parses the `[mpreg]` table of a TOML document; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<SettingsLayer, ConfigError> {
        let file: TomlFile = toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        file.mpreg.ok_or_else(|| ConfigError::Toml {
            path: origin.to_owned(),
            message: "no [mpreg] table".to_owned(),
        })
    }

    pub fn from_toml_file(path: &Path) -> Result<SettingsLayer, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: origin.clone(),
            source,
        })?;
        SettingsLayer::from_toml_str(&text, &origin)
    }

    /// Reads `MPREG_HOST`, `MPREG_PORT`, `MPREG_NAME`, `MPREG_CLUSTER_ID`, `MPREG_RESOURCES`
    /// and `MPREG_PEERS` (comma-separated), `MPREG_LOG_LEVEL`, `MPREG_MAX_MESSAGE_BYTES`,
    /// `MPREG_MAX_COMMANDS_PER_REQUEST`, `MPREG_REQUEST_TIMEOUT_MS`, `MPREG_DRAIN_TIMEOUT_MS`,
    /// `MPREG_MAX_INFLIGHT_PER_CONNECTION`, `MPREG_MAX_CONNECTION_BYTES`,
    /// `MPREG_MAX_CLIENT_BYTES`, `MPREG_REPLY_STALL_TIMEOUT_MS`, `MPREG_CLUSTER_SECRET_FILE`,
    /// `MPREG_INSECURE_PEERS` (true/false), `MPREG_AUTH_REQUIRED` (true/false),
    /// `MPREG_JWT_SECRET_FILE`, `MPREG_JWT_PUBLIC_KEY_FILE`, `MPREG_ALLOWED_CLIENTS`
    /// (comma-separated), `MPREG_JWT_ISSUER`, `MPREG_JWT_AUDIENCE`,
    /// `MPREG_INTROSPECTION_ROLE`, `MPREG_TLS_CERT_FILE`, `MPREG_TLS_KEY_FILE`,
    /// `MPREG_TLS_CLIENT_CA_FILE`, `MPREG_TLS_PEER_CA_FILE`, `MPREG_MONITORING_ENABLED`,
    /// `MPREG_MONITORING_HOST`, `MPREG_MONITORING_PORT`, `MPREG_MONITORING_ENABLE_CORS`,
    /// `MPREG_PERSISTENCE_MODE` and
    /// `MPREG_PERSISTENCE_DIR` (alias `MPREG_DATA_DIR`) from `vars`; others are ignored.
    pub fn from_env<I, K, V>(vars: I) -> Result<SettingsLayer, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        fn num<T: std::str::FromStr>(var: &str, v: &str) -> Result<T, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::Env {
                var: var.to_owned(),
                reason: format!("`{v}` is not a valid number"),
            })
        }
        fn boolean(var: &str, v: &str) -> Result<bool, ConfigError> {
            match v.trim() {
                "1" | "true" | "yes" => Ok(true),
                "0" | "false" | "no" | "" => Ok(false),
                other => Err(ConfigError::Env {
                    var: var.to_owned(),
                    reason: format!("`{other}` is not true or false"),
                }),
            }
        }
        fn list(v: &str) -> impl Iterator<Item = String> + '_ {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        }
        let mut l = SettingsLayer::default();
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref());
            match k {
                "MPREG_HOST" => l.host = Some(v.to_owned()),
                "MPREG_PORT" => l.port = Some(num(k, v)?),
                "MPREG_NAME" => l.name = Some(v.to_owned()),
                "MPREG_CLUSTER_ID" => l.cluster_id = Some(v.to_owned()),
                "MPREG_RESOURCES" => l.resources = Some(list(v).collect()),
                "MPREG_PEERS" => l.peers = Some(list(v).collect()),
                "MPREG_LOG_LEVEL" => l.log_level = Some(v.to_owned()),
                "MPREG_LOG_FORMAT" => {
                    l.log_format = Some(v.parse().map_err(|reason| ConfigError::Env {
                        var: k.to_owned(),
                        reason,
                    })?)
                }
                "MPREG_MAX_MESSAGE_BYTES" => l.max_message_bytes = Some(num(k, v)?),
                "MPREG_MAX_COMMANDS_PER_REQUEST" => l.max_commands_per_request = Some(num(k, v)?),
                "MPREG_REQUEST_TIMEOUT_MS" => l.request_timeout_ms = Some(num(k, v)?),
                "MPREG_DRAIN_TIMEOUT_MS" => l.drain_timeout_ms = Some(num(k, v)?),
                "MPREG_VOTERS" => l.voters = Some(num(k, v)?),
                "MPREG_ADVERTISED_URLS" => l.advertised_urls = Some(list(v).collect()),
                "MPREG_REPLACE_VOTER_AFTER_MS" => l.replace_voter_after_ms = Some(num(k, v)?),
                "MPREG_RAFT_HEARTBEAT_MS" => l.raft_heartbeat_ms = Some(num(k, v)?),
                "MPREG_RAFT_ELECTION_TIMEOUT_MS" => l.raft_election_timeout_ms = Some(num(k, v)?),
                "MPREG_CLUSTER_SECRET_FILE" => l.cluster_secret_file = Some(v.into()),
                "MPREG_INSECURE_PEERS" => l.insecure_peers = Some(boolean(k, v)?),
                "MPREG_AUTH_REQUIRED" => l.auth_required = Some(boolean(k, v)?),
                "MPREG_JWT_SECRET_FILE" => l.jwt_secret_file = Some(v.into()),
                "MPREG_JWT_PUBLIC_KEY_FILE" => l.jwt_public_key_file = Some(v.into()),
                "MPREG_ALLOWED_CLIENTS" => l.allowed_clients = Some(list(v).collect()),
                "MPREG_JWT_ISSUER" => l.jwt_issuer = Some(v.to_owned()),
                "MPREG_JWT_AUDIENCE" => l.jwt_audience = Some(v.to_owned()),
                "MPREG_INTROSPECTION_ROLE" => l.introspection_role = Some(v.to_owned()),
                "MPREG_TLS_CERT_FILE" => l.tls_cert_file = Some(v.into()),
                "MPREG_TLS_KEY_FILE" => l.tls_key_file = Some(v.into()),
                "MPREG_TLS_CLIENT_CA_FILE" => l.tls_client_ca_file = Some(v.into()),
                "MPREG_TLS_PEER_CA_FILE" => l.tls_peer_ca_file = Some(v.into()),
                "MPREG_MONITORING_ENABLED" => l.monitoring_enabled = Some(boolean(k, v)?),
                "MPREG_MONITORING_HOST" => l.monitoring_host = Some(v.to_owned()),
                "MPREG_MONITORING_PORT" => l.monitoring_port = Some(num(k, v)?),
                "MPREG_MONITORING_ENABLE_CORS" => l.monitoring_enable_cors = Some(boolean(k, v)?),
                "MPREG_MAX_INFLIGHT_PER_CONNECTION" => {
                    l.max_inflight_per_connection = Some(num(k, v)?)
                }
                "MPREG_MAX_CONNECTION_BYTES" => l.max_connection_bytes = Some(num(k, v)?),
                "MPREG_MAX_CLIENT_BYTES" => l.max_client_bytes = Some(num(k, v)?),
                "MPREG_MAX_CONNECTIONS" => l.max_connections = Some(num(k, v)?),
                "MPREG_MAX_SNAPSHOT_BYTES" => l.max_snapshot_bytes = Some(num(k, v)?),
                "MPREG_REPLY_STALL_TIMEOUT_MS" => l.reply_stall_timeout_ms = Some(num(k, v)?),
                "MPREG_PUBSUB_QUEUE_BYTES" => l.pubsub_queue_bytes = Some(num(k, v)?),
                "MPREG_PUBSUB_BACKLOG_MESSAGES" => l.pubsub_backlog_messages = Some(num(k, v)?),
                "MPREG_PUBSUB_BACKLOG_BYTES" => l.pubsub_backlog_bytes = Some(num(k, v)?),
                "MPREG_PUBSUB_BACKLOG_SECONDS" => l.pubsub_backlog_seconds = Some(num(k, v)?),
                "MPREG_PUBSUB_BACKLOG_TOTAL_BYTES" => {
                    l.pubsub_backlog_total_bytes = Some(num(k, v)?)
                }
                "MPREG_PUBSUB_SLOW_SUBSCRIBER" => {
                    l.pubsub_slow_subscriber =
                        Some(v.parse().map_err(|reason| ConfigError::Env {
                            var: k.to_owned(),
                            reason,
                        })?)
                }
                "MPREG_PERSISTENCE_MODE" => {
                    let mode = v.parse().map_err(|reason| ConfigError::Env {
                        var: k.to_owned(),
                        reason,
                    })?;
                    l.persistence_config
                        .get_or_insert_with(Default::default)
                        .mode = Some(mode);
                }
                "MPREG_PERSISTENCE_DIR" | "MPREG_DATA_DIR" => {
                    l.persistence_config
                        .get_or_insert_with(Default::default)
                        .data_dir = Some(v.into());
                }
                _ => {}
            }
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_TOML: &str = r#"
[mpreg]
host = "127.0.0.1"
port = 0
name = "mpreg-node"
cluster_id = "cluster-a"
resources = ["cache", "queue"]
monitoring_enabled = false
enable_default_cache = true

[mpreg.persistence_config]
mode = "sqlite"
data_dir = "/var/lib/mpreg"
"#;

    #[test]
    fn the_seed_file_loads_and_reports_what_it_ignores() {
        let l = SettingsLayer::from_toml_str(SEED_TOML, "seed").unwrap();
        assert_eq!(l.port, Some(0));
        assert_eq!(l.cluster_id.as_deref(), Some("cluster-a"));
        let ignored: Vec<&str> = l.ignored.keys().map(String::as_str).collect();
        assert_eq!(ignored, ["enable_default_cache"]);
        assert_eq!(l.monitoring_enabled, Some(false));
        let s = Settings::layered([&l]);
        assert_eq!(s.persistence.mode, PersistenceMode::Sqlite);
        assert_eq!(
            s.persistence.sqlite_path(),
            std::path::Path::new("/var/lib/mpreg/mpreg.sqlite")
        );
    }

    #[test]
    fn later_layers_win_and_unset_values_fall_through() {
        let file = SettingsLayer::from_toml_str(SEED_TOML, "seed").unwrap();
        let env = SettingsLayer::from_env([
            ("MPREG_PORT", "9100"),
            ("MPREG_RESOURCES", "gpu, cpu"),
            ("HOME", "/x"),
        ])
        .unwrap();
        let flags = SettingsLayer {
            port: Some(9200),
            ..SettingsLayer::default()
        };
        let s = Settings::layered([&file, &env, &flags]);
        assert_eq!(s.port, 9200);
        assert_eq!(s.cluster_id, "cluster-a");
        assert_eq!(s.resources, ["cpu", "gpu"].map(String::from).into());
        assert_eq!(s.request_timeout_ms, Settings::default().request_timeout_ms);
        let s = Settings::layered([&file, &env]);
        assert_eq!(s.port, 9100);
    }

    #[test]
    fn bad_values_are_reported_with_their_source() {
        let e = SettingsLayer::from_env([("MPREG_PORT", "ninety")]).unwrap_err();
        assert!(e.to_string().contains("MPREG_PORT"));
        let e = SettingsLayer::from_toml_str("[mpreg]\nport = \"x\"\n", "f.toml").unwrap_err();
        assert!(e.to_string().starts_with("f.toml"));
        assert!(SettingsLayer::from_toml_str("[other]\n", "f.toml").is_err());
        let s = Settings {
            max_commands_per_request: 0,
            ..Settings::default()
        };
        assert!(s.validate().is_err());
    }

    #[test]
    fn token_and_tls_settings_must_fit_together() {
        let with = |f: &dyn Fn(&mut Settings)| {
            let mut s = Settings::default();
            f(&mut s);
            s.validate()
        };
        assert!(with(&|_| {}).is_ok());
        let e = with(&|s| s.auth_required = true).unwrap_err();
        assert!(e.to_string().contains("jwt_secret_file"), "{e}");
        assert!(
            with(&|s| {
                s.auth_required = true;
                s.jwt_secret_file = Some("jwt.secret".into());
            })
            .is_ok()
        );
        // (what is set) -> refused
        let refused: [&dyn Fn(&mut Settings); 6] = [
            &|s| s.jwt_secret_file = Some("jwt.secret".into()), // key without auth_required
            &|s| {
                s.auth_required = true;
                s.jwt_secret_file = Some("a".into());
                s.jwt_public_key_file = Some("b".into());
            },
            &|s| s.allowed_clients = ["svc".to_owned()].into(),
            &|s| s.tls_cert_file = Some("node.pem".into()),
            &|s| s.tls_peer_ca_file = Some("ca.pem".into()),
            &|s| s.advertised_urls = vec!["wss://h:1".into()],
        ];
        for (i, f) in refused.into_iter().enumerate() {
            assert!(with(f).is_err(), "case {i}");
        }
        let tls = |s: &mut Settings| {
            s.tls_cert_file = Some("node.pem".into());
            s.tls_key_file = Some("node.key".into());
        };
        assert!(with(&|s| tls(s)).is_ok());
        assert!(
            with(&|s| {
                tls(s);
                s.advertised_urls = vec!["ws://h:1".into()];
            })
            .is_err(),
            "a TLS node is not reached at ws://"
        );
        let l = SettingsLayer::from_env([
            ("MPREG_AUTH_REQUIRED", "true"),
            ("MPREG_JWT_SECRET_FILE", "/etc/mpreg/jwt.secret"),
            ("MPREG_ALLOWED_CLIENTS", "svc-a, svc-b"),
            ("MPREG_INTROSPECTION_ROLE", "admin"),
            ("MPREG_TLS_CERT_FILE", "n.pem"),
            ("MPREG_TLS_KEY_FILE", "n.key"),
            ("MPREG_TLS_PEER_CA_FILE", "ca.pem"),
        ])
        .unwrap();
        let s = Settings::layered([&l]);
        assert!(s.auth_required && s.tls_enabled());
        assert_eq!(s.allowed_clients.len(), 2);
        assert_eq!(s.introspection_role.as_deref(), Some("admin"));
        assert!(s.validate().is_ok());
        let toml = "[mpreg]\nauth_required = true\njwt_public_key_file = \"k.pem\"\n";
        let s = Settings::layered([&SettingsLayer::from_toml_str(toml, "f").unwrap()]);
        assert!(s.auth_required && s.jwt_public_key_file.is_some() && s.validate().is_ok());
    }

    #[test]
    fn unauthenticated_peers_are_served_on_loopback_only_unless_told() {
        let on = |host: &str, insecure: bool| Settings {
            host: host.to_owned(),
            insecure_peers: insecure,
            ..Settings::default()
        };
        // (host, --insecure-peers, has a secret) -> may start
        let table = [
            ("127.0.0.1", false, false, true),
            ("127.0.0.2", false, false, true),
            ("::1", false, false, true),
            ("[::1]", false, false, true),
            ("localhost", false, false, true),
            ("0.0.0.0", false, false, false),
            ("10.0.0.5", false, false, false),
            ("node1.example", false, false, false),
            ("0.0.0.0", true, false, true),
            ("0.0.0.0", false, true, true),
        ];
        for (host, insecure, secret, ok) in table {
            let r = on(host, insecure).check_peer_exposure(secret);
            assert_eq!(
                r.is_ok(),
                ok,
                "{host} insecure={insecure} secret={secret}: {r:?}"
            );
        }
        let l = SettingsLayer::from_env([
            ("MPREG_INSECURE_PEERS", "true"),
            ("MPREG_CLUSTER_SECRET_FILE", "/etc/mpreg/cluster.secret"),
        ])
        .unwrap();
        let s = Settings::layered([&l]);
        assert!(s.insecure_peers);
        assert_eq!(
            s.cluster_secret_file.as_deref(),
            Some(Path::new("/etc/mpreg/cluster.secret"))
        );
        assert!(SettingsLayer::from_env([("MPREG_INSECURE_PEERS", "maybe")]).is_err());
        let toml = "[mpreg]\ncluster_secret_file = \"s.secret\"\ninsecure_peers = true\n";
        let s = Settings::layered([&SettingsLayer::from_toml_str(toml, "f").unwrap()]);
        assert!(s.insecure_peers && s.cluster_secret_file.is_some());
    }
}
