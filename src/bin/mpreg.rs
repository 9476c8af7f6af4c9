//! `mpreg`: run and talk to mpreg nodes. See `mpreg --help`.

use clap::Parser;
use mpreg::cli::{MpregCli, run_mpreg};

#[tokio::main]
async fn main() {
    let cli = MpregCli::parse();
    std::process::exit(run_mpreg(cli).await);
}
