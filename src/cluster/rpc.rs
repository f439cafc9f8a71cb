//! The peer protocol: the messages nodes exchange and how they are framed.
//!
//! One TCP connection per peer carries everything: Raft's AppendEntries,
//! Vote, PreVote, snapshot chunks and leader transfer, plus the
//! application RPCs a follower needs from the leader (forwarded writes, read
//! index, `RAFT.TRANSFER_LEADER` and `RAFT.NODE`/`RAFT.NODES` carried to the
//! leader, and the leader's notice to a node it removed). Each request
//! carries an id; the response carries the same id, so many requests are in
//! flight on one connection at once and responses may come back out of order
//! (multiplexing). Frames are a 4-byte big-endian
//! length followed by a postcard-encoded [`Envelope`].

use bytes::Bytes;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

use super::op::{Op, OpResult};
use super::types::{SnapshotMeta, TypeConfig, Vote};
use crate::telemetry::TraceParent;

/// Largest frame accepted on the peer channel. AppendEntries batches are
/// bounded by openraft's `max_payload_entries`, and snapshots travel in
/// chunks of [`SNAPSHOT_CHUNK`]; a 512 MB client value still has to fit.
pub const MAX_FRAME: usize = 600 * 1024 * 1024;

/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// The peer protocol version this build speaks, sent in the envelope id of
/// the answer to a `Hello` (the handshake is one request and one answer, so
/// that id correlates nothing; callers of older builds ignore it). Builds
/// before version 1 echo the caller's id, which is 0.
///
/// Version 1: a connection's AppendEntries reach Raft in arrival order, so
/// the leader may keep several in flight on it. A leader keeps one at a time
/// towards a version-0 follower, which handles each request in a task of its
/// own and could let a later one overtake an earlier one.
pub const PEER_PROTOCOL: u64 = 1;

/// Whether a follower that answered the `Hello` with `version` hands a
/// connection's AppendEntries to Raft in arrival order.
#[must_use]
pub fn orders_appends(version: u64) -> bool {
    version >= 1
}

/// The framing codec shared by both ends.
#[must_use]
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// A request or response with its correlation id.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Correlates a response with its request on one connection.
    pub id: u64,
    /// The message.
    pub body: T,
    /// The caller's span when the request is part of a sampled trace (a
    /// forwarded write): the W3C trace context, so the callee's spans join
    /// the caller's trace. Last, so a reader of the first fields (the test
    /// proxy reads a Hello's node id) needs nothing after the body.
    pub trace: Option<TraceParent>,
}

impl<T> Envelope<T> {
    /// A message outside any trace (responses, and requests of untraced work).
    pub fn new(id: u64, body: T) -> Envelope<T> {
        Envelope {
            id,
            body,
            trace: None,
        }
    }
}

/// The leader's span for one traced entry of an AppendEntries request, for
/// the follower to record its part of that write under.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct EntryTrace {
    /// The entry's log index.
    pub index: u64,
    /// The leader's `raftis.Peer/AppendEntries` span for it.
    pub parent: TraceParent,
}

/// What one node asks of another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// First message on a connection: who is calling and where its clients
    /// connect. Answered with [`PEER_PROTOCOL`] as the envelope id.
    Hello {
        /// The caller's node id.
        node_id: u64,
        /// The caller's RESP address.
        resp_addr: String,
    },
    /// Raft log replication / heartbeat, with the leader's span for each
    /// traced entry (usually none). A leader keeps several in flight on its
    /// connection; the follower hands them to Raft in arrival order.
    AppendEntries(AppendEntriesRequest<TypeConfig>, Vec<EntryTrace>),
    /// Raft election.
    Vote(VoteRequest<TypeConfig>),
    /// Raft pre-vote (an election that does not bump terms).
    PreVote(VoteRequest<TypeConfig>),
    /// One piece of a snapshot file, in order.
    SnapshotChunk {
        /// Identifies this transfer (chosen by the sender).
        transfer_id: u64,
        /// Byte offset of `data` in the file.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// All chunks are sent: install the snapshot.
    InstallSnapshot {
        /// The transfer whose chunks make up the snapshot.
        transfer_id: u64,
        /// The sender's vote.
        vote: Vote,
        /// What the snapshot covers.
        meta: SnapshotMeta,
    },
    /// Leadership is being handed to the target.
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// A client write that reached a follower, for the leader to propose.
    Forward {
        /// The write.
        op: Op,
        /// Wall-clock ms after which the follower has given up on it (and
        /// told its client `-TIMEOUT`): a request that sat in a stalled
        /// connection until then is dropped unproposed, not applied late.
        deadline_ms: u64,
    },
    /// A follower asks the leader for a read index.
    ReadIndex,
    /// `RAFT.TRANSFER_LEADER` that reached a follower: the leader hands
    /// leadership to `to` (or to the most up-to-date voter).
    MoveLeader {
        /// The chosen successor, if the client named one.
        to: Option<u64>,
        /// Wall-clock ms after which the caller has given up.
        deadline_ms: u64,
    },
    /// `RAFT.NODE ADD/PROMOTE/REMOVE` that reached a follower, for the
    /// leader to carry out (`membership.rs`).
    ChangeMembership {
        /// The change.
        change: super::membership::MembershipChange,
        /// Wall-clock ms after which the caller has given up.
        deadline_ms: u64,
    },
    /// `RAFT.NODES` that reached a follower: the leader lists the members.
    Nodes,
    /// The leader tells a node it was removed from the cluster.
    Removed {
        /// The removed node (the callee, checked by it).
        node_id: u64,
        /// The leader that removed it.
        by: u64,
    },
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// Answer to `Hello`.
    Hello {
        /// The callee's node id.
        node_id: u64,
        /// The callee's RESP address.
        resp_addr: String,
    },
    /// Answer to `AppendEntries`.
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    /// Answer to `Vote` and `PreVote`.
    Vote(VoteResponse<TypeConfig>),
    /// A snapshot chunk was written.
    ChunkWritten,
    /// Answer to `InstallSnapshot`.
    Snapshot(SnapshotResponse<TypeConfig>),
    /// Answer to `TransferLeader`.
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    /// The forwarded write was applied with this result.
    Forwarded(OpResult),
    /// Reads after the leader's commit index reached this index are linearizable.
    ReadIndex(u64),
    /// The request failed on the callee.
    Error(RemoteError),
    /// Answer to `MoveLeader`: the new leader, or why the leader refused.
    LeaderMoved(Result<u64, super::transfer::TransferRefusal>),
    /// Answer to `ChangeMembership`: done, or why the leader refused.
    MembershipChanged(Result<(), super::membership::MembershipRefusal>),
    /// Answer to `Nodes`.
    Nodes(Vec<super::membership::NodeInfo>),
    /// Answer to `Removed`: noted.
    RemovedNoted,
}

/// Why a request failed on the remote node. The distinction matters for
/// forwarded writes: only `NotLeader` and `Unavailable` guarantee that the
/// write was not proposed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The callee is not the leader (or lost its lease); nothing was proposed.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The leader the callee knows of, if any.
        leader: Option<u64>,
    },
    /// Nothing was done (for example Raft is shutting down or has no quorum).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write was proposed but its outcome is unknown.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Refused for lack of disk space on the callee (`disk_guard.rs`):
    /// nothing was done. The text says which node, how much is free and
    /// which key sets the threshold.
    #[error("{0}")]
    NoSpace(String),
}

impl RemoteError {
    /// Whether the callee certainly did nothing (so the caller may retry).
    #[must_use]
    pub fn nothing_done(&self) -> bool {
        matches!(
            self,
            RemoteError::NotLeader { .. } | RemoteError::Unavailable(_) | RemoteError::NoSpace(_)
        )
    }

    /// A short class of the failure, for the `error.type` of trace spans.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            RemoteError::NotLeader { .. } => "not_leader",
            RemoteError::Unavailable(_) => "unavailable",
            RemoteError::Unknown(_) => "outcome_unknown",
            RemoteError::NoSpace(_) => "no_space",
        }
    }
}
