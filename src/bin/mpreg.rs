//! `mpreg`: run and talk to mpreg nodes. See `mpreg --help`.

use clap::Parser;
use mpreg::cli::{MpregCli, run_mpreg};

/// mimalloc: small, short-lived allocations (one JSON request and reply each) dominate.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    mpreg::memory::return_freed_memory_promptly();
    let cli = MpregCli::parse();
    std::process::exit(run_mpreg(cli).await);
}
