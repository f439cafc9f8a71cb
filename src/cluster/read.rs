//! The read barrier: what a read waits for before it looks at local state.
//!
//! Linearizable by default, on every node (etcd's ReadIndex): the leader
//! confirms with a quorum that it still leads and notes its commit index; a
//! follower asks the leader for that index over the peer channel. Either way
//! the node then waits until it has applied through that index and reads its
//! own applied state: the read never ships to the leader. With
//! `raft.read_policy = "lease"` the leader confirms from its lease instead of
//! a quorum round while the lease holds (`Core::read_index_local`). A
//! connection in `READONLY` mode skips the barrier and reads whatever this
//! node has applied.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;

use super::core::Core;
use super::rpc::{PeerRequest, PeerResponse, RemoteError};
use super::{Cluster, ClusterError};

/// Coalesces a node's concurrent read-index requests into rounds: one
/// request (to the leader from a follower, to the Raft core on the leader)
/// serves every read that was waiting when the round's request was sent,
/// and reads that arrive during a round join the next one (they began after
/// the request left, so its index might be too old for them). Under load
/// this is one round trip per round instead of one per read.
///
/// A node has two: one for its own clients' reads, whose rounds ask
/// whichever node leads, and one for the read-index requests of followers,
/// whose rounds only ever ask this node's Raft core. A follower's request
/// must not be passed on: should two nodes each take the other for the
/// leader for a moment, each one's round would wait on the other's until
/// the request timeout.
#[derive(Debug, Default)]
pub struct ReadIndexBatch {
    state: Mutex<BatchState>,
}

/// Which of a node's two [`ReadIndexBatch`]es.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// This node's clients' reads: asks the leader, wherever it is.
    Clients,
    /// Followers' requests: answered by this node as leader, or refused.
    Peers,
}

impl Round {
    fn batch(self, core: &Core) -> &ReadIndexBatch {
        match self {
            Round::Clients => &core.read_batch,
            Round::Peers => &core.peer_read_batch,
        }
    }
}

#[derive(Debug, Default)]
struct BatchState {
    running: bool,
    waiting: Vec<oneshot::Sender<Result<u64, String>>>,
}

impl ReadIndexBatch {
    fn state(&self) -> std::sync::MutexGuard<'_, BatchState> {
        // Held only for a few pushes and swaps: it cannot be poisoned
        // mid-update, so a poisoned lock's state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The read index for a read that starts now, or why there is none. A
    /// read that finds no round running and none waiting runs its round
    /// itself, which saves a lone read the hand-off to a round task and
    /// back; reads that arrive meanwhile wait for the next round, which a
    /// task runs once this one ends (or its reader gives up).
    async fn index(core: &Arc<Core>, round: Round) -> Result<u64, String> {
        let joined = {
            let mut state = round.batch(core).state();
            // Reads wait only while a round runs (a reader's, or the task's
            // that a finished round handed them to): idle means no waiters.
            if state.running {
                let (tx, rx) = oneshot::channel();
                state.waiting.push(tx);
                Some(rx)
            } else {
                state.running = true;
                None
            }
        };
        match joined {
            None => {
                let _handover = InlineRound { core, round };
                round_request(core, round).await
            }
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err("the read round ended without an answer".into())),
        }
    }
}

/// A round a reader runs itself (see [`ReadIndexBatch::index`]): when it
/// ends, or its reader gives up, the reads that arrived meanwhile get their
/// round from a task.
struct InlineRound<'a> {
    core: &'a Arc<Core>,
    round: Round,
}

impl Drop for InlineRound<'_> {
    fn drop(&mut self) {
        let more = {
            let mut state = self.round.batch(self.core).state();
            state.running = !state.waiting.is_empty();
            state.running
        };
        if more {
            tokio::spawn(run_rounds(self.core.clone(), self.round));
        }
    }
}

/// One round's request: to the leader (this node's Raft core, or the leader
/// over the peer channel) for this node's clients; to this node's Raft core
/// only for followers' requests.
async fn round_request(core: &Core, round: Round) -> Result<u64, String> {
    match round {
        Round::Clients => leader_read_index(core).await,
        Round::Peers => core.read_index_local().await.map_err(|e| e.to_string()),
    }
}

async fn run_rounds(core: Arc<Core>, round: Round) {
    loop {
        let waiting = {
            let mut state = round.batch(&core).state();
            if state.waiting.is_empty() {
                state.running = false;
                return;
            }
            std::mem::take(&mut state.waiting)
        };
        let result = round_request(&core, round).await;
        for waiter in waiting {
            let _ = waiter.send(result.clone());
        }
    }
}

async fn leader_read_index(core: &Core) -> Result<u64, String> {
    let leader = core.current_leader().ok_or("no leader")?;
    if leader == core.id {
        return core.read_index_local().await.map_err(|e| e.to_string());
    }
    let channel = core
        .channel_to(leader)
        .ok_or_else(|| format!("leader {leader} is not in the membership"))?;
    match channel
        .call(PeerRequest::ReadIndex, core.request_timeout)
        .await
    {
        Ok(PeerResponse::ReadIndex(index)) => Ok(index),
        Ok(_) => Err("unexpected reply to a read-index request".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl Core {
    /// A follower's read-index request, on the node it takes for the
    /// leader: it joins this node's next round of followers' requests, so
    /// that the reads of every follower share one leadership confirmation.
    /// A node that does not lead answers `NotLeader` at once (and a round
    /// that finds leadership gone answers its error).
    ///
    /// # Errors
    /// `NotLeader`, or `Unavailable` when no quorum confirmed leadership in
    /// time.
    pub(super) async fn read_index_for_peer(self: &Arc<Self>) -> Result<u64, RemoteError> {
        if self.current_leader() != Some(self.id) {
            return self.read_index_local().await;
        }
        let index = ReadIndexBatch::index(self, Round::Peers);
        match tokio::time::timeout(self.request_timeout, index).await {
            Ok(Ok(index)) => Ok(index),
            Ok(Err(why)) => Err(RemoteError::Unavailable(why)),
            Err(_) => Err(RemoteError::Unavailable(
                "no quorum confirmed leadership in time".into(),
            )),
        }
    }
}

impl Cluster {
    /// Waits until a read of local applied state is linearizable (or at once
    /// when `local_only`).
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] when no leader confirmed a read index
    /// within the request timeout.
    pub async fn read_barrier(&self, local_only: bool) -> Result<(), ClusterError> {
        // A removed node's state is frozen at its removal: no read is fresh.
        self.core.refuse_if_removed()?;
        if local_only {
            return Ok(());
        }
        let core = &self.core;
        let deadline = Instant::now() + core.request_timeout;
        let mut last_reason = String::from("no leader");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClusterError::Unavailable(last_reason));
            }
            // The leader's reads are batched too: a round is one message to
            // the Raft core (and one heartbeat to confirm leadership) for
            // every read that was waiting, instead of one per read.
            let index = match core.current_leader() {
                Some(_) => {
                    let index = ReadIndexBatch::index(core, Round::Clients);
                    match tokio::time::timeout(remaining, index).await {
                        Ok(Ok(index)) => Some(index),
                        Ok(Err(why)) => {
                            last_reason = why;
                            None
                        }
                        Err(_) => {
                            last_reason = "no read index from the leader in time".into();
                            None
                        }
                    }
                }
                None => None,
            };
            if let Some(index) = index {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if core.wait_applied(index, remaining).await {
                    return Ok(());
                }
                return Err(ClusterError::Unavailable(format!(
                    "this node did not apply through index {index} in time"
                )));
            }
            core.wait_for_change(
                super::forward::RETRY_WAIT.min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }
}
