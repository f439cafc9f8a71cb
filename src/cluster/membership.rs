//! Membership changes: adding, promoting and removing nodes while the
//! cluster runs (`RAFT.NODE`, `RAFT.NODES`, `raftis --join`), and what a
//! node does once it has been removed.
//!
//! # How a change flows
//!
//! [`Cluster::change_membership`] runs on any node. Like a write, it goes
//! through [`Cluster::on_leader`] (`forward.rs`): on the leader it runs
//! here, on a follower it travels to the leader as a `ChangeMembership` peer
//! request, with the same waiting for a leader and the same retry rules. On
//! the leader, [`Core::change_membership`]:
//!
//! 1. checks the request against the current membership (an unknown id, an
//!    id or address already taken); re-adding a member with the same address
//!    is accepted, so a joining node may retry after a crash;
//! 2. for an addition, adds the node as a learner (openraft `AddNodes`), then
//!    waits until the leader has replicated to within openraft's
//!    `replication_lag_threshold` of its log, so the new voter does not stall
//!    commits while it catches up;
//! 3. checks the resulting voter set the way etcd's strict reconfiguration
//!    check does: the voters reachable now (the leader, and every node whose
//!    heartbeat or replication the leader saw acknowledged within an
//!    election timeout) must form a quorum of both the current and the new
//!    voter set, and the last voter may not go;
//! 4. proposes the change (openraft `change_membership`: a joint
//!    configuration, then the uniform one) and waits for both to commit.
//!
//! # Removed nodes
//!
//! openraft stops replicating to a node as soon as the leader sees the
//! configuration without it, so a removed node never learns of its removal
//! from the log. The leader therefore tells it with a best-effort `Removed`
//! peer request once the removal has committed. Every node remembers the
//! peer addresses of members that left, and any member whose committed
//! membership no longer has a node tells it again whenever it asks for
//! (pre-)votes later (it was down during the removal, say): the leader, or
//! a follower when the leader is down or cut off from it.
//! A node that hears it is removed writes a marker file into its data
//! directory, stops its Raft instance (so it starts no elections) and
//! answers every data command with `-CLUSTERDOWN removed from the cluster`;
//! the marker keeps it that way across restarts.
//!
//! Every node logs each new membership once at info level, and warns when
//! the number of voters becomes even (an even count tolerates no more
//! failures than one voter fewer).
//!
//! # Caveats
//!
//! - The reachability check uses the leader's view, which lags reality by
//!   up to an election timeout; it is a guard against mistakes, not a proof.
//! - A node id must never be reused for a node with an empty data directory
//!   (openraft's rule): the leader cannot tell a removed id from a new one.
//! - If the removed node is unreachable when the removal commits and never
//!   asks for votes afterwards, it does not learn it was removed; it then
//!   keeps answering reads with `-CLUSTERDOWN` (no leader) rather than data.
//!   The same holds if every member that saw it leave has restarted since
//!   (the record of departed members is kept in memory only).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};

use super::core::{now_ms, Core};
use super::forward::LeaderCall;
use super::rpc::{PeerRequest, PeerResponse, RemoteError};
use super::types::Member;
use super::{Cluster, ClusterError};
use crate::server::Reply;

/// The reply text a removed node gives to data commands (after `CLUSTERDOWN`).
pub const REMOVED: &str = "removed from the cluster";

/// The marker file, in the data directory, of a node that was removed.
const MARKER: &str = "removed";

/// How long before a remote caller's deadline the leader stops waiting, so
/// that its answer, not the caller's timeout, ends the request.
const ANSWER_MARGIN: Duration = Duration::from_millis(100);

/// A membership change asked for with `RAFT.NODE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a node; promote it to voter once caught up unless `learner`.
    Add {
        /// The new node's id.
        id: u64,
        /// Its peer address.
        peer_addr: String,
        /// Stop at learner.
        learner: bool,
    },
    /// Make a learner a voter.
    Promote(u64),
    /// Take a voter or learner out of the cluster.
    Remove(u64),
}

/// Why the leader refused or could not finish a membership change. Carried
/// back to a follower in the peer answer; reported as `-ERR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MembershipRefusal {
    /// The id is a member with another peer address.
    #[error("node {id} is already a member with peer address {peer_addr}")]
    AlreadyMember {
        /// The id asked for.
        id: u64,
        /// The address it has.
        peer_addr: String,
    },
    /// Another member has this peer address.
    #[error("peer address {peer_addr} is already used by node {id}")]
    AddressInUse {
        /// The member using it.
        id: u64,
        /// The address.
        peer_addr: String,
    },
    /// The id is not a member.
    #[error("unknown node {0}")]
    UnknownNode(u64),
    /// Removing the only voter would leave nobody to decide anything.
    #[error("refused: node {0} is the last voter")]
    LastVoter(u64),
    /// The change would leave (or already lacks) a quorum of reachable voters.
    #[error(
        "refused: {action} would leave {reachable} of {voters} voters reachable, below the quorum of {quorum}"
    )]
    QuorumLoss {
        /// What was asked, e.g. `removing node 2`.
        action: String,
        /// Voters of the resulting set that are reachable now.
        reachable: usize,
        /// Size of the resulting voter set.
        voters: usize,
        /// Its quorum.
        quorum: usize,
    },
    /// The current voters lack a reachable quorum: no change could commit.
    #[error(
        "refused: only {reachable} of {voters} voters are reachable, below the quorum of {quorum}"
    )]
    NoQuorum {
        /// Reachable current voters.
        reachable: usize,
        /// Current voters.
        voters: usize,
        /// Their quorum.
        quorum: usize,
    },
    /// The node was added as a learner but did not catch up in time.
    #[error(
        "node {id} is a learner but has not caught up with the leader yet ({lag} entries behind); retry to promote it"
    )]
    NotCaughtUp {
        /// The learner.
        id: u64,
        /// How far behind it was when the wait ended.
        lag: u64,
    },
    /// Another change was still in progress when the deadline came.
    #[error("another membership change is still in progress: {0}")]
    InProgress(String),
    /// openraft refused the change.
    #[error("membership change rejected: {0}")]
    Rejected(String),
    /// The id is a voter already. Adding it again is refused rather than
    /// answered OK: a node that lost its data dir and asks to join under its
    /// old id must not vote again with an empty log (it could vote twice in
    /// a term, or help elect a leader that lacks committed entries).
    #[error(
        "node {0} is already a voter; if its data dir was lost, remove it first (RAFT.NODE REMOVE {0}) and add it again under a new id"
    )]
    AlreadyVoter(u64),
}

/// Why [`Cluster::change_membership`] or [`Cluster::nodes`] failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The leader refused, or the change did not complete (`-ERR`).
    #[error("{0}")]
    Refused(#[from] MembershipRefusal),
    /// No leader took the request (`-CLUSTERDOWN`), or its answer was lost
    /// (`-TIMEOUT`).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl From<MembershipError> for Reply {
    fn from(e: MembershipError) -> Reply {
        match e {
            MembershipError::Refused(r) => Reply::error(format!("ERR {r}")),
            MembershipError::Cluster(c) => Reply::from(c),
        }
    }
}

/// A member's role in the leader's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    /// The leader.
    Leader,
    /// A voter that does not lead.
    Voter,
    /// A learner.
    Learner,
}

impl NodeRole {
    /// `leader`, `voter` or `learner`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Leader => "leader",
            NodeRole::Voter => "voter",
            NodeRole::Learner => "learner",
        }
    }
}

/// One member as `RAFT.NODES` lists it. Replication facts are the
/// leader's; a node that does not lead leaves them `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: u64,
    /// Peer address, from the membership.
    pub peer_addr: String,
    /// RESP address the node announced, if this node has heard it.
    pub resp_addr: Option<String>,
    /// Leader, voter or learner.
    pub role: NodeRole,
    /// Highest log index known replicated to it.
    pub match_index: Option<u64>,
    /// The leader's last log index minus `match_index`.
    pub lag: Option<u64>,
    /// Whether it acknowledged the leader within an election timeout.
    pub reachable: Option<bool>,
}

/// Majority of `voters`: floor(n/2)+1 (0 for none).
#[must_use]
pub fn quorum(voters: usize) -> usize {
    if voters == 0 {
        0
    } else {
        voters / 2 + 1
    }
}

/// Failures `voters` survive: floor((n-1)/2).
#[must_use]
pub fn failure_tolerance(voters: usize) -> usize {
    voters.saturating_sub(1) / 2
}

/// The leader's view of the membership, for deciding on a change.
#[derive(Debug, Default, Clone)]
struct LeaderView {
    voters: BTreeSet<u64>,
    nodes: BTreeMap<u64, String>,
    /// Voters and learners that acknowledged lately, and the leader.
    reachable: BTreeSet<u64>,
}

/// etcd's strict reconfiguration check: the reachable voters must be a
/// quorum of the current voters (or nothing could commit) and of the
/// voter set after the change.
fn check_quorum(
    view: &LeaderView,
    action: impl FnOnce() -> String,
    new_voters: &BTreeSet<u64>,
) -> Result<(), MembershipRefusal> {
    let up_now = view.voters.intersection(&view.reachable).count();
    if up_now < quorum(view.voters.len()) {
        return Err(MembershipRefusal::NoQuorum {
            reachable: up_now,
            voters: view.voters.len(),
            quorum: quorum(view.voters.len()),
        });
    }
    let up_after = new_voters.intersection(&view.reachable).count();
    if up_after < quorum(new_voters.len()) {
        return Err(MembershipRefusal::QuorumLoss {
            action: action(),
            reachable: up_after,
            voters: new_voters.len(),
            quorum: quorum(new_voters.len()),
        });
    }
    Ok(())
}

/// What a change needs done, decided from the view alone.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Already so: answer OK.
    Nothing,
    /// Add as learner (`None` when it is one already), then promote unless `learner`.
    Add {
        new_node: Option<(u64, String)>,
        id: u64,
        promote: bool,
    },
    /// Take a voter out (after the quorum check).
    RemoveVoter(u64),
    /// Take a learner out.
    RemoveLearner(u64),
}

fn plan(view: &LeaderView, change: &MembershipChange) -> Result<Plan, MembershipRefusal> {
    match change {
        MembershipChange::Add {
            id,
            peer_addr,
            learner,
        } => {
            let new_node = match view.nodes.get(id) {
                Some(existing) if existing != peer_addr => {
                    return Err(MembershipRefusal::AlreadyMember {
                        id: *id,
                        peer_addr: existing.clone(),
                    })
                }
                Some(_) if view.voters.contains(id) => {
                    return Err(MembershipRefusal::AlreadyVoter(*id))
                }
                Some(_) => None,
                None => {
                    if let Some((other, _)) = view.nodes.iter().find(|(_, a)| *a == peer_addr) {
                        return Err(MembershipRefusal::AddressInUse {
                            id: *other,
                            peer_addr: peer_addr.clone(),
                        });
                    }
                    Some((*id, peer_addr.clone()))
                }
            };
            let promote = !*learner && !view.voters.contains(id);
            if new_node.is_none() && !promote {
                return Ok(Plan::Nothing);
            }
            Ok(Plan::Add {
                new_node,
                id: *id,
                promote,
            })
        }
        MembershipChange::Promote(id) => {
            if !view.nodes.contains_key(id) {
                return Err(MembershipRefusal::UnknownNode(*id));
            }
            if view.voters.contains(id) {
                return Ok(Plan::Nothing);
            }
            Ok(Plan::Add {
                new_node: None,
                id: *id,
                promote: true,
            })
        }
        MembershipChange::Remove(id) => {
            if !view.nodes.contains_key(id) {
                return Err(MembershipRefusal::UnknownNode(*id));
            }
            if !view.voters.contains(id) {
                return Ok(Plan::RemoveLearner(*id));
            }
            if view.voters.len() == 1 {
                return Err(MembershipRefusal::LastVoter(*id));
            }
            let mut after = view.voters.clone();
            after.remove(id);
            check_quorum(view, || format!("removing node {id}"), &after)?;
            Ok(Plan::RemoveVoter(*id))
        }
    }
}

/// This node's record of removals: whether it was removed itself (kept in
/// a marker file), and the peer addresses of members that left, so a
/// leader can tell a removed node that asks for votes later.
#[derive(Debug)]
pub struct RemovalState {
    marker: PathBuf,
    removed: AtomicBool,
    departed: Mutex<BTreeMap<u64, String>>,
}

impl RemovalState {
    /// Reads the marker under `data_dir`.
    #[must_use]
    pub fn load(data_dir: &Path) -> RemovalState {
        let marker = data_dir.join(MARKER);
        let removed = marker.exists();
        RemovalState {
            marker,
            removed: AtomicBool::new(removed),
            departed: Mutex::default(),
        }
    }

    /// Whether this node was removed.
    #[must_use]
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Records the removal durably; true when it was news.
    fn mark(&self, by: u64) -> bool {
        if self.removed.swap(true, Ordering::AcqRel) {
            return false;
        }
        let write = std::fs::File::create(&self.marker).and_then(|mut f| {
            use std::io::Write;
            writeln!(f, "removed from the cluster by node {by} at {}", now_ms())?;
            f.sync_all()
        });
        if let Err(e) = write {
            tracing::error!(error = %e, path = %self.marker.display(),
                "cannot record the removal; the node may serve again after a restart");
        }
        true
    }

    fn departed(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, String>> {
        self.departed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Core {
    /// `Err(CLUSTERDOWN removed from the cluster)` once this node was removed.
    ///
    /// # Errors
    /// As said.
    pub fn refuse_if_removed(&self) -> Result<(), ClusterError> {
        if self.removed.is_removed() {
            Err(ClusterError::Unavailable(REMOVED.into()))
        } else {
            Ok(())
        }
    }

    /// Told by the leader (`by`) that this node is no longer a member:
    /// records it, stops serving, and stops Raft once another node leads
    /// (a removed leader first hands over; bounded by a few election
    /// timeouts).
    pub fn mark_removed(&self, by: u64) {
        if !self.removed.mark(by) {
            return;
        }
        tracing::info!(
            by,
            "this node was removed from the cluster; no longer serving"
        );
        let raft = self.raft.clone();
        let id = self.id;
        tokio::spawn(async move {
            let bound = Duration::from_millis(raft.config().election_timeout_max * 3);
            let deadline = Instant::now() + bound;
            let mut metrics = raft.metrics();
            while metrics.borrow_watched().current_leader == Some(id) {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break;
                }
                let _ = tokio::time::timeout(remaining, metrics.changed()).await;
            }
            if let Err(e) = raft.shutdown().await {
                tracing::debug!(error = %e, "stopping raft after removal");
            }
        });
    }

    /// The leader's view, or `NotLeader`.
    fn leader_view(&self) -> Result<(LeaderView, Vec<NodeInfo>), RemoteError> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if m.state != ServerState::Leader {
            return Err(RemoteError::NotLeader {
                leader: m.current_leader.filter(|l| *l != self.id),
            });
        }
        let membership = m.membership_config.membership();
        let reach = Duration::from_millis(self.raft.config().election_timeout_min);
        let (matched, mut reachable) = super::core::follower_progress(&m, reach);
        reachable.insert(self.id);
        let last = m.last_log_index.unwrap_or(0);
        let view = LeaderView {
            voters: membership.voter_ids().collect(),
            nodes: membership
                .nodes()
                .map(|(id, n)| (*id, n.peer_addr.clone()))
                .collect(),
            reachable,
        };
        let infos = view
            .nodes
            .iter()
            .map(|(id, peer_addr)| {
                let match_index = if *id == self.id {
                    last
                } else {
                    matched.get(id).copied().unwrap_or(0)
                };
                NodeInfo {
                    id: *id,
                    peer_addr: peer_addr.clone(),
                    resp_addr: self.peers.resp_addr(*id),
                    role: if *id == self.id {
                        NodeRole::Leader
                    } else if view.voters.contains(id) {
                        NodeRole::Voter
                    } else {
                        NodeRole::Learner
                    },
                    match_index: Some(match_index),
                    lag: Some(last.saturating_sub(match_index)),
                    reachable: Some(view.reachable.contains(id)),
                }
            })
            .collect();
        Ok((view, infos))
    }

    /// Every member with the leader's replication facts; this node must lead.
    ///
    /// # Errors
    /// `NotLeader` when it does not.
    pub fn nodes_local(&self) -> Result<Vec<NodeInfo>, RemoteError> {
        self.leader_view().map(|(_, infos)| infos)
    }

    /// A `ChangeMembership` from a peer: [`Core::change_membership`],
    /// answering before the caller's deadline (wall-clock ms).
    ///
    /// # Errors
    /// As [`Core::change_membership`].
    pub async fn change_membership_until(
        &self,
        change: MembershipChange,
        deadline_ms: u64,
    ) -> Result<Result<(), MembershipRefusal>, RemoteError> {
        let remaining = Duration::from_millis(deadline_ms.saturating_sub(now_ms()))
            .saturating_sub(ANSWER_MARGIN)
            .min(self.request_timeout);
        self.change_membership(&change, Instant::now() + remaining)
            .await
    }

    /// Carries out `change` on this node, which must lead (see the module
    /// docs), giving up by `deadline`.
    ///
    /// # Errors
    /// `NotLeader` when this node does not lead (nothing was done),
    /// `Unknown` when a proposal's outcome was not seen, `Unavailable` when
    /// Raft has stopped.
    pub async fn change_membership(
        &self,
        change: &MembershipChange,
        deadline: Instant,
    ) -> Result<Result<(), MembershipRefusal>, RemoteError> {
        // One change at a time (openraft's rule): a change that finds
        // another in progress waits for it, then decides afresh.
        let mut metrics = self.raft.metrics();
        loop {
            match self.change_membership_once(change, deadline).await? {
                Err(MembershipRefusal::InProgress(why)) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Ok(Err(MembershipRefusal::InProgress(why)));
                    }
                    let wait = remaining.min(super::forward::RETRY_WAIT * 5);
                    let _ = tokio::time::timeout(wait, metrics.changed()).await;
                }
                done => return Ok(done),
            }
        }
    }

    async fn change_membership_once(
        &self,
        change: &MembershipChange,
        deadline: Instant,
    ) -> Result<Result<(), MembershipRefusal>, RemoteError> {
        let (view, _) = self.leader_view()?;
        let plan = match plan(&view, change) {
            Ok(plan) => plan,
            Err(refusal) => return Ok(Err(refusal)),
        };
        match plan {
            Plan::Nothing => Ok(Ok(())),
            Plan::Add {
                new_node,
                id,
                promote,
            } => {
                if let Some((id, peer_addr)) = new_node {
                    let added = bounded(
                        deadline,
                        self.raft.add_learner(id, Member { peer_addr }, false),
                    )
                    .await?;
                    let index = match outcome(added)? {
                        Ok(index) => index,
                        Err(refusal) => return Ok(Err(refusal)),
                    };
                    if !promote {
                        return Ok(self.published(Ok(index), deadline).await);
                    }
                }
                if !promote {
                    return Ok(Ok(()));
                }
                if let Err(lag) = self.wait_caught_up(id, deadline).await {
                    return Ok(Err(MembershipRefusal::NotCaughtUp { id, lag }));
                }
                let (view, _) = self.leader_view()?;
                let mut after = view.voters.clone();
                after.insert(id);
                if let Err(refusal) = check_quorum(&view, || format!("adding node {id}"), &after) {
                    return Ok(Err(refusal));
                }
                let changed = bounded(
                    deadline,
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false),
                )
                .await?;
                Ok(self.published(outcome(changed)?, deadline).await)
            }
            Plan::RemoveVoter(id) | Plan::RemoveLearner(id) => {
                let changes = if matches!(plan, Plan::RemoveVoter(_)) {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                let peer_addr = view.nodes.get(&id).cloned().unwrap_or_default();
                let removed =
                    outcome(bounded(deadline, self.raft.change_membership(changes, false)).await?)?;
                let removed = self.published(removed, deadline).await;
                if removed.is_ok() {
                    self.tell_removed(id, peer_addr);
                }
                Ok(removed)
            }
        }
    }

    /// A change's outcome once this node's Raft metrics, which `INFO raft`,
    /// `RAFT.NODES` and the status read, show the membership of its entry
    /// (at `index`) or a later one. openraft answers a change as it applies
    /// the entry, a moment before it publishes the metrics: without this
    /// wait, a client's next `INFO` could still show the old membership. The
    /// entry is committed, so the metrics will show it; the wait ends at
    /// `deadline` (the change is made either way) or when Raft stops.
    async fn published(
        &self,
        changed: Result<u64, MembershipRefusal>,
        deadline: Instant,
    ) -> Result<(), MembershipRefusal> {
        let index = changed?;
        let mut metrics = self.raft.metrics();
        loop {
            let published = metrics
                .borrow_watched()
                .membership_config
                .log_id()
                .as_ref()
                .is_some_and(|l| l.index >= index);
            let remaining = deadline.saturating_duration_since(Instant::now());
            if published || remaining.is_zero() {
                return Ok(());
            }
            if let Ok(Err(_)) = tokio::time::timeout(remaining, metrics.changed()).await {
                // Raft stopped: nothing more will be published.
                return Ok(());
            }
        }
    }

    /// Waits until the leader's replication to `id` is within openraft's
    /// lag threshold of its log; on timeout returns the lag.
    async fn wait_caught_up(&self, id: u64, deadline: Instant) -> Result<(), u64> {
        let threshold = self.raft.config().replication_lag_threshold;
        let mut metrics = self.raft.metrics();
        loop {
            let lag = {
                let m = metrics.borrow_watched();
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned())
                    .flatten()
                    .map_or(0, |l| l.index);
                m.last_log_index.unwrap_or(0).saturating_sub(matched)
            };
            let matched_any = {
                let m = metrics.borrow_watched();
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned())
                    .flatten()
                    .is_some()
            };
            if matched_any && lag <= threshold {
                return Ok(());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(lag);
            }
            let _ = tokio::time::timeout(remaining, metrics.changed()).await;
        }
    }

    /// Best effort: tells node `id` at `peer_addr` it was removed.
    fn tell_removed(&self, id: u64, peer_addr: String) {
        if id == self.id {
            // The leader removed itself: openraft hands leadership over
            // once the change commits; this node stops after that.
            return;
        }
        let channel = self.peers.channel(id, &peer_addr);
        let by = self.id;
        let timeout = self.request_timeout;
        tokio::spawn(async move {
            match channel
                .call(PeerRequest::Removed { node_id: id, by }, timeout)
                .await
            {
                Ok(_) => tracing::debug!(node = id, "told the removed node"),
                Err(e) => {
                    tracing::info!(node = id, error = %e, "could not tell the removed node; it learns when it next asks for votes");
                }
            }
        });
    }

    /// A vote or pre-vote arrived from `candidate`: if `candidate` is not in
    /// this node's committed membership and this node saw it leave, it was
    /// removed (a node that never joined has no log and asks for no votes),
    /// so tell it. Any member answers, not only the leader: a node that was
    /// down during its removal may reach only followers (the leader down or
    /// cut off from it), and asking for votes is all it does.
    ///
    /// A membership this node has only appended is not enough: it may still
    /// be replaced, so only a locally committed one counts (the same rule
    /// the membership watcher uses to mark this node itself removed).
    pub fn on_vote_from(&self, candidate: u64) {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let membership_index = m.membership_config.log_id().as_ref().map_or(0, |l| l.index);
        let committed = m.local_committed.as_ref().map_or(0, |l| l.index);
        if candidate == self.id
            || membership_index > committed
            || m.membership_config
                .membership()
                .get_node(&candidate)
                .is_some()
        {
            return;
        }
        drop(m);
        // Its address is gone from the membership; it is known only if
        // this node saw it leave.
        let addr = self.removed.departed().get(&candidate).cloned();
        if let Some(addr) = addr {
            self.tell_removed(candidate, addr);
        }
    }
}

/// Waits for a membership proposal until `deadline`: openraft waits for the
/// commit however long it takes (forever without a quorum).
///
/// # Errors
/// `Unknown` when the deadline passed: the change may still commit.
async fn bounded<T>(
    deadline: Instant,
    proposal: impl std::future::Future<Output = T>,
) -> Result<T, RemoteError> {
    tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), proposal)
        .await
        .map_err(|_| {
            RemoteError::Unknown(
                "membership change proposed but not committed in time; \
                 it may still complete (see RAFT.NODES)"
                    .into(),
            )
        })
}

/// Maps openraft's answer to a membership proposal: on success, the index
/// of the entry that carried the change.
fn outcome(
    res: Result<
        openraft::raft::ClientWriteResponse<super::TypeConfig>,
        RaftError<super::TypeConfig, ClientWriteError<super::TypeConfig>>,
    >,
) -> Result<Result<u64, MembershipRefusal>, RemoteError> {
    match res {
        Ok(response) => Ok(Ok(response.log_id.index)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(RemoteError::NotLeader {
                leader: f.leader_id,
            })
        }
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
            e @ openraft::errors::ChangeMembershipError::InProgress(_),
        ))) => Ok(Err(MembershipRefusal::InProgress(e.to_string()))),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Ok(Err(MembershipRefusal::Rejected(e.to_string())))
        }
        Err(RaftError::APIError(e)) => Err(RemoteError::Unknown(e.to_string())),
        Err(RaftError::Fatal(e)) => Err(RemoteError::Unavailable(format!("raft stopped: {e}"))),
    }
}

/// Logs every new membership once and warns about even voter counts; marks
/// this node removed if a committed membership that follows one with this
/// node in it leaves it out. Runs for the life of the node.
pub(super) async fn watch_membership(core: Arc<Core>) {
    // The server metrics change with leader, vote and membership only; the
    // full metrics change with every commit, and would wake this task (and
    // allocate below) once per write.
    let mut metrics = core.raft.server_metrics();
    let mut seen_log_index = None;
    let mut was_member = false;
    let mut known: BTreeMap<u64, String> = BTreeMap::new();
    let mut seen_leader = None;
    loop {
        let (log_index, voters, learners, committed, nodes, joint) = {
            let m = metrics.borrow_watched();
            // One line per leader change (and none per heartbeat or term
            // of a failed election): what an operator looks for first.
            let (term, leader) = super::core::term_and_leader(&m);
            if leader != seen_leader {
                seen_leader = leader;
                match seen_leader {
                    Some(leader) => tracing::info!(
                        leader,
                        term,
                        this_node = leader == core.id,
                        "leader elected"
                    ),
                    None => tracing::info!(term, "no leader"),
                }
            }
            let membership = m.membership_config.membership();
            let committed = m.committed_membership_config.log_id() == m.membership_config.log_id();
            (
                m.membership_config.log_id().as_ref().map(|l| l.index),
                membership.voter_ids().collect::<Vec<u64>>(),
                membership.learner_ids().collect::<Vec<u64>>(),
                committed,
                membership
                    .nodes()
                    .map(|(id, n)| (*id, n.peer_addr.clone()))
                    .collect::<BTreeMap<u64, String>>(),
                membership.get_joint_config().len() > 1,
            )
        };
        {
            let mut departed = core.removed.departed();
            for (id, addr) in &known {
                if !nodes.contains_key(id) {
                    departed.insert(*id, addr.clone());
                }
            }
            for id in nodes.keys() {
                departed.remove(id);
            }
        }
        known = nodes;
        // The joint step of a change is transitional: one line per change,
        // for the configuration it ends in.
        if log_index.is_some() && log_index != seen_log_index && !joint {
            seen_log_index = log_index;
            tracing::info!(
                ?voters,
                ?learners,
                quorum = quorum(voters.len()),
                "membership"
            );
            if voters.len() >= 2 && voters.len() % 2 == 0 {
                tracing::warn!(
                    voters = voters.len(),
                    "an even number of voters tolerates no more failures than {} would; \
                     add or remove one",
                    voters.len() - 1
                );
            }
        }
        let member = voters.contains(&core.id) || learners.contains(&core.id);
        if member {
            was_member = true;
        } else if was_member && committed && log_index.is_some() {
            core.mark_removed(core.id);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A membership change on its way to the leader.
struct ChangeCall(MembershipChange);

impl LeaderCall for ChangeCall {
    type Output = Result<(), MembershipRefusal>;

    fn run_local<'a>(
        &'a self,
        core: &'a Core,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<Self::Output, RemoteError>> + Send + 'a {
        core.change_membership(&self.0, deadline)
    }

    fn to_peer(&self, deadline_ms: u64) -> PeerRequest {
        PeerRequest::ChangeMembership {
            change: self.0.clone(),
            deadline_ms,
        }
    }

    fn from_peer(response: PeerResponse) -> Option<Self::Output> {
        match response {
            PeerResponse::MembershipChanged(changed) => Some(changed),
            _ => None,
        }
    }
}

/// `RAFT.NODES` on its way to the leader.
struct ListNodes;

impl LeaderCall for ListNodes {
    type Output = Vec<NodeInfo>;

    fn run_local<'a>(
        &'a self,
        core: &'a Core,
        _deadline: Instant,
    ) -> impl std::future::Future<Output = Result<Self::Output, RemoteError>> + Send + 'a {
        std::future::ready(core.nodes_local())
    }

    fn to_peer(&self, _deadline_ms: u64) -> PeerRequest {
        PeerRequest::Nodes
    }

    fn from_peer(response: PeerResponse) -> Option<Self::Output> {
        match response {
            PeerResponse::Nodes(nodes) => Some(nodes),
            _ => None,
        }
    }
}

impl Cluster {
    /// Carries out `change` on the leader, from any node (see the module
    /// docs); `Ok` once it has committed (or was already so).
    ///
    /// # Errors
    /// [`MembershipError::Refused`] for a change the leader refused or that
    /// did not complete; [`MembershipError::Cluster`] when no leader took
    /// the request, or when this node was removed.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), MembershipError> {
        self.core.refuse_if_removed()?;
        self.on_leader(&ChangeCall(change)).await??;
        Ok(())
    }

    /// Every member as the leader sees it, from any node.
    ///
    /// # Errors
    /// [`MembershipError::Cluster`] when no leader answered.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, MembershipError> {
        self.core.refuse_if_removed()?;
        Ok(self.on_leader(&ListNodes).await?)
    }

    /// Whether this node was removed from the cluster.
    #[must_use]
    pub fn is_removed(&self) -> bool {
        self.core.removed.is_removed()
    }

    /// Whether this node is a voter of the membership Raft loaded from its
    /// storage. Asked of Raft's core rather than read from the status: until
    /// the core has published its first metrics, those show no membership at
    /// all, and a restarted voter (or a removed node) that went by them
    /// would ask to be added again (`--join`). False once Raft has stopped.
    pub async fn is_voter_on_disk(&self) -> bool {
        let id = self.core.id;
        self.core
            .raft
            .with_raft_state(move |st| {
                st.membership_state
                    .effective()
                    .membership()
                    .voter_ids()
                    .any(|v| v == id)
            })
            .await
            .unwrap_or(false)
    }
}

/// Why joining a cluster (`--join`) gave up.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The cluster refused for a reason a retry cannot fix (the id or the
    /// address is taken, an argument is invalid).
    #[error("cannot join the cluster through {addr}: {message}")]
    Refused {
        /// The member asked.
        addr: String,
        /// Its error reply.
        message: String,
    },
}

/// Longest wait between join attempts.
const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Whether a `RAFT.NODE ADD` error reply is worth retrying: the cluster
/// was unavailable, the outcome unknown, or the refusal depends on the
/// moment (a quorum not reachable now, a learner still catching up,
/// another change in progress).
fn join_retryable(message: &str) -> bool {
    // A member that was itself removed stays so: ask another one.
    (message.starts_with("CLUSTERDOWN") && !message.ends_with(REMOVED))
        || message.starts_with("TIMEOUT")
        || message.starts_with("MISCONF")
        || message.starts_with("ERR refused:")
        || message.contains("has not caught up")
        || message.contains("membership change is still in progress")
}

/// `raftis --join`: asks the member whose RESP address is `addr` to add
/// node `id` at `peer_addr` (`RAFT.NODE ADD`, which any member forwards to
/// the leader), retrying with backoff on connection errors and on replies
/// that may change (`CLUSTERDOWN`, a learner still catching up...) until it
/// succeeds. Logs each failed attempt and the success.
///
/// # Errors
/// [`JoinError::Refused`] when the cluster refuses for good.
pub async fn join_cluster(
    addr: &str,
    id: u64,
    peer_addr: &str,
    request_timeout: Duration,
    has_state: bool,
) -> Result<(), JoinError> {
    let id_text = id.to_string();
    let already_voter = format!("ERR {}", MembershipRefusal::AlreadyVoter(id))
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let argv: [&[u8]; 4] = [
        b"RAFT.NODE",
        b"ADD",
        id_text.as_bytes(),
        peer_addr.as_bytes(),
    ];
    // The member answers within its request timeout (catch-up, then the
    // commit); leave room for it to be the one that ends the call.
    let call_timeout = request_timeout.saturating_mul(2) + Duration::from_secs(1);
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0u32;
    let mut sent = false;
    loop {
        let sent_before = sent;
        attempt += 1;
        tracing::info!(%addr, id, %peer_addr, attempt, "asking the cluster to add this node");
        let outcome = match crate::resp_client::RespClient::connect(addr, call_timeout).await {
            Ok(mut client) => {
                let reply = client.call(&argv).await.map_err(|e| e.to_string());
                // Whatever came back, the cluster may have acted on it: a
                // later "already a voter" may be this attempt's own doing
                // (its reply lost or timed out).
                sent = true;
                reply
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(crate::resp_client::RespValue::Simple(_)) => {
                tracing::info!(%addr, id, "joined the cluster");
                return Ok(());
            }
            // A node that already holds Raft state and finds itself a voter
            // was promoted before it could learn so (a crash, a lost reply):
            // it is in. One with no state is a voter whose data was lost.
            Ok(crate::resp_client::RespValue::Error(message))
                if (has_state || sent_before) && message.starts_with(&already_voter) =>
            {
                tracing::info!(%addr, id, "already a voter of the cluster");
                return Ok(());
            }
            Ok(crate::resp_client::RespValue::Error(message)) if !join_retryable(&message) => {
                return Err(JoinError::Refused {
                    addr: addr.to_owned(),
                    message,
                });
            }
            Ok(other) => {
                tracing::warn!(%addr, reply = %other, retry_in_ms = backoff.as_millis(), "join not done yet");
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, retry_in_ms = backoff.as_millis(), "join attempt failed");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(JOIN_BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> LeaderView {
        LeaderView {
            voters: [1, 2, 3].into(),
            nodes: [(1, "a:1"), (2, "a:2"), (3, "a:3"), (4, "a:4")]
                .into_iter()
                .map(|(id, a)| (id, a.to_string()))
                .collect(),
            reachable: [1, 2, 3, 4].into(),
        }
    }

    fn add(id: u64, addr: &str, learner: bool) -> MembershipChange {
        MembershipChange::Add {
            id,
            peer_addr: addr.into(),
            learner,
        }
    }

    #[test]
    fn quorum_and_tolerance_follow_the_table() {
        let table: Vec<(usize, usize)> =
            (1..=7).map(|n| (quorum(n), failure_tolerance(n))).collect();
        assert_eq!(
            table,
            vec![(1, 0), (2, 0), (2, 1), (3, 1), (3, 2), (4, 2), (4, 3)]
        );
        assert_eq!(quorum(0), 0);
    }

    #[test]
    fn add_is_idempotent_for_a_learner_and_refused_for_a_voter() {
        let v = view();
        // A voter asking again may be one that lost its data: never OK.
        assert_eq!(
            plan(&v, &add(2, "a:2", false)),
            Err(MembershipRefusal::AlreadyVoter(2))
        );
        assert_eq!(
            plan(&v, &add(2, "a:2", true)),
            Err(MembershipRefusal::AlreadyVoter(2))
        );
        assert_eq!(plan(&v, &add(4, "a:4", true)), Ok(Plan::Nothing));
        assert_eq!(
            plan(&v, &add(4, "a:4", false)),
            Ok(Plan::Add {
                new_node: None,
                id: 4,
                promote: true
            })
        );
        assert_eq!(
            plan(&v, &add(5, "a:5", false)),
            Ok(Plan::Add {
                new_node: Some((5, "a:5".into())),
                id: 5,
                promote: true
            })
        );
    }

    #[test]
    fn add_refuses_taken_ids_and_addresses() {
        let v = view();
        assert_eq!(
            plan(&v, &add(2, "b:9", false)).unwrap_err().to_string(),
            "node 2 is already a member with peer address a:2"
        );
        assert_eq!(
            plan(&v, &add(9, "a:3", false)).unwrap_err().to_string(),
            "peer address a:3 is already used by node 3"
        );
    }

    #[test]
    fn unknown_ids_are_refused() {
        let v = view();
        for change in [MembershipChange::Promote(9), MembershipChange::Remove(9)] {
            assert_eq!(plan(&v, &change).unwrap_err().to_string(), "unknown node 9");
        }
    }

    #[test]
    fn removal_keeps_a_reachable_quorum() {
        let mut v = view();
        v.reachable = [1, 2].into();
        assert_eq!(
            plan(&v, &MembershipChange::Remove(2))
                .unwrap_err()
                .to_string(),
            "refused: removing node 2 would leave 1 of 2 voters reachable, below the quorum of 2"
        );
        // Removing the unreachable one leaves {1,2}, both up.
        assert_eq!(
            plan(&v, &MembershipChange::Remove(3)),
            Ok(Plan::RemoveVoter(3))
        );
        assert_eq!(
            plan(&v, &MembershipChange::Remove(4)),
            Ok(Plan::RemoveLearner(4))
        );
        v.reachable = [1].into();
        assert_eq!(
            plan(&v, &MembershipChange::Remove(3))
                .unwrap_err()
                .to_string(),
            "refused: only 1 of 3 voters are reachable, below the quorum of 2"
        );
    }

    #[test]
    fn the_last_voter_stays() {
        let v = LeaderView {
            voters: [1].into(),
            nodes: [(1, "a:1".to_string())].into(),
            reachable: [1].into(),
        };
        assert_eq!(
            plan(&v, &MembershipChange::Remove(1))
                .unwrap_err()
                .to_string(),
            "refused: node 1 is the last voter"
        );
    }

    #[test]
    fn adding_a_voter_needs_a_quorum_of_the_larger_set() {
        // Voters {1,2}, 2 down: adding 3 makes {1,2,3} with 1,3 up: 2 of 3, fine.
        let v = LeaderView {
            voters: [1, 2].into(),
            nodes: [(1, "a:1".to_string()), (2, "a:2".into()), (3, "a:3".into())].into(),
            reachable: [1, 3].into(),
        };
        let after: BTreeSet<u64> = [1, 2, 3].into();
        assert_eq!(
            check_quorum(&v, || "adding node 3".into(), &after)
                .unwrap_err()
                .to_string(),
            "refused: only 1 of 2 voters are reachable, below the quorum of 2"
        );
        // Voters {1,2,3} with 3 down: promoting a learner that went away
        // makes four voters of which two are up.
        let v = LeaderView {
            voters: [1, 2, 3].into(),
            reachable: [1, 2].into(),
            ..v
        };
        let after: BTreeSet<u64> = [1, 2, 3, 5].into();
        assert_eq!(
            check_quorum(&v, || "adding node 5".into(), &after)
                .unwrap_err()
                .to_string(),
            "refused: adding node 5 would leave 2 of 4 voters reachable, below the quorum of 3"
        );
        // The same with the learner up is fine.
        let v = LeaderView {
            reachable: [1, 2, 5].into(),
            ..v
        };
        assert_eq!(check_quorum(&v, || "adding node 5".into(), &after), Ok(()));
    }

    #[test]
    fn refusals_are_err_replies() {
        assert_eq!(
            Reply::from(MembershipError::from(MembershipRefusal::UnknownNode(9))),
            Reply::error("ERR unknown node 9")
        );
        assert_eq!(
            Reply::from(MembershipError::from(ClusterError::Unavailable(
                REMOVED.into()
            ))),
            Reply::error("CLUSTERDOWN removed from the cluster")
        );
    }

    #[test]
    fn join_retries_only_what_may_change() {
        assert!(join_retryable("CLUSTERDOWN no leader"));
        assert!(join_retryable("TIMEOUT commit not seen"));
        assert!(join_retryable(
            "ERR refused: adding node 5 would leave 2 of 5 voters reachable, below the quorum of 3"
        ));
        assert!(join_retryable(
            &MembershipRefusal::NotCaughtUp { id: 4, lag: 9 }.to_string()
        ));
        assert!(!join_retryable(
            "ERR node 4 is already a member with peer address a:1"
        ));
        assert!(!join_retryable("ERR invalid node id"));
        assert!(!join_retryable("CLUSTERDOWN removed from the cluster"));
    }

    #[test]
    fn the_marker_survives() {
        let dir = tempfile::tempdir().unwrap();
        let state = RemovalState::load(dir.path());
        assert!(!state.is_removed());
        assert!(state.mark(3));
        assert!(!state.mark(3));
        assert!(RemovalState::load(dir.path()).is_removed());
    }
}
