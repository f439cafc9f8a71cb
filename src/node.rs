//! A running raftis node: what every connection and command shares, and how
//! a node starts and stops.
//!
//! `main` loads the configuration and calls [`run`]; tests call [`start`]
//! with listeners they bound themselves (port 0). Starting opens storage and
//! Raft (`cluster::Cluster::start`), then serves RESP clients on the client
//! listener until told to stop, and `/metrics`, `/health` and `/ready` on
//! `http_listen` (`telemetry::http`), which the node binds itself. With
//! `--join`, a node that is not a voter yet asks a member of the cluster to
//! add it, in the background (see `cluster::membership::join_cluster`).
//!
//! Stopping is one path however it is asked for (SIGTERM or SIGINT in [`run`],
//! the `SHUTDOWN` command, [`RunningNode::shutdown`] and [`RunningNode::stop`]
//! in tests): a [`StopMode`] is requested through the node's [`StopControl`],
//! and a lifecycle task started with the node carries it out. A graceful stop
//! first hands leadership to another voter if this node leads (bounded by a
//! few election timeouts), so the cluster does not wait for an election
//! timeout to notice the leader is gone; then it stops accepting clients,
//! lets open connections finish the batch they are running (their requests
//! now reach the new leader) and closes them, waits until this node has
//! applied what it proposed as leader (whoever proposed it hears the outcome
//! from this node's apply), and stops Raft. An immediate stop skips the
//! handoff and that last wait. Either way every handle on the database is
//! gone once the node has stopped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};

use crate::cluster::{Cluster, ClusterOptions};
use crate::config::Config;
use crate::error::Error;
use crate::server::ServerState;
use crate::storage::Store;
use crate::telemetry::http::HttpServer;
use crate::telemetry::Telemetry;

/// Everything a command may need.
pub struct Node {
    /// The validated configuration this node started with.
    pub config: Arc<Config>,
    /// Local applied state, for reads.
    pub store: Arc<Store>,
    /// Raft: writes, read barriers, status.
    pub cluster: Cluster,
    /// Asks this node to stop (the `SHUTDOWN` command, signals, tests).
    pub stop: StopControl,
    /// This node's tracer and metrics.
    pub telemetry: Telemetry,
    /// Why the cluster refused to add this node (`--join`), which stopped it.
    join_refused: std::sync::OnceLock<String>,
}

/// How a node stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Hand leadership over first if this node leads, drain clients, let
    /// what this node proposed apply, then stop Raft: SIGTERM, SIGINT,
    /// `SHUTDOWN`.
    Graceful,
    /// Drain clients and stop Raft, leader or not (the others elect a
    /// leader after an election timeout): `SHUTDOWN NOW`, and tests that
    /// stop a node as a crash would.
    Immediate,
}

/// Stop requests for one node. The first request wins; the node's
/// lifecycle task (started by [`start`]) carries it out.
#[derive(Debug)]
pub struct StopControl {
    requested: watch::Sender<Option<StopMode>>,
    /// Connections whose command waits for the stop to close them.
    parked: AtomicUsize,
}

impl StopControl {
    fn new() -> StopControl {
        StopControl {
            requested: watch::Sender::new(None),
            parked: AtomicUsize::new(0),
        }
    }

    /// Asks the node to stop. Returns false when a stop was asked for
    /// already: the first request's mode stands.
    pub fn request(&self, mode: StopMode) -> bool {
        self.requested.send_if_modified(|requested| {
            if requested.is_some() {
                return false;
            }
            *requested = Some(mode);
            true
        })
    }

    /// The stop asked for, if any.
    #[must_use]
    pub fn requested(&self) -> Option<StopMode> {
        *self.requested.borrow()
    }

    /// Asks the node to stop and never returns: for a command that, as
    /// Redis's `SHUTDOWN` does, closes its own connection without a reply.
    /// Its connection is counted as parked, so the drain does not wait for
    /// it, and it is closed when the node stops serving.
    pub async fn request_and_park(&self, mode: StopMode) -> Infallible {
        // Counted before the request, so the drain never sees the request
        // without this connection being known as parked.
        let _parked = Parked::new(&self.parked);
        self.request(mode);
        std::future::pending().await
    }

    /// Waits for a stop request.
    async fn wait(&self) -> StopMode {
        let mut rx = self.requested.subscribe();
        loop {
            if let Some(mode) = *rx.borrow_and_update() {
                return mode;
            }
            // The sender lives as long as `self`: this never fails here.
            if rx.changed().await.is_err() {
                return StopMode::Immediate;
            }
        }
    }
}

/// Counts a parked connection while it exists.
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Parked(count)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A node that is serving; stop it with [`RunningNode::shutdown`] or
/// [`RunningNode::stop`], or wait for a `SHUTDOWN` with
/// [`RunningNode::stopped`].
pub struct RunningNode {
    node: Arc<Node>,
    resp_addr: SocketAddr,
    http_addr: SocketAddr,
    /// Carries out the stop; ends when the node has stopped.
    lifecycle: Option<JoinHandle<()>>,
    /// The RESP server, aborted if this handle is dropped while it runs.
    server: AbortHandle,
}

impl RunningNode {
    /// The shared node state.
    #[must_use]
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Where RESP clients connect.
    #[must_use]
    pub fn resp_addr(&self) -> SocketAddr {
        self.resp_addr
    }

    /// Where `/metrics`, `/health` and `/ready` are served (`http_listen`,
    /// with the port the system picked if it asked for port 0).
    #[must_use]
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops serving clients (open connections are closed after the batch
    /// they are running), then stops Raft, without handing leadership over
    /// ([`StopMode::Immediate`]). A stop asked for earlier keeps its mode.
    pub async fn stop(mut self) {
        self.node.stop.request(StopMode::Immediate);
        self.stopped().await;
    }

    /// Stops gracefully ([`StopMode::Graceful`]): hands leadership over if
    /// this node leads, then stops as [`RunningNode::stop`] does.
    pub async fn shutdown(mut self) {
        self.node.stop.request(StopMode::Graceful);
        self.stopped().await;
    }

    /// Waits until the node has stopped, however that was asked for.
    pub async fn stopped(&mut self) {
        if let Some(lifecycle) = self.lifecycle.as_mut() {
            if let Err(e) = lifecycle.await {
                tracing::error!(error = %e, "node lifecycle task failed");
            }
            self.lifecycle = None;
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some(lifecycle) = self.lifecycle.take() {
            lifecycle.abort();
        }
        self.server.abort();
    }
}

/// How long a leader that is stopping tries to hand leadership over:
/// a few election timeouts, never more than the request timeout (clients
/// wait that long for a leader anyway).
fn handoff_bound(config: &Config) -> Duration {
    Duration::from_millis(config.raft.election_timeout_max_ms.saturating_mul(3))
        .min(config.request_timeout())
}

/// How often the drain checks whether only parked connections are left.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Carries out the first stop asked of `node`: see the module docs.
async fn lifecycle(
    node: Arc<Node>,
    server: JoinHandle<()>,
    state: Arc<ServerState>,
    stop_serving: oneshot::Sender<()>,
    http: HttpServer,
) {
    let mode = node.stop.wait().await;
    if mode == StopMode::Graceful {
        node.cluster
            .hand_off_leadership(handoff_bound(&node.config))
            .await;
    }
    let _ = stop_serving.send(());
    drain(&node, server, &state).await;
    if mode == StopMode::Graceful && !node.cluster.settle(node.config.request_timeout()).await {
        tracing::warn!("stopping before every entry in this node's log was applied");
    }
    node.cluster.shutdown().await;
    flush_storage(&node).await;
    // After Raft: until then, probes read "shutting down".
    http.stop().await;
    node.telemetry.shutdown().await;
}

/// How long a stopping node waits for its memtables to reach disk.
const FLUSH_BOUND: Duration = Duration::from_secs(10);

/// Once Raft has stopped writing: flushes the storage engine's memtables,
/// so that the next start reads nothing back from the journal and is ready
/// at once. What is not flushed in time stays in the journal (the next
/// start replays it), so this only costs restart time when it fails.
async fn flush_storage(node: &Node) {
    let store = node.store.clone();
    let deadline = Instant::now() + FLUSH_BOUND;
    let flushed = tokio::task::spawn_blocking(move || store.flush_memtables(deadline)).await;
    match flushed {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => tracing::warn!(
            bound = ?FLUSH_BOUND,
            "storage not flushed in time; the next start replays the rest of its journal"
        ),
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not flush storage; the next start replays its journal")
        }
        Err(error) => tracing::warn!(%error, "storage flush task failed"),
    }
}

/// Waits until every connection has finished its batch and closed, except
/// those parked by a `SHUTDOWN` (closed here by ending the server), and at
/// most a request timeout: a batch never waits longer than that on the
/// cluster.
async fn drain(node: &Node, mut server: JoinHandle<()>, state: &ServerState) {
    let deadline = Instant::now() + node.config.request_timeout() + Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = &mut server => return,
            () = tokio::time::sleep(DRAIN_POLL) => {}
        }
        let only_parked = state.connected_clients() <= node.stop.parked.load(Ordering::SeqCst);
        if only_parked || Instant::now() >= deadline {
            server.abort();
            let _ = server.await;
            return;
        }
    }
}

fn cluster_options(
    config: &Config,
    resp_addr: SocketAddr,
    peer_addr: SocketAddr,
    telemetry: Telemetry,
) -> ClusterOptions {
    let advertised_peer = {
        let configured = config.peer_listen_addr();
        if configured.port() == 0 {
            peer_addr.to_string()
        } else {
            configured.to_string()
        }
    };
    let advertised_resp = if config.listen.port() == 0 {
        resp_addr.to_string()
    } else {
        config.listen.to_string()
    };
    ClusterOptions {
        id: config.id,
        data_dir: config.data_dir.clone(),
        resp_addr: advertised_resp,
        peer_addr: advertised_peer.clone(),
        initial_members: match &config.initial_cluster {
            Some(_) => config.initial_members(),
            None => std::collections::BTreeMap::from([(config.id, advertised_peer)]),
        },
        request_timeout: config.request_timeout(),
        raft: config.raft.clone(),
        engine: config.storage.engine(),
        min_free_bytes: config.storage.min_free_bytes(),
        join: config.join.is_some(),
        force_new_cluster: config.force_new_cluster,
        telemetry,
    }
}

/// With `--join`, asks the cluster to add this node (in the background:
/// the node must serve its peer port meanwhile, for the leader to catch it
/// up), unless it is a voter already (a restart) or was removed. A join
/// the cluster refuses for good stops the node.
fn spawn_join(node: &Arc<Node>, advertised_peer: String, has_state: bool) {
    let Some(addr) = node.config.join.as_ref().map(ToString::to_string) else {
        return;
    };
    if node.cluster.is_removed() {
        return;
    }

    // Weak: a join still retrying must not keep a stopped node's database open.
    let weak = Arc::downgrade(node);
    let (id, timeout) = (node.config.id, node.config.request_timeout());
    tokio::spawn(async move {
        // Decided from the membership Raft loaded from disk, not from the
        // status: until Raft's core has published its first metrics those
        // say "no voters", and a restarted (or removed) member would ask
        // to be added again.
        match weak.upgrade() {
            Some(node) if !node.cluster.is_voter_on_disk().await => {}
            _ => return,
        }
        let stopping = async {
            loop {
                tokio::time::sleep(DRAIN_POLL * 10).await;
                match weak.upgrade() {
                    Some(node) if node.stop.requested().is_none() => {}
                    _ => return,
                }
            }
        };
        tokio::select! {
            joined = crate::cluster::membership::join_cluster(&addr, id, &advertised_peer, timeout, has_state) => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "stopping");
                    if let Some(node) = weak.upgrade() {
                        let _ = node.join_refused.set(e.to_string());
                        node.stop.request(StopMode::Immediate);
                    }
                }
            }
            () = stopping => {}
        }
    });
}

/// Starts a node on listeners the caller bound, with the telemetry its
/// configuration asks for.
///
/// # Errors
/// Storage, Raft or the trace exporter that cannot start.
pub async fn start(
    config: Config,
    resp: TcpListener,
    peer: TcpListener,
) -> Result<RunningNode, Error> {
    let telemetry = Telemetry::from_config(&config)?;
    start_with_telemetry(config, resp, peer, telemetry).await
}

/// Starts a node on listeners the caller bound, recording into `telemetry`
/// (tests give an in-memory trace exporter this way).
///
/// The HTTP server's address is bound here, from `http_listen`, first of
/// all: nobody needs to know it before the node starts (tests read the
/// port picked for port 0 from [`RunningNode::http_addr`]), and a busy
/// port then stops startup, naming the key, before storage is opened.
///
/// # Errors
/// `http_listen` that cannot be bound ([`Error::Bind`]), storage or Raft
/// that cannot start.
pub async fn start_with_telemetry(
    config: Config,
    resp: TcpListener,
    peer: TcpListener,
    telemetry: Telemetry,
) -> Result<RunningNode, Error> {
    let http = bind("http_listen", config.http_listen.to_string()).await?;
    let resp_addr = resp.local_addr()?;
    let peer_addr = peer.local_addr()?;
    let options = cluster_options(&config, resp_addr, peer_addr, telemetry.clone());
    let advertised_peer = options.peer_addr.clone();
    // Whether this node held Raft state before it started: a voter whose
    // data dir was lost must not take a leader's "already a voter" as a
    // welcome (read now: once Raft runs, the leader may replicate to it).
    let had_state = config.data_dir.join("db").exists();
    let (cluster, store) = Cluster::start(options, peer).await?;
    let node = Arc::new(Node {
        config: Arc::new(config),
        store,
        cluster,
        stop: StopControl::new(),
        telemetry,
        join_refused: std::sync::OnceLock::new(),
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // Built here rather than by `serve_node`, so that the drain can count
    // the connections still open.
    let state = Arc::new(ServerState::new(crate::server::Settings::from(
        &*node.config,
    )));
    let http = HttpServer::start(http, node.clone(), state.clone())?;
    let http_addr = http.addr();
    let serving = crate::server::serve(resp, node.clone(), state.clone(), async move {
        let _ = stop_rx.await;
    });
    let server = tokio::spawn(async move {
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "RESP server stopped");
        }
    });
    let server_abort = server.abort_handle();
    let lifecycle = tokio::spawn(lifecycle(node.clone(), server, state, stop_tx, http));
    spawn_join(&node, advertised_peer, had_state);
    tracing::info!(id = node.config.id, %resp_addr, %peer_addr, %http_addr, "raftis node started");
    Ok(RunningNode {
        node,
        resp_addr,
        http_addr,
        lifecycle: Some(lifecycle),
        server: server_abort,
    })
}

/// Binds the configured addresses and serves until SIGINT, SIGTERM or
/// `SHUTDOWN`, then stops gracefully (see the module docs).
///
/// # Errors
/// An address that cannot be bound, storage or Raft that cannot start, or
/// a `--join` the cluster refused for good.
pub async fn run(config: Config) -> Result<(), Error> {
    let resp = bind("listen", config.listen.to_string()).await?;
    let peer = bind("peer_listen", config.peer_listen_addr().to_string()).await?;
    // Installed before the node serves: a signal that found the default
    // action would end the process without a handoff.
    let mut signals = StopSignals::install()?;
    let mut node = start(config, resp, peer).await?;
    let signalled = tokio::select! {
        () = signals.recv() => true,
        () = node.stopped() => false,
    };
    if signalled {
        tracing::info!("shutting down");
        node.node().stop.request(StopMode::Graceful);
    }
    node.stopped().await;
    if let Some(why) = node.node().join_refused.get() {
        return Err(crate::cluster::ClusterError::Startup {
            what: "joining the cluster",
            source: std::io::Error::other(why.clone()),
        }
        .into());
    }
    Ok(())
}

async fn bind(key: &'static str, addr: String) -> Result<TcpListener, Error> {
    match TcpListener::bind(&addr).await {
        Ok(l) => Ok(l),
        Err(source) => Err(Error::Bind { key, addr, source }),
    }
}

/// SIGTERM and SIGINT, the signals that stop a node.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals, Error> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next one.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
