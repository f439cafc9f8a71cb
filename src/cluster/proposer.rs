//! The leader's proposer: writes that arrive together become one log entry.
//!
//! Every write this node proposes as leader (its own clients' and those
//! followers forward) goes through [`Proposer::submit`], which queues it in
//! call order and returns at once. One task takes whatever is queued when it
//! runs and hands it to Raft as one entry: a lone write as itself, several
//! as one flat [`Op::Batch`], whose per-op results it splits back to each
//! writer once the entry is applied. Raft's cost per entry (the core's
//! bookkeeping, the log record, AppendEntries framing, the apply run, the
//! responder, and the task hand-offs between them) is then paid once per
//! group instead of once per write; with many clients it was most of the
//! CPU a write cost (benches/RESULTS.md, "Profiles").
//!
//! A lone client pays one scheduler turn: before proposing a single write
//! the task yields once so that writes made ready by the same wake-up (the
//! replies of the previous entry let many clients send their next command)
//! join it. It never waits on a timer.
//!
//! Guarantees kept: writes enter Raft in the order `submit` was called (one
//! client's pipelined writes through a follower keep their order); an entry
//! applies all or none, so a connection's pipelined group
//! (`Cluster::write_batch`) inside a bigger entry keeps its all-or-none
//! promise; a traced write goes alone, so its entry carries its own trace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt as _;
use openraft::errors::ClientWriteError;
use openraft::impls::ProgressResponder;
use tokio::sync::{mpsc, oneshot};

use super::core::now_ms;
use super::op::{Op, OpResult};
use super::rpc::RemoteError;
use super::types::{LogId, Raft, StampedOp};
use crate::telemetry::{Metrics, TraceParent};

/// Most ops one entry carries.
const MAX_OPS: usize = 1024;
/// Most key and value bytes one entry carries (one big write still goes
/// alone, whatever its size). Small, because the limits downstream count
/// entries (openraft's entries per AppendEntries, the log tail, the
/// snapshot thresholds): at 64 KiB an entry already carries hundreds of
/// small writes, enough to spread the per-entry cost.
const MAX_PAYLOAD: usize = 64 * 1024;

/// A write's fate once its entry was applied.
#[derive(Debug)]
pub struct Committed {
    /// What applying the write returned.
    pub result: OpResult,
    /// The entry that carried it.
    pub log_id: LogId,
}

/// What a writer waits on after [`Proposer::submit`].
pub type Outcome = oneshot::Receiver<Result<Committed, RemoteError>>;

/// One queued write.
struct Proposal {
    op: Op,
    trace: Option<TraceParent>,
    reply: oneshot::Sender<Result<Committed, RemoteError>>,
}

/// The queue in front of Raft's `client_write` (see the module doc).
pub struct Proposer {
    queue: mpsc::UnboundedSender<Proposal>,
}

impl Proposer {
    /// Starts the proposing task for `raft`. Entries are stamped with this
    /// node's clock floored at `applied_clock`. The task ends when the
    /// proposer is dropped and every entry it proposed has been answered.
    #[must_use]
    pub fn start(raft: Raft, applied_clock: Arc<AtomicU64>, metrics: Arc<Metrics>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(raft.clone(), applied_clock, metrics, rx));
        // Without its proposer a leader would keep leading and refuse every
        // write; stopping Raft lets another node take over.
        tokio::spawn(async move {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!("the write proposer failed; stopping raft on this node");
                    if let Err(e) = raft.shutdown().await {
                        tracing::debug!(error = %e, "stopping raft after the proposer failed");
                    }
                }
            }
        });
        Proposer { queue }
    }

    /// Queues `op` (with the trace of its proposal span, if traced).
    ///
    /// # Errors
    /// `Unavailable` when the proposing task has stopped (nothing proposed).
    /// The outcome then yields the write's result, `NotLeader` (nothing
    /// proposed), `Unavailable` (Raft has stopped; nothing proposed) or
    /// `Unknown` (appended, fate not seen).
    pub fn submit(&self, op: Op, trace: Option<TraceParent>) -> Result<Outcome, RemoteError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Proposal { op, trace, reply })
            .map_err(|_| RemoteError::Unavailable("the write proposer has stopped".into()))?;
        Ok(outcome)
    }
}

/// The proposing task: gathers, proposes, and answers applied groups.
async fn run(
    raft: Raft,
    applied_clock: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Proposal>,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut carry: Option<Proposal> = None;
    loop {
        // Answer what was applied meanwhile: with a backlog (`carry` set
        // round after round) the select below is not reached.
        while let Some(Some(())) = in_flight.next().now_or_never() {}
        let first = match carry.take() {
            Some(p) => p,
            None => tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => p,
                    None => break,
                },
                Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
            },
        };
        let mut group = vec![first];
        if group[0].trace.is_none() {
            if rx.is_empty() {
                tokio::task::yield_now().await;
            }
            carry = gather(&mut rx, &mut group);
        }
        // A writer that stopped waiting (its request timed out and was
        // answered "outcome unknown", or its client went away) is not
        // proposed any more: under overload, old writes must not keep
        // taking the place of new ones.
        group.retain(|p| !p.reply.is_closed());
        if group.is_empty() {
            continue;
        }
        if let Some(answer) = propose(&raft, &applied_clock, &metrics, group).await {
            in_flight.push(answer);
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Moves queued untraced writes into `group` up to the entry's limits, and
/// returns the first queued write that must start the next group.
fn gather(
    rx: &mut mpsc::UnboundedReceiver<Proposal>,
    group: &mut Vec<Proposal>,
) -> Option<Proposal> {
    let mut ops: usize = group.iter().map(|p| op_count(&p.op)).sum();
    let mut payload: usize = group.iter().map(|p| p.op.payload_len()).sum();
    while let Ok(next) = rx.try_recv() {
        let (n, len) = (op_count(&next.op), next.op.payload_len());
        if next.trace.is_some() || ops + n > MAX_OPS || payload + len > MAX_PAYLOAD {
            return Some(next);
        }
        ops += n;
        payload += len;
        group.push(next);
    }
    None
}

fn op_count(op: &Op) -> usize {
    match op {
        Op::Batch(ops) => ops.len(),
        _ => 1,
    }
}

/// How each writer's share of a combined entry's results is cut out.
enum Shape {
    /// One write, one result.
    Single,
    /// A connection's batch of this many writes: an array of their results.
    Batch(usize),
}

/// Proposes `group` as one entry and returns the future that answers its
/// writers once the entry's fate is known (`None` when Raft refused it and
/// the writers were answered already).
async fn propose(
    raft: &Raft,
    applied_clock: &AtomicU64,
    metrics: &Metrics,
    mut group: Vec<Proposal>,
) -> Option<impl std::future::Future<Output = ()>> {
    let writes = group.iter().map(|p| op_count(&p.op)).sum();
    let (op, trace, shapes, replies) = if group.len() == 1 {
        let Proposal { op, trace, reply } = group.remove(0);
        (op, trace, None, vec![reply])
    } else {
        let mut ops = Vec::with_capacity(group.iter().map(|p| op_count(&p.op)).sum());
        let mut shapes = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        for p in group {
            match p.op {
                Op::Batch(batch) => {
                    shapes.push(Shape::Batch(batch.len()));
                    ops.extend(batch);
                }
                op => {
                    shapes.push(Shape::Single);
                    ops.push(op);
                }
            }
            replies.push(p.reply);
        }
        (Op::Batch(ops), None, Some(shapes), replies)
    };
    // Never stamp behind what was applied: a new leader whose clock is
    // behind the old one's must not make time run backwards for TTLs.
    let stamped = StampedOp {
        now_ms: now_ms().max(applied_clock.load(Ordering::Acquire)),
        op,
        trace,
    };
    let (responder, applied) = ProgressResponder::complete_only();
    if let Err(e) = raft.client_write_ff(stamped, Some(responder)).await {
        let refusal = RemoteError::Unavailable(format!("raft stopped: {e}"));
        for reply in replies {
            let _ = reply.send(Err(refusal.clone()));
        }
        return None;
    }
    metrics.observe_proposal(writes);
    Some(async move {
        let outcome = match applied.await {
            Err(_) => Err(RemoteError::Unknown("raft dropped the proposal".into())),
            Ok(Ok(resp)) => Ok((resp.data, resp.log_id)),
            Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(RemoteError::NotLeader {
                leader: f.leader_id,
            }),
            Ok(Err(e)) => Err(RemoteError::Unknown(e.to_string())),
        };
        answer(outcome, shapes, replies);
    })
}

/// Sends each writer its share of the entry's outcome.
fn answer(
    outcome: Result<(OpResult, LogId), RemoteError>,
    shapes: Option<Vec<Shape>>,
    replies: Vec<oneshot::Sender<Result<Committed, RemoteError>>>,
) {
    let (result, log_id) = match outcome {
        Ok(applied) => applied,
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let Some(shapes) = shapes else {
        if let Some(reply) = replies.into_iter().next() {
            let _ = reply.send(Ok(Committed { result, log_id }));
        }
        return;
    };
    let expected: usize = shapes
        .iter()
        .map(|s| match s {
            Shape::Single => 1,
            Shape::Batch(n) => *n,
        })
        .sum();
    let results = match result {
        OpResult::Array(results) if results.len() == expected => results,
        other => {
            // Apply is ours and answers a batch with one result per op;
            // anything else is a bug, and the writes did apply.
            let e = RemoteError::Unknown(format!(
                "a combined entry of {expected} writes was applied with an unexpected result: {other:?}"
            ));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let mut results = results.into_iter();
    for (shape, reply) in shapes.into_iter().zip(replies) {
        let result = match shape {
            Shape::Single => results.next().unwrap_or(OpResult::Nil),
            Shape::Batch(n) => OpResult::Array(results.by_ref().take(n).collect()),
        };
        let _ = reply.send(Ok(Committed { result, log_id }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn log_id() -> LogId {
        crate::cluster::types::test_values::log_id(7)
    }

    fn incr(key: &'static str) -> Op {
        Op::IncrBy {
            key: Bytes::from_static(key.as_bytes()),
            delta: 1,
        }
    }

    #[test]
    fn a_combined_entrys_results_go_back_to_each_writer() {
        let (a_tx, mut a) = oneshot::channel();
        let (b_tx, mut b) = oneshot::channel();
        let (c_tx, mut c) = oneshot::channel();
        let results = OpResult::Array(vec![
            OpResult::Integer(1),
            OpResult::Ok,
            OpResult::Integer(2),
            OpResult::Nil,
        ]);
        answer(
            Ok((results, log_id())),
            Some(vec![Shape::Single, Shape::Batch(2), Shape::Single]),
            vec![a_tx, b_tx, c_tx],
        );
        let a = a.try_recv().unwrap().unwrap();
        let b = b.try_recv().unwrap().unwrap();
        let c = c.try_recv().unwrap().unwrap();
        assert_eq!(a.result, OpResult::Integer(1));
        assert_eq!(
            b.result,
            OpResult::Array(vec![OpResult::Ok, OpResult::Integer(2)])
        );
        assert_eq!(c.result, OpResult::Nil);
        assert_eq!(a.log_id, log_id());
        assert_eq!(c.log_id, log_id());
    }

    #[test]
    fn a_lone_write_gets_the_entrys_result_as_is() {
        let (tx, mut rx) = oneshot::channel();
        let result = OpResult::Array(vec![OpResult::Ok]);
        answer(Ok((result.clone(), log_id())), None, vec![tx]);
        assert_eq!(rx.try_recv().unwrap().unwrap().result, result);
    }

    #[test]
    fn a_failed_entry_fails_every_writer_alike() {
        let (a_tx, mut a) = oneshot::channel();
        let (b_tx, mut b) = oneshot::channel();
        answer(
            Err(RemoteError::NotLeader { leader: Some(2) }),
            Some(vec![Shape::Single, Shape::Single]),
            vec![a_tx, b_tx],
        );
        for rx in [&mut a, &mut b] {
            match rx.try_recv().unwrap() {
                Err(RemoteError::NotLeader { leader: Some(2) }) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_result_of_the_wrong_shape_is_an_unknown_outcome_not_a_wrong_reply() {
        let (a_tx, mut a) = oneshot::channel();
        let (b_tx, mut b) = oneshot::channel();
        answer(
            Ok((OpResult::Array(vec![OpResult::Ok]), log_id())),
            Some(vec![Shape::Single, Shape::Single]),
            vec![a_tx, b_tx],
        );
        for rx in [&mut a, &mut b] {
            assert!(matches!(
                rx.try_recv().unwrap(),
                Err(RemoteError::Unknown(_))
            ));
        }
    }

    fn queued(ops: Vec<(Op, bool)>) -> mpsc::UnboundedReceiver<Proposal> {
        let (tx, rx) = mpsc::unbounded_channel();
        for (op, traced) in ops {
            let (reply, _) = oneshot::channel();
            let trace = traced.then_some(TraceParent {
                trace_id: [1; 16],
                span_id: [2; 8],
                flags: 1,
            });
            tx.send(Proposal { op, trace, reply }).unwrap();
        }
        rx
    }

    #[test]
    fn gathering_stops_at_a_traced_write_which_starts_the_next_entry() {
        let mut rx = queued(vec![
            (incr("a"), false),
            (incr("b"), true),
            (incr("c"), false),
        ]);
        let mut group = vec![rx.try_recv().unwrap()];
        let carry = gather(&mut rx, &mut group);
        assert_eq!(group.len(), 1);
        let carry = carry.unwrap();
        assert!(carry.trace.is_some());
        assert_eq!(carry.op, incr("b"));
        // What follows stays queued, in order.
        assert_eq!(rx.try_recv().unwrap().op, incr("c"));
    }

    #[test]
    fn gathering_respects_the_op_and_payload_limits() {
        let batch = Op::Batch((0..MAX_OPS - 1).map(|_| incr("k")).collect());
        let mut rx = queued(vec![(incr("a"), false), (incr("b"), false), (batch, false)]);
        let mut group = vec![rx.try_recv().unwrap()];
        let carry = gather(&mut rx, &mut group);
        assert_eq!(group.len(), 2, "the batch would pass MAX_OPS");
        assert!(matches!(carry.unwrap().op, Op::Batch(_)));

        let big = Bytes::from(vec![b'v'; MAX_PAYLOAD / 2 + 1]);
        let set = |value: Bytes| Op::Set {
            key: Bytes::from_static(b"k"),
            value,
            condition: crate::cluster::op::SetCondition::Always,
            expiry: crate::cluster::op::SetExpiry::Clear,
            get: false,
        };
        let mut rx = queued(vec![(set(big.clone()), false), (set(big), false)]);
        let mut group = vec![rx.try_recv().unwrap()];
        assert!(gather(&mut rx, &mut group).is_some());
        assert_eq!(group.len(), 1, "two halves and more pass MAX_PAYLOAD");
    }
}
