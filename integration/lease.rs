//! Lease reads (`raft.read_policy = "lease"`): the fault that breaks a
//! leader lease unless a restarted node waits before it votes.
//!
//! A lease rests on the followers' promise not to vote for anyone else
//! while they hear from the leader. That promise lives in memory: a
//! follower killed and restarted has forgotten it, and if it voted at once
//! a new leader could commit writes while the old one still answers reads
//! from a lease that follower backed a moment before its crash.

use std::time::{Duration, Instant};

use crate::harness::ProcessCluster;

fn set(cluster: &ProcessCluster, id: u64, key: &str, value: &str) -> Result<(), String> {
    let mut con = cluster.try_connect(id).map_err(|e| e.to_string())?;
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(&mut con)
        .map_err(|e| e.to_string())
}

fn get(cluster: &ProcessCluster, id: u64, key: &str) -> Result<Option<String>, String> {
    let mut con = cluster.try_connect(id).map_err(|e| e.to_string())?;
    redis::cmd("GET")
        .arg(key)
        .query(&mut con)
        .map_err(|e| e.to_string())
}

#[test]
fn a_restarted_node_does_not_vote_while_a_lease_it_backed_may_last() {
    // Long election timeouts (the lease lasts the longest one, 3 s) leave
    // room for a restart well inside the lease.
    let mut cluster = ProcessCluster::builder(3)
        .proxied()
        .env("RAFTIS_RAFT__READ_POLICY", "lease")
        .env("RAFTIS_RAFT__ELECTION_TIMEOUT_MIN_MS", "1000")
        .env("RAFTIS_RAFT__ELECTION_TIMEOUT_MAX_MS", "3000")
        .env("RAFTIS_REQUEST_TIMEOUT_MS", "1500")
        .start();
    let leader = cluster.wait_for_leader();
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (a, b) = (others[0], others[1]);
    set(&cluster, leader, "k", "old").expect("SET before the faults");
    // b stops hearing from the leader and, once its own lease on it has run
    // out (3 s), campaigns; a still hears the leader and refuses b.
    cluster.partition(&[leader], &[b]);
    // A protocol timer, not a condition to await: b's lease must expire.
    std::thread::sleep(Duration::from_millis(3500));
    // Now the leader's lease rests on a alone. Cut a off and restart it with
    // no memory of the promise it made a moment ago.
    cluster.partition(&[leader], &[a]);
    cluster.kill(a);
    cluster.restart(a);
    // b wins once a votes for it. Each write b acknowledges must be seen by
    // every later read, also one sent to the old leader, which must not
    // answer from a lease a could have broken.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut stale_checks = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "b never took writes after a restarted"
        );
        if set(&cluster, b, "k", "new").is_err() {
            continue;
        }
        if let Ok(Some(value)) = get(&cluster, leader, "k") {
            assert_eq!(
                value, "new",
                "the cut-off old leader answered from its lease after b's write was acknowledged"
            );
        }
        stale_checks += 1;
        if stale_checks == 3 {
            break;
        }
    }
    cluster.heal();
}
