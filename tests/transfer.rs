//! Leader transfer and graceful shutdown with every node in this process:
//! `RAFT.TRANSFER_LEADER` to a named node, to any node, from a follower, its
//! refusals, and `SHUTDOWN` on the leader handing leadership over while a
//! client on another node keeps writing without an error.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, eventually_async, Cluster, NodeTuning};

const SETTLE: Duration = Duration::from_secs(15);

async fn transfer(
    con: &mut redis::aio::MultiplexedConnection,
    target: Option<u64>,
) -> redis::RedisResult<String> {
    let mut cmd = redis::cmd("RAFT.TRANSFER_LEADER");
    if let Some(target) = target {
        cmd.arg(target);
    }
    cmd.query_async(con).await
}

/// The error text of a refused command (code and detail, as on the wire).
fn error_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => e.to_string(),
    }
}

/// Waits until every running node follows `expected`.
async fn wait_for_leader_to_be(cluster: &Cluster, expected: u64) {
    eventually(SETTLE, || {
        cluster
            .running()
            .iter()
            .all(|id| cluster.status(*id).leader_id == Some(expected))
            && cluster.status(expected).role == "leader"
    })
    .await;
}

async fn write_ok(cluster: &Cluster, via: u64, key: &str) {
    let mut con = cluster.client(via).await;
    let reply: String = redis::cmd("SET")
        .arg(key)
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap_or_else(|e| panic!("SET {key} via node {via}: {e}"));
    assert_eq!(reply, "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_to_a_named_follower() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let target = cluster.followers(leader)[0];
    let term = cluster.status(leader).term;
    let mut con = cluster.client(leader).await;
    assert_eq!(transfer(&mut con, Some(target)).await.unwrap(), "OK");
    // The reply comes once the old leader follows the new one.
    assert_eq!(cluster.status(leader).leader_id, Some(target));
    wait_for_leader_to_be(&cluster, target).await;
    assert!(cluster.status(target).term > term);
    write_ok(&cluster, leader, "after-transfer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_to_any_voter() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let mut con = cluster.client(leader).await;
    assert_eq!(transfer(&mut con, None).await.unwrap(), "OK");
    let new_leader = cluster.status(leader).leader_id.expect("a new leader");
    assert_ne!(new_leader, leader);
    wait_for_leader_to_be(&cluster, new_leader).await;
    write_ok(&cluster, leader, "after-transfer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_asked_of_a_follower_runs_on_the_leader() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    let (asked, target) = (followers[0], followers[1]);
    let mut con = cluster.client(asked).await;
    assert_eq!(transfer(&mut con, Some(target)).await.unwrap(), "OK");
    wait_for_leader_to_be(&cluster, target).await;

    // And with no target, from a follower again: anyone but the leader.
    let follower = cluster.followers(target)[0];
    let mut con = cluster.client(follower).await;
    assert_eq!(transfer(&mut con, None).await.unwrap(), "OK");
    let leader = cluster.wait_for_leader().await;
    assert_ne!(leader, target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_refusals() {
    let mut cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers(leader)[0];
    let mut con = cluster.client(follower).await;

    let refused = |r: redis::RedisResult<String>| error_text(&r.expect_err("refused"));
    assert_eq!(
        refused(transfer(&mut con, Some(9)).await),
        "ERR unknown node 9"
    );
    let invalid: redis::RedisResult<String> = redis::cmd("RAFT.TRANSFER_LEADER")
        .arg("two")
        .query_async(&mut con)
        .await;
    assert_eq!(refused(invalid), "ERR invalid target node id");
    let arity: redis::RedisResult<String> = redis::cmd("RAFT.TRANSFER_LEADER")
        .arg(1)
        .arg(2)
        .query_async(&mut con)
        .await;
    assert_eq!(
        refused(arity),
        "ERR wrong number of arguments for 'raft.transfer_leader' command"
    );

    // Naming the leader is accepted and changes nothing (etcd's move-leader).
    let term = cluster.status(leader).term;
    assert_eq!(transfer(&mut con, Some(leader)).await.unwrap(), "OK");
    assert_eq!(cluster.status(leader).role, "leader");
    assert_eq!(cluster.status(leader).term, term);

    // A stopped voter is refused before anything changes. Until the
    // leader's last contact with it is an election timeout old it still
    // counts as reachable, and a transfer to it then fails after costing an
    // election; so ask whoever leads until the refusal comes.
    let other = cluster.followers(leader)[1];
    cluster.stop(other).await;
    let expected = format!("ERR node {other} is unreachable");
    let deadline = std::time::Instant::now() + SETTLE;
    let leader = loop {
        let leader = cluster.wait_for_leader().await;
        let mut con = cluster.client(leader).await;
        let refusal = refused(transfer(&mut con, Some(other)).await);
        if refusal == expected {
            break leader;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still not refused as unreachable: {refusal}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Once it is known unreachable, a refusal disturbs nothing.
    let term = cluster.status(leader).term;
    let mut con = cluster.client(leader).await;
    assert_eq!(refused(transfer(&mut con, Some(other)).await), expected);
    assert_eq!(cluster.status(leader).role, "leader");
    assert_eq!(cluster.status(leader).term, term);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_has_no_one_to_transfer_to() {
    let cluster = Cluster::start(1, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let mut con = cluster.client(leader).await;
    let err = transfer(&mut con, None).await.expect_err("refused");
    assert_eq!(
        error_text(&err),
        "ERR no other voter to transfer leadership to"
    );
    assert_eq!(transfer(&mut con, Some(leader)).await.unwrap(), "OK");
}

/// Whether something accepts connections at `addr`.
async fn accepts(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

/// Graceful stops of the leader tried before the handoff test gives up. A
/// handoff may honestly fail on a loaded machine (the chosen successor did
/// not win in time; the node then stops as leader and the others elect one
/// after an election timeout), so one failure is retried, not fatal.
const SHUTDOWN_ATTEMPTS: usize = 3;

/// A client that runs `INCR counter` without pause until told to stop.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl Writer {
    fn start(mut con: redis::aio::MultiplexedConnection) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut ok, mut failed) = (0u64, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    let r: redis::RedisResult<i64> = redis::cmd("INCR")
                        .arg("counter")
                        .query_async(&mut con)
                        .await;
                    match r {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(error_text(&e)),
                    }
                }
                (ok, failed)
            }
        });
        Writer { stop, task }
    }

    /// Stops it; returns how many writes succeeded and why the others failed.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_on_the_leader_hands_over_without_failing_writes_elsewhere() {
    let mut cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let mut con = cluster.client(leader).await;
    let abort: redis::RedisResult<String> = redis::cmd("SHUTDOWN")
        .arg("ABORT")
        .query_async(&mut con)
        .await;
    assert_eq!(
        error_text(&abort.expect_err("nothing to abort")),
        "ERR No shutdown in progress."
    );
    let syntax: redis::RedisResult<String> = redis::cmd("SHUTDOWN")
        .arg("SAVE")
        .arg("NOSAVE")
        .query_async(&mut con)
        .await;
    assert_eq!(
        error_text(&syntax.expect_err("refused")),
        "ERR syntax error"
    );

    let mut failed_handoffs = Vec::new();
    for attempt in 1..=SHUTDOWN_ATTEMPTS {
        let leader = cluster.wait_for_leader().await;
        // A client on a node that stays up writes without pause throughout.
        let writer_node = cluster.followers(leader)[0];
        let writer = Writer::start(cluster.client(writer_node).await);

        // As in Redis, a successful SHUTDOWN closes the connection unanswered.
        let mut con = cluster.client(leader).await;
        let shutdown: redis::RedisResult<redis::Value> = redis::cmd("SHUTDOWN")
            .arg("NOSAVE")
            .query_async(&mut con)
            .await;
        let err = shutdown.expect_err("SHUTDOWN has no reply");
        assert!(
            err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error(),
            "SHUTDOWN ended with {err:?}, not a closed connection"
        );
        let addr = cluster.resp_addr(leader);
        eventually_async(SETTLE, || async { !accepts(addr).await }).await;

        // Its last view names whoever it handed over to; still itself if
        // the handoff failed.
        let successor = cluster.status(leader).leader_id;
        cluster.stop(leader).await;
        let new_leader = cluster.wait_for_leader().await;
        if successor.is_none_or(|s| s == leader) {
            // Writes in flight when a leader stops without a handoff may
            // fail: this attempt's writer is not judged.
            let (_, failed) = writer.finish().await;
            failed_handoffs.push(format!(
                "attempt {attempt}: node {leader} stopped without a handoff \
                 (its last view names {successor:?}); {} writes failed",
                failed.len()
            ));
            cluster.restart(leader).await;
            continue;
        }
        assert_eq!(Some(new_leader), successor);

        let check = cluster.client(writer_node).await;
        let counter = |mut con: redis::aio::MultiplexedConnection| async move {
            redis::cmd("GET")
                .arg("counter")
                .query_async::<i64>(&mut con)
                .await
                .unwrap()
        };
        let before = counter(check.clone()).await;
        // Writes keep flowing under the new leader.
        eventually_async(SETTLE, || {
            let check = check.clone();
            async move { counter(check).await > before + 5 }
        })
        .await;
        let (ok, failed) = writer.finish().await;
        // The one write in flight when the old leader stopped may end
        // "outcome unknown": openraft drops the answers to the entries a
        // leader proposed when it steps down, and the old leader closes its
        // peer connections with that forwarded write unanswered (a fresh
        // clone's run saw it once under load). Never more than that one,
        // and never a refusal: writes sent during the handoff wait for the
        // new leader.
        let unknown = failed.iter().filter(|e| e.starts_with("TIMEOUT")).count();
        assert!(
            unknown == failed.len() && unknown <= 1,
            "writes failed on node {writer_node} (after {failed_handoffs:?}): {failed:?}"
        );
        assert!(ok > 5, "only {ok} writes succeeded");
        return;
    }
    panic!(
        "no SHUTDOWN handed leadership over in {SHUTDOWN_ATTEMPTS} attempts: {failed_handoffs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_now_stops_without_a_handoff() {
    let mut cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let mut con = cluster.client(leader).await;
    let shutdown: redis::RedisResult<redis::Value> = redis::cmd("SHUTDOWN")
        .arg("NOW")
        .query_async(&mut con)
        .await;
    assert!(shutdown.is_err(), "SHUTDOWN NOW has no reply");
    let addr = cluster.resp_addr(leader);
    eventually_async(SETTLE, || async { !accepts(addr).await }).await;
    // It stopped as leader: nobody had taken over yet.
    assert_eq!(cluster.status(leader).leader_id, Some(leader));
    cluster.stop(leader).await;
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    write_ok(&cluster, new_leader, "after-shutdown-now").await;
}

/// Writes `request` in one piece, as a pipelining client does, and reads
/// until `expected` has arrived (or the server closes), then checks that
/// the server closes the connection without sending more.
async fn pipeline_then_closed(addr: SocketAddr, request: &[u8], expected: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let closed = loop {
        if got.len() >= expected.len() {
            break false;
        }
        match tokio::time::timeout(SETTLE, stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "no more replies within {SETTLE:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    };
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "replies to the requests before SHUTDOWN (connection closed early: {closed})"
    );
    // Nothing for SHUTDOWN itself or what followed it: the connection
    // closes (cleanly or with a reset) once the node stops.
    let after = tokio::time::timeout(SETTLE, stream.read(&mut chunk))
        .await
        .expect("the connection closes once the node stops");
    assert!(
        matches!(after, Ok(0) | Err(_)),
        "sent after SHUTDOWN: {:?}",
        after.map(|n| String::from_utf8_lossy(&chunk[..n]).into_owned())
    );
}

/// Writes `request` in one piece and reads exactly the bytes of `expected`.
async fn pipeline_answered(addr: SocketAddr, request: &[u8], expected: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(SETTLE, stream.read_exact(&mut got))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_in_a_pipeline_answers_the_requests_before_it() {
    let mut cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let survivor = cluster.followers(leader)[0];
    let addr = cluster.resp_addr(leader);

    // A SHUTDOWN that fails runs in order with the requests around it.
    pipeline_answered(
        addr,
        b"SET a 1\r\nSHUTDOWN ABORT\r\nGET a\r\n",
        b"+OK\r\n-ERR No shutdown in progress.\r\n$1\r\n1\r\n",
    )
    .await;

    // As from a Redis primary that waits for its replicas: the replies to
    // what came before SHUTDOWN arrive, SHUTDOWN itself gets none, and what
    // came after it never runs.
    pipeline_then_closed(
        addr,
        b"SET a 2\r\nGET a\r\nSHUTDOWN\r\nSET b 1\r\n",
        b"+OK\r\n$1\r\n2\r\n",
    )
    .await;
    eventually_async(SETTLE, || async { !accepts(addr).await }).await;
    cluster.stop(leader).await;
    cluster.wait_for_leader().await;
    let mut con = cluster.client(survivor).await;
    let (a, b): (Option<String>, Option<String>) = redis::pipe()
        .get("a")
        .get("b")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(a.as_deref(), Some("2"));
    assert_eq!(b, None, "a request after SHUTDOWN ran");
}
