//! The client side of the peer channel: one multiplexed connection per peer.
//!
//! [`Peers`] keeps one [`PeerChannel`] per remote node. A channel owns at most
//! one live TCP connection: a writer task drains every queued request into
//! the socket before flushing (so concurrent requests share syscalls), and a
//! reader task routes each response to its caller by request id. A broken
//! connection fails every request in flight on it; the next call reconnects.
//!
//! [`RaftNetwork`] adapts this to openraft's `RaftNetworkV2`: replication,
//! votes, snapshot streaming (the snapshot file goes out in chunks, never
//! whole in memory) and leader transfer. Forwarded writes and read-index
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
use futures::{SinkExt, StreamExt};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
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
    codec, EntryTrace, Envelope, PeerRequest, PeerResponse, RemoteError, SNAPSHOT_CHUNK,
};
use super::types::{Member, Snapshot, TypeConfig, Vote};
use crate::telemetry::trace::{attr, ActiveSpan, NodeTracer};
use crate::telemetry::TraceParent;
use openraft::EntryPayload;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;

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

struct Connection {
    requests: mpsc::UnboundedSender<(Envelope<PeerRequest>, oneshot::Sender<PeerResponse>)>,
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
        let started = Instant::now();
        // Until `send` returns, nothing is queued: running out of time there
        // means the request was certainly not sent.
        let (id, pending, rx) = tokio::time::timeout(timeout, self.send(req))
            .await
            .map_err(|_| {
                CallError::Unreachable(self.target, "no connection within the call's time".into())
            })??;
        let remaining = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, rx).await {
            Err(_) => {
                // Nobody will wait for this answer any more.
                if let Ok(mut p) = pending.lock() {
                    p.remove(&id);
                }
                Err(CallError::Timeout(self.target, timeout))
            }
            Ok(Err(_)) => Err(CallError::Lost(self.target, "connection closed".into())),
            Ok(Ok(PeerResponse::Error(e))) => Err(CallError::Remote(self.target, e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    async fn send(
        &self,
        req: PeerRequest,
    ) -> Result<(u64, Pending, oneshot::Receiver<PeerResponse>), CallError> {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // A traced caller (a forwarded write runs in its span's context)
        // sends its span along; everything else sends none.
        let env = Envelope {
            id,
            body: req,
            trace: TraceParent::current(),
        };
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
            .send((env, tx))
            .map_err(|_| CallError::Unreachable(self.target, "connection closed".into()))?;
        Ok((id, conn.pending.clone(), rx))
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
    mut rx: mpsc::UnboundedReceiver<(Envelope<PeerRequest>, oneshot::Sender<PeerResponse>)>,
    pending: Pending,
    alive: Arc<AtomicBool>,
) {
    'connection: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Queue everything that is waiting, then flush once.
        while let Some((env, tx)) = next.take().or_else(|| rx.try_recv().ok()) {
            let frame = match postcard::to_allocvec(&env) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode peer request");
                    continue;
                }
            };
            // Once the reader has seen the connection die, nobody would
            // answer: dropping `tx` tells the caller at once.
            if !alive.load(Ordering::Acquire) {
                return;
            }
            if let Ok(mut p) = pending.lock() {
                p.insert(env.id, tx);
            }
            if writer.feed(Bytes::from(frame)).await.is_err() {
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

    async fn call(&self, req: PeerRequest, option: &RPCOption) -> Result<PeerResponse, CallError> {
        self.channel
            .call(req, option.hard_ttl().max(self.min_rpc_timeout))
            .await
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
        let (spans, traces) = self.sent_spans(&rpc);
        let answer = match self
            .call(PeerRequest::AppendEntries(rpc, traces), &option)
            .await
        {
            Ok(PeerResponse::AppendEntries(r)) => Ok(r),
            Ok(_) => Err(CallError::Protocol(self.channel.target)),
            Err(e) => Err(e),
        };
        for span in &spans {
            match &answer {
                // The follower refused the entries (a conflict, a newer
                // vote): openraft sends them again or steps down.
                Ok(r) if !r.is_success() => span.not_done("refused"),
                Ok(_) => {}
                Err(e) => span.fail(e.kind(), &e.to_string()),
            }
        }
        drop(spans);
        answer.map_err(rpc_error)
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
    use std::time::Duration;

    use super::{CallError, Peers, SelfInfo};
    use crate::cluster::rpc::PeerRequest;

    /// A dead peer costs one connect attempt per backoff period: calls in
    /// between fail at once, as not sent, without touching the network.
    #[tokio::test]
    async fn failed_connect_backs_off_and_reports_not_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let peers = Peers::new(
            SelfInfo {
                node_id: 1,
                resp_addr: "127.0.0.1:1".into(),
            },
            Duration::from_millis(500),
        );
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
