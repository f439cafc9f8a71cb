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
    // room for a restart well inside the lease; a narrow range makes b
    // campaign at a predictable time.
    let mut cluster = ProcessCluster::builder(3)
        .proxied()
        .env("RAFTIS_RAFT__READ_POLICY", "lease")
        .env("RAFTIS_RAFT__ELECTION_TIMEOUT_MIN_MS", "2500")
        .env("RAFTIS_RAFT__ELECTION_TIMEOUT_MAX_MS", "3000")
        .env("RAFTIS_REQUEST_TIMEOUT_MS", "1500")
        .start();
    let leader = cluster.wait_for_leader();
    let others = cluster.ids_except(leader);
    let (a, b) = (others[0], others[1]);
    set(&cluster, leader, "k", "old").expect("SET before the faults");
    // b stops hearing from the leader and, once its own lease on it has run
    // out (3 s) and an election timeout passed, campaigns; a still hears the
    // leader and refuses b.
    cluster.partition(&[leader], &[b]);
    // A protocol timer, not a condition to await (nothing observable marks
    // it): b's lease on the leader must run out while a's is renewed, so
    // that the leader's lease, resting on a alone, outlasts the start of
    // b's campaign.
    std::thread::sleep(Duration::from_millis(3500));
    // Cut off from both, the leader still answers from its lease: a read
    // no heartbeat round could confirm.
    cluster.partition(&[leader], &[a]);
    assert_eq!(
        get(&cluster, leader, "k"),
        Ok(Some("old".to_owned())),
        "the cut-off leader did not answer from its lease"
    );
    // Restart a with no memory of the promise it made a moment ago.
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
            // No leader yet (each try waits up to the request timeout).
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        // A read that fails is no stale read; one that succeeds must see
        // b's write.
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
