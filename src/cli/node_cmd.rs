//! Running a node from the command line: settings, logging, signals, draining.

use std::io::Write;

use tracing_subscriber::EnvFilter;

use super::NodeArgs;
use crate::env::Env;
use crate::node::Node;

/// Logs to stderr at `level` (a level or `tracing` directives). Nothing is logged per call
/// at `info`: the original lost ~40 % of its throughput to per-call INFO lines.
pub fn init_tracing(level: &str, format: crate::config::LogFormat) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("invalid --log-level `{level}`: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        crate::config::LogFormat::Json => builder.json().with_ansi(false).try_init(),
    }
    .map_err(|e| e.to_string())
}

/// Starts a node, prints `MPREG_URL=…`, serves until SIGTERM or Ctrl-C, drains, returns 0.
/// Any start-up failure is one line on stderr and exit code 2.
pub async fn run_node(args: NodeArgs) -> i32 {
    run_node_with(args, |_, _| Vec::new()).await
}

/// [`run_node`] with the functions `functions(name, resources)` returns for the node's
/// settings registered.
pub async fn run_node_with(
    args: NodeArgs,
    functions: impl FnOnce(&str, &std::collections::BTreeSet<String>) -> Vec<crate::Function>,
) -> i32 {
    let (settings, ignored) = match args.settings(std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mpreg-node: {e}");
            return 2;
        }
    };
    if let Err(e) = init_tracing(&settings.log_level, settings.log_format) {
        eprintln!("mpreg-node: {e}");
        return 2;
    }
    for key in ignored {
        tracing::warn!(setting = %key, "setting not supported by this version; ignored");
    }
    let fs = functions(&settings.name, &settings.resources);
    let mut builder = Node::builder(settings).env(Env::production());
    for f in fs {
        if let Err(e) = builder.register(f) {
            eprintln!("mpreg-node: {e}");
            return 2;
        }
    }
    let node = match builder.start().await {
        Ok(node) => node,
        Err(e) => {
            eprintln!("mpreg-node: {e}");
            return 2;
        }
    };
    // One write, and a closed stdout (the reader kept only the first line) is no error: the
    // node serves on whether anyone reads it.
    let mut announce = format!("MPREG_URL={}\n", node.url());
    if let Some(url) = node.monitoring_url() {
        announce.push_str(&format!("MPREG_MONITORING_URL={url}\n"));
    }
    if let Some((udp, tcp)) = node.dns_addrs() {
        announce.push_str(&format!("MPREG_DNS_PORT={}\n", udp.port()));
        if tcp.port() != udp.port() {
            announce.push_str(&format!("MPREG_DNS_TCP_PORT={}\n", tcp.port()));
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_all(announce.as_bytes())
        .and_then(|()| out.flush());
    drop(out);
    wait_for_signal().await;
    tracing::info!("shutdown requested; draining in-flight requests");
    node.shutdown().await;
    0
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                biased;
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
