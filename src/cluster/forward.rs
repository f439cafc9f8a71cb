//! The write path: propose on the leader, or forward to it from a follower.
//!
//! A write goes to whichever node leads now. On the leader it is proposed
//! locally; on a follower it travels over the peer channel to the leader,
//! which proposes it and sends back the applied result. While there is no
//! leader (an election) or the leader cannot take writes yet (a fresh leader
//! without a lease), the request waits and retries inside the node, up to the
//! request timeout.
//!
//! A write is proposed at most once. It is retried only when the failure
//! proves it was never proposed (the target was not the leader, or the
//! request never left this node). When it may have been proposed (a lost
//! connection, a timeout), the client gets `-TIMEOUT`: retrying could apply
//! an INCR twice.

use std::time::{Duration, Instant};

use super::core::now_ms;
use super::network::CallError;
use super::op::{Op, OpResult};
use super::rpc::{PeerRequest, PeerResponse, RemoteError};
use super::{Cluster, ClusterError};

/// Longest wait between retries while there is no usable leader.
pub(super) const RETRY_WAIT: Duration = Duration::from_millis(20);

impl Cluster {
    /// Replicates `op` and returns the result of applying it.
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] when no leader accepted the write within
    /// the request timeout (not applied), [`ClusterError::Timeout`] when it
    /// was proposed but its outcome was not seen.
    pub async fn write(&self, op: Op) -> Result<OpResult, ClusterError> {
        let core = &self.core;
        let deadline = Instant::now() + core.request_timeout;
        let mut last_reason = String::from("no leader");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClusterError::Unavailable(last_reason));
            }
            match core.current_leader() {
                Some(leader) if leader == core.id => match core.propose_local(op.clone()).await {
                    Ok(result) => return Ok(result),
                    Err(RemoteError::Unknown(why)) => return Err(ClusterError::Timeout(why)),
                    Err(e) => last_reason = e.to_string(),
                },
                Some(leader) => {
                    let Some(channel) = core.channel_to(leader) else {
                        last_reason = format!("leader {leader} is not in the membership");
                        core.wait_for_change(RETRY_WAIT.min(remaining)).await;
                        continue;
                    };
                    let forward = PeerRequest::Forward {
                        op: op.clone(),
                        deadline_ms: now_ms().saturating_add(
                            u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
                        ),
                    };
                    match channel.call(forward, remaining).await {
                        Ok(PeerResponse::Forwarded(result)) => return Ok(result),
                        Ok(_) => {
                            return Err(ClusterError::Timeout(
                                "unexpected reply from the leader".into(),
                            ))
                        }
                        Err(CallError::Remote(_, RemoteError::Unknown(why))) => {
                            return Err(ClusterError::Timeout(why))
                        }
                        Err(e @ (CallError::Unreachable(..) | CallError::Remote(..))) => {
                            last_reason = e.to_string();
                        }
                        Err(
                            e @ (CallError::Lost(..)
                            | CallError::Timeout(..)
                            | CallError::Protocol(_)),
                        ) => return Err(ClusterError::Timeout(e.to_string())),
                    }
                }
                None => last_reason = "no leader".into(),
            }
            core.wait_for_change(
                RETRY_WAIT.min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }
}

impl Cluster {
    /// Replicates consecutive writes of one connection as one log entry
    /// ([`Op::Batch`]): they apply in the order given, and since the entry is
    /// proposed at most once, either all of them apply or none does. Returns
    /// one result per op.
    ///
    /// # Errors
    /// As [`Cluster::write`], for the whole batch.
    pub async fn write_batch(&self, mut ops: Vec<Op>) -> Result<Vec<OpResult>, ClusterError> {
        if ops.len() <= 1 {
            let Some(op) = ops.pop() else {
                return Ok(Vec::new());
            };
            return Ok(vec![self.write(op).await?]);
        }
        let expected = ops.len();
        match self.write(Op::Batch(ops)).await? {
            OpResult::Array(results) if results.len() == expected => Ok(results),
            other => Err(ClusterError::Timeout(format!(
                "a batch of {expected} writes was applied with an unexpected result: {other:?}"
            ))),
        }
    }
}
