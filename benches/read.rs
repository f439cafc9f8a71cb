//! A linearizable GET: the read barrier, then the read of local state.
//!
//! Starts real nodes in this process (`raftis::node::start_with_telemetry`
//! on loopback listeners bound to port 0, data dirs in temporary
//! directories, the fast election timing of the in-process tests), writes
//! one key with a 64-byte value, and times what the executor does for a
//! `GET` on a connection that has not sent `READONLY`:
//! [`Cluster::read_barrier`](raftis::cluster::Cluster::read_barrier) (a
//! ReadIndex confirmed by a quorum on the leader; on a follower, a
//! read-index request to the leader shared by every read waiting for the
//! same round), then the GET handler from the command table over the node's
//! store. The client connection and RESP are not included (see
//! `benches/resp.rs`).
//!
//! - `read_get/one_node/leader`: one GET at a time on a one-node cluster.
//! - `.../leader_x64`, `.../follower_x64`: 64 GETs issued concurrently
//!   (64 tasks), all awaited: reads sharing leadership confirmations and
//!   read-index rounds. Throughput is reads.
//! - `read_get/three_nodes/...`: the same on the leader and on a follower
//!   of a three-node cluster, the peers talking over loopback TCP.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use raftis::config::{Config, HostPort};
use raftis::node::{Node, RunningNode};
use raftis::server::Reply;
use raftis::telemetry::Telemetry;
use support::{argv, prepare, Prepared};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// The key every GET reads.
const KEY: &[u8] = b"bench:key:000000";
/// Its value.
const VALUE: [u8; 64] = [b'x'; 64];
/// Concurrent reads in the `_x64` benchmarks.
const CONCURRENT: usize = 64;

/// Nodes of one cluster in this process; stopped by [`InProcess::stop`].
struct InProcess {
    nodes: Vec<RunningNode>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

impl InProcess {
    /// Starts `n` nodes that form one cluster and waits for a leader that
    /// every node knows, with every node's membership loaded.
    async fn start(n: usize) -> InProcess {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push((bind().await, bind().await));
        }
        let initial = listeners
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("{}={}", i + 1, peer.local_addr().expect("addr")))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for (i, (resp, peer)) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            let dir = tempfile::tempdir().expect("temp dir");
            let port = |l: &TcpListener| l.local_addr().expect("addr").port();
            let mut config = Config {
                id,
                listen: HostPort::new("127.0.0.1", port(&resp)),
                peer_listen: Some(HostPort::new("127.0.0.1", port(&peer))),
                http_listen: HostPort::new("127.0.0.1", 0),
                data_dir: dir.path().to_path_buf(),
                initial_cluster: Some(initial.parse().expect("initial cluster")),
                ..Config::default()
            };
            // The in-process tests' timing: a leader within a second.
            config.raft.heartbeat_interval_ms = 50;
            config.raft.election_timeout_min_ms = 300;
            config.raft.election_timeout_max_ms = 600;
            let node =
                raftis::node::start_with_telemetry(config, resp, peer, Telemetry::untraced(id))
                    .await
                    .expect("node starts");
            nodes.push(node);
            dirs.push(dir);
        }
        let cluster = InProcess { nodes, _dirs: dirs };
        cluster.wait_for_leader().await;
        cluster
    }

    /// Polls until every node names the same leader, which leads, and every
    /// node has the membership; panics after 30 s.
    async fn wait_for_leader(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let statuses: Vec<_> = self
                .nodes
                .iter()
                .map(|n| n.node().cluster.status())
                .collect();
            let leader = statuses[0].leader_id;
            let agreed = leader.is_some() && statuses.iter().all(|s| s.leader_id == leader);
            let leads = statuses
                .iter()
                .any(|s| Some(s.node_id) == leader && s.role == "leader");
            if agreed && leads && statuses.iter().all(|s| !s.voters.is_empty()) {
                return;
            }
            assert!(Instant::now() < deadline, "no leader within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn leader(&self) -> Arc<Node> {
        self.nodes
            .iter()
            .find(|n| n.node().cluster.status().role == "leader")
            .expect("a leader")
            .node()
            .clone()
    }

    fn follower(&self) -> Option<Arc<Node>> {
        self.nodes
            .iter()
            .find(|n| n.node().cluster.status().role == "follower")
            .map(|n| n.node().clone())
    }

    async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

/// Writes [`KEY`] through the leader, parsed by the command table as a
/// client's `SET` is.
async fn write_key(leader: &Node) {
    let Prepared::Write(op) = prepare(argv(&[b"SET", KEY, &VALUE])) else {
        panic!("SET is a write");
    };
    leader.cluster.write(op).await.expect("SET commits");
}

/// One linearizable GET of [`KEY`] as the executor runs it: resolved by
/// the command table, the read barrier, then the GET handler over the
/// node's store at the node's read clock.
async fn linearizable_get(node: &Node) -> Reply {
    let Prepared::Read(read, mut args) = prepare(argv(&[b"GET", KEY])) else {
        panic!("GET is a read");
    };
    node.cluster
        .read_barrier(false)
        .await
        .expect("read barrier");
    read(&node.store, &mut args, node.cluster.read_clock_ms())
}

fn check(reply: &Reply) {
    assert_eq!(
        reply,
        &Reply::Bulk(Bytes::from_static(&VALUE)),
        "GET read the key"
    );
}

/// Benchmarks one GET at a time and [`CONCURRENT`] at once on `node`,
/// named `{prefix}` and `{prefix}_x64`.
fn bench_node(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    node: &Arc<Node>,
    name: &str,
) {
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    check(&linearizable_get(node).await);
                }
                started.elapsed()
            })
        });
    });
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.bench_function(format!("{name}_x{CONCURRENT}"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let reads: Vec<_> = (0..CONCURRENT)
                        .map(|_| {
                            let node = node.clone();
                            tokio::spawn(async move { linearizable_get(&node).await })
                        })
                        .collect();
                    for read in reads {
                        check(&read.await.expect("read task"));
                    }
                }
                started.elapsed()
            })
        });
    });
}

fn read(c: &mut Criterion) {
    let rt = support::runtime();
    let mut group = c.benchmark_group("read_get");
    group.sample_size(20);

    let one = rt.block_on(InProcess::start(1));
    let leader = one.leader();
    rt.block_on(write_key(&leader));
    bench_node(&mut group, &rt, &leader, "one_node/leader");
    drop(leader);
    rt.block_on(one.stop());

    let three = rt.block_on(InProcess::start(3));
    let leader = three.leader();
    rt.block_on(write_key(&leader));
    bench_node(&mut group, &rt, &leader, "three_nodes/leader");
    let follower = three.follower().expect("a follower");
    bench_node(&mut group, &rt, &follower, "three_nodes/follower");
    drop((leader, follower));
    rt.block_on(three.stop());
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::short_runs(Duration::from_secs(2));
    targets = read
}
criterion_main!(benches);
