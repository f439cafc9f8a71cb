//! The server side of the peer channel.
//!
//! Accepts peer connections, answers the caller's `Hello` with this node's
//! identity (and, in the answer's id, its peer protocol version), then reads
//! requests and answers each one on the same connection. Requests run
//! concurrently (a slow snapshot install must not hold up heartbeats),
//! except snapshot chunks, which are written to a file in arrival order by
//! the reading loop itself, and AppendEntries, which reach Raft in arrival
//! order through the connection's pipeline (`append_pipeline.rs`; the
//! leader keeps several in flight). Responses funnel through one writer
//! task that flushes once per burst.
//!
//! A node short of disk space refuses log entries and snapshots
//! (`disk_guard.rs` decides); a refused snapshot transfer is abandoned and
//! its partial file removed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use openraft::vote::RaftLeaderId as _;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::core::{as_i64, now_ms, Core};
use super::rpc::{
    codec, EntryTrace, Envelope, PeerRequest, PeerResponse, RemoteError, PEER_PROTOCOL,
};
use crate::telemetry::trace::{attr, ActiveSpan};
use append_pipeline::{AppendPipeline, Queued};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;

mod append_pipeline;

/// Serves peer connections on `listener` until the task is dropped; then
/// every connection it accepted is closed too, so peers notice at once and
/// reconnect to whatever listens on the address next.
pub async fn serve(listener: TcpListener, core: Arc<Core>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, core.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// An incoming snapshot being written to disk.
struct Incoming {
    path: PathBuf,
    file: tokio::fs::File,
    written: u64,
}

async fn serve_connection(stream: TcpStream, core: Arc<Core>) {
    let _ = stream.set_nodelay(true);
    let (read_half, write_half) = stream.into_split();
    let mut reader = FramedRead::new(read_half, codec());
    let writer = FramedWrite::new(write_half, codec());
    let (tx, rx) = mpsc::unbounded_channel::<Envelope<PeerResponse>>();
    let writer_task = tokio::spawn(write_loop(writer, rx));
    let mut incoming: HashMap<u64, Incoming> = HashMap::new();
    // Started by the first AppendEntries: only a leader's connection
    // carries them.
    let mut appends: Option<AppendPipeline> = None;

    while let Some(Ok(frame)) = reader.next().await {
        let env: Envelope<PeerRequest> = match postcard::from_bytes(&frame) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable peer request; closing connection");
                break;
            }
        };
        let id = env.id;
        let trace = env.trace;
        match env.body {
            PeerRequest::Hello { node_id, resp_addr } => {
                core.peers.learn_resp_addr(node_id, resp_addr);
                let body = PeerResponse::Hello {
                    node_id: core.id,
                    resp_addr: core.peers.me().resp_addr.clone(),
                };
                // The answer's id says which protocol this node speaks.
                let _ = tx.send(Envelope::new(PEER_PROTOCOL, body));
            }
            PeerRequest::SnapshotChunk {
                transfer_id,
                offset,
                data,
            } => {
                let body = write_chunk(&core, &mut incoming, transfer_id, offset, &data).await;
                let _ = tx.send(Envelope::new(id, body));
            }
            PeerRequest::InstallSnapshot {
                transfer_id,
                vote,
                meta,
            } => {
                let body = match incoming.remove(&transfer_id) {
                    None => PeerResponse::Error(RemoteError::Unavailable(format!(
                        "no chunks received for snapshot transfer {transfer_id}"
                    ))),
                    // Importing and keeping a copy take about twice the
                    // file again: refused if that would eat the reserve.
                    Some(inc) => match core.disk.snapshot_refusal(inc.written, 0) {
                        Some(refusal) => {
                            abandon(inc).await;
                            PeerResponse::Error(refusal)
                        }
                        None => {
                            let core = core.clone();
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                let body = install(&core, inc, vote, meta).await;
                                let _ = tx.send(Envelope::new(id, body));
                            });
                            continue;
                        }
                    },
                };
                let _ = tx.send(Envelope::new(id, body));
            }
            PeerRequest::Forward { op, deadline_ms } => {
                if now_ms() > deadline_ms {
                    let body = PeerResponse::Error(RemoteError::Unavailable(
                        "forwarded write arrived after its deadline; not proposed".into(),
                    ));
                    let _ = tx.send(Envelope::new(id, body));
                    continue;
                }
                // A leader low on disk space takes no writes; the follower
                // retries, and reaches the next leader after the handoff.
                if let Some(why) = core.disk.write_refusal() {
                    let body = PeerResponse::Error(RemoteError::NoSpace(why));
                    let _ = tx.send(Envelope::new(id, body));
                    continue;
                }
                // A traced write: the leader's side of the forward, with
                // the proposal under it.
                let span = core.telemetry.tracer.rpc(
                    trace,
                    "raftis.Peer/Forward",
                    SpanKind::Server,
                    "Forward",
                    None,
                    &[],
                );
                let submitted = match &span {
                    None => core.submit_local(op),
                    Some(span) => {
                        let _attached = span.context().clone().attach();
                        core.submit_local(op)
                    }
                };
                // Proposed here, in arrival order, so that one client's
                // pipelined writes through a follower keep their order;
                // only the wait for the outcome runs concurrently.
                match submitted {
                    Ok(outcome) => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let body = match outcome.await {
                                Ok(result) => PeerResponse::Forwarded(result),
                                Err(e) => {
                                    match &span {
                                        Some(span) if e.nothing_done() => span.not_done(e.kind()),
                                        Some(span) => span.fail(e.kind(), &e.to_string()),
                                        None => {}
                                    }
                                    PeerResponse::Error(e)
                                }
                            };
                            drop(span);
                            let _ = tx.send(Envelope::new(id, body));
                        });
                    }
                    Err(e) => {
                        if let Some(span) = &span {
                            span.not_done(e.kind());
                        }
                        let _ = tx.send(Envelope::new(id, PeerResponse::Error(e)));
                    }
                }
            }
            PeerRequest::AppendEntries(rpc, traces) => {
                // Critically low on disk space: store nothing new, but let
                // heartbeats (no entries) through so this node does not
                // start elections. The leader retries with backoff. The
                // refusal may overtake earlier requests' answers: the
                // leader puts answers back in request order.
                if !rpc.entries.is_empty() {
                    if let Some(refusal) = core.disk.replication_refusal() {
                        let _ = tx.send(Envelope::new(id, PeerResponse::Error(refusal)));
                        continue;
                    }
                }
                let spans = received_spans(&core, &traces, rpc.entries.len());
                appends
                    .get_or_insert_with(|| {
                        let raft = core.raft.clone();
                        AppendPipeline::spawn(
                            move |requests| Box::pin(raft.stream_append(requests)),
                            tx.clone(),
                        )
                    })
                    .push(Queued { id, rpc, spans });
            }
            body => {
                let core = core.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let body = handle(&core, body).await;
                    let _ = tx.send(Envelope::new(id, body));
                });
            }
        }
    }
    // The pipeline's task ends once its sender is gone, and with it the
    // last sender of answers, which ends the writer. Dropped first: Raft
    // need not keep taking this connection's requests while the files
    // below are removed.
    drop(appends);
    // Unfinished incoming snapshots are garbage now.
    for (_, inc) in incoming {
        abandon(inc).await;
    }
    drop(tx);
    let _ = writer_task.await;
}

async fn write_loop(
    mut writer: FramedWrite<
        tokio::net::tcp::OwnedWriteHalf,
        tokio_util::codec::LengthDelimitedCodec,
    >,
    mut rx: mpsc::UnboundedReceiver<Envelope<PeerResponse>>,
) {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(env) = next.take().or_else(|| rx.try_recv().ok()) {
            match postcard::to_allocvec(&env) {
                Ok(frame) => {
                    if writer.feed(Bytes::from(frame)).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot encode peer response"),
            }
        }
        if SinkExt::<Bytes>::flush(&mut writer).await.is_err() {
            return;
        }
    }
}

/// The refusal of a vote (or pre-vote) that this node may not give yet: with
/// lease reads, for a while after its start (see
/// [`crate::config::ReadPolicy::Lease`]). A handover the leader asked for is
/// given: that leader stopped its lease reads before asking.
fn held_vote(
    core: &Core,
    rpc: &openraft::raft::VoteRequest<super::types::TypeConfig>,
) -> Option<PeerResponse> {
    (core.holds_votes() && !rpc.leadership_transfer).then(|| {
        PeerResponse::Error(RemoteError::Unavailable(
            "this node does not vote yet: it started within a leader lease it may have backed"
                .into(),
        ))
    })
}

async fn handle(core: &Arc<Core>, req: PeerRequest) -> PeerResponse {
    let fatal =
        |e: &dyn std::fmt::Display| PeerResponse::Error(RemoteError::Unavailable(e.to_string()));
    match req {
        PeerRequest::Vote(rpc) => {
            // A removed node asking for votes learns it was removed.
            core.on_vote_from(*rpc.vote.leader_id().node_id());
            if let Some(refused) = held_vote(core, &rpc) {
                return refused;
            }
            match core.raft.vote(rpc).await {
                Ok(r) => PeerResponse::Vote(r),
                Err(e) => fatal(&e),
            }
        }
        PeerRequest::PreVote(rpc) => {
            // A removed node asking for votes learns it was removed.
            core.on_vote_from(*rpc.vote.leader_id().node_id());
            if let Some(refused) = held_vote(core, &rpc) {
                return refused;
            }
            match core.raft.pre_vote(rpc).await {
                Ok(r) => PeerResponse::Vote(r),
                Err(e) => fatal(&e),
            }
        }
        PeerRequest::TransferLeader(rpc) => match core.raft.handle_transfer_leader(rpc).await {
            Ok(r) => PeerResponse::TransferLeader(r),
            Err(e) => fatal(&e),
        },
        PeerRequest::ReadIndex => match core.read_index_for_peer().await {
            Ok(index) => PeerResponse::ReadIndex(index),
            Err(e) => PeerResponse::Error(e),
        },
        PeerRequest::MoveLeader { to, deadline_ms } => {
            match core.move_leader_until(to, deadline_ms).await {
                Ok(moved) => PeerResponse::LeaderMoved(moved),
                Err(e) => PeerResponse::Error(e),
            }
        }
        PeerRequest::ChangeMembership {
            change,
            deadline_ms,
        } => match core.change_membership_until(change, deadline_ms).await {
            Ok(changed) => PeerResponse::MembershipChanged(changed),
            Err(e) => PeerResponse::Error(e),
        },
        PeerRequest::Nodes => match core.nodes_local() {
            Ok(nodes) => PeerResponse::Nodes(nodes),
            Err(e) => PeerResponse::Error(e),
        },
        PeerRequest::Removed { node_id, by } => {
            if node_id == core.id {
                core.mark_removed(by);
                PeerResponse::RemovedNoted
            } else {
                PeerResponse::Error(RemoteError::Unavailable(format!(
                    "this is node {}, not node {node_id}",
                    core.id
                )))
            }
        }
        PeerRequest::Hello { .. }
        | PeerRequest::AppendEntries(..)
        | PeerRequest::SnapshotChunk { .. }
        | PeerRequest::InstallSnapshot { .. }
        | PeerRequest::Forward { .. } => {
            PeerResponse::Error(RemoteError::Unavailable("message out of place".into()))
        }
    }
}

/// A follower's `raftis.Peer/AppendEntries` span for each traced entry of a
/// request (ended when they are dropped, after the append is durable),
/// each noted in the trace book so the log store's spans hang under it.
fn received_spans(core: &Core, traces: &[EntryTrace], entries: usize) -> Vec<ActiveSpan> {
    let tracer = &core.telemetry.tracer;
    let Some(book) = tracer.book() else {
        return Vec::new();
    };
    traces
        .iter()
        .filter_map(|t| {
            let span = tracer.rpc(
                Some(t.parent),
                "raftis.Peer/AppendEntries",
                SpanKind::Server,
                "AppendEntries",
                None,
                &[],
            )?;
            span.set(KeyValue::new(attr::LOG_INDEX, as_i64(t.index)));
            span.set(KeyValue::new(attr::BATCH_ENTRIES, as_i64(entries as u64)));
            book.note_received(t.index, span.parent()?);
            Some(span)
        })
        .collect()
}

async fn write_chunk(
    core: &Core,
    incoming: &mut HashMap<u64, Incoming>,
    transfer_id: u64,
    offset: u64,
    data: &[u8],
) -> PeerResponse {
    let err =
        |e: &dyn std::fmt::Display| PeerResponse::Error(RemoteError::Unavailable(e.to_string()));
    if offset == 0 {
        // A fresh start: the sender retried or moved on to a newer
        // snapshot, so every earlier transfer on this connection is
        // abandoned (a leader sends one snapshot at a time).
        for (_, old) in incoming.drain() {
            abandon(old).await;
        }
        // Low on disk space: refused before anything is written.
        if let Some(refusal) = core.disk.snapshot_refusal(0, data.len() as u64) {
            return PeerResponse::Error(refusal);
        }
        let path = core.snapshot_dir.join(format!("incoming-{transfer_id}"));
        match tokio::fs::File::create(&path).await {
            Ok(file) => {
                incoming.insert(
                    transfer_id,
                    Incoming {
                        path,
                        file,
                        written: 0,
                    },
                );
            }
            Err(e) => return err(&e),
        }
    }
    let Some(inc) = incoming.get_mut(&transfer_id) else {
        return err(&"snapshot chunk without a start");
    };
    if inc.written != offset {
        return err(&format!(
            "snapshot chunk at {offset}, expected {}",
            inc.written
        ));
    }
    // The file grows while free space shrinks: checked again before each
    // chunk, and the whole transfer abandoned once the install would not
    // fit (the leader starts over later).
    if offset > 0 {
        if let Some(refusal) = core.disk.snapshot_refusal(offset, data.len() as u64) {
            if let Some(inc) = incoming.remove(&transfer_id) {
                abandon(inc).await;
            }
            return PeerResponse::Error(refusal);
        }
    }
    if let Err(e) = inc.file.write_all(data).await {
        return err(&e);
    }
    inc.written += data.len() as u64;
    PeerResponse::ChunkWritten
}

/// Drops an incoming snapshot that will not be installed, and its file.
async fn abandon(inc: Incoming) {
    drop(inc.file);
    if let Err(e) = tokio::fs::remove_file(&inc.path).await {
        tracing::warn!(error = %e, path = %inc.path.display(), "cannot remove an abandoned snapshot file");
    }
}

async fn install(
    core: &Core,
    inc: Incoming,
    vote: super::types::Vote,
    meta: super::types::SnapshotMeta,
) -> PeerResponse {
    let err =
        |e: &dyn std::fmt::Display| PeerResponse::Error(RemoteError::Unavailable(e.to_string()));
    let mut file = inc.file;
    if let Err(e) = file.flush().await {
        return err(&e);
    }
    if let Err(e) = file.sync_all().await {
        return err(&e);
    }
    drop(file);
    let file = match tokio::fs::File::open(&inc.path).await {
        Ok(f) => f,
        Err(e) => return err(&e),
    };
    let snapshot = super::types::Snapshot {
        meta,
        snapshot: file,
    };
    let res = core.raft.install_full_snapshot(vote, snapshot).await;
    // The state machine keeps its own copy; the received file is done.
    let _ = tokio::fs::remove_file(&inc.path).await;
    match res {
        Ok(r) => PeerResponse::Snapshot(r),
        Err(e) => err(&e),
    }
}
