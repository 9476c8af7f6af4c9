//! `mpreg-node`: run one mpreg node. See `mpreg-node --help`.

use clap::Parser;
use mpreg::cli::{NodeArgs, run_node};

#[derive(Parser, Debug)]
#[command(name = "mpreg-node", version, about = "Run an mpreg node")]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
}

/// mimalloc: small, short-lived allocations (one JSON request and reply each) dominate.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    mpreg::memory::return_freed_memory_promptly();
    let cli = Cli::parse();
    std::process::exit(run_node(cli.node).await);
}
