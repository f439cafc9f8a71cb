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
//!
//! Other requests that must run on the leader (a leader transfer) take the
//! same path with the same rules: they implement [`LeaderCall`] and go
//! through [`Cluster::on_leader`].

use std::time::{Duration, Instant};

use super::core::{now_ms, Core};
use super::network::CallError;
use super::op::{Op, OpResult};
use super::rpc::{PeerRequest, PeerResponse, RemoteError};
use super::{Cluster, ClusterError};
use crate::telemetry::TraceParent;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::SpanKind;

/// Longest wait between retries while there is no usable leader.
pub(super) const RETRY_WAIT: Duration = Duration::from_millis(20);

/// A request that must run on whichever node leads: a write, a leader
/// transfer. [`Cluster::on_leader`] finds the leader and applies the write
/// path's retry rules to any such request.
pub(super) trait LeaderCall: Sync {
    /// What the leader answers.
    type Output: Send;

    /// Runs the request here, this node being the leader (as far as it
    /// knows); give up by `deadline`.
    fn run_local<'a>(
        &'a self,
        core: &'a Core,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<Self::Output, RemoteError>> + Send + 'a;

    /// The peer request that carries it to a remote leader, whose caller
    /// gives up at `deadline_ms` (wall clock).
    fn to_peer(&self, deadline_ms: u64) -> PeerRequest;

    /// The output in the remote leader's answer, `None` when the answer
    /// does not fit the request.
    fn from_peer(response: PeerResponse) -> Option<Self::Output>;

    /// The peer RPC's method name in traces, for a request that is traced
    /// when it runs in a sampled context.
    fn traced_method(&self) -> Option<&'static str> {
        None
    }
}

/// A client write, proposed on the leader.
struct ForwardedWrite(Op);

impl LeaderCall for ForwardedWrite {
    type Output = OpResult;

    fn run_local<'a>(
        &'a self,
        core: &'a Core,
        _deadline: Instant,
    ) -> impl std::future::Future<Output = Result<OpResult, RemoteError>> + Send + 'a {
        core.propose_local(self.0.clone())
    }

    fn to_peer(&self, deadline_ms: u64) -> PeerRequest {
        PeerRequest::Forward {
            op: self.0.clone(),
            deadline_ms,
        }
    }

    fn from_peer(response: PeerResponse) -> Option<OpResult> {
        match response {
            PeerResponse::Forwarded(result) => Some(result),
            _ => None,
        }
    }

    fn traced_method(&self) -> Option<&'static str> {
        Some("Forward")
    }
}

impl Cluster {
    /// Replicates `op` and returns the result of applying it.
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] when no leader accepted the write within
    /// the request timeout (not applied), [`ClusterError::Timeout`] when it
    /// was proposed but its outcome was not seen.
    ///
    /// [`ClusterError::NoSpace`] when this node is low on disk space
    /// (refused at once), or when the leader was and did not hand
    /// leadership to another node within the request timeout (not applied).
    pub async fn write(&self, op: Op) -> Result<OpResult, ClusterError> {
        self.core.refuse_if_removed()?;
        if let Some(why) = self.core.disk.write_refusal() {
            return Err(ClusterError::NoSpace(why));
        }
        if let Some(why) = super::disk_guard::raft_stopped(&self.core) {
            return Err(ClusterError::Unavailable(why));
        }
        self.on_leader(&ForwardedWrite(op)).await
    }

    /// Runs `call` on the leader: here when this node leads, else over the
    /// peer channel, waiting for a leader and retrying while the failure
    /// proves the request was not carried out (no leader, not the leader,
    /// not sent), up to the request timeout.
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] when no leader took the request in
    /// time (not carried out), [`ClusterError::Timeout`] when it may have
    /// been carried out but the answer was not seen.
    pub(super) async fn on_leader<C: LeaderCall>(
        &self,
        call: &C,
    ) -> Result<C::Output, ClusterError> {
        let core = &self.core;
        core.refuse_if_removed()?;
        let deadline = Instant::now() + core.request_timeout;
        let mut last_reason = String::from("no leader");
        // A leader low on disk space refuses, then hands leadership over:
        // keep trying until the deadline, and if it never moved, say why.
        let mut leader_no_space = None;
        loop {
            let stopped = {
                use openraft::async_runtime::WatchReceiver;
                let metrics = core.raft.metrics();
                let m = metrics.borrow_watched();
                m.running_state.as_ref().err().map(ToString::to_string)
            };
            if let Some(fatal) = stopped {
                // Stopped Raft answers nothing; retrying until the deadline
                // would only delay the same answer.
                return Err(ClusterError::Unavailable(
                    super::disk_guard::raft_stopped(core)
                        .unwrap_or_else(|| format!("raft stopped on node {}: {fatal}", core.id)),
                ));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(match leader_no_space {
                    Some(why) if why == last_reason => ClusterError::NoSpace(why),
                    _ => ClusterError::Unavailable(last_reason),
                });
            }
            match core.current_leader() {
                Some(leader) if leader == core.id => match call.run_local(core, deadline).await {
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
                    let request =
                        call.to_peer(now_ms().saturating_add(
                            u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
                        ));
                    if matches!(request, PeerRequest::Forward { .. }) {
                        core.telemetry.metrics.count_forwarded_write();
                    }
                    // A traced write: the follower's side of the forward;
                    // the channel sends this span along with the request.
                    let span = call.traced_method().and_then(|method| {
                        core.telemetry.tracer.rpc(
                            TraceParent::current(),
                            "raftis.Peer/Forward",
                            SpanKind::Client,
                            method,
                            Some(leader),
                            &[],
                        )
                    });
                    if let Some(span) = &span {
                        super::network::set_server_address(span, channel.addr());
                    }
                    let sent = match &span {
                        None => channel.call(request, remaining).await,
                        Some(span) => {
                            channel
                                .call(request, remaining)
                                .with_context(span.context().clone())
                                .await
                        }
                    };
                    if let (Some(span), Err(e)) = (&span, &sent) {
                        if e.nothing_done() {
                            span.not_done(e.kind());
                        } else {
                            span.fail(e.kind(), &e.to_string());
                        }
                    }
                    match sent {
                        Ok(response) => {
                            return C::from_peer(response).ok_or_else(|| {
                                ClusterError::Timeout("unexpected reply from the leader".into())
                            })
                        }
                        Err(CallError::Remote(_, RemoteError::Unknown(why))) => {
                            return Err(ClusterError::Timeout(why))
                        }
                        Err(CallError::Remote(_, RemoteError::NoSpace(why))) => {
                            last_reason.clone_from(&why);
                            leader_no_space = Some(why);
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
