//! Cluster behaviour with every node in this process: writes through a
//! follower, leader loss, restart from disk, catch-up by snapshot, loss of
//! quorum, and replicated expiry. Nodes listen on port 0 (peer ports are
//! re-bound on restart, so a restarted node keeps its address), and clients
//! are the `redis` crate.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, NodeTuning};
use raftis::config::ReadPolicy;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_through_follower_reads_on_every_node() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers(leader)[0];
    let mut con = cluster.client(follower).await;
    let reply: String = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(reply, "OK");
    let n: i64 = redis::cmd("INCR")
        .arg("n")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(n, 1);
    for id in cluster.ids() {
        let mut c = cluster.client(id).await;
        let v: Option<String> = redis::cmd("GET")
            .arg("k")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("v"), "node {id}");
        let n: i64 = redis::cmd("GET")
            .arg("n")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(n, 1, "node {id}");
    }
}

/// Reads on every node, running all the time while a counter climbs, each
/// see at least the last value acknowledged before the read was sent: reads
/// join read-index rounds already in flight (on their own node, and
/// followers' requests on the leader), and each must still get an index
/// taken after it was asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_on_every_node_during_writes_see_each_acknowledged_write() {
    reads_during_writes_see_each_acknowledged_write(ReadPolicy::ReadIndex).await;
}

/// The same with lease reads: the leader answers from its lease, and
/// followers' read-index requests too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_reads_on_every_node_during_writes_see_each_acknowledged_write() {
    reads_during_writes_see_each_acknowledged_write(ReadPolicy::Lease).await;
}

async fn reads_during_writes_see_each_acknowledged_write(read_policy: ReadPolicy) {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;

    let tuning = NodeTuning {
        read_policy,
        ..NodeTuning::default()
    };
    let cluster = Cluster::start(3, tuning).await;
    let leader = cluster.wait_for_leader().await;
    let acked = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for id in cluster.ids() {
        for _ in 0..3 {
            let mut con = cluster.client(id).await;
            let (acked, done) = (acked.clone(), done.clone());
            readers.push(tokio::spawn(async move {
                let mut reads = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let floor = acked.load(Ordering::SeqCst);
                    let got: Option<i64> = redis::cmd("GET")
                        .arg("counter")
                        .query_async(&mut con)
                        .await
                        .unwrap();
                    let got = got.unwrap_or(0);
                    assert!(
                        got >= floor,
                        "node {id} read {got} after {floor} was acknowledged"
                    );
                    reads += 1;
                }
                reads
            }));
        }
    }
    let mut writer = cluster.client(leader).await;
    for _ in 0..300 {
        let n: i64 = redis::cmd("INCR")
            .arg("counter")
            .query_async(&mut writer)
            .await
            .unwrap();
        acked.store(n, Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        let reads = reader.await.unwrap();
        assert!(reads > 0, "a reader made no read");
    }
}

/// A lease node that restarts may have backed the leader's lease just
/// before, and its promise not to vote for anyone else was lost with its
/// memory: it must neither vote nor campaign until any lease it backed has
/// run out (`election_timeout_max_ms` after its start), so no new leader
/// may appear sooner. One follower restarts after the leader stopped, so it
/// never hears from it again: the other, which kept running, campaigns
/// within its election timeout and must be refused the restarted one's
/// vote, and the restarted one must not campaign itself (openraft alone
/// would let either win well within the lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_lease_nodes_withhold_their_votes_for_a_lease_length() {
    // Long against the 300 ms minimum election timeout: without the
    // hold-off, a leader would be elected well within it.
    const LEASE_MS: u64 = 3000;
    let tuning = NodeTuning {
        read_policy: ReadPolicy::Lease,
        ..NodeTuning::default()
    };
    let mut cluster = Cluster::start(3, tuning).await;
    let leader = cluster.wait_for_leader().await;
    let restarting = cluster.followers(leader)[0];
    cluster.config_mut(restarting).raft.election_timeout_max_ms = LEASE_MS;
    cluster.stop(restarting).await;
    cluster.stop(leader).await;
    let restarted = Instant::now();
    cluster.restart(restarting).await;
    let new_leader = cluster.wait_for_leader().await;
    let elapsed = restarted.elapsed();
    assert_ne!(new_leader, leader);
    assert!(
        elapsed >= Duration::from_millis(LEASE_MS),
        "node {new_leader} was elected {elapsed:?} after the restart, within the \
         {LEASE_MS} ms lease the restarted node may have backed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_loss_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let mut acked = Vec::new();
    {
        let mut con = cluster.client(cluster.followers(leader)[0]).await;
        for i in 0..50 {
            let r: redis::RedisResult<String> = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(i)
                .query_async(&mut con)
                .await;
            if r.is_ok() {
                acked.push(i);
            }
        }
    }
    assert_eq!(acked.len(), 50, "all writes before the fault succeed");
    cluster.stop(leader).await;
    let survivor = cluster.running()[0];
    let mut con = cluster.client(survivor).await;
    for i in 50..100 {
        let r: redis::RedisResult<String> = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query_async(&mut con)
            .await;
        match r {
            Ok(_) => acked.push(i),
            Err(e) => {
                let code = e.code().unwrap_or("");
                assert!(
                    code == "TIMEOUT" || code == "CLUSTERDOWN",
                    "unexpected error {e}"
                );
            }
        }
    }
    assert!(
        acked.len() >= 90,
        "writes continue after the election: {} acked",
        acked.len()
    );
    for id in cluster.running() {
        let mut c = cluster.client(id).await;
        for i in &acked {
            let v: Option<i64> = redis::cmd("GET")
                .arg(format!("k{i}"))
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(v, Some(*i), "node {id} key k{i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_node_rejoins_from_its_data_dir() {
    let mut cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers(leader)[0];
    let mut con = cluster.client(leader).await;
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query_async(&mut con)
        .await
        .unwrap();
    cluster.stop(follower).await;
    let _: () = redis::cmd("SET")
        .arg("during")
        .arg("2")
        .query_async(&mut con)
        .await
        .unwrap();
    cluster.restart(follower).await;
    let mut c = cluster.client(follower).await;
    let v: Option<String> = redis::cmd("GET")
        .arg("before")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("1"));
    let v: Option<String> = redis::cmd("GET")
        .arg("during")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_node_is_caught_up_by_snapshot() {
    let tuning = NodeTuning {
        snapshot_logs_since_last: 20,
        max_in_snapshot_log_to_keep: 0,
        ..NodeTuning::default()
    };
    let mut cluster = Cluster::start(3, tuning).await;
    let leader = cluster.wait_for_leader().await;
    let lagging = cluster.followers(leader)[0];
    let lagging_last = cluster.status(lagging).last_log_index;
    cluster.stop(lagging).await;
    let mut con = cluster.client(leader).await;
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    // The leader has snapshotted and purged past everything the lagging
    // node has, so only a snapshot can catch it up.
    common::eventually(Duration::from_secs(15), || {
        cluster.status(leader).purged_index > lagging_last
    })
    .await;
    cluster.restart(lagging).await;
    let mut c = cluster.client(lagging).await;
    for i in [0, 99, 199] {
        let v: Option<i64> = redis::cmd("GET")
            .arg(format!("key:{i}"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v, Some(i));
    }
    assert!(
        cluster.status(lagging).snapshot_index > lagging_last,
        "caught up through a snapshot"
    );
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(n, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_quorum_is_reported_and_service_returns() {
    let tuning = NodeTuning {
        request_timeout_ms: 1500,
        ..NodeTuning::default()
    };
    let mut cluster = Cluster::start(3, tuning).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    cluster.stop(followers[0]).await;
    cluster.stop(followers[1]).await;
    let mut con = cluster.client(leader).await;
    let started = std::time::Instant::now();
    let r: redis::RedisResult<String> = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await;
    let err = r.expect_err("a write without quorum must fail");
    let code = err.code().unwrap_or("").to_string();
    assert!(code == "CLUSTERDOWN" || code == "TIMEOUT", "got {err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the request timeout"
    );
    let r: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg("k").query_async(&mut con).await;
    assert_eq!(
        r.expect_err("no linearizable read without quorum").code(),
        Some("CLUSTERDOWN")
    );

    cluster.restart(followers[0]).await;
    cluster.restart(followers[1]).await;
    let leader = cluster.wait_for_leader().await;
    let mut con = cluster.client(leader).await;
    let reply: String = redis::cmd("SET")
        .arg("k2")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(reply, "OK");
}

/// Reads that share read-index rounds on a leader that lost its quorum:
/// each must fail with CLUSTERDOWN by its own deadline, whether it started
/// a round, waited for one, or retried after a failed one. Here the rounds
/// fail fast (the followers refuse connections); rounds that hang, on a
/// follower whose requests never reach the leader, are
/// `integration/read_deadline.rs`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_reads_without_quorum_each_fail_within_the_request_timeout() {
    let timeout = Duration::from_secs(3);
    let tuning = NodeTuning {
        request_timeout_ms: 3000,
        ..NodeTuning::default()
    };
    let mut cluster = Cluster::start(3, tuning).await;
    let leader = cluster.wait_for_leader().await;
    for follower in cluster.followers(leader) {
        cluster.stop(follower).await;
    }
    let mut reads = tokio::task::JoinSet::new();
    // Three waves, a third of the timeout apart: later waves join rounds
    // that earlier reads started and that cannot end in success.
    for wave in 0..3 {
        for _ in 0..8 {
            let mut con = cluster.client(leader).await;
            reads.spawn(async move {
                let started = Instant::now();
                let r: redis::RedisResult<Option<String>> =
                    redis::cmd("GET").arg("k").query_async(&mut con).await;
                (wave, r, started.elapsed())
            });
        }
        tokio::time::sleep(timeout / 3).await;
    }
    while let Some(read) = reads.join_next().await {
        let (wave, r, took) = read.unwrap();
        let err = r.expect_err("no linearizable read without quorum");
        assert_eq!(err.code(), Some("CLUSTERDOWN"), "wave {wave}: {err}");
        // Half a timeout of slack for a loaded machine.
        assert!(
            took < timeout * 3 / 2,
            "wave {wave}: answered after {took:?} (request timeout {timeout:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttl_expires_on_every_node() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let mut con = cluster.client(cluster.followers(leader)[0]).await;
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(300)
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("long")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("short")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 300, "pttl {ttl}");
    for id in cluster.ids() {
        let mut c = cluster.client(id).await;
        common::eventually_async(Duration::from_secs(5), || {
            let mut c = c.clone();
            async move {
                let v: Option<String> = redis::cmd("GET")
                    .arg("short")
                    .query_async(&mut c)
                    .await
                    .unwrap();
                v.is_none()
            }
        })
        .await;
        let v: Option<String> = redis::cmd("GET")
            .arg("long")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("v"));
    }
    // The leader proposed the deletion: the key is gone from every store,
    // not just hidden by each node's clock.
    common::eventually(Duration::from_secs(5), || {
        cluster.ids().iter().all(|id| cluster.key_count(*id) == 1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_writes_through_a_follower_apply_in_order() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let mut con = cluster.client(cluster.followers(leader)[0]).await;
    let mut pipe = redis::pipe();
    for i in 0..50 {
        pipe.cmd("SET").arg("k").arg(i).ignore();
        pipe.cmd("APPEND").arg("log").arg(format!("{i},")).ignore();
    }
    pipe.cmd("INCR")
        .arg("k")
        .cmd("INCR")
        .arg("notanumber-free")
        .cmd("GET")
        .arg("k");
    let (k, fresh, read): (i64, i64, i64) = pipe.query_async(&mut con).await.unwrap();
    assert_eq!((k, fresh, read), (50, 1, 50));
    let expected: String = (0..50).map(|i| format!("{i},")).collect();
    for id in cluster.ids() {
        let mut c = cluster.client(id).await;
        let log: String = redis::cmd("GET")
            .arg("log")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(log, expected, "node {id}");
    }
}

/// Writes proposed together on the leader share log entries (the proposer
/// combines them), and each writer still gets its own result, in the order
/// the writes were made; a connection's pipelined group inside a combined
/// entry keeps its shape. One runtime thread, so every write below is
/// queued before the proposer runs and the combining is certain.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_writes_share_entries_and_each_gets_its_own_result() {
    use bytes::Bytes;
    use raftis::cluster::op::{Op, OpResult};

    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let api = cluster.api(leader);
    let incr = || Op::IncrBy {
        key: Bytes::from_static(b"shared"),
        delta: 1,
    };
    // Settle: the leader's first entries are behind us.
    api.write(incr()).await.unwrap();
    api.write(Op::Append {
        key: Bytes::from_static(b"text"),
        value: Bytes::from_static(b"abc"),
    })
    .await
    .unwrap();
    let before = cluster.status(leader).last_log_index;

    const WRITERS: i64 = 200;
    const FAILING: i64 = 50;
    let writes = (0..WRITERS).map(|i| {
        let op = incr();
        Box::pin(async move {
            if i == FAILING {
                // An error result of one write leaves the others alone.
                let op = Op::IncrBy {
                    key: Bytes::from_static(b"text"),
                    delta: 1,
                };
                vec![api.write(op).await.unwrap()]
            } else if i % 10 == 9 {
                // A connection's pipelined pair: one result per op.
                let key = Bytes::from(format!("own-{i}"));
                api.write_batch(vec![
                    op,
                    Op::Append {
                        key,
                        value: Bytes::from_static(b"x"),
                    },
                ])
                .await
                .unwrap()
            } else {
                vec![api.write(op).await.unwrap()]
            }
        })
    });
    let results = futures::future::join_all(writes).await;

    match &results[FAILING as usize][..] {
        [OpResult::Error(e)] => assert!(e.starts_with("ERR value is not an integer"), "{e}"),
        other => panic!("INCR of a string answered {other:?}"),
    }
    let counter: Vec<i64> = results
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != FAILING as usize)
        .map(|(_, r)| match r[0] {
            OpResult::Integer(n) => n,
            ref other => panic!("INCR answered {other:?}"),
        })
        .collect();
    assert_eq!(
        counter,
        (2..WRITERS + 1).collect::<Vec<_>>(),
        "in write order"
    );
    for (i, r) in results.iter().enumerate() {
        if i % 10 == 9 {
            assert_eq!(r.len(), 2);
            assert_eq!(r[1], OpResult::Integer(1), "APPEND of writer {i}");
        } else {
            assert_eq!(r.len(), 1);
        }
    }
    let entries = cluster.status(leader).last_log_index - before;
    assert!(
        entries < 10,
        "{WRITERS} writes made {entries} entries: they were not combined"
    );
}
