//! Command lines: `mpreg-node` (the daemon) and `mpreg` (server, client, bench).

pub mod bench;
mod bench_catalog;
mod bench_dag;
mod bench_pubsub;
mod bench_round;
mod client_cmd;
mod monitor_cmd;
mod node_cmd;
mod token_cmd;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use node_cmd::{init_tracing, run_node, run_node_with};

use crate::config::{ConfigError, Settings, SettingsLayer};

/// Flags shared by `mpreg-node` and `mpreg server start`; they override the TOML file and the
/// `MPREG_*` environment.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// Interface to listen on [default: 127.0.0.1]
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free port [default: 9000]
    #[arg(long)]
    pub port: Option<u16>,
    /// Node name [default: mpreg-node]
    #[arg(long)]
    pub name: Option<String>,
    /// Cluster id [default: default-cluster]
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Resources this node offers, comma-separated (e.g. cpu,gpu)
    #[arg(long, value_delimiter = ',')]
    pub resources: Option<Vec<String>>,
    /// Peers to join, comma-separated ws:// URLs (clustering arrives with the control plane)
    #[arg(long, value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// Settings file with an [mpreg] table
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Log filter (error, warn, info, debug, trace, or tracing directives) [default: info]
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log lines as text or as one JSON object per line [default: text]
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<crate::config::LogFormat>,
    /// Largest accepted message in bytes [default: 20971520]
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    /// Most commands per request [default: 1000]
    #[arg(long)]
    pub max_commands_per_request: Option<usize>,
    /// Request deadline in milliseconds [default: 30000]
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// How long shutdown waits for in-flight requests, in milliseconds [default: 10000]
    #[arg(long)]
    pub drain_timeout_ms: Option<u64>,
    /// Requests one connection may run at once [default: 1024]
    #[arg(long)]
    pub max_inflight_per_connection: Option<usize>,
    /// Bytes one client connection may hold (running requests' frames, unwritten
    /// replies) before the node stops reading it [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub max_connection_bytes: Option<usize>,
    /// Bytes all client connections may hold together, shared fairly [default: 1073741824]
    #[arg(long, value_name = "BYTES")]
    pub max_client_bytes: Option<usize>,
    /// Client connections served at once; beyond, the upgrade gets 503 [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Largest control-plane snapshot taken from the leader or the disk [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub max_snapshot_bytes: Option<usize>,
    /// Disconnect a client whose replies have not drained for this long, in ms
    /// [default: 10000]
    #[arg(long, value_name = "MS")]
    pub reply_stall_timeout_ms: Option<u64>,
    /// Bytes of topic notifications that may wait for one subscriber [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub pubsub_queue_bytes: Option<usize>,
    /// A subscriber whose queue is full: drop_oldest (its oldest notifications go) or
    /// disconnect [default: drop_oldest]
    #[arg(long, value_name = "POLICY")]
    pub pubsub_slow_subscriber: Option<crate::config::SlowSubscriber>,
    /// Messages kept per topic for late subscribers' backlogs [default: 1000]
    #[arg(long, value_name = "N")]
    pub pubsub_backlog_messages: Option<usize>,
    /// Bytes kept per topic for backlogs [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub pubsub_backlog_bytes: Option<usize>,
    /// Age beyond which a kept message goes, in seconds [default: 3600]
    #[arg(long, value_name = "SECONDS")]
    pub pubsub_backlog_seconds: Option<u64>,
    /// Bytes kept for backlogs in all; 0 keeps none [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub pubsub_backlog_total_bytes: Option<usize>,
    /// URL peers and clients reach this node at, e.g. ws://10.0.0.5:9000 (repeatable)
    /// [default: derived from --host and --port]
    #[arg(long = "advertised-url", value_name = "URL")]
    pub advertised_urls: Option<Vec<String>>,
    /// Most members that vote in the control plane; later ones are learners [default: 3]
    #[arg(long)]
    pub voters: Option<usize>,
    /// Replace a voter unreachable this long by a live learner, in ms [default: 30000]
    #[arg(long, value_name = "MS")]
    pub replace_voter_after_ms: Option<u64>,
    /// Where durable state lives: memory or sqlite [default: sqlite]
    #[arg(long, value_name = "MODE")]
    pub persistence_mode: Option<crate::config::PersistenceMode>,
    /// Directory of the SQLite data [default: ./mpreg-data]
    #[arg(long, visible_alias = "data-dir", value_name = "DIR")]
    pub persistence_dir: Option<PathBuf>,
    /// File with the cluster secret peers prove to each other (the same file on every
    /// node; e.g. `openssl rand -hex 32 > FILE`)
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Serve peers without a cluster secret on a non-loopback interface (unsafe: anyone
    /// who reaches the port can join the cluster)
    #[arg(long)]
    pub insecure_peers: bool,
    /// Clients must present a valid token (JWT): `Authorization: Bearer …` on the upgrade,
    /// or `?token=…` in the URL
    #[arg(long)]
    pub auth_required: bool,
    /// File with the HS256 secret tokens are signed with (`openssl rand -hex 32 > FILE`)
    #[arg(long, value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM public key tokens are signed for (RS256 or EdDSA)
    #[arg(long, value_name = "FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Token subjects (`sub`) that may connect, comma-separated [default: any valid token]
    #[arg(long, value_delimiter = ',', value_name = "SUB")]
    pub allowed_clients: Option<Vec<String>>,
    /// Tokens must carry this issuer (`iss`)
    #[arg(long, value_name = "ISS")]
    pub jwt_issuer: Option<String>,
    /// Tokens must carry this audience (`aud`)
    #[arg(long, value_name = "AUD")]
    pub jwt_audience: Option<String>,
    /// Role that cluster_map, list_peers, catalog_query and rpc_list need [default: any
    /// authenticated client]
    #[arg(long, value_name = "ROLE")]
    pub introspection_role: Option<String>,
    /// The node's TLS certificate chain (PEM): the port then serves only wss://
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long = "tls-key", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Require client certificates signed by this CA (mTLS)
    #[arg(long = "tls-client-ca", value_name = "FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// CA that peers' certificates are checked against, both ways
    #[arg(long = "tls-peer-ca", value_name = "FILE")]
    pub tls_peer_ca_file: Option<PathBuf>,
    /// Port of the admin HTTP server (health, readiness, /metrics, status); 0 picks a
    /// free one, printed as MPREG_MONITORING_URL [default: 0]
    #[arg(long, value_name = "PORT")]
    pub monitoring_port: Option<u16>,
    /// Interface of the admin server [default: --host]
    #[arg(long, value_name = "HOST")]
    pub monitoring_host: Option<String>,
    /// Do not serve the admin HTTP server
    #[arg(long)]
    pub no_monitoring: bool,
    /// Do not send CORS headers from the admin server
    #[arg(long)]
    pub no_monitoring_cors: bool,
}

/// How a CLI command that talks to a node presents itself.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// Token (JWT) for nodes that require one (see `mpreg token issue`)
    #[arg(long, env = "MPREG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust for wss:// [default: the system's store, or
    /// SSL_CERT_FILE]
    #[arg(long, env = "MPREG_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for nodes that require one (mTLS)
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl ConnectArgs {
    /// The connection options for `url` (TLS files are read only for `wss://`).
    pub fn options(&self, url: &str) -> Result<crate::client::ConnectOptions, crate::ClientError> {
        let mut options = crate::client::ConnectOptions::new();
        let parsed = crate::ids::NodeUrl::parse(url).ok();
        if let Some(t) = &self.token {
            let host = parsed.as_ref().map_or("", |u| u.host());
            if parsed.as_ref().is_some_and(|u| !u.is_tls())
                && !crate::config::is_loopback_host(host)
            {
                eprintln!(
                    "mpreg: warning: sending the token over plain ws:// to {host}: anyone on \
                     the path can read and replay it (use wss://)"
                );
            }
            options = options.token(t.trim());
        }
        if parsed.as_ref().is_some_and(crate::ids::NodeUrl::is_tls) {
            options = options.tls(&crate::tls::ClientTlsFiles {
                ca: self.ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
            })?;
        }
        Ok(options)
    }
}

impl NodeArgs {
    fn layer(&self) -> SettingsLayer {
        SettingsLayer {
            host: self.host.clone(),
            port: self.port,
            name: self.name.clone(),
            cluster_id: self.cluster_id.clone(),
            resources: self.resources.as_ref().map(|r| r.iter().cloned().collect()),
            peers: self.peers.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format,
            max_message_bytes: self.max_message_bytes,
            max_commands_per_request: self.max_commands_per_request,
            request_timeout_ms: self.request_timeout_ms,
            drain_timeout_ms: self.drain_timeout_ms,
            max_inflight_per_connection: self.max_inflight_per_connection,
            max_connection_bytes: self.max_connection_bytes,
            max_client_bytes: self.max_client_bytes,
            max_connections: self.max_connections,
            max_snapshot_bytes: self.max_snapshot_bytes,
            reply_stall_timeout_ms: self.reply_stall_timeout_ms,
            pubsub_queue_bytes: self.pubsub_queue_bytes,
            pubsub_slow_subscriber: self.pubsub_slow_subscriber,
            pubsub_backlog_messages: self.pubsub_backlog_messages,
            pubsub_backlog_bytes: self.pubsub_backlog_bytes,
            pubsub_backlog_seconds: self.pubsub_backlog_seconds,
            pubsub_backlog_total_bytes: self.pubsub_backlog_total_bytes,
            advertised_urls: self.advertised_urls.clone(),
            voters: self.voters,
            replace_voter_after_ms: self.replace_voter_after_ms,
            persistence_config: (self.persistence_mode.is_some() || self.persistence_dir.is_some())
                .then(|| crate::config::PersistenceLayer {
                    mode: self.persistence_mode,
                    data_dir: self.persistence_dir.clone(),
                    sqlite_filename: None,
                }),
            cluster_secret_file: self.cluster_secret_file.clone(),
            insecure_peers: self.insecure_peers.then_some(true),
            auth_required: self.auth_required.then_some(true),
            jwt_secret_file: self.jwt_secret_file.clone(),
            jwt_public_key_file: self.jwt_public_key_file.clone(),
            allowed_clients: self
                .allowed_clients
                .as_ref()
                .map(|c| c.iter().map(|s| s.trim().to_owned()).collect()),
            jwt_issuer: self.jwt_issuer.clone(),
            jwt_audience: self.jwt_audience.clone(),
            introspection_role: self.introspection_role.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            tls_client_ca_file: self.tls_client_ca_file.clone(),
            tls_peer_ca_file: self.tls_peer_ca_file.clone(),
            monitoring_enabled: self.no_monitoring.then_some(false),
            monitoring_host: self.monitoring_host.clone(),
            monitoring_port: self.monitoring_port,
            monitoring_enable_cors: self.no_monitoring_cors.then_some(false),
            ..SettingsLayer::default()
        }
    }

    /// Defaults < `config` file < `env_vars` (`MPREG_*`) < these flags. Also returns the
    /// file's settings that this node ignores, to report them.
    pub fn settings<I, K, V>(&self, env_vars: I) -> Result<(Settings, Vec<String>), ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let file = match &self.config {
            Some(path) => SettingsLayer::from_toml_file(path)?,
            None => SettingsLayer::default(),
        };
        let env = SettingsLayer::from_env(env_vars)?;
        // The daemon keeps its state on disk and serves its admin port unless told
        // otherwise (embedded nodes default to memory and no admin port).
        let daemon = SettingsLayer {
            persistence_config: Some(crate::config::PersistenceLayer {
                mode: Some(crate::config::PersistenceMode::Sqlite),
                ..Default::default()
            }),
            monitoring_enabled: Some(true),
            ..SettingsLayer::default()
        };
        let settings = Settings::layered([&daemon, &file, &env, &self.layer()]);
        settings.validate()?;
        Ok((settings, file.ignored.into_keys().collect()))
    }
}

/// `mpreg`: run and talk to mpreg nodes.
#[derive(Parser, Debug)]
#[command(name = "mpreg", version, about = "Run and talk to mpreg nodes")]
pub struct MpregCli {
    #[command(subcommand)]
    pub command: MpregCommand,
}

#[derive(Subcommand, Debug)]
pub enum MpregCommand {
    /// Run a node
    #[command(subcommand)]
    Server(ServerCommand),
    /// Call functions on a node
    #[command(subcommand)]
    Client(client_cmd::ClientCommand),
    /// Load-test a node (throughput and latency percentiles)
    Bench(bench::BenchArgs),
    /// Mint client tokens (JWT)
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// Read a node's admin server: health, status, metrics, persistence, endpoints
    #[command(subcommand)]
    Monitor(monitor_cmd::MonitorCommand),
    /// A bare WebSocket echo server, the baseline `bench --raw-echo` compares against
    #[command(hide = true)]
    BenchEchoServer {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Serve TLS with this certificate (and --tls-key)
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Start a node from flags (and MPREG_* variables)
    Start(Box<NodeArgs>),
    /// Start a node from a settings file; flags still override it
    StartConfig {
        /// TOML file with an [mpreg] table
        file: PathBuf,
        #[command(flatten)]
        overrides: Box<NodeArgs>,
    },
}

/// Runs the `mpreg` command line; returns the process exit code.
pub async fn run_mpreg(cli: MpregCli) -> i32 {
    match cli.command {
        MpregCommand::Server(ServerCommand::Start(args)) => run_node(*args).await,
        MpregCommand::Server(ServerCommand::StartConfig {
            file,
            mut overrides,
        }) => {
            overrides.config = Some(file);
            run_node(*overrides).await
        }
        MpregCommand::Client(cmd) => client_cmd::run(cmd).await,
        MpregCommand::Bench(args) => bench::run(args).await,
        MpregCommand::Token(cmd) => token_cmd::run(cmd, &crate::env::Env::production()),
        MpregCommand::Monitor(cmd) => monitor_cmd::run(cmd).await,
        MpregCommand::BenchEchoServer {
            host,
            port,
            tls_cert,
            tls_key,
        } => {
            let tls = tls_cert.zip(tls_key);
            bench::run_echo_server(&host, port, tls).await
        }
    }
}
