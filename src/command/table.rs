//! The command table: every command's name, arity, flags, key positions and
//! handler, known without running it (as kvrocks and Redis keep theirs).
//!
//! Each command family (`string`, `keys`, `server`) exports its own slice of
//! [`CommandSpec`]s; [`lookup`] finds a command by case-insensitive name.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::Args;
use crate::cluster::Op;
use crate::node::Node;
use crate::server::{Reply, Session};
use crate::storage::Store;

/// Command flags, reported by `COMMAND INFO` and used by the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(pub u32);

impl Flags {
    /// Reads replicated data.
    pub const READONLY: Flags = Flags(1);
    /// Changes replicated data.
    pub const WRITE: Flags = Flags(1 << 1);
    /// May allocate more memory (Redis's `denyoom`).
    pub const DENYOOM: Flags = Flags(1 << 2);
    /// Administrative.
    pub const ADMIN: Flags = Flags(1 << 3);
    /// Fast, O(1) or O(log n).
    pub const FAST: Flags = Flags(1 << 4);
    /// Connection-level, allowed before auth and while loading.
    pub const CONNECTION: Flags = Flags(1 << 5);

    /// Union of two flag sets.
    #[must_use]
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// True when every flag of `other` is set.
    #[must_use]
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// How the executor runs a command.
#[derive(Clone, Copy)]
pub enum Handler {
    /// Reads local applied state after the session's read barrier.
    /// `now_ms` is this node's clock, used to hide expired keys.
    Read(fn(&Store, &mut Args, u64) -> Reply),
    /// Parses into a replicated operation; the reply comes from its apply.
    Write(fn(&mut Args) -> Result<Op, Reply>),
    /// Touches no replicated data.
    Server(fn(&Node, &mut Session, &mut Args) -> Reply),
    /// Cluster administration that waits on the cluster (membership changes,
    /// leader transfer, backups): runs asynchronously, without a read barrier.
    Admin(for<'a> fn(&'a Node, Args) -> AdminFuture<'a>),
}

/// What an [`Handler::Admin`] handler returns.
pub type AdminFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send + 'a>>;

/// One command's static description.
#[derive(Clone, Copy)]
pub struct CommandSpec {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis arity: positive = exact argument count including the name;
    /// negative = at least that many.
    pub arity: i32,
    /// Flags.
    pub flags: Flags,
    /// Position of the first key (0: no keys).
    pub first_key: i32,
    /// Position of the last key (-1: the last argument).
    pub last_key: i32,
    /// Step between keys.
    pub step: i32,
    /// What runs it.
    pub handler: Handler,
}

impl CommandSpec {
    /// A table entry; `keys` is (first, last, step) as in [`CommandSpec`].
    #[must_use]
    pub const fn new(
        name: &'static str,
        arity: i32,
        flags: Flags,
        keys: (i32, i32, i32),
        handler: Handler,
    ) -> CommandSpec {
        CommandSpec {
            name,
            arity,
            flags,
            first_key: keys.0,
            last_key: keys.1,
            step: keys.2,
            handler,
        }
    }

    /// True when `argc` (name included) satisfies the arity.
    #[must_use]
    pub fn arity_ok(&self, argc: usize) -> bool {
        arity_matches(self.arity, argc)
    }
}

fn all_families() -> impl Iterator<Item = &'static CommandSpec> {
    // Each family file owns its own slice; this is the only place they meet.
    super::string::COMMANDS
        .iter()
        .chain(super::keys::COMMANDS)
        .chain(super::server::COMMANDS)
        .chain(super::backup::COMMANDS)
        .chain(super::transfer::COMMANDS)
        .chain(super::raft::COMMANDS)
}

fn index() -> &'static HashMap<&'static str, &'static CommandSpec> {
    static INDEX: OnceLock<HashMap<&'static str, &'static CommandSpec>> = OnceLock::new();
    INDEX.get_or_init(|| all_families().map(|c| (c.name, c)).collect())
}

/// Every command in the table.
pub fn all() -> impl Iterator<Item = &'static CommandSpec> {
    index().values().copied()
}

/// Finds a command by name, case-insensitively, without allocating for
/// names of ordinary length.
#[must_use]
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut buf = [0u8; 32];
    if name.len() > buf.len() {
        return None;
    }
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let lower = std::str::from_utf8(lower).ok()?;
    index().get(lower).copied()
}

/// One subcommand of a container command (`CLIENT SETNAME`, `CONFIG GET`).
#[derive(Clone, Copy)]
pub struct SubcommandSpec {
    /// Lowercase subcommand name (`setname`).
    pub name: &'static str,
    /// `container|sub`, the name Redis reports in errors and stats.
    pub full_name: &'static str,
    /// Redis arity, counting the container and subcommand names.
    pub arity: i32,
    /// Flags.
    pub flags: Flags,
    /// What runs it.
    pub handler: Handler,
}

impl SubcommandSpec {
    /// True when `argc` (both names included) satisfies the arity.
    #[must_use]
    pub fn arity_ok(&self, argc: usize) -> bool {
        arity_matches(self.arity, argc)
    }

    /// Finds a subcommand by case-insensitive name.
    #[must_use]
    pub fn find(subs: &'static [SubcommandSpec], name: &[u8]) -> Option<&'static SubcommandSpec> {
        subs.iter()
            .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
    }
}

/// The subcommands of `container` (lowercase name), if it is a container
/// command; the executor then dispatches on the second argument.
#[must_use]
pub fn subcommands(container: &str) -> Option<&'static [SubcommandSpec]> {
    super::server::CONTAINERS
        .iter()
        .find(|(name, _)| *name == container)
        .map(|(_, subs)| *subs)
}

/// Every name calls are counted under: commands, and `container|sub` for
/// subcommands.
pub fn command_names() -> impl Iterator<Item = &'static str> {
    all().map(|c| c.name).chain(
        super::server::CONTAINERS
            .iter()
            .flat_map(|(_, subs)| subs.iter().map(|s| s.full_name)),
    )
}

/// Redis's arity rule: a positive arity is the exact argument count (names
/// included), a negative one the minimum.
fn arity_matches(arity: i32, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    let arity = i64::from(arity);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}
