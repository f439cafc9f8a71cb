//! The client side of the peer channel: one multiplexed connection per peer.
//!
//! [`Peers`] keeps one [`PeerChannel`] per remote node. A channel owns at most
//! one live TCP connection: a writer task drains every queued request into
//! the socket before flushing (so concurrent requests share syscalls), and a
//! reader task routes each response to its caller by request id. A broken
//! connection fails every request in flight on it; the next call reconnects.
//!
//! [`RaftNetwork`] adapts this to openraft's `RaftNetworkV2`: replication
//! (pipelined: several AppendEntries in flight per follower, their answers
//! put back in request order by `network/ordered_pipeline.rs`), votes,
//! snapshot streaming (the snapshot file goes out in chunks, never whole in
//! memory) and leader transfer. Forwarded writes and read-index
//! requests use the same channels (see `forward.rs` and `read.rs`).
//!
//! Call errors say whether the request may have reached the peer
//! ([`CallError::Lost`], [`CallError::Timeout`]) or certainly did not
//! ([`CallError::Unreachable`]): a forwarded write may only be retried in the
//! latter case.

use std::collections::HashMap;
use std::future::Future;
use std::io::SeekFrom;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::StreamAppendResult;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::RaftNetworkV2;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::core::{as_i64, term_of};
use super::rpc::{
    codec, orders_appends, EntryTrace, Envelope, PeerRequest, PeerResponse, RemoteError,
    SNAPSHOT_CHUNK,
};
use super::types::{LogId, Member, Snapshot, TypeConfig, Vote};
use crate::telemetry::trace::{attr, ActiveSpan, NodeTracer};
use crate::telemetry::TraceParent;
use openraft::EntryPayload;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use ordered_pipeline::{Answer, Limits, Sent};

mod ordered_pipeline;

/// Why a peer call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The request was never sent (no connection could be made).
    #[error("peer {0} unreachable: {1}")]
    Unreachable(u64, String),
    /// The connection broke after the request was queued: it may have arrived.
    #[error("connection to peer {0} lost: {1}")]
    Lost(u64, String),
    /// No answer in time: the request may have arrived.
    #[error("peer {0} did not answer within {1:?}")]
    Timeout(u64, Duration),
    /// The peer answered with an error.
    #[error("peer {0}: {1}")]
    Remote(u64, RemoteError),
    /// The peer answered with a message that does not fit the request.
    #[error("peer {0} sent an unexpected reply")]
    Protocol(u64),
}

impl CallError {
    /// Whether the request certainly did nothing on the callee.
    #[must_use]
    pub fn nothing_done(&self) -> bool {
        match self {
            CallError::Unreachable(..) => true,
            CallError::Remote(_, e) => e.nothing_done(),
            CallError::Lost(..) | CallError::Timeout(..) | CallError::Protocol(_) => false,
        }
    }

    /// A short class of the failure, for the `error.type` of trace spans.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Unreachable(..) => "unreachable",
            CallError::Lost(..) => "connection_lost",
            CallError::Timeout(..) => "timeout",
            CallError::Remote(_, e) => e.kind(),
            CallError::Protocol(_) => "protocol",
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<PeerResponse>>>>;

/// A request on its way to the writer task: its id, its encoded frame and
/// where its response goes.
type Outgoing = (u64, Bytes, oneshot::Sender<PeerResponse>);

struct Connection {
    requests: mpsc::UnboundedSender<Outgoing>,
    /// Callers waiting for a response, by request id.
    pending: Pending,
    /// Cleared by whichever of the two tasks sees the connection break first.
    alive: Arc<AtomicBool>,
}

impl Connection {
    fn is_closed(&self) -> bool {
        self.requests.is_closed() || !self.alive.load(Ordering::Acquire)
    }
}

/// Who this node is, as it introduces itself on every connection.
#[derive(Debug, Clone)]
pub struct SelfInfo {
    /// This node's id.
    pub node_id: u64,
    /// This node's RESP address.
    pub resp_addr: String,
}

/// The multiplexed channel to one peer.
pub struct PeerChannel {
    target: u64,
    addr: String,
    me: SelfInfo,
    next_id: AtomicU64,
    conn: tokio::sync::Mutex<Option<Connection>>,
    resp_addrs: Arc<Mutex<HashMap<u64, String>>>,
    connect_timeout: Duration,
    backoff: Mutex<Backoff>,
    /// Whether the peer, as of the last connection made, hands the
    /// AppendEntries of a connection to Raft in arrival order (its Hello
    /// answer said so): only then may several be in flight. False until
    /// connected.
    orders_appends: AtomicBool,
}

/// After a failed connect, further calls fail at once (nothing sent) until
/// the delay passes; the delay doubles per failure, so a dead peer costs one
/// connect attempt per period, not one per request.
#[derive(Debug, Default)]
struct Backoff {
    until: Option<Instant>,
    delay: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl PeerChannel {
    /// How many AppendEntries may be in flight to this peer now:
    /// [`MAX_APPENDS_IN_FLIGHT`], or one while not connected (the request
    /// that connects goes alone) or connected to a build that could reorder
    /// them.
    fn appends_in_flight(&self) -> usize {
        if self.orders_appends.load(Ordering::Acquire) {
            MAX_APPENDS_IN_FLIGHT
        } else {
            1
        }
    }

    /// The peer address this channel connects to.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req` and waits up to `timeout` for its response.
    ///
    /// # Errors
    /// See [`CallError`]: whether the request may have arrived is part of it.
    pub async fn call(
        &self,
        req: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let call = self.start(req, timeout).await?;
        wait_until(call.wait(), deadline, self.target, timeout).await
    }

    /// Encodes `req`, queues it on the connection (connecting first if need
    /// be) and returns the wait for its response, which has no deadline of
    /// its own. Requests started one after the other go out on the wire in
    /// that order; their responses may come back in any order.
    ///
    /// # Errors
    /// [`CallError::Unreachable`] when the request could not be encoded, or
    /// not queued within `timeout`: it was certainly not sent.
    pub async fn start(
        &self,
        req: PeerRequest,
        timeout: Duration,
    ) -> Result<PendingCall, CallError> {
        // Until `send` returns, nothing is queued: running out of time there
        // means the request was certainly not sent.
        let (id, bytes, pending, rx) = tokio::time::timeout(timeout, self.send(req))
            .await
            .map_err(|_| {
                CallError::Unreachable(self.target, "no connection within the call's time".into())
            })??;
        Ok(PendingCall {
            target: self.target,
            id,
            bytes,
            pending,
            rx,
            settled: false,
        })
    }

    /// Queues `req`; returns its id, its encoded size, the connection's
    /// waiting callers and the receiver of its response.
    async fn send(
        &self,
        req: PeerRequest,
    ) -> Result<(u64, usize, Pending, oneshot::Receiver<PeerResponse>), CallError> {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // A traced caller (a forwarded write runs in its span's context)
        // sends its span along; everything else sends none.
        let env = Envelope {
            id,
            body: req,
            trace: TraceParent::current(),
        };
        // Encoded here, not by the writer task, so the caller learns the
        // size (pipelined replication counts the bytes in flight) and
        // concurrent callers encode in parallel.
        let frame = Bytes::from(postcard::to_allocvec(&env).map_err(|e| {
            CallError::Unreachable(self.target, format!("cannot encode the request: {e}"))
        })?);
        let bytes = frame.len();
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(Connection::is_closed) {
            *guard = None;
            self.check_backoff()?;
            match self.connect().await {
                Ok(conn) => {
                    self.record_connect(true);
                    *guard = Some(conn);
                }
                Err(e) => {
                    self.record_connect(false);
                    return Err(e);
                }
            }
        }
        let conn = guard
            .as_ref()
            .ok_or_else(|| CallError::Unreachable(self.target, "no connection".into()))?;
        conn.requests
            .send((id, frame, tx))
            .map_err(|_| CallError::Unreachable(self.target, "connection closed".into()))?;
        Ok((id, bytes, conn.pending.clone(), rx))
    }

    fn check_backoff(&self) -> Result<(), CallError> {
        let backoff = self
            .backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match backoff.until {
            Some(until) if Instant::now() < until => Err(CallError::Unreachable(
                self.target,
                format!("backing off for {:?} after a failed connect", backoff.delay),
            )),
            _ => Ok(()),
        }
    }

    fn record_connect(&self, ok: bool) {
        let mut backoff = self
            .backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ok {
            *backoff = Backoff::default();
        } else {
            backoff.delay = (backoff.delay * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
            backoff.until = Some(Instant::now() + backoff.delay);
        }
    }

    async fn connect(&self) -> Result<Connection, CallError> {
        let unreachable =
            |e: &dyn std::fmt::Display| CallError::Unreachable(self.target, e.to_string());
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| unreachable(&"connect timed out"))?
            .map_err(|e| unreachable(&e))?;
        stream.set_nodelay(true).map_err(|e| unreachable(&e))?;
        let (read_half, write_half) = stream.into_split();
        let mut reader = FramedRead::new(read_half, codec());
        let mut writer = FramedWrite::new(write_half, codec());

        // Introduce ourselves before anything else, synchronously, so a peer
        // that cannot even answer a Hello is reported unreachable and no
        // request is ever queued on a connection that was never usable.
        let hello = Envelope::new(
            0,
            PeerRequest::Hello {
                node_id: self.me.node_id,
                resp_addr: self.me.resp_addr.clone(),
            },
        );
        let frame = postcard::to_allocvec(&hello).map_err(|e| unreachable(&e))?;
        let handshake = async {
            writer
                .send(Bytes::from(frame))
                .await
                .map_err(|e| unreachable(&e))?;
            match reader.next().await {
                Some(Ok(frame)) => postcard::from_bytes::<Envelope<PeerResponse>>(&frame)
                    .map_err(|e| unreachable(&e)),
                Some(Err(e)) => Err(unreachable(&e)),
                None => Err(unreachable(&"closed during handshake")),
            }
        };
        let reply = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| unreachable(&"handshake timed out"))??;
        if let PeerResponse::Hello { node_id, resp_addr } = reply.body {
            if node_id != self.target {
                return Err(unreachable(&format!(
                    "address {} belongs to node {node_id}",
                    self.addr
                )));
            }
            if let Ok(mut map) = self.resp_addrs.lock() {
                map.insert(node_id, resp_addr);
            }
        }
        // Only the peer this channel is for may set how it is talked to.
        // Builds before pipelining echo the Hello's id (0) here.
        self.orders_appends
            .store(orders_appends(reply.id), Ordering::Release);

        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, rx, pending.clone(), alive.clone()));
        tokio::spawn(read_loop(
            reader,
            pending.clone(),
            self.target,
            alive.clone(),
        ));
        Ok(Connection {
            requests: tx,
            pending,
            alive,
        })
    }
}

async fn write_loop(
    mut writer: FramedWrite<
        tokio::net::tcp::OwnedWriteHalf,
        tokio_util::codec::LengthDelimitedCodec,
    >,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    pending: Pending,
    alive: Arc<AtomicBool>,
) {
    'connection: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Queue everything that is waiting, then flush once.
        while let Some((id, frame, tx)) = next.take().or_else(|| rx.try_recv().ok()) {
            // Once the reader has seen the connection die, nobody would
            // answer: dropping `tx` tells the caller at once.
            if !alive.load(Ordering::Acquire) {
                return;
            }
            if let Ok(mut p) = pending.lock() {
                p.insert(id, tx);
            }
            if writer.feed(frame).await.is_err() {
                break 'connection;
            }
        }
        if SinkExt::<Bytes>::flush(&mut writer).await.is_err() {
            break;
        }
    }
    alive.store(false, Ordering::Release);
    fail_all(&pending);
}

async fn read_loop(
    mut reader: FramedRead<tokio::net::tcp::OwnedReadHalf, tokio_util::codec::LengthDelimitedCodec>,
    pending: Pending,
    target: u64,
    alive: Arc<AtomicBool>,
) {
    while let Some(Ok(frame)) = reader.next().await {
        match postcard::from_bytes::<Envelope<PeerResponse>>(&frame) {
            Ok(env) => {
                let tx = pending.lock().ok().and_then(|mut p| p.remove(&env.id));
                if let Some(tx) = tx {
                    let _ = tx.send(env.body);
                }
            }
            Err(e) => {
                tracing::warn!(peer = target, error = %e, "undecodable response; dropping connection");
                break;
            }
        }
    }
    // Dropping every waiting sender tells each caller the connection is lost.
    alive.store(false, Ordering::Release);
    fail_all(&pending);
}

fn fail_all(pending: &Pending) {
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}

/// A request on its way to a peer: queued on the connection, its response
/// not yet in. Dropping it (or its [`PendingCall::wait`]) stops the wait:
/// the response is then discarded.
pub struct PendingCall {
    target: u64,
    id: u64,
    /// The request's encoded size.
    bytes: usize,
    /// The connection's waiting callers, to leave when giving up.
    pending: Pending,
    rx: oneshot::Receiver<PeerResponse>,
    /// The response arrived or the connection dropped the waiter: nothing
    /// to clean up.
    settled: bool,
}

impl PendingCall {
    /// The request's size on the wire (its frame, without the length
    /// prefix).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Waits for the response, without a deadline: the caller bounds the
    /// wait (see [`PeerChannel::call`] and pipelined replication).
    ///
    /// # Errors
    /// [`CallError::Lost`] (the request may have arrived), or the peer's
    /// [`CallError::Remote`] answer.
    pub async fn wait(mut self) -> Result<PeerResponse, CallError> {
        let received = (&mut self.rx).await;
        self.settled = true;
        match received {
            Err(_) => Err(CallError::Lost(self.target, "connection closed".into())),
            Ok(PeerResponse::Error(e)) => Err(CallError::Remote(self.target, e)),
            Ok(resp) => Ok(resp),
        }
    }
}

/// `wait`'s outcome, or [`CallError::Timeout`] (reporting `timeout`) once
/// `deadline` passes; dropping `wait` then leaves the connection's waiting
/// callers.
async fn wait_until<T>(
    wait: impl Future<Output = Result<T, CallError>>,
    deadline: tokio::time::Instant,
    target: u64,
    timeout: Duration,
) -> Result<T, CallError> {
    tokio::time::timeout_at(deadline, wait)
        .await
        .unwrap_or(Err(CallError::Timeout(target, timeout)))
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.settled {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&self.id);
            }
        }
    }
}

/// Every peer channel of this node, created on first use.
pub struct Peers {
    me: SelfInfo,
    channels: Mutex<HashMap<u64, Arc<PeerChannel>>>,
    resp_addrs: Arc<Mutex<HashMap<u64, String>>>,
    connect_timeout: Duration,
}

impl Peers {
    /// A registry for a node that introduces itself as `me`.
    #[must_use]
    pub fn new(me: SelfInfo, connect_timeout: Duration) -> Self {
        let resp_addrs = Arc::new(Mutex::new(HashMap::from([(
            me.node_id,
            me.resp_addr.clone(),
        )])));
        Peers {
            me,
            channels: Mutex::default(),
            resp_addrs,
            connect_timeout,
        }
    }

    /// The channel to `target` at `addr`; replaced if the address changed.
    #[must_use]
    pub fn channel(&self, target: u64, addr: &str) -> Arc<PeerChannel> {
        let mut map = match self.channels.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(ch) = map.get(&target) {
            if ch.addr == addr {
                return ch.clone();
            }
        }
        let ch = Arc::new(PeerChannel {
            target,
            addr: addr.to_string(),
            me: self.me.clone(),
            next_id: AtomicU64::new(1),
            conn: tokio::sync::Mutex::new(None),
            resp_addrs: self.resp_addrs.clone(),
            connect_timeout: self.connect_timeout,
            backoff: Mutex::default(),
            orders_appends: AtomicBool::new(false),
        });
        map.insert(target, ch.clone());
        ch
    }

    /// Records the RESP address a peer announced.
    pub fn learn_resp_addr(&self, node_id: u64, resp_addr: String) {
        if let Ok(mut m) = self.resp_addrs.lock() {
            m.insert(node_id, resp_addr);
        }
    }

    /// The RESP address of `node_id`, if it has introduced itself.
    #[must_use]
    pub fn resp_addr(&self, node_id: u64) -> Option<String> {
        self.resp_addrs.lock().ok()?.get(&node_id).cloned()
    }

    /// This node's identity.
    #[must_use]
    pub fn me(&self) -> &SelfInfo {
        &self.me
    }
}

/// openraft's network factory over [`Peers`].
#[derive(Clone)]
pub struct NetworkFactory {
    peers: Arc<Peers>,
    min_rpc_timeout: Duration,
    tracer: NodeTracer,
}

impl NetworkFactory {
    /// A factory handing out channels from `peers`. Raft RPCs wait at least
    /// `min_rpc_timeout` for an answer: openraft asks for one heartbeat
    /// interval, and a link (or a follower's fsync) slower than that would
    /// otherwise stall replication for good without ever causing an
    /// election. The election timeout is the natural floor: an answer
    /// slower than that is as good as none.
    #[must_use]
    pub fn new(peers: Arc<Peers>, min_rpc_timeout: Duration, tracer: NodeTracer) -> Self {
        NetworkFactory {
            peers,
            min_rpc_timeout,
            tracer,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = RaftNetwork;

    async fn new_client(&mut self, target: u64, node: &Member) -> Self::Network {
        RaftNetwork {
            tracer: self.tracer.clone(),
            channel: self.peers.channel(target, &node.peer_addr),
            min_rpc_timeout: self.min_rpc_timeout,
        }
    }
}

/// openraft's view of one peer.
pub struct RaftNetwork {
    channel: Arc<PeerChannel>,
    min_rpc_timeout: Duration,
    /// Spans of traced entries sent to this peer.
    tracer: NodeTracer,
}

fn rpc_error(e: CallError) -> RPCError<TypeConfig> {
    match e {
        CallError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Timeout(..)
        | CallError::Lost(..)
        | CallError::Remote(..)
        | CallError::Protocol(_) => RPCError::Network(NetworkError::new(&e)),
    }
}

fn streaming_error(e: CallError) -> StreamingError<TypeConfig> {
    match e {
        CallError::Unreachable(..) => StreamingError::Unreachable(Unreachable::new(&e)),
        _ => StreamingError::Network(NetworkError::new(&e)),
    }
}

/// Sets `server.address` (host) and `server.port` from a `host:port` peer
/// address, as OpenTelemetry's conventions split them.
pub(super) fn set_server_address(span: &ActiveSpan, addr: &str) {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            span.set(KeyValue::new(attr::SERVER_ADDRESS, host.to_owned()));
            if let Ok(port) = port.parse::<u16>() {
                span.set(KeyValue::new(attr::SERVER_PORT, i64::from(port)));
            }
        }
        None => span.set(KeyValue::new(attr::SERVER_ADDRESS, addr.to_owned())),
    }
}

impl RaftNetwork {
    /// The leader's `raftis.Peer/AppendEntries` span for each traced entry of
    /// `rpc` (ended when dropped, once the follower answered), linked to the
    /// other traced entries the request carries, and what the follower
    /// needs to continue each trace.
    fn sent_spans(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> (Vec<ActiveSpan>, Vec<EntryTrace>) {
        if !self.tracer.is_on() {
            return (Vec::new(), Vec::new());
        }
        // Old entries (a follower catching up) no longer belong to a live
        // trace: see `TRACE_HORIZON_MS`.
        let now_ms = super::core::now_ms();
        let traced: Vec<(u64, u64, TraceParent)> = rpc
            .entries
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Normal(stamped) => Some((
                    e.log_id.index(),
                    term_of(&e.log_id),
                    stamped.live_trace(now_ms)?,
                )),
                _ => None,
            })
            .collect();
        let parents: Vec<TraceParent> = traced.iter().map(|t| t.2).collect();
        let mut spans = Vec::with_capacity(traced.len());
        let mut traces = Vec::with_capacity(traced.len());
        for (index, term, parent) in traced {
            let Some(span) = self.tracer.rpc(
                Some(parent),
                "raftis.Peer/AppendEntries",
                SpanKind::Client,
                "AppendEntries",
                Some(self.channel.target),
                &parents,
            ) else {
                continue;
            };
            set_server_address(&span, &self.channel.addr);
            span.set(KeyValue::new(attr::LOG_INDEX, as_i64(index)));
            span.set(KeyValue::new(attr::LOG_TERM, as_i64(term)));
            span.set(KeyValue::new(
                attr::BATCH_ENTRIES,
                as_i64(rpc.entries.len() as u64),
            ));
            if let Some(parent) = span.parent() {
                traces.push(EntryTrace { index, parent });
            }
            spans.push(span);
        }
        (spans, traces)
    }

    /// How long a Raft RPC may wait for its answer: openraft's hard TTL,
    /// but at least `min_rpc_timeout` (see [`NetworkFactory::new`]).
    fn rpc_timeout(&self, option: &RPCOption) -> Duration {
        option.hard_ttl().max(self.min_rpc_timeout)
    }

    async fn call(&self, req: PeerRequest, option: &RPCOption) -> Result<PeerResponse, CallError> {
        self.channel.call(req, self.rpc_timeout(option)).await
    }

    /// Puts one AppendEntries on the wire, with the leader's spans of its
    /// traced entries.
    async fn start_append(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<SentAppend, CallError> {
        let (spans, traces) = self.sent_spans(&rpc);
        let prev = rpc.prev_log_id;
        let last = rpc.entries.last().map(|e| e.log_id).or(prev);
        match self
            .channel
            .start(PeerRequest::AppendEntries(rpc, traces), timeout)
            .await
        {
            Ok(call) => Ok(SentAppend {
                call,
                spans,
                target: self.channel.target,
                prev,
                last,
            }),
            Err(e) => {
                for span in &spans {
                    span.fail(e.kind(), &e.to_string());
                }
                Err(e)
            }
        }
    }

    /// [`RaftNetwork::start_append`] as a step of the pipelined stream: the
    /// wait for the answer (without a deadline: the pipeline times the
    /// oldest request) and the request's size, or the request's (last)
    /// answer when it could not be sent within `timeout`.
    async fn send_in_stream(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<Sent<impl Future<Output = Answer<StreamItem>> + Send>, StreamItem> {
        match self.start_append(rpc, timeout).await {
            Ok(sent) => Ok(Sent {
                bytes: sent.call.bytes(),
                answer: async move {
                    let (target, prev, last) = (sent.target, sent.prev, sent.last);
                    stream_answer(sent.answer(None).await, target, prev, last)
                },
            }),
            Err(e) => Err(Err(rpc_error(e))),
        }
    }

    async fn send_snapshot(
        &self,
        vote: Vote,
        mut snapshot: Snapshot,
        option: &RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, CallError> {
        let target = self.channel.target;
        let io_err =
            |e: std::io::Error| CallError::Lost(target, format!("reading snapshot file: {e}"));
        let transfer_id = rand::random::<u64>();
        snapshot
            .snapshot
            .seek(SeekFrom::Start(0))
            .await
            .map_err(io_err)?;
        let mut offset = 0u64;
        let mut buf = vec![0u8; SNAPSHOT_CHUNK];
        loop {
            let n = read_full(&mut snapshot.snapshot, &mut buf)
                .await
                .map_err(io_err)?;
            if n == 0 {
                break;
            }
            let chunk = PeerRequest::SnapshotChunk {
                transfer_id,
                offset,
                data: Bytes::copy_from_slice(&buf[..n]),
            };
            match self.call(chunk, option).await {
                Ok(PeerResponse::ChunkWritten) => {}
                Ok(_) => return Err(CallError::Protocol(target)),
                Err(e) => return Err(pause_if_no_space(e).await),
            }
            offset += n as u64;
        }
        let install = PeerRequest::InstallSnapshot {
            transfer_id,
            vote,
            meta: snapshot.meta.clone(),
        };
        match self
            .channel
            .call(install, option.hard_ttl().max(Duration::from_secs(60)))
            .await
        {
            Ok(PeerResponse::Snapshot(resp)) => Ok(resp),
            Ok(_) => Err(CallError::Protocol(target)),
            Err(e) => Err(pause_if_no_space(e).await),
        }
    }
}

/// How many AppendEntries may be sent to one follower and not yet answered.
/// One is stop-and-wait: every request pays a round trip that includes the
/// follower's fsync, and entries proposed meanwhile wait for the next one.
/// A few in flight keep the follower's log and fsync busy: it appends the
/// next request while the previous one is being synced, so requests that
/// arrive together share one fsync. More than a handful buys nothing (the
/// leader batches whatever accumulated into each request, up to
/// `max_payload_entries`) and only adds what is resent after a conflict or
/// a broken connection.
pub const MAX_APPENDS_IN_FLIGHT: usize = 8;

/// No further AppendEntries is sent to a follower while this many bytes
/// (encoded) of them are unanswered; one request always may go, however
/// big. A request carries up to `max_payload_entries` entries, each with a
/// value of up to 512 MB, so [`MAX_APPENDS_IN_FLIGHT`] of them could pin
/// gigabytes in the leader's socket buffers and the follower's queue, and
/// resend them all after a conflict. 16 MiB keeps a fast link busy (well
/// over a round trip's worth at 10 Gbit/s and a millisecond) while bounding
/// that memory per follower.
pub const MAX_APPEND_BYTES_IN_FLIGHT: usize = 16 * 1024 * 1024;

/// One item of the `stream_append` output, as openraft expects it.
type StreamItem = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// An AppendEntries on its way to the follower, with what its answer needs.
struct SentAppend {
    call: PendingCall,
    /// The leader's spans of the request's traced entries, ended once it is
    /// answered.
    spans: Vec<ActiveSpan>,
    target: u64,
    /// The log id before the request's entries.
    prev: Option<LogId>,
    /// The log id of its last entry (`prev` when it has none).
    last: Option<LogId>,
}

impl SentAppend {
    /// Waits for the follower's answer, until `deadline` if given (with the
    /// timeout it ends, for the error), and ends the spans accordingly.
    async fn answer(
        self,
        deadline: Option<(tokio::time::Instant, Duration)>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, CallError> {
        let wait = self.call.wait();
        let received = match deadline {
            Some((deadline, timeout)) => wait_until(wait, deadline, self.target, timeout).await,
            None => wait.await,
        };
        let answer = match received {
            Ok(PeerResponse::AppendEntries(r)) => Ok(r),
            Ok(_) => Err(CallError::Protocol(self.target)),
            Err(e) => Err(e),
        };
        for span in &self.spans {
            match &answer {
                // The follower refused the entries (a conflict, a newer
                // vote): openraft sends them again or steps down.
                Ok(r) if !r.is_success() => span.not_done("refused"),
                Ok(_) => {}
                Err(e) => span.fail(e.kind(), &e.to_string()),
            }
        }
        answer
    }
}

/// What the `stream_append` output yields for `target`'s answer to a
/// request covering `(prev, last]`, and whether the stream ends with it:
/// exactly as openraft's `stream_append_sequential` treats each answer.
fn stream_answer(
    answer: Result<AppendEntriesResponse<TypeConfig>, CallError>,
    target: u64,
    prev: Option<LogId>,
    last: Option<LogId>,
) -> Answer<StreamItem> {
    match answer {
        // A conflict names the entry before the request's; there is none
        // before the start of the log, so such an answer makes no sense
        // (and openraft would panic on it).
        Ok(AppendEntriesResponse::Conflict) if prev.is_none() => Answer {
            item: Err(rpc_error(CallError::Protocol(target))),
            last: true,
        },
        Ok(resp) => {
            // A partial success that covers less than was sent ends the
            // stream: the rest must be sent again from where it stopped.
            let complete = match &resp {
                AppendEntriesResponse::Success => true,
                AppendEntriesResponse::PartialSuccess(matched) => *matched == last,
                AppendEntriesResponse::Conflict | AppendEntriesResponse::HigherVote(_) => false,
            };
            Answer {
                item: Ok(resp.into_stream_result(prev, last)),
                last: !complete,
            }
        }
        Err(e) => Answer {
            item: Err(rpc_error(e)),
            last: true,
        },
    }
}

/// How long the sender waits after a peer refused a snapshot for lack of
/// disk space before it reports the failure (and openraft starts over).
const NO_SPACE_PAUSE: Duration = Duration::from_secs(1);

/// Returns `e`, after [`NO_SPACE_PAUSE`] when it is a refusal for lack of
/// disk space: openraft retries a failed snapshot at once, ten times, then
/// every 200 ms, and each try reads and sends a chunk again, while freeing
/// space takes an operator. The pause ends early if replication is closed
/// (`full_snapshot` drops this future).
async fn pause_if_no_space(e: CallError) -> CallError {
    if matches!(e, CallError::Remote(_, RemoteError::NoSpace(_))) {
        tokio::time::sleep(NO_SPACE_PAUSE).await;
    }
    e
}

/// Reads until `buf` is full or the file ends.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

impl RaftNetworkV2<TypeConfig> for RaftNetwork {
    type SnapshotData = tokio::fs::File;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = self.rpc_timeout(&option);
        let deadline = tokio::time::Instant::now() + timeout;
        match self.start_append(rpc, timeout).await {
            Ok(sent) => sent
                .answer(Some((deadline, timeout)))
                .await
                .map_err(rpc_error),
            Err(e) => Err(rpc_error(e)),
        }
    }

    /// Pipelined replication: each request goes out as soon as openraft
    /// hands it over, up to [`MAX_APPENDS_IN_FLIGHT`] and
    /// [`MAX_APPEND_BYTES_IN_FLIGHT`] unanswered (one at a time to a
    /// follower of a build before `PEER_PROTOCOL` 1), instead of one round
    /// trip (with the follower's fsync in it) per request. The follower
    /// hands a connection's requests to Raft in arrival order
    /// (`rpc_server.rs`), and the answers come out here in request order.
    /// Like openraft's sequential default, the stream ends after the first
    /// answer that is not a full success (a conflict, a higher vote, a
    /// partial success) or the first transport error. As openraft asks of
    /// a streaming transport, the timeout is per answer, not per request:
    /// the oldest unanswered request must be answered within it of its
    /// send or of the previous answer, so requests queued behind a large
    /// one are not failed for the wait, and a silent follower still ends
    /// the stream one timeout after its last answer.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, StreamItem>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let timeout = self.rpc_timeout(&option);
        let this: &'s RaftNetwork = self;
        let channel = &*this.channel;
        let target = channel.target;
        let limits = Limits {
            requests: move || channel.appends_in_flight(),
            bytes: MAX_APPEND_BYTES_IN_FLIGHT,
            answer_timeout: timeout,
        };
        let answers = ordered_pipeline::ordered(
            input,
            limits,
            move |rpc| this.send_in_stream(rpc, timeout),
            move || Err(rpc_error(CallError::Timeout(target, timeout))),
        );
        let answers: BoxStream<'s, _> = Box::pin(answers);
        Box::pin(std::future::ready(Ok(answers)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(PeerRequest::Vote(rpc), &option)
            .await
            .map_err(rpc_error)?
        {
            PeerResponse::Vote(r) => Ok(r),
            _ => Err(rpc_error(CallError::Protocol(self.channel.target))),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(PeerRequest::PreVote(rpc), &option)
            .await
            .map_err(rpc_error)?
        {
            PeerResponse::Vote(r) => Ok(r),
            _ => Err(rpc_error(CallError::Protocol(self.channel.target))),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = self.send_snapshot(vote, snapshot, &option) => res.map_err(streaming_error),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(PeerRequest::TransferLeader(req), &option)
            .await
            .map_err(rpc_error)?
        {
            PeerResponse::TransferLeader(r) => Ok(r),
            _ => Err(rpc_error(CallError::Protocol(self.channel.target))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use futures::{SinkExt, StreamExt};
    use openraft::errors::RPCError;
    use openraft::network::{RPCOption, RaftNetworkFactory};
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendError};
    use openraft::RaftNetworkV2;
    use tokio::net::TcpListener;
    use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

    use super::{stream_answer, CallError, NetworkFactory, Peers, SelfInfo};
    use crate::cluster::rpc::{codec, Envelope, PeerRequest, PeerResponse, PEER_PROTOCOL};
    use crate::cluster::types::test_values::{append_after, log_id};
    use crate::cluster::types::{Member, TypeConfig, Vote};
    use crate::telemetry::trace::NodeTracer;

    /// The first connection to `listener`, framed as the peer channel
    /// frames it: the fake peers' side of a test.
    async fn accept_framed(
        listener: &TcpListener,
    ) -> (
        FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
        FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>,
    ) {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, w) = stream.into_split();
        (FramedRead::new(r, codec()), FramedWrite::new(w, codec()))
    }

    /// A follower (node 2) of this build on a free port that answers the
    /// Hello and the first AppendEntries (the sender pipelines only once the
    /// follower has answered), then reads `expect` more without answering
    /// any, and only then answers those, last first, with `answer(prev)`;
    /// `None` closes the connection instead. A sender that waited for each
    /// answer before sending the next request would never get one: the
    /// test's deadline would fail it. Returns the address and the `prev`
    /// indexes received.
    async fn slow_follower(
        expect: usize,
        answer: fn(u64) -> Option<AppendEntriesResponse<TypeConfig>>,
    ) -> (String, tokio::task::JoinHandle<Vec<u64>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut reader, mut writer) = accept_framed(&listener).await;
            let send = |body: PeerResponse, id: u64| {
                Bytes::from(postcard::to_allocvec(&Envelope::new(id, body)).unwrap())
            };
            let frame = reader.next().await.unwrap().unwrap();
            let hello: Envelope<PeerRequest> = postcard::from_bytes(&frame).unwrap();
            assert!(matches!(hello.body, PeerRequest::Hello { .. }));
            let hello = PeerResponse::Hello {
                node_id: 2,
                resp_addr: "127.0.0.1:2".into(),
            };
            writer.send(send(hello, PEER_PROTOCOL)).await.unwrap();
            let mut received = Vec::new();
            let frame = reader.next().await.unwrap().unwrap();
            let first: Envelope<PeerRequest> = postcard::from_bytes(&frame).unwrap();
            let PeerRequest::AppendEntries(rpc, _) = first.body else {
                panic!("expected AppendEntries, got {:?}", first.body);
            };
            let success = PeerResponse::AppendEntries(AppendEntriesResponse::Success);
            writer.send(send(success, first.id)).await.unwrap();
            let first_prev = rpc.prev_log_id.unwrap().index;
            while received.len() < expect {
                let frame = reader.next().await.unwrap().unwrap();
                let env: Envelope<PeerRequest> = postcard::from_bytes(&frame).unwrap();
                match env.body {
                    PeerRequest::AppendEntries(rpc, _) => {
                        received.push((env.id, rpc.prev_log_id.unwrap().index));
                    }
                    other => panic!("expected AppendEntries, got {other:?}"),
                }
            }
            for &(id, prev) in received.iter().rev() {
                match answer(prev) {
                    Some(resp) => writer
                        .send(send(PeerResponse::AppendEntries(resp), id))
                        .await
                        .unwrap(),
                    None => break,
                }
            }
            let prevs = std::iter::once(first_prev).chain(received.iter().map(|r| r.1));
            let prevs = prevs.collect();
            if received.iter().all(|&(_, prev)| answer(prev).is_some()) {
                // Keep the connection open until the sender is done with it.
                let _ = reader.next().await;
            }
            prevs
        });
        (addr, task)
    }

    /// Node 1's openraft view of node 2 at `addr`.
    /// This node's peer channels, as node 1, backing off `backoff` after
    /// a failed connect.
    fn node_1_peers(backoff: Duration) -> Peers {
        Peers::new(
            SelfInfo {
                node_id: 1,
                resp_addr: "127.0.0.1:1".into(),
            },
            backoff,
        )
    }

    async fn network_to(addr: &str) -> super::RaftNetwork {
        let peers = Arc::new(node_1_peers(Duration::from_secs(5)));
        let mut factory = NetworkFactory::new(peers, Duration::from_secs(10), NodeTracer::off());
        factory
            .new_client(
                2,
                &Member {
                    peer_addr: addr.to_string(),
                },
            )
            .await
    }

    type Item = Result<openraft::raft::StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

    /// Runs `stream_append` over `requests` (ending the input after them)
    /// and collects its output, within a deadline.
    async fn stream(addr: &str, prevs: &[u64]) -> Vec<Item> {
        let mut network = network_to(addr).await;
        let input =
            futures::stream::iter(prevs.iter().map(|&p| append_after(p)).collect::<Vec<_>>());
        let option = RPCOption::new(Duration::from_secs(10));
        tokio::time::timeout(Duration::from_secs(20), async {
            let output = network.stream_append(input, option).await.unwrap();
            output.collect::<Vec<_>>().await
        })
        .await
        .expect("the follower answers only once three requests are in flight")
    }

    /// Once the follower has answered, three AppendEntries are on the wire
    /// before the next answer, in request order; answered last first, they
    /// come out first first.
    #[tokio::test]
    async fn stream_append_keeps_several_in_flight_and_answers_in_order() {
        let (addr, follower) = slow_follower(3, |_| Some(AppendEntriesResponse::Success)).await;
        let out = stream(&addr, &[0, 1, 2, 3]).await;
        let matched: Vec<_> = out.into_iter().map(|item| item.unwrap().unwrap()).collect();
        let expected: Vec<_> = (0..4).map(|i| Some(log_id(i))).collect();
        assert_eq!(matched, expected);
        assert_eq!(
            follower.await.unwrap(),
            [0, 1, 2, 3],
            "sent in request order"
        );
    }

    /// A conflict ends the output, even though the request after it was
    /// answered (first) with a success.
    #[tokio::test]
    async fn stream_append_ends_after_a_conflict() {
        let (addr, follower) = slow_follower(3, |prev| {
            Some(if prev == 2 {
                AppendEntriesResponse::Conflict
            } else {
                AppendEntriesResponse::Success
            })
        })
        .await;
        let out = stream(&addr, &[0, 1, 2, 3]).await;
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0].as_ref().unwrap().as_ref().unwrap(), &Some(log_id(0)));
        assert_eq!(out[1].as_ref().unwrap().as_ref().unwrap(), &Some(log_id(1)));
        match &out[2] {
            Ok(Err(StreamAppendError::Conflict(at))) => assert_eq!(*at, log_id(2)),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(follower.await.unwrap(), [0, 1, 2, 3]);
    }

    /// A connection that breaks with requests in flight ends the output
    /// with a network error, after the answers that came before it.
    #[tokio::test]
    async fn stream_append_ends_with_the_first_transport_error() {
        let (addr, follower) = slow_follower(2, |prev| {
            (prev == 2).then_some(AppendEntriesResponse::Success)
        })
        .await;
        // The follower answers request 2 and hangs up before answering 1.
        let out = stream(&addr, &[0, 1, 2]).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].as_ref().unwrap().as_ref().unwrap(), &Some(log_id(0)));
        assert!(matches!(out[1], Err(RPCError::Network(_))), "{out:?}");
        assert_eq!(follower.await.unwrap(), [0, 1, 2]);
    }

    /// Towards a follower of a build before pipelining (its Hello answer
    /// carries the caller's id, 0), AppendEntries go one at a time: when the
    /// follower receives a request, the next one has not even been taken
    /// from openraft's input.
    #[tokio::test(flavor = "current_thread")]
    async fn stream_append_sends_one_at_a_time_to_an_old_follower() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = pulled.clone();
        let follower = tokio::spawn(async move {
            let (mut reader, mut writer) = accept_framed(&listener).await;
            let mut pulled_at_arrival = Vec::new();
            while let Some(Ok(frame)) = reader.next().await {
                let env: Envelope<PeerRequest> = postcard::from_bytes(&frame).unwrap();
                let body = match env.body {
                    PeerRequest::Hello { .. } => PeerResponse::Hello {
                        node_id: 2,
                        resp_addr: "127.0.0.1:2".into(),
                    },
                    PeerRequest::AppendEntries(..) => {
                        pulled_at_arrival.push(seen.load(std::sync::atomic::Ordering::SeqCst));
                        PeerResponse::AppendEntries(AppendEntriesResponse::Success)
                    }
                    other => panic!("unexpected {other:?}"),
                };
                // An old build answers with the request's own id.
                let frame = postcard::to_allocvec(&Envelope::new(env.id, body)).unwrap();
                writer.send(Bytes::from(frame)).await.unwrap();
                if pulled_at_arrival.len() == 3 {
                    break;
                }
            }
            pulled_at_arrival
        });
        let mut network = network_to(&addr).await;
        let counter = pulled.clone();
        let input = futures::stream::iter([1, 2, 3].map(append_after)).inspect(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let output = tokio::time::timeout(Duration::from_secs(20), async {
            let option = RPCOption::new(Duration::from_secs(10));
            let output = network.stream_append(input, option).await.unwrap();
            output.collect::<Vec<_>>().await
        })
        .await
        .unwrap();
        let matched: Vec<_> = output.into_iter().map(|i| i.unwrap().unwrap()).collect();
        assert_eq!(matched, [Some(log_id(1)), Some(log_id(2)), Some(log_id(3))]);
        assert_eq!(follower.await.unwrap(), [1, 2, 3]);
    }

    /// A request after entry `prev` carrying one entry whose value is
    /// `value_len` bytes.
    fn big_append(prev: u64, value_len: usize) -> AppendEntriesRequest<TypeConfig> {
        let entry = crate::cluster::types::Entry {
            log_id: log_id(prev + 1),
            payload: openraft::EntryPayload::Normal(crate::cluster::types::StampedOp {
                now_ms: 0,
                op: crate::cluster::op::Op::SetNx {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from(vec![b'v'; value_len]),
                },
                trace: None,
            }),
        };
        AppendEntriesRequest {
            entries: vec![entry],
            ..append_after(prev)
        }
    }

    /// No AppendEntries is sent while `MAX_APPEND_BYTES_IN_FLIGHT` or more
    /// (encoded) are unanswered: with 6 MiB requests, three are in flight,
    /// not `MAX_APPENDS_IN_FLIGHT`. On a current-thread runtime the
    /// sender takes from openraft's input until it must wait, before the
    /// follower reads anything; so when the third big request arrives, a
    /// sender without a byte limit would have taken all of them.
    #[tokio::test(flavor = "current_thread")]
    async fn stream_append_stops_at_the_byte_limit() {
        const VALUE: usize = 6 * 1024 * 1024;
        // Two requests stay under the limit, three reach it.
        const {
            assert!(
                3 * VALUE >= super::MAX_APPEND_BYTES_IN_FLIGHT
                    && 2 * VALUE < super::MAX_APPEND_BYTES_IN_FLIGHT
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = pulled.clone();
        let follower = tokio::spawn(async move {
            let (mut reader, mut writer) = accept_framed(&listener).await;
            let mut unanswered = Vec::new();
            let mut pulled_at_arrival = Vec::new();
            let answer = |id: u64| {
                let body = PeerResponse::AppendEntries(AppendEntriesResponse::Success);
                Bytes::from(postcard::to_allocvec(&Envelope::new(id, body)).unwrap())
            };
            while let Some(Ok(frame)) = reader.next().await {
                let env: Envelope<PeerRequest> = postcard::from_bytes(&frame).unwrap();
                match env.body {
                    PeerRequest::Hello { .. } => {
                        let body = PeerResponse::Hello {
                            node_id: 2,
                            resp_addr: "127.0.0.1:2".into(),
                        };
                        let frame = postcard::to_allocvec(&Envelope::new(PEER_PROTOCOL, body));
                        writer.send(Bytes::from(frame.unwrap())).await.unwrap();
                    }
                    PeerRequest::AppendEntries(rpc, _) => {
                        pulled_at_arrival.push(seen.load(std::sync::atomic::Ordering::SeqCst));
                        if rpc.entries.is_empty() {
                            // The first, small request: answered at once,
                            // so the sender may pipeline.
                            writer.send(answer(env.id)).await.unwrap();
                        } else {
                            unanswered.push(env.id);
                        }
                        // Three big ones in flight, or the last two: answer
                        // them all.
                        if unanswered.len() == 3 || pulled_at_arrival.len() == 6 {
                            for id in unanswered.drain(..) {
                                writer.send(answer(id)).await.unwrap();
                            }
                        }
                        if pulled_at_arrival.len() == 6 {
                            break;
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            pulled_at_arrival
        });
        let mut network = network_to(&addr).await;
        let counter = pulled.clone();
        let requests = std::iter::once(append_after(0)).chain((0..5).map(|p| big_append(p, VALUE)));
        let input = futures::stream::iter(requests.collect::<Vec<_>>()).inspect(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let output = tokio::time::timeout(Duration::from_secs(60), async {
            let option = RPCOption::new(Duration::from_secs(10));
            let output = network.stream_append(input, option).await.unwrap();
            output.collect::<Vec<_>>().await
        })
        .await
        .unwrap();
        let matched: Vec<_> = output.into_iter().map(|i| i.unwrap().unwrap()).collect();
        let expected: Vec<_> = std::iter::once(Some(log_id(0)))
            .chain((1..=5).map(|i| Some(log_id(i))))
            .collect();
        assert_eq!(matched, expected);
        // The first went alone; then three big ones, 18 MiB, and nothing
        // more was taken until they were answered. (When the last two are
        // taken depends on how the sender's and the follower's turns
        // interleave: only that all six were is certain.)
        let pulled_at_arrival = follower.await.unwrap();
        assert_eq!(pulled_at_arrival[..4], [1, 4, 4, 4]);
        assert_eq!(pulled_at_arrival.len(), 6);
        assert_eq!(pulled.load(std::sync::atomic::Ordering::SeqCst), 6);
    }

    /// A Hello answered by another node than the channel's says nothing of
    /// how the channel's peer handles AppendEntries: it stays one at a time.
    #[tokio::test]
    async fn a_wrong_node_does_not_set_the_protocol() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let impostor = tokio::spawn(async move {
            let (mut reader, mut writer) = accept_framed(&listener).await;
            let _hello = reader.next().await.unwrap().unwrap();
            let body = PeerResponse::Hello {
                node_id: 3,
                resp_addr: "127.0.0.1:3".into(),
            };
            let frame = postcard::to_allocvec(&Envelope::new(PEER_PROTOCOL, body)).unwrap();
            writer.send(Bytes::from(frame)).await.unwrap();
            // Hold the connection until the caller gives up on it.
            let _ = reader.next().await;
        });
        let peers = node_1_peers(Duration::from_secs(5));
        let channel = peers.channel(2, &addr);
        let call = channel
            .call(PeerRequest::ReadIndex, Duration::from_secs(10))
            .await;
        match call {
            Err(CallError::Unreachable(2, why)) => assert!(why.contains("node 3"), "{why}"),
            other => panic!("expected the wrong node to be refused, got {other:?}"),
        }
        assert_eq!(channel.appends_in_flight(), 1);
        impostor.await.unwrap();
    }

    /// Each answer maps to openraft's stream item as its sequential
    /// `stream_append` maps it, and ends the stream where that one does.
    #[test]
    fn answers_map_as_openraft_maps_them() {
        let (prev, last) = (Some(log_id(4)), Some(log_id(9)));
        let ok = stream_answer(Ok(AppendEntriesResponse::Success), 2, prev, last);
        assert!(!ok.last);
        assert_eq!(ok.item.unwrap().unwrap(), last);

        let whole = stream_answer(
            Ok(AppendEntriesResponse::PartialSuccess(last)),
            2,
            prev,
            last,
        );
        assert!(!whole.last, "a partial success that covers it all goes on");
        let part = stream_answer(
            Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(6)))),
            2,
            prev,
            last,
        );
        assert!(part.last, "a partial success ends the stream");
        assert_eq!(part.item.unwrap().unwrap(), Some(log_id(6)));

        let conflict = stream_answer(Ok(AppendEntriesResponse::Conflict), 2, prev, last);
        assert!(conflict.last);
        assert!(matches!(
            conflict.item,
            Ok(Err(StreamAppendError::Conflict(at))) if at == log_id(4)
        ));
        let nonsense = stream_answer(Ok(AppendEntriesResponse::Conflict), 2, None, None);
        assert!(nonsense.last);
        assert!(matches!(nonsense.item, Err(RPCError::Network(_))));

        let higher = stream_answer(
            Ok(AppendEntriesResponse::HigherVote(Vote::new(5, 3))),
            2,
            prev,
            last,
        );
        assert!(higher.last);
        assert!(matches!(
            higher.item,
            Ok(Err(StreamAppendError::HigherVote(_)))
        ));

        let lost = stream_answer(Err(CallError::Lost(2, "gone".into())), 2, prev, last);
        assert!(lost.last);
        assert!(matches!(lost.item, Err(RPCError::Network(_))));
        let unsent = stream_answer(Err(CallError::Unreachable(2, "no".into())), 2, prev, last);
        assert!(matches!(unsent.item, Err(RPCError::Unreachable(_))));
    }

    /// A dead peer costs one connect attempt per backoff period: calls in
    /// between fail at once, as not sent, without touching the network.
    #[tokio::test]
    async fn failed_connect_backs_off_and_reports_not_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let peers = node_1_peers(Duration::from_millis(500));
        let channel = peers.channel(2, &addr);
        let first = channel
            .call(PeerRequest::ReadIndex, Duration::from_secs(2))
            .await;
        match first {
            Err(CallError::Unreachable(2, why)) => assert!(!why.contains("backing off"), "{why}"),
            other => panic!("expected a refused connect, got {other:?}"),
        }
        let second = channel
            .call(PeerRequest::ReadIndex, Duration::from_secs(2))
            .await;
        match second {
            Err(CallError::Unreachable(2, why)) => assert!(why.contains("backing off"), "{why}"),
            other => panic!("expected to back off, got {other:?}"),
        }
    }
}
