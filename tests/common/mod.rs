//! A cluster of raftis nodes inside the test process, for behaviour tests.
//!
//! Every node gets a temp data dir and listeners on free ports (below the
//! ephemeral range, so that nothing else takes them while a node is down); a
//! stopped node is restarted on the same ports and data dir, as a real
//! restart would be.
//! Dropping the [`Cluster`] stops every node.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use raftis::cluster::RaftStatus;
use raftis::config::{Config, HostPort, ReadPolicy};
use raftis::node::RunningNode;
use tokio::net::TcpListener;

/// Knobs a test may turn; the rest are fast-election defaults.
#[derive(Debug, Clone)]
pub struct NodeTuning {
    pub request_timeout_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub max_in_snapshot_log_to_keep: u64,
    pub read_policy: ReadPolicy,
}

impl Default for NodeTuning {
    fn default() -> Self {
        NodeTuning {
            request_timeout_ms: 5000,
            snapshot_logs_since_last: 100_000,
            max_in_snapshot_log_to_keep: 1000,
            read_policy: ReadPolicy::ReadIndex,
        }
    }
}

struct Slot {
    config: Config,
    resp_addr: SocketAddr,
    peer_addr: SocketAddr,
    running: Option<RunningNode>,
    _dir: tempfile::TempDir,
}

/// In-process nodes of one cluster.
pub struct Cluster {
    slots: BTreeMap<u64, Slot>,
}

async fn bind(addr: &str) -> TcpListener {
    TcpListener::bind(addr).await.expect("bind")
}

/// Lowest port these tests pick for a node.
const FIRST_PORT: u16 = 10_000;

/// A listener on 127.0.0.1 at a free port below the kernel's ephemeral
/// range. A stopped node's ports must still be free when it restarts, and a
/// port from the ephemeral range may meanwhile go to any outgoing
/// connection or port-0 bind of a test running alongside (a restart once
/// found its port taken that way). Port 0 when that range leaves no room.
async fn bind_restartable() -> TcpListener {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > FIRST_PORT + 1000 {
        for _ in 0..1000 {
            let port = rand::random_range(FIRST_PORT..ephemeral_low);
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
                return listener;
            }
        }
    }
    bind("127.0.0.1:0").await
}

/// Binds `addr` again after a stop; the old socket may take a moment to go.
async fn rebind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("rebind {addr}: {e}"),
        }
    }
}

impl Cluster {
    /// Starts `n` nodes that form one cluster.
    pub async fn start(n: u64, tuning: NodeTuning) -> Cluster {
        Cluster::start_with(n, tuning, |_, config| {
            raftis::telemetry::Telemetry::from_config(config).expect("telemetry starts")
        })
        .await
    }

    /// [`Cluster::start`] with each node's telemetry from `telemetry(id, config)`
    /// (an in-memory trace exporter, say). A restarted node gets the telemetry
    /// its configuration asks for.
    pub async fn start_with(
        n: u64,
        tuning: NodeTuning,
        telemetry: impl Fn(u64, &Config) -> raftis::telemetry::Telemetry,
    ) -> Cluster {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push((bind_restartable().await, bind_restartable().await));
        }
        let peers: Vec<SocketAddr> = listeners
            .iter()
            .map(|(_, p)| p.local_addr().unwrap())
            .collect();
        let initial = peers
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut slots = BTreeMap::new();
        for (i, (resp, peer)) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            let dir = tempfile::tempdir().unwrap();
            let resp_addr = resp.local_addr().unwrap();
            let peer_addr = peer.local_addr().unwrap();
            let mut config = node_config(id, &resp, &peer, dir.path().to_path_buf());
            config.initial_cluster = Some(initial.parse().unwrap());
            config.request_timeout_ms = tuning.request_timeout_ms;
            config.raft.snapshot_logs_since_last = tuning.snapshot_logs_since_last;
            config.raft.max_in_snapshot_log_to_keep = tuning.max_in_snapshot_log_to_keep;
            config.raft.read_policy = tuning.read_policy;
            let running = raftis::node::start_with_telemetry(
                config.clone(),
                resp,
                peer,
                telemetry(id, &config),
            )
            .await
            .expect("node starts");
            slots.insert(
                id,
                Slot {
                    config,
                    resp_addr,
                    peer_addr,
                    running: Some(running),
                    _dir: dir,
                },
            );
        }
        Cluster { slots }
    }

    pub fn ids(&self) -> Vec<u64> {
        self.slots.keys().copied().collect()
    }

    pub fn running(&self) -> Vec<u64> {
        self.slots
            .iter()
            .filter(|(_, s)| s.running.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    fn node(&self, id: u64) -> &RunningNode {
        self.slots[&id].running.as_ref().expect("node is running")
    }

    pub fn status(&self, id: u64) -> RaftStatus {
        self.node(id).node().cluster.status()
    }

    /// Node `id`'s cluster API (writes and reads below the RESP layer).
    pub fn api(&self, id: u64) -> &raftis::cluster::Cluster {
        &self.node(id).node().cluster
    }

    pub fn key_count(&self, id: u64) -> u64 {
        self.node(id).node().store.key_count()
    }

    pub fn resp_addr(&self, id: u64) -> SocketAddr {
        self.slots[&id].resp_addr
    }

    /// Where node `id` serves `/metrics`, `/health` and `/ready`.
    pub fn http_addr(&self, id: u64) -> SocketAddr {
        self.node(id).http_addr()
    }

    /// Waits until every running node agrees on one running leader, and
    /// that leader has heard from every running node: membership changes
    /// judge reachability by those acknowledgements, and the first ones
    /// can arrive after the followers already know the leader.
    pub async fn wait_for_leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leader = self.wait_for_agreed_leader().await;
            let running = self.running();
            eventually_async(Duration::from_secs(15), || async {
                self.api(leader).nodes().await.is_ok_and(|nodes| {
                    nodes
                        .iter()
                        .filter(|n| running.contains(&n.id))
                        .all(|n| n.id == leader || n.reachable == Some(true))
                })
            })
            .await;
            // `nodes()` asks whoever leads: make sure that is still `leader`.
            if self.status(leader).role == "leader" {
                return leader;
            }
            assert!(Instant::now() < deadline, "leadership kept moving");
        }
    }

    async fn wait_for_agreed_leader(&self) -> u64 {
        let mut found = 0;
        eventually(Duration::from_secs(15), || {
            let running = self.running();
            let leaders: Vec<Option<u64>> = running
                .iter()
                .map(|id| self.status(*id).leader_id)
                .collect();
            match leaders.first() {
                Some(Some(l)) if leaders.iter().all(|x| *x == Some(*l)) && running.contains(l) => {
                    found = *l;
                    // A node may hear of the leader before it has the
                    // membership: settle on both, so tests start from a
                    // cluster every node knows.
                    self.status(*l).role == "leader"
                        && running.iter().all(|id| !self.status(*id).voters.is_empty())
                }
                _ => false,
            }
        })
        .await;
        found
    }

    pub fn followers(&self, leader: u64) -> Vec<u64> {
        self.running()
            .into_iter()
            .filter(|id| *id != leader)
            .collect()
    }

    pub async fn client(&self, id: u64) -> redis::aio::MultiplexedConnection {
        client_at(self.resp_addr(id)).await
    }

    /// Writes `SET {prefix}{i} {i}` for every `i` in `0..n` through node
    /// `id`, one after the other, each acknowledged before the next.
    pub async fn set_numbered_keys(&self, id: u64, prefix: &str, n: u64) {
        let mut con = self.client(id).await;
        for i in 0..n {
            let _: () = redis::cmd("SET")
                .arg(format!("{prefix}{i}"))
                .arg(i)
                .query_async(&mut con)
                .await
                .unwrap();
        }
    }

    /// Stops a node as a crash would, keeping its data dir.
    pub async fn stop(&mut self, id: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        if let Some(node) = slot.running.take() {
            node.stop().await;
        }
    }

    /// The configuration node `id` restarts with.
    pub fn config_mut(&mut self, id: u64) -> &mut Config {
        &mut self.slots.get_mut(&id).unwrap().config
    }

    /// Starts a stopped node again on its ports and data dir.
    pub async fn restart(&mut self, id: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        assert!(slot.running.is_none(), "node {id} is running");
        let resp = rebind(slot.resp_addr).await;
        let peer = rebind(slot.peer_addr).await;
        let running = raftis::node::start(slot.config.clone(), resp, peer)
            .await
            .expect("node restarts");
        slot.running = Some(running);
    }
}

/// The configuration of an in-process node on these listeners: loopback,
/// HTTP on a free port, fast Raft timing (elections within a second).
pub fn node_config(id: u64, resp: &TcpListener, peer: &TcpListener, data_dir: PathBuf) -> Config {
    let mut config = Config {
        id,
        listen: HostPort::new("127.0.0.1", resp.local_addr().unwrap().port()),
        peer_listen: Some(HostPort::new(
            "127.0.0.1",
            peer.local_addr().unwrap().port(),
        )),
        http_listen: HostPort::new("127.0.0.1", 0),
        data_dir,
        ..Config::default()
    };
    config.raft.heartbeat_interval_ms = 50;
    config.raft.election_timeout_min_ms = 300;
    config.raft.election_timeout_max_ms = 600;
    config
}

/// A client of the node at `addr`, in this process or not.
pub async fn client_at(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{addr}")).unwrap();
    // Longer than any request timeout: the server, not the client, must
    // decide when a request has failed.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

/// Polls `cond` until it holds, failing the test after `timeout`.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] for a condition that needs to await.
pub async fn eventually_async<F, Fut>(timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
