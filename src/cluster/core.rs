//! The part of the cluster that both the client-facing API and the peer
//! server use: the Raft handle, the peer channels, and the two leader-side
//! operations a follower can ask for (propose a forwarded write, hand out a
//! read index).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{LinearizableReadError, RaftError};
use openraft::ReadPolicy;

use super::network::{PeerChannel, Peers};
use super::op::{Op, OpResult};
use super::rpc::RemoteError;
use super::types::{LogId, Raft};
use crate::telemetry::trace::{attr, ActiveSpan};
use crate::telemetry::TraceParent;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;

/// Shared state of this node's Raft group.
pub struct Core {
    /// This node's id.
    pub id: u64,
    /// The Raft handle.
    pub raft: Raft,
    /// Channels to the other nodes.
    pub peers: Arc<Peers>,
    /// Where snapshot files (and incoming transfers) live.
    pub snapshot_dir: PathBuf,
    /// How long a client request may wait for a leader and a commit.
    pub request_timeout: Duration,
    /// The highest leader stamp applied here (see `StateMachine::applied_clock`).
    pub applied_clock: Arc<AtomicU64>,
    /// Combines concurrent writes into one entry (`proposer.rs`).
    pub proposer: super::proposer::Proposer,
    /// Read-index rounds for this node's clients (`read.rs`).
    pub read_batch: super::read::ReadIndexBatch,
    /// Read-index rounds for followers' requests (`read.rs`).
    pub peer_read_batch: super::read::ReadIndexBatch,
    /// How the leader confirms a read (`raft.read_policy`).
    pub read_policy: crate::config::ReadPolicy,
    /// With lease reads, until when this node neither votes nor campaigns
    /// after its start (see [`crate::config::ReadPolicy::Lease`]).
    pub vote_hold_off_until: Option<std::time::Instant>,
    /// Free disk space: refuses writes when low (`disk_guard.rs`).
    pub disk: Arc<super::disk_guard::DiskGuard>,
    /// Whether this node was removed, and who left (`membership.rs`).
    pub removed: super::membership::RemovalState,
    /// This node's tracer and metrics.
    pub telemetry: crate::telemetry::Telemetry,
}

/// Milliseconds since the Unix epoch by this node's clock.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The node that proposed `log_id` (as leader).
#[must_use]
pub fn proposer_of(log_id: &LogId) -> u64 {
    use openraft::vote::RaftLeaderId as _;
    *log_id.committed_leader_id().node_id()
}

/// The term of the leader that proposed `log_id`.
#[must_use]
pub fn term_of(log_id: &LogId) -> u64 {
    use openraft::vote::RaftLeaderId as _;
    log_id.committed_leader_id().term()
}

pub(crate) use crate::telemetry::trace::as_i64;

/// The term and leader that server metrics report, both from the vote they
/// carry (the vote last made durable): their `current_leader` follows the
/// in-memory vote, and paired with the durable vote's term it could name a
/// new leader with the old term for a moment.
pub(super) fn term_and_leader(
    m: &openraft::metrics::RaftServerMetrics<super::types::TypeConfig>,
) -> (u64, Option<u64>) {
    use openraft::vote::RaftLeaderId as _;
    let leader = m.vote.leader_id();
    let id = m.vote.is_committed().then(|| *leader.node_id());
    (leader.term(), id)
}

impl Core {
    /// This node's clock, but never behind the highest stamp applied here:
    /// the time used for new stamps and to hide expired keys on reads, so
    /// that a key seen expired is never seen alive again on this node.
    #[must_use]
    pub fn clock_ms(&self) -> u64 {
        now_ms().max(self.applied_clock.load(Ordering::Acquire))
    }

    /// The leader this node currently knows of.
    #[must_use]
    pub fn current_leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// The channel to `node_id`, if it is in the current membership.
    #[must_use]
    pub fn channel_to(&self, node_id: u64) -> Option<Arc<PeerChannel>> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let member = m.membership_config.membership().get_node(&node_id)?;
        Some(self.peers.channel(node_id, &member.peer_addr))
    }

    /// Hands `op` to Raft on this node, which must be the leader; the
    /// proposer stamps it with this node's clock and may carry it in one
    /// entry with other writes (`proposer.rs`). Proposals enter Raft in the
    /// order this is called (so one client's pipelined writes keep their
    /// order); the returned future waits for the entry to be applied.
    ///
    /// # Errors
    /// `Unavailable` when Raft has stopped (nothing proposed). The returned
    /// future fails with `NotLeader` or `Unavailable` (nothing proposed:
    /// safe to retry elsewhere) or `Unknown` when the entry may have been
    /// appended but its fate was not seen within the request timeout.
    pub fn submit_local(
        &self,
        op: Op,
    ) -> Result<
        impl std::future::Future<Output = Result<OpResult, RemoteError>> + Send + 'static,
        RemoteError,
    > {
        // A traced write (the caller's task carries its context) gets a
        // proposal span, and the entry carries that span to every node.
        let span = self.telemetry.tracer.start(
            TraceParent::current(),
            "raftis.propose",
            SpanKind::Internal,
            Vec::new(),
        );
        let proposed = Instant::now();
        let outcome = match self
            .proposer
            .submit(op, span.as_ref().and_then(ActiveSpan::parent))
        {
            Ok(outcome) => outcome,
            Err(e) => {
                if let Some(span) = &span {
                    span.not_done(e.kind());
                }
                return Err(e);
            }
        };
        let timeout = self.request_timeout;
        let metrics = self.telemetry.metrics.clone();
        Ok(async move {
            let result = match tokio::time::timeout(timeout, outcome).await {
                Err(_) => Err(RemoteError::Unknown(
                    "commit not seen within the request timeout".into(),
                )),
                Ok(Err(_)) => Err(RemoteError::Unknown("raft dropped the proposal".into())),
                Ok(Ok(Ok(committed))) => {
                    metrics.observe_commit(proposed.elapsed());
                    if let Some(span) = &span {
                        let log_id = &committed.log_id;
                        span.set(KeyValue::new(attr::LOG_INDEX, as_i64(log_id.index())));
                        span.set(KeyValue::new(attr::LOG_TERM, as_i64(term_of(log_id))));
                    }
                    Ok(committed.result)
                }
                Ok(Ok(Err(e))) => Err(e),
            };
            if let (Some(span), Err(e)) = (&span, &result) {
                if e.nothing_done() {
                    span.not_done(e.kind());
                } else {
                    span.fail(e.kind(), &e.to_string());
                }
            }
            result
        })
    }

    /// [`Core::submit_local`] and wait for the outcome.
    ///
    /// # Errors
    /// As [`Core::submit_local`].
    pub async fn propose_local(&self, op: Op) -> Result<OpResult, RemoteError> {
        self.submit_local(op)?.await
    }

    /// Confirms leadership with a quorum and returns the index through which
    /// a read must wait for apply to be linearizable (etcd's ReadIndex).
    ///
    /// # Errors
    /// `NotLeader`, or `Unavailable` when a quorum did not confirm in time.
    pub async fn read_index_local(&self) -> Result<u64, RemoteError> {
        let lease = self.read_policy == crate::config::ReadPolicy::Lease;
        let policy = if lease {
            ReadPolicy::LeaseRead
        } else {
            ReadPolicy::ReadIndex
        };
        let mut result =
            tokio::time::timeout(self.request_timeout, self.raft.get_read_linearizer(policy)).await;
        if lease
            && matches!(
                result,
                Ok(Err(RaftError::APIError(
                    LinearizableReadError::QuorumNotEnough(_)
                )))
            )
        {
            // The lease ran out (no quorum acknowledged this leader lately):
            // a heartbeat round confirms the read, and may renew the lease.
            let fut = self.raft.get_read_linearizer(ReadPolicy::ReadIndex);
            result = tokio::time::timeout(self.request_timeout, fut).await;
        }
        match result {
            Err(_) => Err(RemoteError::Unavailable(
                "no quorum confirmed leadership in time".into(),
            )),
            Ok(Ok(lin)) => Ok(lin.read_log_id().index()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(RemoteError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(e)) => Err(RemoteError::Unavailable(e.to_string())),
        }
    }

    /// Whether this node still refuses to vote after its start (lease reads
    /// only; see [`crate::config::ReadPolicy::Lease`]).
    #[must_use]
    pub fn holds_votes(&self) -> bool {
        self.vote_hold_off_until
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    /// Waits until this node has applied `index`, up to `timeout`.
    ///
    /// # Errors
    /// Returns `false` when the deadline passed first.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        if self
            .raft
            .metrics()
            .borrow_watched()
            .last_applied
            .as_ref()
            .map(|l| l.index)
            >= Some(index)
        {
            return true;
        }
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "read index")
            .await
            .is_ok()
    }

    /// Waits until the Raft metrics change (a leader appears, a term passes)
    /// or `max` elapses, whichever is first.
    pub async fn wait_for_change(&self, max: Duration) {
        let mut rx = self.raft.metrics();
        if let Ok(Err(_)) = tokio::time::timeout(max, rx.changed()).await {
            // The metrics sender is gone: Raft has stopped and nothing will
            // change; waiting out `max` keeps callers' retry loops from spinning.
            tokio::time::sleep(max).await;
        }
    }
}

/// Who a leader's replication metrics say is keeping up: each follower's
/// matched log index, and the followers that acknowledged a heartbeat or
/// replication within `reach`. Membership changes, leader transfer and the
/// disk guard's handoff all judge followers by these two figures.
pub(super) fn follower_progress(
    m: &openraft::RaftMetrics<super::types::TypeConfig>,
    reach: Duration,
) -> (
    std::collections::BTreeMap<u64, u64>,
    std::collections::BTreeSet<u64>,
) {
    use openraft::Instant as _;
    let matched = m
        .replication
        .iter()
        .flatten()
        .map(|(id, log)| (*id, log.as_ref().map_or(0, |l| l.index)))
        .collect();
    let reachable = m
        .heartbeat
        .iter()
        .flatten()
        .filter_map(|(id, at)| at.as_ref().filter(|at| at.elapsed() <= reach).map(|_| *id))
        .collect();
    (matched, reachable)
}
