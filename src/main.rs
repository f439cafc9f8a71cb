//! The `raftis` binary: command line → configuration → logging → node, or
//! command line → tool.
//!
//! `main` parses the flags with clap. A subcommand (`backup`, `restore`,
//! `status`) runs that tool instead of a node (`raftis::tool`), with the
//! same exit codes. Otherwise `main` merges the flags with the defaults, the
//! config file and the environment in [`Config::load`], and stops with one
//! line on stderr and exit code 2 if the configuration is refused (the code
//! clap uses for usage errors, so scripts can tell "bad invocation" from "the
//! node failed", which exits with 1). Otherwise it installs the log
//! subscriber and runs the node until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use raftis::config::{Cli, Config};

/// Exit code for a refused configuration or invocation, as clap's own.
const EXIT_USAGE: u8 = 2;

/// See Cargo.toml: mimalloc costs less per allocation than glibc malloc on
/// the request path, which allocates on several threads at once.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
/// [`ALLOCATOR`] as INFO's `mem_allocator` names it.
const ALLOCATOR_NAME: &str = "mimalloc";

#[tokio::main]
async fn main() -> ExitCode {
    raftis::command::info::set_mem_allocator(ALLOCATOR_NAME);
    let cli = Cli::parse();
    if let Some(tool) = cli.tool.clone() {
        return raftis::tool::run(tool).await;
    }
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("raftis: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(message) = raftis::telemetry::logging::init(&config) {
        eprintln!("raftis: {message}");
        return ExitCode::from(EXIT_USAGE);
    }
    tracing::info!(
        id = config.id,
        listen = %config.listen,
        peer_listen = %config.peer_listen_addr(),
        http_listen = %config.http_listen,
        data_dir = %config.data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "starting raftis"
    );
    match raftis::node::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "raftis stopped");
            eprintln!("raftis: {error}");
            ExitCode::FAILURE
        }
    }
}
