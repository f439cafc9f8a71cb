//! The command table: every command's name, arity, flags, key positions and
//! handler, known without running it (as kvrocks and Redis keep theirs).
//!
//! Each command family (`string`, `keys`, `server`) exports its own slice of
//! [`CommandSpec`]s; [`lookup`] finds a command by case-insensitive name.

use std::collections::HashMap;
use std::sync::OnceLock;

use xxhash_rust::xxh3::Xxh3Builder;

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

/// A counted command's dense index: its position in [`command_names`], so
/// per-command counters live in an array the hot path indexes instead of
/// hashing the command's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandId(u16);

impl CommandId {
    /// The position of this command in [`command_names`].
    #[must_use]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The id of the command counted under `full_name` (`get`,
    /// `client|list`), if the table has it. Hashes the name: for cold paths.
    #[must_use]
    pub fn of(full_name: &str) -> Option<CommandId> {
        table().ids.get(full_name).copied()
    }

    /// The full name counted under this id (`get`, `client|list`).
    #[must_use]
    pub fn name(self) -> &'static str {
        table().names.get(self.index()).copied().unwrap_or_default()
    }
}

/// How many names calls are counted under: every [`CommandId`] is below it.
#[must_use]
pub fn command_count() -> usize {
    table().names.len()
}

/// A command as the executor resolves it: its description, its counter
/// index and, for a container command, its subcommands with the index of
/// the first (the others follow in slice order).
#[derive(Clone, Copy)]
pub struct TableEntry {
    /// The command's description.
    pub spec: &'static CommandSpec,
    /// Where its calls are counted.
    pub id: CommandId,
    /// Its subcommands, and the [`CommandId`] of the first.
    subcommands: Option<(&'static [SubcommandSpec], u16)>,
}

impl TableEntry {
    /// The subcommand of this container named `name` (case-insensitive),
    /// with its counter index; `None` if there is no such subcommand or
    /// this is no container.
    #[must_use]
    pub fn subcommand(&self, name: &[u8]) -> Option<(&'static SubcommandSpec, CommandId)> {
        let (subs, first) = self.subcommands?;
        let position = subs
            .iter()
            .position(|s| s.name.as_bytes().eq_ignore_ascii_case(name))?;
        let id = first + u16::try_from(position).ok()?;
        Some((&subs[position], CommandId(id)))
    }

    /// Whether this command dispatches on a subcommand.
    #[must_use]
    pub fn is_container(&self) -> bool {
        self.subcommands.is_some()
    }
}

/// The whole table, built once: entries by name, and every counted name in
/// [`CommandId`] order.
struct Table {
    by_name: HashMap<&'static str, TableEntry, Xxh3Builder>,
    ids: HashMap<&'static str, CommandId, Xxh3Builder>,
    names: Vec<&'static str>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut specs: Vec<&'static CommandSpec> = all_families().collect();
        // Ids in name order: deterministic whatever the families' order.
        specs.sort_by_key(|c| c.name);
        let mut names: Vec<&'static str> = Vec::new();
        let mut by_name = HashMap::with_hasher(Xxh3Builder::new());
        for spec in specs {
            let id = CommandId(counter_id(names.len()));
            names.push(spec.name);
            let subcommands = subcommands(spec.name).map(|subs| {
                let first = counter_id(names.len());
                names.extend(subs.iter().map(|s| s.full_name));
                (subs, first)
            });
            by_name.insert(
                spec.name,
                TableEntry {
                    spec,
                    id,
                    subcommands,
                },
            );
        }
        let mut ids = HashMap::with_hasher(Xxh3Builder::new());
        for (position, name) in names.iter().enumerate() {
            ids.insert(*name, CommandId(counter_id(position)));
        }
        Table {
            by_name,
            ids,
            names,
        }
    })
}

/// A position in the table as a [`CommandId`]'s number. The table is a few
/// hundred names, fixed at compile time: a startup invariant.
fn counter_id(position: usize) -> u16 {
    u16::try_from(position).expect("fewer than 65536 commands")
}

/// Every command in the table.
pub fn all() -> impl Iterator<Item = &'static CommandSpec> {
    table().by_name.values().map(|e| e.spec)
}

/// Finds a command by name, case-insensitively, without allocating for
/// names of ordinary length.
#[must_use]
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    lookup_entry(name).map(|e| e.spec)
}

/// [`lookup`], with the command's counter index and subcommands: what the
/// executor resolves a request with.
#[must_use]
pub fn lookup_entry(name: &[u8]) -> Option<&'static TableEntry> {
    let mut buf = [0u8; 32];
    if name.len() > buf.len() {
        return None;
    }
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let lower = std::str::from_utf8(lower).ok()?;
    table().by_name.get(lower)
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
/// subcommands, in [`CommandId`] order (a name's position is its id).
pub fn command_names() -> impl Iterator<Item = &'static str> {
    table().names.iter().copied()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counted_name_has_the_id_of_its_position() {
        let names: Vec<_> = command_names().collect();
        assert_eq!(names.len(), command_count());
        for (position, name) in names.iter().enumerate() {
            let id = CommandId::of(name).unwrap();
            assert_eq!(id.index(), position, "{name}");
            assert_eq!(id.name(), *name);
        }
        // Every command and every subcommand of a container is counted.
        let mut expected: Vec<&str> = all()
            .map(|c| c.name)
            .chain(
                super::super::server::CONTAINERS
                    .iter()
                    .flat_map(|(_, subs)| subs.iter().map(|s| s.full_name)),
            )
            .collect();
        expected.sort_unstable();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected);
    }

    #[test]
    fn entries_resolve_commands_and_subcommands_to_their_ids() {
        let get = lookup_entry(b"GeT").unwrap();
        assert_eq!(get.spec.name, "get");
        assert_eq!(get.id.name(), "get");
        assert!(!get.is_container());
        assert!(get.subcommand(b"x").is_none());
        let client = lookup_entry(b"client").unwrap();
        assert!(client.is_container());
        let (sub, id) = client.subcommand(b"LiSt").unwrap();
        assert_eq!(sub.full_name, "client|list");
        assert_eq!(id.name(), "client|list");
        assert!(client.subcommand(b"nope").is_none());
        assert!(lookup_entry(b"nope").is_none());
        assert!(lookup_entry(&[b'x'; 40]).is_none());
    }
}
