//! The `raftis` binary: command line → configuration → logging → node, or
//! command line → tool.
//!
//! First, if the environment lacks the allocator options the binary wants
//! (see [`ALLOCATOR_OPTIONS`]), the process executes itself again with them
//! set, keeping its pid and arguments. Then `main` parses the flags with
//! clap. A subcommand (`backup`, `restore`, `status`) runs that tool
//! instead of a node (`raftis::tool`), with the same exit codes. Otherwise `main` merges the flags with the defaults, the
//! config file and the environment in [`Config::load`], and stops with one
//! line on stderr and exit code 2 if the configuration is refused (the code
//! clap uses for usage errors, so scripts can tell "bad invocation" from "the
//! node failed", which exits with 1). Otherwise it installs the log
//! subscriber and runs the node until SIGINT or SIGTERM.

use std::os::unix::process::CommandExt;
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

/// mimalloc options the binary asks for, unless the environment names them
/// already (an operator keeps the last word): each option's environment
/// name, its older name (mimalloc reads either, ignoring case), and
/// raftis's value. mimalloc v3's defaults commit arena memory ahead of use
/// and keep freed pages for a second; with 1M keys a node then held 191-213
/// MiB against redis-server's 176-181, and these two brought it to 151-164
/// MiB with no measurable CPU cost per request (benches/RESULTS.md, "Sixth
/// session").
const ALLOCATOR_OPTIONS: [(&str, &str, &str); 2] = [
    // Commit arena memory as it is used.
    (
        "MIMALLOC_ARENA_EAGER_COMMIT",
        "MIMALLOC_EAGER_REGION_COMMIT",
        "0",
    ),
    // Return freed pages to the OS at once (milliseconds).
    ("MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY", "0"),
];

/// Puts [`ALLOCATOR_OPTIONS`] into effect: mimalloc reads its options from
/// the environment when the process loads, before `main`, and reserves its
/// first arena then, so setting them later (`mi_option_set`) measured no
/// effect. When one is missing, the binary executes itself again
/// (`/proc/self/exe`, so a binary replaced on disk meanwhile is not the one
/// run) with the same arguments and those variables set: same pid, before
/// any thread or socket exists. Returns only when nothing was missing or
/// the exec failed (the node then runs with mimalloc's defaults, and says
/// so). Tools that wrap the process (valgrind, heaptrack) lose it at the
/// exec: set both variables to keep it.
fn apply_allocator_options() {
    let named: Vec<String> = std::env::vars_os()
        .filter_map(|(key, _)| key.into_string().ok())
        .collect();
    let missing: Vec<(&str, &str)> = ALLOCATOR_OPTIONS
        .into_iter()
        .filter(|(name, older, _)| {
            !named
                .iter()
                .any(|k| k.eq_ignore_ascii_case(name) || k.eq_ignore_ascii_case(older))
        })
        .map(|(name, _, value)| (name, value))
        .collect();
    if missing.is_empty() {
        return;
    }
    let exec = |exe: &std::path::Path| {
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        command.args(args).envs(missing.iter().copied()).exec()
    };
    // `/proc/self/exe` runs this very binary even when its file was
    // deleted or replaced since the start (an upgrade in place); the path
    // it was started from is the fallback where /proc is missing.
    let mut error = exec(std::path::Path::new("/proc/self/exe"));
    if let Ok(exe) = std::env::current_exe() {
        error = exec(&exe);
    }
    eprintln!(
        "raftis: running with mimalloc's default options: cannot execute itself again: {error}"
    );
}

fn main() -> ExitCode {
    apply_allocator_options();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("raftis: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
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
