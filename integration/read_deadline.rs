//! Linearizable reads on a follower whose read-index requests to the leader
//! hang: the follower still hears the leader (its heartbeats pass), but
//! nothing it sends the leader arrives. Reads share rounds (one request to
//! the leader for all the reads waiting), so a read may wait behind a round
//! that began before it; each must still be answered by its own deadline.

use std::thread;
use std::time::{Duration, Instant};

use crate::harness::ProcessCluster;
use crate::proxy::LinkMode;

#[test]
fn reads_behind_a_hanging_round_are_answered_by_their_own_deadline() {
    let timeout = Duration::from_secs(3);
    let cluster = ProcessCluster::builder(3)
        .proxied()
        .env("RAFTIS_REQUEST_TIMEOUT_MS", "3000")
        .start();
    let leader = cluster.wait_for_leader();
    let follower = cluster.ids_except(leader)[0];
    // A write through the follower: its channel to the leader is up and
    // the key exists, so only the blackhole below can fail the reads.
    let mut con = cluster.connect(follower);
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut con)
        .unwrap();
    cluster.set_link(follower, leader, LinkMode::Blackhole);

    // Three waves a third of the timeout apart: the first starts a round
    // that hangs; the later ones wait behind it, and reads whose round
    // failed retry while a later read's round runs. Each read's own timer
    // bounds its wait. A change that bounded waiting reads only by their
    // round (one timer per round, at the earliest deadline among its reads)
    // answered a first-wave read after 5 s here: retrying with a moment
    // left, it joined behind a round a third-wave read had started
    // (benches/RESULTS.md, ninth session).
    let mut readers = Vec::new();
    for wave in 0..3 {
        for _ in 0..4 {
            let mut con = cluster.connect(follower);
            // Bounds the test should a read never be answered.
            con.set_read_timeout(Some(timeout * 4)).unwrap();
            readers.push(thread::spawn(move || {
                let started = Instant::now();
                let r: redis::RedisResult<Option<String>> =
                    redis::cmd("GET").arg("k").query(&mut con);
                (wave, r, started.elapsed())
            }));
        }
        thread::sleep(timeout / 3);
    }
    for reader in readers {
        let (wave, r, took) = reader.join().unwrap();
        let err = r.expect_err("no read index can reach the leader");
        assert_eq!(err.code(), Some("CLUSTERDOWN"), "wave {wave}: {err}");
        assert!(
            took < timeout * 3 / 2,
            "wave {wave}: answered after {took:?} (request timeout {timeout:?})"
        );
    }
    cluster.heal();
}
