//! `RAFT.TRANSFER_LEADER [<id>]`: hand leadership to another voter, from
//! any node (RedisRaft's name; etcd's `move-leader`).
//!
//! The handler parses the optional target and hands it to
//! [`Cluster::transfer_leader`](crate::cluster::Cluster::transfer_leader),
//! which carries the request to the leader and waits until the new leader
//! is known. The reply is `+OK` once it is, as RedisRaft answers; `INFO raft`
//! names the new leader. Naming the node that already leads is `+OK` at once
//! (as etcd's move-leader). Errors:
//!
//! - `-ERR invalid target node id`: not a non-negative integer (RedisRaft's text);
//! - `-ERR unknown node <id>`, `-ERR node <id> is a learner and cannot lead`,
//!   `-ERR node <id> is unreachable`, `-ERR no other voter to transfer
//!   leadership to`, `-ERR no other voter is reachable`: refused, nothing changed;
//! - `-ERR leader transfer to node <id> did not complete: ...`: started, but
//!   the target did not take over within the request timeout;
//! - `-CLUSTERDOWN ...`: no leader took the request; `-TIMEOUT ...`: the
//!   leader's answer was lost.

use super::args::parse_i64;
use super::exec::wrong_arity;
use super::table::{AdminFuture, CommandSpec, Flags, Handler};
use super::Args;
use crate::node::Node;
use crate::server::Reply;

/// The leader-transfer family's commands.
pub const COMMANDS: &[CommandSpec] = &[CommandSpec::new(
    "raft.transfer_leader",
    -1,
    Flags::ADMIN,
    (0, 0, 0),
    Handler::Admin(transfer_leader),
)];

/// The target named by the arguments: `None` for "any voter".
fn parse_target(args: &mut Args) -> Result<Option<u64>, Reply> {
    match args.remaining() {
        0 => Ok(None),
        1 => {
            let raw = args.next_bytes()?;
            parse_i64(&raw)
                .and_then(|id| u64::try_from(id).ok())
                .map(Some)
                .ok_or_else(|| Reply::error("ERR invalid target node id"))
        }
        _ => Err(wrong_arity("raft.transfer_leader")),
    }
}

fn transfer_leader(node: &Node, mut args: Args) -> AdminFuture<'_> {
    Box::pin(async move {
        let target = match parse_target(&mut args) {
            Ok(target) => target,
            Err(reply) => return reply,
        };
        match node.cluster.transfer_leader(target).await {
            Ok(_) => Reply::ok(),
            Err(e) => Reply::from(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::args::tests::args;

    #[test]
    fn target_parsing() {
        assert_eq!(parse_target(&mut args(&["raft.transfer_leader"])), Ok(None));
        assert_eq!(
            parse_target(&mut args(&["raft.transfer_leader", "2"])),
            Ok(Some(2))
        );
        for bad in ["x", "-1", "1.5", "", " 2", "99999999999999999999"] {
            assert_eq!(
                parse_target(&mut args(&["raft.transfer_leader", bad])),
                Err(Reply::error("ERR invalid target node id")),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_target(&mut args(&["raft.transfer_leader", "1", "2"])),
            Err(Reply::error(
                "ERR wrong number of arguments for 'raft.transfer_leader' command"
            ))
        );
    }
}
