//! Membership changes with every node in this process: adding a learner and
//! promoting it, joining with `--join` (through a follower, so the request
//! is forwarded to the leader), removing a node (which then answers
//! `-CLUSTERDOWN removed from the cluster`, across a restart, and stops its
//! Raft, so it starts no elections), the refusals (last voter, quorum loss with
//! a node down, an id taken with another address, unknown ids, bad
//! arguments) and the `INFO raft` fields.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{client_at, eventually, eventually_async, node_config, Cluster, NodeTuning};
use raftis::config::{Config, HostPort};
use raftis::node::RunningNode;
use tokio::net::TcpListener;

const SETTLE: Duration = Duration::from_secs(15);

/// The error text of a refused command (code and detail, as on the wire).
fn error_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => e.to_string(),
    }
}

async fn cmd(con: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> Result<String, String> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async::<redis::Value>(con)
        .await
        .map(|v| match v {
            redis::Value::Okay => "OK".to_string(),
            redis::Value::SimpleString(s) => s,
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::Nil => "(nil)".into(),
            other => format!("{other:?}"),
        })
        .map_err(|e| error_text(&e))
}

/// A node outside the cluster, started with `--join`, on its own ports and
/// data dir; stop and start it again with [`Extra::restart`].
struct Extra {
    config: Config,
    resp: SocketAddr,
    peer: SocketAddr,
    running: Option<RunningNode>,
    _dir: tempfile::TempDir,
}

impl Extra {
    /// Node `id` with an empty data dir that joins through `join`.
    async fn start(id: u64, join: SocketAddr) -> Extra {
        let resp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (resp_addr, peer_addr) = (resp.local_addr().unwrap(), peer.local_addr().unwrap());
        let mut config = node_config(id, &resp, &peer, dir.path().to_path_buf());
        config.join = Some(HostPort::new("127.0.0.1", join.port()));
        let running = raftis::node::start(config.clone(), resp, peer)
            .await
            .expect("node starts");
        Extra {
            config,
            resp: resp_addr,
            peer: peer_addr,
            running: Some(running),
            _dir: dir,
        }
    }

    fn status(&self) -> raftis::cluster::RaftStatus {
        self.running.as_ref().unwrap().node().cluster.status()
    }

    async fn restart(&mut self) {
        if let Some(node) = self.running.take() {
            node.stop().await;
        }
        let deadline = Instant::now() + SETTLE;
        let (resp, peer) = loop {
            match (
                TcpListener::bind(self.resp).await,
                TcpListener::bind(self.peer).await,
            ) {
                (Ok(r), Ok(p)) => break (r, p),
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => panic!("cannot rebind {} / {}", self.resp, self.peer),
            }
        };
        self.running = Some(
            raftis::node::start(self.config.clone(), resp, peer)
                .await
                .expect("node restarts"),
        );
    }
}

/// How a node's peer port answers a Raft request once its Raft has
/// stopped (openraft's `Fatal::Stopped`).
const RAFT_STOPPED: &str = "raft stopped";

/// Asks the node whose peer port is `peer` for a pre-vote, as a stranger
/// (id 1000, term 0) would: nothing a running Raft grants or acts on.
/// `Ok` when its Raft answered, else why not.
async fn pre_vote(peer: SocketAddr) -> Result<(), String> {
    use raftis::cluster::network::{Peers, SelfInfo};
    use raftis::cluster::rpc::{PeerRequest, PeerResponse};
    use raftis::cluster::types::Vote;
    const STRANGER: u64 = 1000;
    let peers = Peers::new(
        SelfInfo {
            node_id: STRANGER,
            resp_addr: "127.0.0.1:1".into(),
        },
        Duration::from_secs(2),
    );
    let request = openraft::raft::VoteRequest::new(Vote::new(0, STRANGER), None);
    match peers
        .channel(4, &peer.to_string())
        .call(PeerRequest::PreVote(request), Duration::from_secs(5))
        .await
    {
        Ok(PeerResponse::Vote(_)) => Ok(()),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A RESP "member" that accepts connections and never answers: a node
/// joining through it waits, so the test can add it by hand.
async fn silent_member() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// `RAFT.NODES` as (id → field → value) from RESP2's flat arrays.
async fn nodes(
    con: &mut redis::aio::MultiplexedConnection,
) -> std::collections::BTreeMap<u64, std::collections::BTreeMap<String, String>> {
    let reply: Vec<Vec<redis::Value>> = redis::cmd("RAFT.NODES").query_async(con).await.unwrap();
    reply
        .into_iter()
        .map(|fields| {
            let map: std::collections::BTreeMap<String, String> = fields
                .chunks(2)
                .map(|kv| {
                    let text = |v: &redis::Value| match v {
                        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                        redis::Value::Int(i) => i.to_string(),
                        redis::Value::Nil => "(nil)".into(),
                        other => format!("{other:?}"),
                    };
                    (text(&kv[0]), text(&kv[1]))
                })
                .collect();
            (map["id"].parse().unwrap(), map)
        })
        .collect()
}

fn info_field(info: &str, name: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in INFO raft:\n{info}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_is_added_then_promoted() {
    let cluster = Cluster::start(1, NodeTuning::default()).await;
    cluster.wait_for_leader().await;
    let silent = silent_member().await;
    let extra = Extra::start(2, silent.local_addr().unwrap()).await;
    let mut con = cluster.client(1).await;
    let peer = extra.peer.to_string();
    assert_eq!(cmd(&mut con, &["SET", "before", "1"]).await.unwrap(), "OK");

    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "ADD", "2", &peer, "LEARNER"]).await,
        Ok("OK".into())
    );
    // The OK waits until the metrics the status is read from show the
    // change (openraft answers a moment before it publishes them).
    assert_eq!(cluster.status(1).learners, vec![2]);
    assert_eq!(cluster.status(1).voters, vec![1]);
    // The learner has the data, and reads through it are linearizable.
    let mut on_learner = client_at(extra.resp).await;
    assert_eq!(cmd(&mut on_learner, &["GET", "before"]).await.unwrap(), "1");
    let listed = nodes(&mut con).await;
    assert_eq!(listed[&2]["role"], "learner");
    assert_eq!(listed[&2]["peer_addr"], peer);
    assert_eq!(listed[&2]["resp_addr"], extra.resp.to_string());
    assert_eq!(listed[&1]["role"], "leader");
    assert_eq!(listed[&1]["lag"], "0");
    // Adding it again as a learner is a no-op.
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "ADD", "2", &peer, "LEARNER"]).await,
        Ok("OK".into())
    );

    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "PROMOTE", "2"]).await,
        Ok("OK".into())
    );
    let status = cluster.status(1);
    assert_eq!((status.voters, status.learners), (vec![1, 2], vec![]));
    let info = cmd(&mut con, &["INFO", "raft"]).await.unwrap();
    assert_eq!(info_field(&info, "quorum"), "2");
    assert_eq!(info_field(&info, "failure_tolerance"), "0");
    assert_eq!(info_field(&info, "voters_even"), "1");
    // The leader lists each member's replication state in INFO too.
    let line = info_field(&info, "node2");
    assert!(
        line.starts_with(&format!(
            "role=voter,peer_addr={peer},resp_addr={},match_index=",
            extra.resp
        )) && line.ends_with(",reachable=1"),
        "{line}"
    );
    eventually(SETTLE, || extra.status().voters == vec![1, 2]).await;
    // Promoting a voter again is a no-op.
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "PROMOTE", "2"]).await,
        Ok("OK".into())
    );
    // Writes need both voters now, and work through either.
    assert_eq!(
        cmd(&mut on_learner, &["SET", "after", "2"]).await.unwrap(),
        "OK"
    );
    assert_eq!(cmd(&mut con, &["GET", "after"]).await.unwrap(), "2");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joined_node_is_removed_and_stays_removed() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers(leader)[0];
    // Through a follower: the ADD is forwarded to the leader.
    let mut extra = Extra::start(4, cluster.resp_addr(follower)).await;
    eventually(SETTLE, || cluster.status(leader).voters == vec![1, 2, 3, 4]).await;
    eventually(SETTLE, || extra.status().voters == vec![1, 2, 3, 4]).await;
    let mut on_extra = client_at(extra.resp).await;
    assert_eq!(cmd(&mut on_extra, &["SET", "k", "v"]).await.unwrap(), "OK");
    let info = cmd(&mut on_extra, &["INFO", "raft"]).await.unwrap();
    assert_eq!(info_field(&info, "quorum"), "3");
    assert_eq!(info_field(&info, "failure_tolerance"), "1");
    assert_eq!(info_field(&info, "voters_even"), "1");

    // RAFT.NODES through a follower shows the leader's view.
    let mut on_follower = cluster.client(follower).await;
    let listed = nodes(&mut on_follower).await;
    assert_eq!(listed.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(listed[&leader]["role"], "leader");
    assert_eq!(listed[&4]["role"], "voter");
    assert_eq!(listed[&4]["resp_addr"], extra.resp.to_string());
    assert!(listed.values().all(|n| n["reachable"] == "1"), "{listed:?}");

    // A member's Raft answers a pre-vote (declining a stranger's).
    assert_eq!(pre_vote(extra.peer).await, Ok(()));

    assert_eq!(
        cmd(&mut on_follower, &["RAFT.NODE", "REMOVE", "4"]).await,
        Ok("OK".into())
    );
    // The leader answered once its own metrics showed the change.
    assert_eq!(cluster.status(leader).voters, vec![1, 2, 3]);
    // The follower that forwarded it learns the new membership shortly.
    eventually(SETTLE, || !cluster.status(follower).voters_even).await;
    let info = cmd(&mut on_follower, &["INFO", "raft"]).await.unwrap();
    assert_eq!(info_field(&info, "voters_even"), "0");
    eventually(SETTLE, || extra.status().removed).await;
    assert_eq!(extra.status().role, "removed");
    let removed = "CLUSTERDOWN removed from the cluster".to_string();
    assert_eq!(
        cmd(&mut on_extra, &["GET", "k"]).await,
        Err(removed.clone())
    );
    assert_eq!(
        cmd(&mut on_extra, &["SET", "k", "w"]).await,
        Err(removed.clone())
    );

    // The removed node starts no elections: its Raft stops (once another
    // node leads), so nothing is left on it to time out and campaign. Its
    // peer port still answers, with Raft's "stopped" to a pre-vote.
    eventually_async(SETTLE, || async {
        matches!(pre_vote(extra.peer).await, Err(e) if e.ends_with(RAFT_STOPPED))
    })
    .await;
    assert_eq!(cluster.status(leader).role, "leader");

    // It remembers across a restart, and starts no Raft.
    extra.restart().await;
    assert!(extra.status().removed);
    assert_eq!(
        pre_vote(extra.peer)
            .await
            .map_err(|e| e.ends_with(RAFT_STOPPED)),
        Err(true)
    );
    let mut on_extra = client_at(extra.resp).await;
    assert_eq!(cmd(&mut on_extra, &["GET", "k"]).await, Err(removed));
    assert_eq!(cmd(&mut on_follower, &["GET", "k"]).await.unwrap(), "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_say_why() {
    let mut cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let mut con = cluster.client(leader).await;
    let members = cluster.status(leader).members;
    let (taken_id, taken_addr) = members[1].clone();
    assert_eq!(
        cmd(
            &mut con,
            &["RAFT.NODE", "ADD", &taken_id.to_string(), "127.0.0.1:1"]
        )
        .await,
        Err(format!(
            "ERR node {taken_id} is already a member with peer address {taken_addr}"
        ))
    );
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "ADD", "9", &taken_addr]).await,
        Err(format!(
            "ERR peer address {taken_addr} is already used by node {taken_id}"
        ))
    );
    // Re-adding a voter, even with its own address, is refused: it may be
    // one that lost its data.
    assert_eq!(
        cmd(
            &mut con,
            &["RAFT.NODE", "ADD", &taken_id.to_string(), &taken_addr]
        )
        .await,
        Err(format!(
            "ERR node {taken_id} is already a voter; if its data dir was lost, remove it \
             first (RAFT.NODE REMOVE {taken_id}) and add it again under a new id"
        ))
    );
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "PROMOTE", "9"]).await,
        Err("ERR unknown node 9".into())
    );
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "REMOVE", "9"]).await,
        Err("ERR unknown node 9".into())
    );
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "REMOVE", "0"]).await,
        Err("ERR invalid node id".into())
    );
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "ADD", "5"]).await,
        Err("ERR wrong number of arguments for 'raft.node|add' command".into())
    );
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "ADD", "5", "127.0.0.1:1", "MAYBE"]).await,
        Err("ERR syntax error".into())
    );
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "FROB"]).await,
        Err("ERR unknown subcommand 'FROB'. Try RAFT.NODE HELP.".into())
    );
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE"]).await,
        Err("ERR wrong number of arguments for 'raft.node' command".into())
    );
    assert_eq!(
        cmd(&mut con, &["RAFT.NODES", "x"]).await,
        Err("ERR wrong number of arguments for 'raft.nodes' command".into())
    );

    // With one follower down, removing the other would leave the leader
    // alone in a two-voter set.
    let followers = cluster.followers(leader);
    let (down, other) = (followers[0], followers[1]);
    cluster.stop(down).await;
    // The leader notices within an election timeout.
    let deadline = Instant::now() + SETTLE;
    while nodes(&mut con).await[&down]["reachable"] != "0" {
        assert!(Instant::now() < deadline, "node {down} still reachable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "REMOVE", &other.to_string()]).await,
        Err(format!(
            "ERR refused: removing node {other} would leave 1 of 2 voters reachable, below the quorum of 2"
        ))
    );
    assert_eq!(cluster.status(leader).voters.len(), 3);
    // Removing the dead one is allowed: the two live voters remain.
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "REMOVE", &down.to_string()]).await,
        Ok("OK".into())
    );
    let mut voters = vec![leader, other];
    voters.sort_unstable();
    assert_eq!(cluster.status(leader).voters, voters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_voter_cannot_go() {
    let cluster = Cluster::start(1, NodeTuning::default()).await;
    cluster.wait_for_leader().await;
    let mut con = cluster.client(1).await;
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "REMOVE", "1"]).await,
        Err("ERR refused: node 1 is the last voter".into())
    );
    let info = cmd(&mut con, &["INFO", "raft"]).await.unwrap();
    assert_eq!(info_field(&info, "quorum"), "1");
    assert_eq!(info_field(&info, "failure_tolerance"), "0");
    assert_eq!(info_field(&info, "voters_even"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_can_remove_itself() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let mut con = cluster.client(leader).await;
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "REMOVE", &leader.to_string()]).await,
        Ok("OK".into())
    );
    let others = cluster.followers(leader);
    // openraft hands leadership to one of the others once the change
    // commits; the old leader then knows it was removed.
    eventually(SETTLE, || {
        others.iter().all(|id| {
            let s = cluster.status(*id);
            s.voters == others && s.leader_id.is_some_and(|l| others.contains(&l))
        })
    })
    .await;
    eventually(SETTLE, || cluster.status(leader).removed).await;
    assert_eq!(
        cmd(&mut con, &["SET", "k", "v"]).await,
        Err("CLUSTERDOWN removed from the cluster".into())
    );
    let mut on_other = cluster.client(others[0]).await;
    assert_eq!(cmd(&mut on_other, &["SET", "k", "v"]).await.unwrap(), "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_removed_while_down_learns_it_when_it_returns() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let mut extra = Extra::start(4, cluster.resp_addr(leader)).await;
    eventually(SETTLE, || extra.status().voters == vec![1, 2, 3, 4]).await;
    if let Some(node) = extra.running.take() {
        node.stop().await;
    }
    let mut con = cluster.client(leader).await;
    assert_eq!(
        cmd(&mut con, &["RAFT.NODE", "REMOVE", "4"]).await,
        Ok("OK".into())
    );
    let term = cluster.status(leader).term;
    // Back with its old membership, it asks for votes; the leader tells it.
    extra.restart().await;
    eventually(SETTLE, || extra.status().removed).await;
    let mut on_extra = client_at(extra.resp).await;
    assert_eq!(
        cmd(&mut on_extra, &["GET", "k"]).await,
        Err("CLUSTERDOWN removed from the cluster".into())
    );
    assert_eq!(cluster.status(leader).term, term);
    assert_eq!(cluster.status(leader).role, "leader");
    // Restarting with --join must not have asked to add it back.
    let status = cluster.status(leader);
    assert_eq!((status.voters, status.learners), (vec![1, 2, 3], vec![]));
}
