//! `RAFT.BACKUP`: a consistent backup of the committed state, streamed in
//! chunks over RESP to `raftis backup` (or any client).
//!
//! ```text
//! RAFT.BACKUP BEGIN                     -> map: id, size, xxh3, last_log_index, last_log_term
//! RAFT.BACKUP READ <id> <offset> <count> -> bulk: up to <count> bytes (fewer at the end)
//! RAFT.BACKUP END <id>                  -> +OK
//! RAFT.BACKUP HELP
//! ```
//!
//! This file only parses arguments and shapes replies; what a backup is and
//! how it is kept lives in `cluster::backup`. `BEGIN` waits for a
//! linearizable read barrier, so it fails like a read does (`-CLUSTERDOWN`,
//! `-TIMEOUT`) when the cluster has no quorum; `xxh3` is 16 hex digits.

use bytes::Bytes;

use super::table::{AdminFuture, CommandSpec, Flags, Handler};
use super::Args;
use crate::cluster::backup::{BackupError, BackupInfo, Backups, MAX_CHUNK};
use crate::node::Node;
use crate::server::Reply;

/// The backup command.
pub static COMMANDS: &[CommandSpec] = &[CommandSpec::new(
    "raft.backup",
    -2,
    Flags::ADMIN,
    (0, 0, 0),
    Handler::Admin(backup),
)];

const HELP: &[&str] = &[
    "RAFT.BACKUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "BEGIN",
    "    Prepare a consistent backup of the committed state; returns its id, size,",
    "    xxh3 checksum (hex) and the index and term of the last entry it includes.",
    "READ <id> <offset> <count>",
    "    Return up to <count> bytes of the backup from <offset> (at most 8 MiB).",
    "END <id>",
    "    Delete the backup. Backups not read for 60 seconds are deleted too.",
    "HELP",
    "    Print this help.",
];

fn backup(node: &Node, args: Args) -> AdminFuture<'_> {
    Box::pin(run(node, args))
}

async fn run(node: &Node, mut args: Args) -> Reply {
    let sub = match args.next_bytes() {
        Ok(sub) => sub,
        Err(reply) => return reply,
    };
    let backups = Backups::in_data_dir(&node.config.data_dir);
    let reply = match sub.to_ascii_uppercase().as_slice() {
        b"BEGIN" if args.remaining() == 0 => backups
            .begin(&node.cluster, node.store.clone())
            .await
            .map(begin_reply),
        b"READ" if args.remaining() == 3 => match parse_read(&mut args) {
            Ok((id, offset, count)) => backups.read(&id, offset, count).await.map(Reply::Bulk),
            Err(reply) => return reply,
        },
        b"END" if args.remaining() == 1 => match args.next_bytes() {
            Ok(id) => backups
                .end(&String::from_utf8_lossy(&id))
                .map(|()| Reply::ok()),
            Err(reply) => return reply,
        },
        b"HELP" if args.remaining() == 0 => {
            return Reply::Array(HELP.iter().map(|l| Reply::simple(l)).collect())
        }
        b"BEGIN" | b"READ" | b"END" | b"HELP" => {
            return Reply::error(format!(
                "ERR wrong number of arguments for 'raft.backup|{}' command",
                String::from_utf8_lossy(&sub).to_ascii_lowercase()
            ))
        }
        _ => {
            return Reply::error(format!(
                "ERR unknown subcommand '{}'. Try RAFT.BACKUP HELP.",
                String::from_utf8_lossy(&sub)
            ))
        }
    };
    reply.unwrap_or_else(error_reply)
}

/// `<id> <offset> <count>`, with the offset at least 0 and the count from 1
/// to [`MAX_CHUNK`].
fn parse_read(args: &mut Args) -> Result<(String, u64, u64), Reply> {
    let id = String::from_utf8_lossy(&args.next_bytes()?).into_owned();
    let offset = u64::try_from(args.next_i64()?)
        .map_err(|_| Reply::error("ERR offset must not be negative"))?;
    let count = args.next_i64()?;
    let count = u64::try_from(count)
        .ok()
        .filter(|c| (1..=MAX_CHUNK).contains(c))
        .ok_or_else(|| Reply::error(format!("ERR count must be between 1 and {MAX_CHUNK}")))?;
    Ok((id, offset, count))
}

fn begin_reply(info: BackupInfo) -> Reply {
    let int = |n: u64| Reply::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    Reply::Map(vec![
        (Reply::simple("id"), Reply::bulk(Bytes::from(info.id))),
        (Reply::simple("size"), int(info.size)),
        (
            Reply::simple("xxh3"),
            Reply::bulk(Bytes::from(format!("{:016x}", info.xxh3))),
        ),
        (Reply::simple("last_log_index"), int(info.last_log_index)),
        (Reply::simple("last_log_term"), int(info.last_log_term)),
    ])
}

fn error_reply(error: BackupError) -> Reply {
    match error {
        BackupError::Cluster(e) => Reply::from(e),
        other => Reply::error(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::args::not_an_integer;
    use crate::command::args::tests::args;

    fn read_args(parts: &[&str]) -> Result<(String, u64, u64), Reply> {
        let mut a = args(parts);
        a.next_bytes()?; // the subcommand
        parse_read(&mut a)
    }

    #[test]
    fn read_arguments_are_checked() {
        assert_eq!(
            read_args(&["raft.backup", "read", "abc", "0", "10"]),
            Ok(("abc".to_owned(), 0, 10))
        );
        assert_eq!(
            read_args(&["raft.backup", "read", "abc", "-1", "10"]),
            Err(Reply::error("ERR offset must not be negative"))
        );
        assert_eq!(
            read_args(&["raft.backup", "read", "abc", "x", "10"]),
            Err(not_an_integer())
        );
        for count in ["0", "-5", "8388609"] {
            assert_eq!(
                read_args(&["raft.backup", "read", "abc", "0", count]),
                Err(Reply::error("ERR count must be between 1 and 8388608")),
                "{count}"
            );
        }
        assert_eq!(
            read_args(&["raft.backup", "read", "abc", "0", "8388608"]),
            Ok(("abc".to_owned(), 0, MAX_CHUNK))
        );
    }

    #[test]
    fn begin_reply_is_a_map_with_hex_checksum() {
        let reply = begin_reply(BackupInfo {
            id: "00000000000000ff".into(),
            size: 40,
            xxh3: 0xab,
            last_log_index: 7,
            last_log_term: 2,
        });
        let Reply::Map(pairs) = reply else {
            panic!("not a map")
        };
        assert_eq!(
            pairs[2].1,
            Reply::bulk(Bytes::from_static(b"00000000000000ab"))
        );
        assert_eq!(
            pairs[3],
            (Reply::simple("last_log_index"), Reply::Integer(7))
        );
    }
}
