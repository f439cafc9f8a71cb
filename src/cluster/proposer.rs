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
//! The answers do not come back through the task: each entry's responder
//! ([`WriteResponder`], raftis's openraft `Responder`) splits the applied
//! results and hands each writer its share where Raft completes the entry
//! (the state-machine worker, after the apply), which saves a task wake-up
//! per entry on the write's critical path.
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
use std::sync::{Arc, Mutex};

use openraft::errors::ClientWriteError;
use openraft::raft::ClientWriteResult;
use openraft::OptionalSend;
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
    /// proposer is dropped; entries it proposed are answered by Raft.
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

/// The proposing task: gathers and proposes.
async fn run(
    raft: Raft,
    applied_clock: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Proposal>,
) {
    let mut carry: Option<Proposal> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => break,
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
        propose(&raft, &applied_clock, &metrics, group).await;
    }
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

/// Proposes `group` as one entry; its [`WriteResponder`] answers the
/// writers once the entry's fate is known (or here, at once, when Raft has
/// stopped).
async fn propose(
    raft: &Raft,
    applied_clock: &AtomicU64,
    metrics: &Metrics,
    mut group: Vec<Proposal>,
) {
    let writes = group.iter().map(|p| op_count(&p.op)).sum();
    let (op, trace, shapes, replies) = if group.len() == 1 {
        let Proposal { op, trace, reply } = group.remove(0);
        (op, trace, None, vec![reply])
    } else {
        let mut ops = Vec::with_capacity(writes);
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
    let (responder, slot) = responder_for(Writers { shapes, replies });
    if let Err(e) = raft.client_write_ff(stamped, Some(responder)).await {
        if let Some(writers) = take(&slot) {
            writers.fail(RemoteError::Unavailable(format!("raft stopped: {e}")));
        }
        return;
    }
    metrics.observe_proposal(writes);
}

/// The writers' slot that the entry's responder and `propose` share, and
/// the responder. When Raft has stopped, `client_write_ff` fails and drops
/// the responder unanswered, and `propose` tells the writers from the slot
/// that nothing was proposed. A responder dropped after Raft took the entry
/// leaves the slot's last owner gone, and the writers see "raft dropped the
/// proposal": appended or not, its fate is unknown.
fn responder_for(writers: Writers) -> (WriteResponder<WriteResult>, Arc<Mutex<Option<Writers>>>) {
    let slot = Arc::new(Mutex::new(Some(writers)));
    let answered = slot.clone();
    let responder = WriteResponder::new(move |result| {
        if let Some(writers) = take(&answered) {
            writers.complete(result);
        }
    });
    (responder, slot)
}

/// Takes the writers out of their slot, if nobody has yet.
fn take(slot: &Mutex<Option<Writers>>) -> Option<Writers> {
    // The lock is only ever held here, so it cannot be poisoned.
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

/// Raft's outcome for one client write.
type WriteResult = ClientWriteResult<super::types::TypeConfig>;

/// The writers of one proposed entry: how to cut its results, and where
/// each share goes.
struct Writers {
    shapes: Option<Vec<Shape>>,
    replies: Vec<oneshot::Sender<Result<Committed, RemoteError>>>,
}

impl Writers {
    /// Answers every writer from Raft's outcome for the entry.
    fn complete(self, result: WriteResult) {
        let outcome = match result {
            Ok(resp) => Ok((resp.data, resp.log_id)),
            Err(ClientWriteError::ForwardToLeader(f)) => Err(RemoteError::NotLeader {
                leader: f.leader_id,
            }),
            Err(e) => Err(RemoteError::Unknown(e.to_string())),
        };
        answer(outcome, self.shapes, self.replies);
    }

    fn fail(self, error: RemoteError) {
        answer(Err(error), self.shapes, self.replies);
    }
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

/// raftis's openraft `Responder`: a callback Raft runs with an entry's
/// outcome where it completes the entry (after the apply, in the
/// state-machine worker; or in the Raft core when it refuses the entry).
/// Only the proposer creates them (`client_write_ff`); openraft's own
/// requests use its `ProgressResponder`. Dropped unanswered, it runs
/// nothing (see `propose`).
pub struct WriteResponder<T> {
    on_complete: Box<dyn FnOnce(T) + Send>,
}

impl<T> WriteResponder<T> {
    /// A responder that hands the outcome to `on_complete`.
    pub fn new(on_complete: impl FnOnce(T) + Send + 'static) -> Self {
        WriteResponder {
            on_complete: Box::new(on_complete),
        }
    }
}

impl<T> openraft::raft::responder::Responder<super::types::TypeConfig, T> for WriteResponder<T>
where
    T: OptionalSend + 'static,
{
    fn on_complete(self, result: T) {
        (self.on_complete)(result);
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

    type Reply = oneshot::Receiver<Result<Committed, RemoteError>>;

    /// One lone writer's slot and responder, and where its answer arrives.
    fn lone_writer() -> (
        WriteResponder<WriteResult>,
        Arc<Mutex<Option<Writers>>>,
        Reply,
    ) {
        let (reply, rx) = oneshot::channel();
        let (responder, slot) = responder_for(Writers {
            shapes: None,
            replies: vec![reply],
        });
        (responder, slot, rx)
    }

    #[test]
    fn the_responder_answers_the_writer_with_the_applied_result() {
        let (responder, slot, mut rx) = lone_writer();
        drop(slot);
        openraft::raft::responder::Responder::on_complete(
            responder,
            Ok(openraft::raft::ClientWriteResponse {
                log_id: log_id(),
                data: OpResult::Ok,
                membership: None,
            }),
        );
        let committed = rx.try_recv().unwrap().unwrap();
        assert_eq!(committed.result, OpResult::Ok);
        assert_eq!(committed.log_id, log_id());
    }

    #[test]
    fn a_refusal_to_forward_reaches_the_writer_as_not_leader() {
        let (responder, _slot, mut rx) = lone_writer();
        openraft::raft::responder::Responder::on_complete(
            responder,
            Err(ClientWriteError::ForwardToLeader(
                openraft::errors::ForwardToLeader {
                    leader_id: Some(2),
                    ..openraft::errors::ForwardToLeader::empty()
                },
            )),
        );
        assert!(matches!(
            rx.try_recv().unwrap(),
            Err(RemoteError::NotLeader { leader: Some(2) })
        ));
    }

    #[test]
    fn a_responder_dropped_after_raft_took_the_entry_leaves_the_outcome_unknown() {
        let (responder, slot, mut rx) = lone_writer();
        drop(slot);
        drop(responder);
        // The writer's sender is gone: `Core::submit_local` reports
        // "raft dropped the proposal" (unknown), never a result.
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }

    #[test]
    fn a_responder_raft_never_took_leaves_the_writers_to_be_told_nothing_was_proposed() {
        let (responder, slot, mut rx) = lone_writer();
        drop(responder);
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        take(&slot)
            .unwrap()
            .fail(RemoteError::Unavailable("raft stopped".into()));
        assert!(matches!(
            rx.try_recv().unwrap(),
            Err(RemoteError::Unavailable(_))
        ));
        assert!(take(&slot).is_none(), "answered once");
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
