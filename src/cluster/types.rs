//! The Raft type configuration: which concrete types openraft runs with.
//!
//! Everything generic in openraft is pinned here, so the rest of the crate
//! names `TypeConfig` aliases instead of openraft's generic parameters, and an
//! openraft upgrade touches this module first.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::op::{Op, OpResult};
use super::state_machine::StateMachine;
use crate::telemetry::TraceParent;

/// A replicated write as it sits in the log: the operation plus the
/// leader's wall-clock time when it proposed it. Apply uses `now_ms` instead
/// of reading a clock, so every replica computes the same expiry times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StampedOp {
    /// Leader's clock, milliseconds since the Unix epoch, at proposal.
    pub now_ms: u64,
    /// The operation.
    pub op: Op,
    /// The leader's `raftis.propose` span when the write is traced, so that
    /// every node records its log append, fsync and apply in the write's
    /// trace. Never read by apply.
    pub trace: Option<TraceParent>,
}

/// How long after its proposal a write still gets spans. A follower that
/// catches up on old entries (a new member, the end of a long partition)
/// would otherwise fill traces that ended long ago, and crowd live spans
/// out of the export queue.
pub const TRACE_HORIZON_MS: u64 = 60_000;

impl StampedOp {
    /// The write's trace context, if it is traced and was proposed at most
    /// [`TRACE_HORIZON_MS`] before `now_ms`.
    #[must_use]
    pub fn live_trace(&self, now_ms: u64) -> Option<TraceParent> {
        self.trace
            .filter(|_| now_ms.saturating_sub(self.now_ms) <= TRACE_HORIZON_MS)
    }
}

impl fmt::Display for StampedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", self.op, self.now_ms)
    }
}

/// A member of the cluster as the Raft membership records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Address other nodes use for the peer channel.
    pub peer_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.peer_addr)
    }
}

/// raftis's Raft type configuration: openraft's defaults (those
/// `declare_raft_types!` fills in) except the data, the results, the member
/// type, and the responder of client writes, which the macro cannot take
/// (it is generic) and which the proposer needs (`proposer::WriteResponder`).
#[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
pub struct TypeConfig {}

impl openraft::RaftTypeConfig for TypeConfig {
    type D = StampedOp;
    type R = OpResult;
    type NodeId = u64;
    type Node = Member;
    type Term = u64;
    type LeaderId = openraft::impls::leader_id_adv::LeaderId<Self::Term, Self::NodeId>;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = openraft::EntryPayload<Self::D, Self::NodeId, Self::Node>;
    type Entry =
        openraft::Entry<<Self::LeaderId as openraft::vote::RaftLeaderId>::Committed, Self::Payload>;
    type Responder<T>
        = super::proposer::WriteResponder<T>
    where
        T: openraft::OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: openraft::OptionalSend + 'static;
    type AsyncRuntime = openraft::impls::TokioRuntime;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

/// The Raft handle of this node.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;
/// A log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A log id (term + index).
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot: its metadata and its file.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, tokio::fs::File>;
/// Membership as stored with its log id.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;

/// Values the cluster's unit tests build over and over.
#[cfg(test)]
pub(crate) mod test_values {
    use super::{LogId, TypeConfig, Vote};
    use openraft::raft::AppendEntriesRequest;

    /// The log id of entry `index` in term 1, proposed by node 1.
    pub(crate) fn log_id(index: u64) -> LogId {
        LogId::new(
            openraft::impls::leader_id_adv::LeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        )
    }

    /// An entry-less AppendEntries (a heartbeat) from node 1 in term 1,
    /// after entry `prev`: fakes of a peer tell requests apart by it.
    pub(crate) fn append_after(prev: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new(1, 1),
            prev_log_id: Some(log_id(prev)),
            entries: Vec::new(),
            leader_commit: None,
        }
    }
}
