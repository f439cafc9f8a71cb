//! The read barrier: what a read waits for before it looks at local state.
//!
//! Linearizable by default, on every node (etcd's ReadIndex): the leader
//! confirms with a quorum that it still leads and notes its commit index; a
//! follower asks the leader for that index over the peer channel. Either way
//! the node then waits until it has applied through that index and reads its
//! own applied state: the read never ships to the leader. A connection in
//! `READONLY` mode skips the barrier and reads whatever this node has applied.

use std::time::Instant;

use super::rpc::{PeerRequest, PeerResponse};
use super::{Cluster, ClusterError};

impl Cluster {
    /// Waits until a read of local applied state is linearizable (or at once
    /// when `local_only`).
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] when no leader confirmed a read index
    /// within the request timeout.
    pub async fn read_barrier(&self, local_only: bool) -> Result<(), ClusterError> {
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
            let index = match core.current_leader() {
                Some(leader) if leader == core.id => match core.read_index_local().await {
                    Ok(index) => Some(index),
                    Err(e) => {
                        last_reason = e.to_string();
                        None
                    }
                },
                Some(leader) => match core.channel_to(leader) {
                    None => None,
                    Some(channel) => match channel.call(PeerRequest::ReadIndex, remaining).await {
                        Ok(PeerResponse::ReadIndex(index)) => Some(index),
                        Ok(_) => None,
                        Err(e) => {
                            last_reason = e.to_string();
                            None
                        }
                    },
                },
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
