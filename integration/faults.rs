//! Process-level faults that only real processes show: SIGKILL (no shutdown
//! code runs, nothing is flushed that was not already on disk) and restarts
//! from the data dir the crash left.
//!
//! The property checked is the contract's: a write acknowledged with `+OK`
//! is never lost. A writer thread writes unique keys through one node and
//! records which writes were acknowledged; whatever the faults, every
//! acknowledged key must afterwards be readable, with its value, on every
//! running node (reads are linearizable on every node, so no wait for
//! replication is needed). Writes that failed (`CLUSTERDOWN`, `TIMEOUT`, a
//! dropped connection) may or may not have been applied and are not checked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::harness::{connect, eventually, ProcessCluster, ELECTION_TIMEOUT};

/// What a [`Writer`] saw.
struct WriterReport {
    /// Acknowledged writes, key → value.
    acked: BTreeMap<String, String>,
    /// Failed writes by kind (error code, or "connection").
    failures: BTreeMap<String, usize>,
}

/// A client writing `prefix:N = vN` through one node, one write at a time,
/// reconnecting when the connection breaks, until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    handle: JoinHandle<WriterReport>,
}

impl Writer {
    fn start(addr: SocketAddr, prefix: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let prefix = prefix.to_owned();
        let handle = std::thread::spawn({
            let (stop, acked_count) = (stop.clone(), acked.clone());
            move || {
                let mut report = WriterReport {
                    acked: BTreeMap::new(),
                    failures: BTreeMap::new(),
                };
                let mut con = None;
                let mut next = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let c = match &mut con {
                        Some(c) => c,
                        None => match connect(addr) {
                            Ok(c) => con.insert(c),
                            Err(_) => {
                                *report.failures.entry("connect".into()).or_default() += 1;
                                // The node is down; back off briefly instead
                                // of spinning on refused connections.
                                std::thread::sleep(Duration::from_millis(50));
                                continue;
                            }
                        },
                    };
                    let (key, value) = (format!("{prefix}:{next}"), format!("v{next}"));
                    next += 1;
                    match redis::cmd("SET").arg(&key).arg(&value).query::<String>(c) {
                        Ok(reply) => {
                            assert_eq!(reply, "OK", "SET {key}");
                            report.acked.insert(key, value);
                            acked_count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            let kind = e.code().unwrap_or("connection").to_owned();
                            *report.failures.entry(kind).or_default() += 1;
                            // An error reply leaves the connection usable;
                            // anything else may leave it mid-reply.
                            if e.code().is_none() {
                                con = None;
                            }
                        }
                    }
                }
                report
            }
        });
        Writer {
            stop,
            acked,
            handle,
        }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` writes were acknowledged in all.
    fn wait_for_acks(&self, n: usize, timeout: Duration) {
        eventually(&format!("{n} acknowledged writes"), timeout, || {
            let acked = self.acked();
            if acked >= n {
                Ok(())
            } else if self.handle.is_finished() {
                Err("the writer thread ended (panicked?)".to_owned())
            } else {
                Err(format!("{acked} so far"))
            }
        });
    }

    fn stop(self) -> WriterReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("writer thread panicked")
    }
}

/// Asserts that every acknowledged write reads back on node `id`.
fn assert_all_readable(cluster: &ProcessCluster, id: u64, acked: &BTreeMap<String, String>) {
    let mut con = cluster.connect(id);
    let entries: Vec<(&String, &String)> = acked.iter().collect();
    for chunk in entries.chunks(500) {
        let keys: Vec<&String> = chunk.iter().map(|(k, _)| *k).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query(&mut con)
            .unwrap_or_else(|e| panic!("MGET on node {id}: {e}"));
        for ((key, expected), actual) in chunk.iter().zip(values) {
            assert_eq!(
                actual.as_deref(),
                Some(expected.as_str()),
                "acknowledged write {key} on node {id} (of {} acknowledged)",
                acked.len()
            );
        }
    }
}

#[test]
fn leader_sigkill_during_writes_loses_no_acknowledged_write() {
    let mut cluster = ProcessCluster::start(3);
    let old_leader = cluster.leader();
    let old_term = cluster.raft_info(old_leader).expect("INFO raft").term;
    let through = cluster.followers()[0];
    let writer = Writer::start(cluster.addrs(through).resp, "failover");

    writer.wait_for_acks(50, Duration::from_secs(30));
    cluster.kill(old_leader);
    let at_kill = writer.acked();
    // Writes through the surviving follower succeed again once the other
    // two elect a leader: the writer must make progress past the kill.
    writer.wait_for_acks(at_kill + 50, ELECTION_TIMEOUT + Duration::from_secs(30));
    let report = writer.stop();

    let new_leader = cluster.wait_for_leader();
    assert_ne!(new_leader, old_leader, "the killed node cannot lead");
    let new_term = cluster.raft_info(new_leader).expect("INFO raft").term;
    assert!(
        new_term > old_term,
        "a new leader means a new term: {old_term} → {new_term}"
    );
    eprintln!(
        "{} writes acknowledged ({at_kill} before the kill); failures: {:?}",
        report.acked.len(),
        report.failures
    );
    for id in cluster.running() {
        assert_all_readable(&cluster, id, &report.acked);
    }
    // The old leader may hold entries it appended but never committed; back
    // as a follower, it must replace them with the new leader's log.
    cluster.restart(old_leader);
    cluster.wait_for_leader();
    assert_all_readable(&cluster, old_leader, &report.acked);
    // Only "not applied" and "outcome unknown" errors are honest answers
    // to a write during a failover; the node written through stayed up, so
    // it must not have dropped the connection or left a request unanswered.
    for kind in report.failures.keys() {
        assert!(
            ["CLUSTERDOWN", "TIMEOUT"].contains(&kind.as_str()),
            "unexpected error kind {kind} during failover: {:?}",
            report.failures
        );
    }
}

#[test]
fn sigkill_of_every_node_loses_no_acknowledged_write() {
    let mut cluster = ProcessCluster::start(3);
    let through = cluster.followers()[0];
    let writer = Writer::start(cluster.addrs(through).resp, "crash");

    writer.wait_for_acks(100, Duration::from_secs(30));
    // Mid-stream: writes are in flight on every node when they all die.
    cluster.kill_all();
    let report = writer.stop();
    eprintln!(
        "{} writes acknowledged before the crash; failures: {:?}",
        report.acked.len(),
        report.failures
    );

    cluster.restart_all();
    cluster.wait_for_leader();
    for id in cluster.ids() {
        assert_all_readable(&cluster, id, &report.acked);
    }
    // The restarted cluster takes writes again.
    let mut con = cluster.connect(through);
    let reply: String = redis::cmd("SET")
        .arg("after-restart")
        .arg("1")
        .query(&mut con)
        .unwrap();
    assert_eq!(reply, "OK");
}

/// Kills a follower, writes `keys` keys while it is down, restarts it, and
/// checks that it catches up: its applied index reaches the leader's commit
/// index, its local state (read with READONLY, no read index) has every
/// key, and it serves writes again. With `after_purge`, it is restarted
/// only once the leader has purged log entries it lacks. Returns its id.
fn follower_catches_up(cluster: &mut ProcessCluster, keys: usize, after_purge: bool) -> u64 {
    let leader = cluster.leader();
    let followers = cluster.followers();
    let (down, through) = (followers[0], followers[1]);
    let known_to_down = cluster.raft_info(leader).expect("INFO raft").commit_index;
    cluster.kill(down);

    let mut con = cluster.connect(through);
    let mut written = BTreeMap::new();
    // One request at a time: raftis proposes a pipelined batch as one log
    // entry, and the snapshot variant needs many entries.
    for i in 0..keys {
        let (key, value) = (format!("lag:{i}"), format!("v{i}"));
        let reply: String = redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .query(&mut con)
            .unwrap_or_else(|e| panic!("SET {key} with node {down} down: {e}"));
        assert_eq!(reply, "OK");
        written.insert(key, value);
    }
    assert_eq!(
        cluster.leader(),
        leader,
        "the leader changed during the test"
    );
    let commit = cluster.raft_info(leader).expect("INFO raft").commit_index;
    if after_purge {
        wait_for_purge(cluster, leader, known_to_down + 1);
    }

    cluster.restart(down);
    eventually(
        &format!("node {down} to apply up to {commit}"),
        Duration::from_secs(30),
        || {
            let applied = cluster.raft_info(down)?.last_applied;
            (applied >= commit)
                .then_some(())
                .ok_or(format!("last_applied {applied}"))
        },
    );
    let mut local = cluster.connect(down);
    let _: () = redis::cmd("READONLY").query(&mut local).unwrap();
    let keys: Vec<&String> = written.keys().collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut local).unwrap();
    let expected: Vec<Option<String>> = written.values().cloned().map(Some).collect();
    assert_eq!(
        values, expected,
        "node {down}'s local state after catching up"
    );

    // A full member again: it forwards a write and reads it back.
    let mut con = cluster.connect(down);
    let reply: String = redis::cmd("SET")
        .arg("rejoined")
        .arg("yes")
        .query(&mut con)
        .unwrap();
    assert_eq!(reply, "OK");
    for id in cluster.ids() {
        let value: String = redis::cmd("GET")
            .arg("rejoined")
            .query(&mut cluster.connect(id))
            .unwrap();
        assert_eq!(value, "yes", "rejoined on node {id}");
    }
    down
}

/// Waits until the leader has purged its log past index `past`.
///
/// openraft purges behind a snapshot only when no replication stream uses
/// the entries, and the stream to a dead follower pins them until it fails
/// and resets, a moment after the last write; `INFO raft` shows the purged
/// index.
fn wait_for_purge(cluster: &ProcessCluster, leader: u64, past: u64) {
    eventually(
        &format!("node {leader} to purge its log past index {past}"),
        Duration::from_secs(20),
        || {
            let purged = cluster.raft_info(leader)?.purged_index;
            (purged > past)
                .then_some(())
                .ok_or(format!("purged up to {purged}"))
        },
    );
}

#[test]
fn killed_follower_restarts_from_its_data_dir_and_catches_up() {
    let mut cluster = ProcessCluster::start(3);
    follower_catches_up(&mut cluster, 200, false);
}

#[test]
fn killed_follower_catches_up_by_snapshot() {
    // Snapshot every 50 entries and keep no log behind it: by the end of
    // the 200 writes the entries the follower missed are purged, so only a
    // snapshot can catch it up.
    let mut cluster = ProcessCluster::builder(3)
        .env("RAFTIS_RAFT__SNAPSHOT_LOGS_SINCE_LAST", "50")
        .env("RAFTIS_RAFT__MAX_IN_SNAPSHOT_LOG_TO_KEEP", "0")
        .start();
    let down = follower_catches_up(&mut cluster, 200, true);
    // The outcome above does not show which path caught the node up; its
    // log does (state_machine.rs logs each installed snapshot).
    let log = cluster.log(down);
    let since_restart = log.rsplit("==== harness: start #").next().unwrap_or("");
    assert!(
        since_restart.contains("snapshot installed"),
        "node {down} caught up without installing a snapshot; the test no longer \
         exercises the snapshot path (or the log message changed)"
    );
}
