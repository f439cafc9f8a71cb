//! The HTTP server on `http_listen`: `/metrics`, `/health`, `/ready`.
//!
//! The node binds `http_listen` before it opens storage (`node.rs`), so a
//! busy port stops startup with an error naming the key, and starts this
//! server once it serves RESP clients. Each request reads the node as it is
//! now: `/metrics` encodes [`Metrics`](super::Metrics) with the cluster's
//! status and the RESP front end's counters; `/health` and `/ready` answer
//! 200 or 503 with a one-line reason. The server stops with the node (after
//! Raft, so a probe during a stop reads "shutting down"), and a dropped
//! [`HttpServer`] aborts it, so it never keeps a stopped node alive.
//!
//! Connections are bounded in number and in idle time
//! ([`super::http_listener`]), so that clients of the HTTP port cannot hold
//! the descriptors the node needs for its RESP clients and peers.
//!
//! `/ready` says whether this node serves clients at all: it is started, a
//! member, Raft runs, it was not removed and is not stopping. `/health` asks
//! more, as etcd's `/health` does: that this node sees a leader and has
//! applied everything that leader has committed. It proves the leader by a
//! read-index round (the same barrier a linearizable read takes: the leader
//! confirms its leadership with a quorum and names its commit index, this
//! node applies through it), bounded by one minimum election timeout. A node
//! cut off from the majority still remembers its last leader, so only a
//! round trip tells; and a node a little behind under load is healthy as
//! soon as it catches up within the bound, instead of flapping.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::http_listener::BoundedListener;
use super::metrics::{Format, LiveState};
use crate::cluster::RaftStatus;
use crate::node::Node;
use crate::server::ServerState;

/// How long [`HttpServer::stop`] lets requests in flight finish.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The running HTTP server of one node.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    leaders: JoinHandle<()>,
}

/// What the handlers read.
struct Endpoints {
    node: Arc<Node>,
    front: Arc<ServerState>,
}

impl HttpServer {
    /// Serves `/metrics`, `/health` and `/ready` for `node` on `listener`
    /// (`front` is its RESP front end, for connection and error counts),
    /// and starts counting its leader changes.
    ///
    /// # Errors
    /// The listener's address cannot be read.
    pub fn start(
        listener: TcpListener,
        node: Arc<Node>,
        front: Arc<ServerState>,
    ) -> std::io::Result<HttpServer> {
        let addr = listener.local_addr()?;
        let leaders = tokio::spawn(node.telemetry.metrics.watch_leaders(&node.cluster));
        let app = router(Arc::new(Endpoints { node, front }));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let served = axum::serve(BoundedListener::new(listener), app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server (http_listen) stopped");
            }
        });
        Ok(HttpServer {
            addr,
            stop: Some(stop),
            server: Some(server),
            leaders,
        })
    }

    /// The address it listens on (the bound port when `http_listen` asked
    /// for port 0).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish (a few seconds at
    /// most), and stops.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(STOP_GRACE, &mut server).await.is_err() {
                server.abort();
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
        self.leaders.abort();
    }
}

fn router(endpoints: Arc<Endpoints>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(not_found)
        .with_state(endpoints)
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} (try /metrics, /health, /ready)\n",
            uri.path()
        ),
    )
}

async fn metrics(State(endpoints): State<Arc<Endpoints>>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let front = &endpoints.front;
    let live = LiveState {
        raft: endpoints.node.cluster.status(),
        connected_clients: u64::try_from(front.connected_clients()).unwrap_or(u64::MAX),
        connections_received: front.stats.connections_received.load(Ordering::Relaxed),
        connections_rejected: front.stats.rejected_connections.load(Ordering::Relaxed),
        errors_by_prefix: front.stats.error_counts(),
        persistence: endpoints.node.cluster.persistence(),
        key_filter_bytes: endpoints.node.store.key_filter_bytes(),
    };
    match endpoints.node.telemetry.metrics.encode(&live, format) {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

/// Why this node does not serve clients, if it does not.
fn not_ready(stopping: bool, raft_running: bool, status: &RaftStatus) -> Option<String> {
    if stopping {
        return Some("shutting down".into());
    }
    if status.removed {
        return Some("removed from the cluster".into());
    }
    if !raft_running {
        return Some("raft stopped".into());
    }
    let member =
        status.voters.contains(&status.node_id) || status.learners.contains(&status.node_id);
    if !member {
        return Some("not a member of the cluster (yet)".into());
    }
    None
}

/// Why this node is not healthy after its leader did not confirm a read
/// index within `bound`, from its status now.
fn unconfirmed(status: &RaftStatus, bound: Duration) -> String {
    let ms = bound.as_millis();
    match status.leader_id {
        None => "no leader".into(),
        Some(_) if status.last_applied < status.commit_index => format!(
            "applied {} of committed {}",
            status.last_applied, status.commit_index
        ),
        Some(leader) if leader == status.node_id => {
            format!("leader without a quorum: no majority confirmed it within {ms} ms")
        }
        Some(leader) => format!("no answer from leader {leader} within {ms} ms"),
    }
}

impl Endpoints {
    fn not_ready(&self) -> Option<String> {
        let node = &self.node;
        not_ready(
            node.stop.requested().is_some(),
            node.telemetry.metrics.raft_running(),
            &node.cluster.status(),
        )
    }

    /// How long `/health` waits for the leader's read index and the apply
    /// through it: a leader that cannot confirm itself within an election
    /// timeout would be replaced by then.
    fn health_bound(&self) -> Duration {
        let config = &self.node.config;
        Duration::from_millis(config.raft.election_timeout_min_ms).min(config.request_timeout())
    }
}

async fn ready(State(endpoints): State<Arc<Endpoints>>) -> Response {
    match endpoints.not_ready() {
        Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        None => text(StatusCode::OK, "ready\n".into()),
    }
}

async fn health(State(endpoints): State<Arc<Endpoints>>) -> Response {
    if let Some(why) = endpoints.not_ready() {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    }
    let cluster = &endpoints.node.cluster;
    if cluster.status().leader_id.is_none() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "no leader\n".into());
    }
    let bound = endpoints.health_bound();
    match tokio::time::timeout(bound, cluster.read_barrier(false)).await {
        Ok(Ok(())) => text(StatusCode::OK, "ok\n".into()),
        // The barrier's own errors come at the request timeout, later than
        // the bound, or at once for a removed node (checked above): the
        // status says best what is missing.
        Ok(Err(_)) | Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{}\n",
                endpoints
                    .not_ready()
                    .unwrap_or_else(|| unconfirmed(&cluster.status(), bound))
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> RaftStatus {
        RaftStatus::sample()
    }

    #[test]
    fn ready_needs_a_running_member_that_is_not_stopping() {
        assert_eq!(not_ready(false, true, &status()), None);
        assert_eq!(
            not_ready(true, true, &status()).as_deref(),
            Some("shutting down")
        );
        assert_eq!(
            not_ready(false, false, &status()).as_deref(),
            Some("raft stopped")
        );
        let mut removed = status();
        removed.removed = true;
        assert_eq!(
            not_ready(false, false, &removed).as_deref(),
            Some("removed from the cluster")
        );
        let mut joining = status();
        joining.voters = vec![2, 3];
        assert_eq!(
            not_ready(false, true, &joining).as_deref(),
            Some("not a member of the cluster (yet)")
        );
        joining.learners = vec![1];
        assert_eq!(not_ready(false, true, &joining), None);
    }

    #[test]
    fn an_unconfirmed_leader_is_explained_from_the_status() {
        let bound = Duration::from_millis(300);
        assert_eq!(
            unconfirmed(&status(), bound),
            "no answer from leader 2 within 300 ms"
        );
        let mut behind = status();
        behind.last_applied = 7;
        assert_eq!(unconfirmed(&behind, bound), "applied 7 of committed 10");
        let mut leader = status();
        leader.leader_id = Some(1);
        assert_eq!(
            unconfirmed(&leader, bound),
            "leader without a quorum: no majority confirmed it within 300 ms"
        );
        let mut lost = status();
        lost.leader_id = None;
        assert_eq!(unconfirmed(&lost, bound), "no leader");
    }
}
