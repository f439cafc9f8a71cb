//! Membership changes on real processes: a cluster grown from one node to
//! three and five with `raftis --join` and shrunk back to three with
//! `RAFT.NODE REMOVE`, under a recorded write load whose history must stay
//! linearizable; a killed member replaced (removed first, then a new node
//! with a new id and an empty data dir joins); a removal that would lose
//! the quorum refused; and a join the cluster refuses for good ending the
//! process with an error.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::checker;
use crate::harness::{eventually, free_addrs, raftis_command, ProcessCluster};
use crate::workload::{Workload, WorkloadConfig};

/// Server request timeout in these clusters, and the clients' (longer).
const REQUEST_TIMEOUT_MS: u64 = 3000;
const CLIENT_TIMEOUT: Duration = Duration::from_millis(REQUEST_TIMEOUT_MS + 2000);
/// How long a join, a removal or a recovery may take on a loaded machine.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Writes that must succeed after each change.
const PROGRESS_WRITES: u64 = 5;

fn start_cluster(size: u64) -> ProcessCluster {
    ProcessCluster::builder(size)
        .env("RAFTIS_REQUEST_TIMEOUT_MS", &REQUEST_TIMEOUT_MS.to_string())
        .start()
}

fn workload_config() -> WorkloadConfig {
    WorkloadConfig {
        clients: 4,
        registers: 4,
        counters: 2,
        client_timeout: CLIENT_TIMEOUT,
    }
}

/// `INFO raft` of node `id` as field → value.
fn raft_fields(cluster: &ProcessCluster, id: u64) -> Result<BTreeMap<String, String>, String> {
    let mut con = cluster.try_connect(id).map_err(|e| e.to_string())?;
    let text: String = redis::cmd("INFO")
        .arg("raft")
        .query(&mut con)
        .map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Waits until node `id` reports exactly `voters` (and no learners).
fn wait_for_voters(cluster: &ProcessCluster, id: u64, voters: &[u64]) {
    let expected = voters
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    eventually(
        &format!("node {id} to report voters {expected}"),
        CHANGE_TIMEOUT,
        || {
            let fields = raft_fields(cluster, id)?;
            if fields.get("voters") == Some(&expected)
                && fields.get("learners").is_some_and(String::is_empty)
            {
                Ok(())
            } else {
                Err(format!("{fields:?}"))
            }
        },
    );
}

fn raft_node(cluster: &ProcessCluster, via: u64, args: &[&str]) -> Result<String, String> {
    let mut con = cluster.connect(via);
    let mut cmd = redis::cmd("RAFT.NODE");
    for a in args {
        cmd.arg(*a);
    }
    cmd.query::<String>(&mut con)
        .map_err(|e| match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            _ => e.to_string(),
        })
}

/// Whether the leader, asked through node `via`, sees node `id` as reachable.
fn reachable(cluster: &ProcessCluster, via: u64, id: u64) -> Result<bool, String> {
    let mut con = cluster.try_connect(via).map_err(|e| e.to_string())?;
    let nodes: Vec<Vec<redis::Value>> = redis::cmd("RAFT.NODES")
        .query(&mut con)
        .map_err(|e| e.to_string())?;
    for fields in nodes {
        let pairs: BTreeMap<String, i64> = fields
            .chunks(2)
            .filter_map(|kv| match (&kv[0], &kv[1]) {
                (redis::Value::BulkString(k), redis::Value::Int(v)) => {
                    Some((String::from_utf8_lossy(k).into_owned(), *v))
                }
                _ => None,
            })
            .collect();
        if pairs.get("id") == Some(&i64::try_from(id).unwrap_or(-1)) {
            return Ok(pairs.get("reachable") == Some(&1));
        }
    }
    Err(format!("node {id} is not in RAFT.NODES"))
}

/// Stops the workload and checks what it saw: no error an honest server
/// never gives, and a linearizable history.
fn judge(name: &str, workload: Workload) {
    let report = workload.stop();
    assert!(
        report.unexpected.is_empty(),
        "{name}: errors no honest server gives:\n{}",
        report.unexpected.join("\n")
    );
    let (ok, failed, unknown) = report.outcome_counts();
    assert!(ok > 0, "{name}: no operation succeeded");
    eprintln!(
        "membership {name}: {} operations ({ok} ok, {failed} failed, {unknown} unknown)",
        report.history.ops.len()
    );
    if let Err(violation) = checker::check(&report.history) {
        panic!("{name}: the history is not linearizable:\n{violation}");
    }
}

#[test]
fn grow_from_one_to_five_and_shrink_back_to_three() {
    let mut cluster = start_cluster(1);
    let config = workload_config();
    let workload = Workload::start(&[(1, cluster.addrs(1).resp)], &config);
    workload.wait_for_more_writes(PROGRESS_WRITES, CHANGE_TIMEOUT);

    // Each node joins through the newest member, so joins are forwarded
    // to the leader from followers too.
    for (id, via, voters) in [
        (2, 1, &[1, 2][..]),
        (3, 2, &[1, 2, 3]),
        (4, 1, &[1, 2, 3, 4]),
        (5, 4, &[1, 2, 3, 4, 5]),
    ] {
        cluster.join_node(id, via);
        wait_for_voters(&cluster, id, voters);
        wait_for_voters(&cluster, 1, voters);
        workload.wait_for_more_writes(PROGRESS_WRITES, CHANGE_TIMEOUT);
    }
    let fields = raft_fields(&cluster, 3).unwrap();
    assert_eq!(fields["quorum"], "3");
    assert_eq!(fields["failure_tolerance"], "2");
    assert_eq!(fields["voters_even"], "0");

    // Shrink back: remove 5 through itself and 4 through node 2.
    assert_eq!(raft_node(&cluster, 5, &["REMOVE", "5"]), Ok("OK".into()));
    wait_for_voters(&cluster, 1, &[1, 2, 3, 4]);
    assert_eq!(raft_node(&cluster, 2, &["REMOVE", "4"]), Ok("OK".into()));
    wait_for_voters(&cluster, 1, &[1, 2, 3]);
    for removed in [4, 5] {
        eventually(
            &format!("node {removed} to know it was removed"),
            CHANGE_TIMEOUT,
            || {
                let fields = raft_fields(&cluster, removed)?;
                (fields.get("raft_role").map(String::as_str) == Some("removed"))
                    .then_some(())
                    .ok_or_else(|| format!("{fields:?}"))
            },
        );
        let mut con = cluster.connect(removed);
        let err = redis::cmd("GET")
            .arg("r0")
            .query::<Option<String>>(&mut con)
            .unwrap_err();
        assert_eq!(err.code(), Some("CLUSTERDOWN"), "{err}");
        cluster.forget(removed);
    }
    workload.wait_for_more_writes(PROGRESS_WRITES, CHANGE_TIMEOUT);
    let fields = raft_fields(&cluster, 1).unwrap();
    assert_eq!(fields["quorum"], "2");
    judge("grow and shrink", workload);
}

#[test]
fn a_killed_member_is_replaced() {
    let mut cluster = start_cluster(3);
    let leader = cluster.wait_for_leader();
    let dead = cluster.followers()[0];
    let survivor = *cluster.ids().iter().find(|id| **id != dead).unwrap();
    let config = workload_config();
    let nodes: Vec<_> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != dead)
        .map(|id| (id, cluster.addrs(id).resp))
        .collect();
    let workload = Workload::start(&nodes, &config);
    workload.wait_for_more_writes(PROGRESS_WRITES, CHANGE_TIMEOUT);

    cluster.kill(dead);
    // Remove the dead one first (the two others stay a quorum), then add
    // the replacement with a new id and an empty data dir.
    assert_eq!(
        raft_node(&cluster, survivor, &["REMOVE", &dead.to_string()]),
        Ok("OK".into())
    );
    cluster.forget(dead);
    let mut remaining: Vec<u64> = cluster.ids();
    wait_for_voters(&cluster, leader, &remaining);
    cluster.join_node(4, survivor);
    remaining.push(4);
    wait_for_voters(&cluster, 4, &remaining);
    wait_for_voters(&cluster, leader, &remaining);
    workload.wait_for_more_writes(PROGRESS_WRITES, CHANGE_TIMEOUT);
    judge("replace", workload);
    let mut con = cluster.connect(4);
    let _: () = redis::cmd("SET")
        .arg("on-new")
        .arg("1")
        .query(&mut con)
        .unwrap();
}

#[test]
fn a_removal_that_would_lose_the_quorum_is_refused() {
    let mut cluster = start_cluster(3);
    let leader = cluster.wait_for_leader();
    let followers = cluster.followers();
    let (down, other) = (followers[0], followers[1]);
    cluster.kill(down);
    eventually(
        &format!("the leader to see node {down} unreachable"),
        CHANGE_TIMEOUT,
        || match reachable(&cluster, leader, down)? {
            false => Ok(()),
            true => Err("still reachable".to_owned()),
        },
    );
    assert_eq!(
        raft_node(&cluster, other, &["REMOVE", &other.to_string()]),
        Err(format!(
            "ERR refused: removing node {other} would leave 1 of 2 voters reachable, below the quorum of 2"
        ))
    );
    let mut voters = vec![1, 2, 3];
    voters.sort_unstable();
    wait_for_voters(&cluster, leader, &voters);
    // Still writable with two of three.
    let mut con = cluster.connect(other);
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
}

#[test]
fn a_join_with_a_taken_id_ends_the_process() {
    let cluster = start_cluster(1);
    let member = cluster.addrs(1).resp.to_string();
    let dir = tempfile::tempdir().unwrap();
    let free: Vec<String> = free_addrs(3).iter().map(ToString::to_string).collect();
    let mut cmd = raftis_command();
    cmd.args(["--id", "1", "--listen", &free[0], "--peer-listen", &free[1]])
        .args(["--http-listen", &free[2], "--join", &member])
        .arg("--data-dir")
        .arg(dir.path());
    let out = crate::tools::run(cmd, None, CHANGE_TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let expected = format!(
        "raftis: cannot start the cluster layer: joining the cluster: cannot join the \
         cluster through {member}: ERR node 1 is already a member with peer address {}",
        cluster.addrs(1).peer
    );
    assert!(
        out.stderr.lines().any(|l| l == expected),
        "no line {expected:?} in: {out}"
    );
    // The cluster did not change.
    wait_for_voters(&cluster, 1, &[1]);
}

#[test]
fn a_voter_that_lost_its_data_cannot_join_again_under_its_old_id() {
    let mut cluster = start_cluster(3);
    let leader = cluster.wait_for_leader();
    let lost = cluster.followers()[0];
    let via = cluster.addrs(leader).resp.to_string();
    let addrs = cluster.addrs(lost);
    cluster.kill(lost);
    // Its disk is gone: same id and addresses, an empty data dir, --join.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = raftis_command();
    cmd.args(["--id", &lost.to_string()])
        .args(["--listen", &addrs.resp.to_string()])
        .args(["--peer-listen", &addrs.peer.to_string()])
        .args(["--http-listen", &addrs.http.to_string(), "--join", &via])
        .arg("--data-dir")
        .arg(dir.path());
    let out = crate::tools::run(cmd, None, CHANGE_TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let expected = format!(
        "ERR node {lost} is already a voter; if its data dir was lost, remove it first \
         (RAFT.NODE REMOVE {lost}) and add it again under a new id"
    );
    assert!(
        out.stderr.lines().any(|l| l.ends_with(&expected)),
        "no line ending {expected:?} in: {out}"
    );
}
