//! The `raftis` subcommands that run beside or without a server: `backup`,
//! `restore` and `status`.
//!
//! `main` parses the command line; when it names a subcommand ([`Tool`]),
//! [`run`] runs it instead of a node and turns its outcome into the exit
//! code: 0 when it did what was asked, 1 when it failed ([`ToolError`], one
//! line on stderr), and 2, as clap's own, for a command line it refused.
//! The tools talk to running nodes over RESP ([`crate::resp_client`]) and
//! touch no data dir except the one `restore` seeds. Results go to stdout,
//! one summary line or one table, so scripts can read them.

pub mod backup;
pub mod backup_file;
pub mod restore;
pub mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::cluster::backup::RestoreError;
use crate::config::InitialCluster;
use crate::resp_client::ClientError;

/// A subcommand of `raftis`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Tool {
    /// Save a consistent backup of a running cluster's data to FILE
    #[command(
        long_about = "Save a consistent backup of a running cluster's data to FILE.\n\n\
            The node at --from (any member) takes it after a linearizable read barrier, \
            so it holds every write acknowledged before the backup began. The file is \
            streamed to FILE.tmp, verified (size, checksum, snapshot trailer), synced \
            and renamed to FILE."
    )]
    Backup {
        /// RESP address of any member
        #[arg(long, value_name = "ADDR")]
        from: String,
        /// Seconds to wait for each reply (preparing the backup included)
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        timeout: u64,
        /// Where to write the backup
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Seed a new, empty data dir from a backup, as one member of a new cluster
    #[command(
        long_about = "Seed a new, empty data dir from a backup, as one member of a new cluster.\n\n\
            Run it once per member, each with its own --id and --data-dir and the same \
            FILE and --initial-cluster; then start each member with `raftis --id N \
            --data-dir DIR ...`. The new cluster holds exactly the backup's data, with \
            the members of --initial-cluster. The backup is verified completely before \
            anything is written."
    )]
    Restore {
        /// The backup file
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The data dir to create (missing or empty)
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// This member's id in the new cluster
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
        /// The new cluster's members: 1=HOST:PORT,2=HOST:PORT,... (peer addresses)
        #[arg(long, value_name = "LIST")]
        initial_cluster: InitialCluster,
    },
    /// Print a table of the Raft state of each endpoint
    Status {
        /// RESP addresses, comma-separated
        #[arg(
            long,
            value_name = "LIST",
            value_delimiter = ',',
            default_value = "127.0.0.1:6379"
        )]
        endpoints: Vec<String>,
        /// Seconds to wait for each endpoint
        #[arg(long, value_name = "SECS", default_value_t = 5)]
        timeout: u64,
    },
}

impl Tool {
    /// The subcommand's name, for messages.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Tool::Backup { .. } => "backup",
            Tool::Restore { .. } => "restore",
            Tool::Status { .. } => "status",
        }
    }
}

/// Why a tool failed. Each message is one line, printed as
/// `raftis <tool>: <message>`.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The command line asks for something impossible that clap cannot
    /// see, such as an id missing from the member list (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The connection to a node failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The connection failed in the middle of a backup transfer.
    #[error("transfer failed at byte {offset} of {size}: {source}")]
    Interrupted {
        /// Bytes received so far.
        offset: u64,
        /// Bytes announced.
        size: u64,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// A node answered a command with an error reply.
    #[error("{addr} refused {command}: {message}")]
    Refused {
        /// The node.
        addr: String,
        /// The command, as `RAFT.BACKUP BEGIN`.
        command: String,
        /// The error line.
        message: String,
    },
    /// What a node sent is not what it announced or not what the protocol
    /// allows (short, corrupt, an unexpected reply).
    #[error("{0}")]
    Transfer(String),
    /// A local file or directory could not be used.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        /// What was being done (`write`, `open`...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The backup written failed its own verification.
    #[error("{} failed verification: {source}", path.display())]
    Verification {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backup to restore is missing parts, corrupt or foreign.
    #[error("{} is not a usable backup: {source}; nothing was written", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The data dir to restore into has something in it.
    #[error("data dir {} is not empty; restore only seeds a new, empty data dir", .0.display())]
    NotEmpty(PathBuf),
    /// Seeding the data dir failed (it was left as it was).
    #[error("restore failed: {0}")]
    Restore(#[source] RestoreError),
    /// A blocking task died.
    #[error("{what}: {source}")]
    Task {
        /// What it was doing.
        what: &'static str,
        /// Why it stopped.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl ToolError {
    /// The exit code for this failure: 2 for a refused invocation, 1 for
    /// everything else.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ToolError::Usage(_) => ExitCode::from(EXIT_USAGE),
            _ => ExitCode::FAILURE,
        }
    }

    pub(crate) fn file(
        action: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> ToolError {
        let path = path.to_owned();
        move |source| ToolError::File {
            action,
            path,
            source,
        }
    }
}

/// Exit code of a refused invocation, as clap's own.
const EXIT_USAGE: u8 = 2;

/// Runs `tool`, printing its result to stdout and a failure to stderr;
/// returns the exit code (0, 1, or 2 for [`ToolError::Usage`]).
pub async fn run(tool: Tool) -> ExitCode {
    let name = tool.name();
    let outcome = match tool {
        Tool::Backup {
            from,
            timeout,
            file,
        } => backup::run(&from, &file, Duration::from_secs(timeout.max(1))).await,
        Tool::Restore {
            file,
            data_dir,
            id,
            initial_cluster,
        } => restore::run(&file, &data_dir, id, &initial_cluster).await,
        Tool::Status { endpoints, timeout } => {
            let report = status::run(&endpoints, Duration::from_secs(timeout.max(1))).await;
            // The table's ERRORS column says what failed; only the exit code
            // is left to set.
            println!("{}", report.table);
            return if report.failures == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("raftis {name}: {error}");
            error.exit_code()
        }
    }
}
