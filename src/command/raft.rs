//! Membership commands: `RAFT.NODE ADD|PROMOTE|REMOVE|HELP` and
//! `RAFT.NODES` (RedisRaft's names; etcd's `member add/promote/remove/list`).
//!
//! The handlers parse their arguments into a
//! [`MembershipChange`](crate::cluster::membership::MembershipChange) and
//! hand it to [`Cluster::change_membership`](crate::cluster::Cluster::change_membership),
//! which carries it to the leader from whichever node received it and
//! waits until the change has committed; `RAFT.NODES` asks the leader for
//! its view of every member. Replies:
//!
//! - `RAFT.NODE ADD <id> <peer-addr> [LEARNER]`: `+OK` once the node is a
//!   voter (or a learner, with `LEARNER`). Re-adding a member with the same
//!   address is `+OK` (and promotes a learner unless `LEARNER`).
//! - `RAFT.NODE PROMOTE <id>`: `+OK` once the learner is a voter.
//! - `RAFT.NODE REMOVE <id>`: `+OK` once the node is out.
//! - `RAFT.NODES`: an array with one entry per member, each a map (RESP3)
//!   or flat field/value array (RESP2) of `id`, `peer_addr`, `resp_addr`
//!   (null when the leader has not heard it), `role` (`leader`, `voter`,
//!   `learner`), `match_index`, `lag`, `reachable` (1 or 0).
//!
//! Argument errors: `-ERR invalid node id` (not an integer of at least 1),
//! `-ERR invalid peer address '...': ...`, `-ERR syntax error` (a fifth
//! argument other than `LEARNER`), `-ERR wrong number of arguments for
//! 'raft.node|add' command`, `-ERR unknown subcommand 'x'. Try RAFT.NODE HELP.`
//! Refusals from the leader are `-ERR` with the reason (see
//! `cluster/membership.rs`); `-CLUSTERDOWN` and `-TIMEOUT` as for writes.

use bytes::Bytes;

use super::args::{parse_i64, syntax_error};
use super::exec::wrong_arity;
use super::table::{AdminFuture, CommandSpec, Flags, Handler};
use super::Args;
use crate::cluster::membership::{MembershipChange, NodeInfo};
use crate::config::HostPort;
use crate::node::Node;
use crate::server::Reply;

/// The membership family's commands.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new(
        "raft.node",
        -2,
        Flags::ADMIN,
        (0, 0, 0),
        Handler::Admin(raft_node),
    ),
    CommandSpec::new(
        "raft.nodes",
        1,
        Flags::ADMIN,
        (0, 0, 0),
        Handler::Admin(raft_nodes),
    ),
];

const HELP: &[&str] = &[
    "RAFT.NODE <subcommand> [<arg> ...]. Subcommands are:",
    "ADD <id> <peer-addr> [LEARNER]",
    "    Add node <id> listening for peers on <peer-addr>; once it has caught up,",
    "    make it a voter (with LEARNER, leave it a learner).",
    "PROMOTE <id>",
    "    Make learner <id> a voter.",
    "REMOVE <id>",
    "    Remove voter or learner <id> from the cluster.",
    "HELP",
    "    Print this help.",
];

/// What a `RAFT.NODE` request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Change(MembershipChange),
    Help,
}

fn parse_id(raw: &[u8]) -> Result<u64, Reply> {
    parse_i64(raw)
        .and_then(|id| u64::try_from(id).ok())
        .filter(|id| *id >= 1)
        .ok_or_else(|| Reply::error("ERR invalid node id"))
}

fn parse_node(args: &mut Args) -> Result<Request, Reply> {
    let sub = args.next_bytes()?;
    let sub_lower = sub.to_ascii_lowercase();
    let argc = args.remaining();
    let arity = |name: &str| wrong_arity(&format!("raft.node|{name}"));
    match sub_lower.as_slice() {
        b"add" => {
            if !(2..=3).contains(&argc) {
                return Err(arity("add"));
            }
            let id = parse_id(&args.next_bytes()?)?;
            let raw_addr = args.next_bytes()?;
            let addr = String::from_utf8_lossy(&raw_addr).into_owned();
            addr.parse::<HostPort>()
                .map_err(|why| Reply::error(format!("ERR invalid peer address: {why}")))?;
            let learner = match args.try_next() {
                None => false,
                Some(flag) if flag.eq_ignore_ascii_case(b"learner") => true,
                Some(_) => return Err(syntax_error()),
            };
            Ok(Request::Change(MembershipChange::Add {
                id,
                peer_addr: addr,
                learner,
            }))
        }
        b"promote" | b"remove" => {
            let name = if sub_lower == b"promote" {
                "promote"
            } else {
                "remove"
            };
            if argc != 1 {
                return Err(arity(name));
            }
            let id = parse_id(&args.next_bytes()?)?;
            Ok(Request::Change(if name == "promote" {
                MembershipChange::Promote(id)
            } else {
                MembershipChange::Remove(id)
            }))
        }
        b"help" => {
            if argc != 0 {
                return Err(arity("help"));
            }
            Ok(Request::Help)
        }
        _ => {
            let mut msg = b"ERR unknown subcommand '".to_vec();
            msg.extend_from_slice(&sub[..sub.len().min(128)]);
            msg.extend_from_slice(b"'. Try RAFT.NODE HELP.");
            Err(Reply::Error(Bytes::from(msg)))
        }
    }
}

fn raft_node(node: &Node, mut args: Args) -> AdminFuture<'_> {
    Box::pin(async move {
        match parse_node(&mut args) {
            Err(reply) => reply,
            Ok(Request::Help) => Reply::Array(
                HELP.iter()
                    .map(|l| Reply::Simple(Bytes::from_static(l.as_bytes())))
                    .collect(),
            ),
            Ok(Request::Change(change)) => match node.cluster.change_membership(change).await {
                Ok(()) => Reply::ok(),
                Err(e) => Reply::from(e),
            },
        }
    })
}

/// One member as `RAFT.NODES` shows it.
fn node_reply(info: &NodeInfo) -> Reply {
    let field = |name: &'static str, value: Reply| (Reply::bulk_static(name), value);
    let int = |n: u64| Reply::integer(i64::try_from(n).unwrap_or(i64::MAX));
    Reply::Map(vec![
        field("id", int(info.id)),
        field("peer_addr", Reply::bulk(info.peer_addr.clone())),
        field(
            "resp_addr",
            info.resp_addr.clone().map_or(Reply::Null, Reply::bulk),
        ),
        field("role", Reply::bulk_static(info.role.as_str())),
        field("match_index", int(info.match_index.unwrap_or(0))),
        field("lag", int(info.lag.unwrap_or(0))),
        field(
            "reachable",
            Reply::integer(i64::from(info.reachable.unwrap_or(false))),
        ),
    ])
}

fn raft_nodes(node: &Node, _args: Args) -> AdminFuture<'_> {
    Box::pin(async move {
        match node.cluster.nodes().await {
            Ok(nodes) => Reply::Array(nodes.iter().map(node_reply).collect()),
            Err(e) => Reply::from(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::args::tests::args;

    fn parse(parts: &[&str]) -> Result<Request, Reply> {
        parse_node(&mut args(parts))
    }

    fn add(id: u64, addr: &str, learner: bool) -> Result<Request, Reply> {
        Ok(Request::Change(MembershipChange::Add {
            id,
            peer_addr: addr.into(),
            learner,
        }))
    }

    #[test]
    fn add_parses_id_address_and_learner() {
        assert_eq!(
            parse(&["raft.node", "ADD", "4", "127.0.0.1:16382"]),
            add(4, "127.0.0.1:16382", false)
        );
        assert_eq!(
            parse(&["raft.node", "add", "4", "h:1", "learner"]),
            add(4, "h:1", true)
        );
        assert_eq!(
            parse(&["raft.node", "add", "4", "h:1", "voter"]),
            Err(Reply::error("ERR syntax error"))
        );
    }

    #[test]
    fn bad_ids_and_addresses_are_refused() {
        for bad in ["0", "-1", "x", "1.5", "", "99999999999999999999"] {
            assert_eq!(
                parse(&["raft.node", "add", bad, "h:1"]),
                Err(Reply::error("ERR invalid node id")),
                "{bad:?}"
            );
            assert_eq!(
                parse(&["raft.node", "remove", bad]),
                Err(Reply::error("ERR invalid node id")),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse(&["raft.node", "add", "4", "nowhere"]),
            Err(Reply::error(
                "ERR invalid peer address: 'nowhere' is not a host:port address (no port; e.g. 127.0.0.1:6379)"
            ))
        );
    }

    #[test]
    fn promote_and_remove_take_one_id() {
        assert_eq!(
            parse(&["raft.node", "PROMOTE", "5"]),
            Ok(Request::Change(MembershipChange::Promote(5)))
        );
        assert_eq!(
            parse(&["raft.node", "remove", "2"]),
            Ok(Request::Change(MembershipChange::Remove(2)))
        );
        assert_eq!(
            parse(&["raft.node", "remove"]),
            Err(Reply::error(
                "ERR wrong number of arguments for 'raft.node|remove' command"
            ))
        );
        assert_eq!(
            parse(&["raft.node", "promote", "1", "2"]),
            Err(Reply::error(
                "ERR wrong number of arguments for 'raft.node|promote' command"
            ))
        );
        assert_eq!(
            parse(&["raft.node", "add", "1"]),
            Err(Reply::error(
                "ERR wrong number of arguments for 'raft.node|add' command"
            ))
        );
    }

    #[test]
    fn unknown_subcommands_point_at_help() {
        assert_eq!(
            parse(&["raft.node", "frob"]),
            Err(Reply::error(
                "ERR unknown subcommand 'frob'. Try RAFT.NODE HELP."
            ))
        );
        assert_eq!(parse(&["raft.node", "help"]), Ok(Request::Help));
    }
}
