//! Command lines: `mpreg-node` (the daemon) and `mpreg` (server, client, bench).

mod arg;
pub mod bench;
mod bench_cache;
mod bench_catalog;
mod bench_dag;
mod bench_pubsub;
mod bench_queue;
mod bench_round;
mod cache_cmd;
mod client_cmd;
mod dns_cmd;
mod monitor_cmd;
mod node_cmd;
mod queue_cmd;
mod text;
mod token_cmd;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use node_cmd::{init_tracing, run_node, run_node_with};

use crate::config::{ConfigError, Settings, SettingsFlags, SettingsLayer};

/// Flags shared by `mpreg-node` and `mpreg server start`; they override the TOML file and the
/// `MPREG_*` environment.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// Settings file with an [mpreg] table
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// A flag per setting, declared with it (`config::SettingsFlags`).
    #[command(flatten)]
    pub flags: SettingsFlags,
    /// The binary's own defaults, under the file, the environment and the flags
    /// (`mpreg-demo-node` serves DNS unless told otherwise).
    #[arg(skip)]
    pub defaults: SettingsLayer,
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

/// Which node a CLI command talks to, and how it presents itself.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Node URL
    #[arg(long, env = "MPREG_URL", default_value = "ws://127.0.0.1:9000")]
    pub url: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Where to ask, and how to print (the queue and cache verbs).
#[derive(Args, Debug)]
pub struct Out {
    /// Print the node's reply as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

impl Target {
    /// A client of the node, presenting the token and TLS options given.
    pub async fn client(&self) -> Result<crate::Client, crate::ClientError> {
        let options = self.connect.options(&self.url)?;
        crate::Client::connect_with_options(&crate::env::Env::production(), &self.url, &options)
            .await
    }
}

impl NodeArgs {
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
        let settings = Settings::layered([
            &SettingsLayer::daemon(),
            &self.defaults,
            &file,
            &env,
            &self.flags.0,
        ]);
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
    /// Create, feed and drain queues
    #[command(subcommand)]
    Queue(queue_cmd::QueueCommand),
    /// Read and write the node's cache
    #[command(subcommand)]
    Cache(cache_cmd::CacheCommand),
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
        MpregCommand::Queue(cmd) => queue_cmd::run(cmd).await,
        MpregCommand::Cache(cmd) => cache_cmd::run(cmd).await,
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
