//! `mpreg-demo-node`: an mpreg node serving the demo functions that fit its `--resources`
//! (see `mpreg::demo`): `cpu` → preprocess, aggregate; `gpu` → infer, render, train;
//! `database` → store, lookup. Takes every `mpreg-node` option, and serves DNS (on a free
//! port unless `--dns-port` says which; `--dns-gateway-enabled false` in a file turns it off).
//!
//!     cargo run --bin mpreg-demo-node -- --port 9001 --name gpu1 --resources gpu --peers ws://127.0.0.1:9000

use clap::Parser;
use mpreg::cli::{NodeArgs, run_node_with};

// As `mpreg-node`: the node's own allocator, so that the demo cluster measures what a
// deployment runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "mpreg-demo-node",
    version,
    about = "Run an mpreg node with the demo functions for its resources"
)]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
}

#[tokio::main]
async fn main() {
    mpreg::memory::return_freed_memory_promptly();
    let mut cli = Cli::parse();
    cli.node.defaults.dns_gateway_enabled = Some(true);
    std::process::exit(run_node_with(cli.node, mpreg::demo::functions).await);
}
