//! Leader transfer: `RAFT.TRANSFER_LEADER`, and the handoff a leader makes
//! before it stops (SIGTERM, SIGINT, `SHUTDOWN`).
//!
//! [`Cluster::transfer_leader`] runs on any node. Like a write, it goes
//! through [`Cluster::on_leader`] (`forward.rs`): on the leader it runs here,
//! on a follower it travels to the leader as a `MoveLeader` peer request,
//! with the same waiting for a leader and the same retry rules. On the
//! leader, [`Core::move_leader`]:
//!
//! 1. checks the target against the membership (an unknown id, a learner),
//!    or picks one when none is named: the voter with the highest match
//!    index among those that acknowledged the leader recently;
//! 2. refuses a target that has not acknowledged the leader within an
//!    election timeout: starting a transfer stops the leader's heartbeats,
//!    so a transfer to a dead node would cost the cluster an election for
//!    nothing;
//! 3. asks openraft to transfer (`trigger().transfer_leader`): the leader
//!    stops proposing and tells every member; the target, once its log holds
//!    everything the leader appended, campaigns at once, without waiting for
//!    an election timeout;
//! 4. waits until this node follows another leader, up to the deadline.
//!
//! Meanwhile the old leader refuses new proposals and read indexes as "not
//! the leader", which the write and read paths retry until the new leader is
//! known: clients see a pause of about one election, not errors.
//!
//! As etcd's `move-leader` does, naming the node that already leads succeeds
//! at once and changes nothing.
//!
//! # Caveats
//!
//! - If the target stops between the check and its campaign, the old
//!   leader, which no longer heartbeats, is replaced by an ordinary election
//!   after an election timeout; the transfer reports that it did not
//!   complete (or, with no target named, succeeds if another node won).
//! - A transfer that times out on the caller's side may still complete
//!   later: the reply is an `-ERR`, but the leader may have changed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::core::{now_ms, Core};
use super::forward::LeaderCall;
use super::rpc::{PeerRequest, PeerResponse, RemoteError};
use super::{Cluster, ClusterError};
use crate::server::Reply;

/// Why the leader refused or could not finish a transfer. Carried back to
/// a follower in the `MoveLeader` answer; reported as `-ERR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TransferRefusal {
    /// The target is not a member.
    #[error("unknown node {0}")]
    UnknownNode(u64),
    /// The target is a learner.
    #[error("node {0} is a learner and cannot lead")]
    Learner(u64),
    /// No target named, and the leader is the only voter.
    #[error("no other voter to transfer leadership to")]
    NoOtherVoter,
    /// The target has not acknowledged the leader within an election timeout.
    #[error("node {0} is unreachable")]
    Unreachable(u64),
    /// No target named, and no other voter acknowledged the leader lately.
    #[error("no other voter is reachable")]
    NoReachableVoter,
    /// The transfer started but the target did not become leader in time.
    #[error("leader transfer to node {target} did not complete: {why}")]
    NotCompleted {
        /// The node that was asked to take over.
        target: u64,
        /// What happened instead.
        why: String,
    },
}

/// Why [`Cluster::transfer_leader`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The leader refused, or the transfer did not complete (`-ERR`).
    #[error("{0}")]
    Refused(#[from] TransferRefusal),
    /// No leader took the request (`-CLUSTERDOWN`), or its answer was lost
    /// (`-TIMEOUT`).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl From<TransferError> for Reply {
    fn from(e: TransferError) -> Reply {
        match e {
            TransferError::Refused(r) => Reply::error(format!("ERR {r}")),
            TransferError::Cluster(c) => Reply::from(c),
        }
    }
}

/// How long before a remote caller's deadline the leader stops waiting, so
/// that its answer, not the caller's timeout, ends the request (at most a
/// quarter of the time the caller has left).
const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// How often the leader looks again for a successor that has not
/// acknowledged it lately (acknowledgements do not always wake a metrics
/// watcher).
const REACH_POLL: Duration = Duration::from_millis(20);

/// What the leader knows about the members when it picks a successor.
#[derive(Debug, Default)]
struct LeaderView {
    /// The leader's own id.
    id: u64,
    /// Voter ids.
    voters: BTreeSet<u64>,
    /// Every member: voters and learners.
    members: BTreeSet<u64>,
    /// Highest log index known replicated to each member.
    matched: BTreeMap<u64, u64>,
    /// Members that acknowledged the leader within an election timeout.
    reachable: BTreeSet<u64>,
}

/// The node to hand leadership to: `to` if it may lead, or else the most
/// up-to-date reachable voter (ties go to the lowest id).
fn choose_target(view: &LeaderView, to: Option<u64>) -> Result<u64, TransferRefusal> {
    if let Some(to) = to {
        if !view.members.contains(&to) {
            return Err(TransferRefusal::UnknownNode(to));
        }
        if !view.voters.contains(&to) {
            return Err(TransferRefusal::Learner(to));
        }
        if to != view.id && !view.reachable.contains(&to) {
            return Err(TransferRefusal::Unreachable(to));
        }
        return Ok(to);
    }
    let others: Vec<u64> = view
        .voters
        .iter()
        .copied()
        .filter(|v| *v != view.id)
        .collect();
    if others.is_empty() {
        return Err(TransferRefusal::NoOtherVoter);
    }
    others
        .into_iter()
        .filter(|v| view.reachable.contains(v))
        .max_by_key(|v| {
            (
                view.matched.get(v).copied().unwrap_or(0),
                std::cmp::Reverse(*v),
            )
        })
        .ok_or(TransferRefusal::NoReachableVoter)
}

impl Core {
    /// A `MoveLeader` from a peer: [`Core::move_leader`], answering before
    /// the caller's deadline (wall-clock ms) and within this node's request
    /// timeout.
    ///
    /// # Errors
    /// As [`Core::move_leader`].
    pub async fn move_leader_until(
        &self,
        to: Option<u64>,
        deadline_ms: u64,
    ) -> Result<Result<u64, TransferRefusal>, RemoteError> {
        let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms()));
        let remaining = left
            .saturating_sub(ANSWER_MARGIN.min(left / 4))
            .min(self.request_timeout);
        self.move_leader(to, Instant::now() + remaining).await
    }

    /// Hands leadership from this node, which must lead, to `to` or to the
    /// most up-to-date reachable voter, and waits until this node follows
    /// the new leader (at most until `deadline`). Returns the new leader, or
    /// why the transfer was refused or did not complete.
    ///
    /// # Errors
    /// `NotLeader` when this node does not lead (nothing was done);
    /// `Unavailable` when Raft has stopped.
    pub async fn move_leader(
        &self,
        to: Option<u64>,
        deadline: Instant,
    ) -> Result<Result<u64, TransferRefusal>, RemoteError> {
        let reach = Duration::from_millis(self.raft.config().election_timeout_min);
        // A live member acknowledges within a heartbeat or two (a leader
        // elected a moment ago may have heard from nobody yet), so an
        // unreachable one gets that long before it is refused.
        let patience = Instant::now() + reach;
        let mut metrics = self.raft.metrics();
        let target = loop {
            let chosen = {
                let m = metrics.borrow_watched();
                if m.state != ServerState::Leader {
                    return Err(RemoteError::NotLeader {
                        leader: m.current_leader.filter(|l| *l != self.id),
                    });
                }
                let membership = m.membership_config.membership();
                let (matched, reachable) = super::core::follower_progress(&m, reach);
                let view = LeaderView {
                    id: self.id,
                    voters: membership.voter_ids().collect(),
                    members: membership.nodes().map(|(id, _)| *id).collect(),
                    matched,
                    reachable,
                };
                choose_target(&view, to)
            };
            match chosen {
                Ok(target) => break target,
                Err(TransferRefusal::Unreachable(_) | TransferRefusal::NoReachableVoter)
                    if Instant::now() < patience.min(deadline) =>
                {
                    let wait = patience
                        .min(deadline)
                        .saturating_duration_since(Instant::now())
                        .min(REACH_POLL);
                    if let Ok(Err(_)) = tokio::time::timeout(wait, metrics.changed()).await {
                        return Err(RemoteError::Unavailable("raft stopped".into()));
                    }
                }
                Err(refusal) => return Ok(Err(refusal)),
            }
        };
        if target == self.id {
            return Ok(Ok(self.id));
        }
        let budget = deadline.saturating_duration_since(Instant::now());
        self.raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| RemoteError::Unavailable(format!("raft stopped: {e}")))?;
        loop {
            let leader = metrics.borrow_watched().current_leader;
            if let Some(leader) = leader.filter(|l| *l != self.id) {
                return Ok(if to.is_none() || leader == target {
                    Ok(leader)
                } else {
                    Err(TransferRefusal::NotCompleted {
                        target,
                        why: format!("node {leader} was elected instead"),
                    })
                });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, metrics.changed()).await {
                Err(_) => {
                    return Ok(Err(TransferRefusal::NotCompleted {
                        target,
                        why: format!("no new leader within {}ms", budget.as_millis()),
                    }))
                }
                Ok(Err(_)) => return Err(RemoteError::Unavailable("raft stopped".into())),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// `RAFT.TRANSFER_LEADER` on its way to the leader.
struct MoveLeader(Option<u64>);

impl LeaderCall for MoveLeader {
    type Output = Result<u64, TransferRefusal>;

    fn run_local<'a>(
        &'a self,
        core: &'a Core,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<Self::Output, RemoteError>> + Send + 'a {
        core.move_leader(self.0, deadline)
    }

    fn to_peer(&self, deadline_ms: u64) -> PeerRequest {
        PeerRequest::MoveLeader {
            to: self.0,
            deadline_ms,
        }
    }

    fn from_peer(response: PeerResponse) -> Option<Self::Output> {
        match response {
            PeerResponse::LeaderMoved(moved) => Some(moved),
            _ => None,
        }
    }
}

impl Cluster {
    /// Hands leadership to `target`, or with `None` to the most up-to-date
    /// reachable voter, from any node, and returns the new leader once this
    /// node's leader knows it (within the request timeout). Naming the
    /// current leader succeeds at once.
    ///
    /// # Errors
    /// [`TransferError::Refused`] for an unknown, learner or unreachable
    /// target, no other voter, or a transfer that did not complete in time;
    /// [`TransferError::Cluster`] when no leader took the request.
    pub async fn transfer_leader(&self, target: Option<u64>) -> Result<u64, TransferError> {
        let leader = self.on_leader(&MoveLeader(target)).await??;
        tracing::info!(leader, "leadership transferred on request");
        Ok(leader)
    }

    /// Before this node stops: if it leads and another voter could, hands
    /// leadership to the most up-to-date reachable one, waiting at most
    /// `timeout`. Returns the new leader, or `None` when there was nothing
    /// to hand over or the handoff failed (the others then elect a leader
    /// after an election timeout). Logs the outcome once.
    pub async fn hand_off_leadership(&self, timeout: Duration) -> Option<u64> {
        let status = self.status();
        if status.role != "leader" || status.voters.iter().all(|v| *v == self.core.id) {
            return None;
        }
        let started = Instant::now();
        match self.core.move_leader(None, started + timeout).await {
            Ok(Ok(to)) => {
                tracing::info!(
                    to,
                    elapsed_ms = started.elapsed().as_millis(),
                    "handed leadership over before stopping"
                );
                Some(to)
            }
            Ok(Err(refusal)) => {
                tracing::warn!(
                    %refusal,
                    "could not hand leadership over before stopping; \
                     the others elect a leader after an election timeout"
                );
                None
            }
            // Leadership was lost meanwhile: nothing to hand over.
            Err(RemoteError::NotLeader { .. }) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not hand leadership over before stopping");
                None
            }
        }
    }

    /// Waits, at most `timeout`, until this node has applied every entry in
    /// its log. After a handoff the new leader commits what this node
    /// proposed as leader, and whoever proposed it (a client here, a
    /// follower that forwarded a write) hears the outcome from this node's
    /// apply: Raft must keep running until then. Returns whether it did.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let last = self.status().last_log_index;
        self.core.wait_applied(last, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> LeaderView {
        LeaderView {
            id: 1,
            voters: [1, 2, 3].into(),
            members: [1, 2, 3, 4].into(),
            matched: [(1, 10), (2, 8), (3, 9), (4, 10)].into(),
            reachable: [1, 2, 3, 4].into(),
        }
    }

    #[test]
    fn a_named_target_must_be_a_reachable_voter() {
        let v = view();
        assert_eq!(choose_target(&v, Some(2)), Ok(2));
        assert_eq!(
            choose_target(&v, Some(9)),
            Err(TransferRefusal::UnknownNode(9))
        );
        assert_eq!(choose_target(&v, Some(4)), Err(TransferRefusal::Learner(4)));
        let mut cut = view();
        cut.reachable.remove(&2);
        assert_eq!(
            choose_target(&cut, Some(2)),
            Err(TransferRefusal::Unreachable(2))
        );
    }

    #[test]
    fn naming_the_leader_itself_is_accepted() {
        assert_eq!(choose_target(&view(), Some(1)), Ok(1));
    }

    #[test]
    fn no_target_picks_the_most_up_to_date_reachable_voter() {
        let mut v = view();
        // The learner is the most up to date but cannot lead.
        assert_eq!(choose_target(&v, None), Ok(3));
        v.reachable.remove(&3);
        assert_eq!(choose_target(&v, None), Ok(2));
        v.matched.insert(2, 9);
        v.reachable.insert(3);
        // A tie goes to the lowest id.
        assert_eq!(choose_target(&v, None), Ok(2));
        v.reachable = [1, 4].into();
        assert_eq!(
            choose_target(&v, None),
            Err(TransferRefusal::NoReachableVoter)
        );
    }

    #[test]
    fn a_single_voter_has_nobody_to_hand_over_to() {
        let v = LeaderView {
            id: 1,
            voters: [1].into(),
            members: [1, 2].into(),
            ..LeaderView::default()
        };
        assert_eq!(choose_target(&v, None), Err(TransferRefusal::NoOtherVoter));
    }

    #[test]
    fn refusals_read_as_the_readme_says() {
        let reply = |r: TransferRefusal| Reply::from(TransferError::from(r));
        assert_eq!(
            reply(TransferRefusal::UnknownNode(9)),
            Reply::error("ERR unknown node 9")
        );
        assert_eq!(
            reply(TransferRefusal::Learner(4)),
            Reply::error("ERR node 4 is a learner and cannot lead")
        );
        assert_eq!(
            Reply::from(TransferError::from(ClusterError::Unavailable(
                "no leader".into()
            ))),
            Reply::error("CLUSTERDOWN no leader")
        );
    }
}
