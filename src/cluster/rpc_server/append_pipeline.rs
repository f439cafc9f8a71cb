//! The follower's side of pipelined replication: one connection's
//! AppendEntries reach Raft in the order they arrived.
//!
//! The leader keeps several AppendEntries in flight on its connection to a
//! follower (`network.rs`), each continuing where the one before it ends, so
//! they must reach Raft in arrival order: a task per request would let a
//! later request overtake an earlier one. The connection loop (`rpc_server.rs`)
//! pushes each request into an [`AppendPipeline`]; its task feeds them, in
//! order, into one `Raft::stream_append` session, which hands each to Raft
//! at once (the next one is appended while the one before it is being
//! synced, so requests that arrive together share an fsync) and yields the
//! outcomes in the same order. Each outcome goes back under the id of the
//! request it answers.
//!
//! A session ends with the first request Raft refuses (a conflict, a newer
//! vote) or when Raft stops. The requests handed to it after that one have
//! no outcome to report (Raft may or may not have appended them): they are
//! answered "outcome unknown". The leader's replication stream never reads
//! those answers, since it ends with the refusal; a heartbeat among them
//! counts as a failed one, as on a lost connection. The next request opens
//! a new session.

use std::collections::VecDeque;

use openraft::base::BoxStream;
use openraft::errors::Fatal;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendResult};
use tokio::sync::mpsc;

use crate::cluster::rpc::{Envelope, PeerResponse, RemoteError};
use crate::cluster::types::TypeConfig;
use crate::telemetry::trace::ActiveSpan;

/// What Raft's `stream_append` yields for each request.
pub(super) type Outcome = Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>>;

/// The requests of one session, in order, as Raft takes them.
pub(super) type SessionInput =
    futures::channel::mpsc::UnboundedReceiver<AppendEntriesRequest<TypeConfig>>;

/// An AppendEntries from the connection, on its way to Raft.
pub(super) struct Queued {
    /// The request's id on the connection.
    pub id: u64,
    /// The request.
    pub rpc: AppendEntriesRequest<TypeConfig>,
    /// The follower's spans of its traced entries, ended once it is answered.
    pub spans: Vec<ActiveSpan>,
}

/// Takes one connection's AppendEntries, in arrival order, to Raft.
pub(super) struct AppendPipeline {
    requests: mpsc::UnboundedSender<Queued>,
}

impl AppendPipeline {
    /// Starts the pipeline's task. `open` starts a `stream_append` session
    /// on the requests it is given; the answers go to `responses`. The task
    /// ends when the pipeline is dropped.
    pub(super) fn spawn<O>(
        open: O,
        responses: mpsc::UnboundedSender<Envelope<PeerResponse>>,
    ) -> Self
    where
        O: FnMut(SessionInput) -> BoxStream<'static, Outcome> + Send + 'static,
    {
        let (requests, queued) = mpsc::unbounded_channel();
        tokio::spawn(run(open, queued, responses));
        AppendPipeline { requests }
    }

    /// Queues a request behind the ones already pushed.
    pub(super) fn push(&self, queued: Queued) {
        // The task only ends once this sender is gone.
        let _ = self.requests.send(queued);
    }
}

/// A request handed to Raft, waiting for its outcome.
struct Waiting {
    id: u64,
    spans: Vec<ActiveSpan>,
}

/// One `stream_append` session.
struct Session {
    input: futures::channel::mpsc::UnboundedSender<AppendEntriesRequest<TypeConfig>>,
    outcomes: BoxStream<'static, Outcome>,
    /// Handed to Raft and not answered yet, oldest first: the next outcome
    /// is the front one's.
    waiting: VecDeque<Waiting>,
}

async fn run<O>(
    mut open: O,
    mut queued: mpsc::UnboundedReceiver<Queued>,
    responses: mpsc::UnboundedSender<Envelope<PeerResponse>>,
) where
    O: FnMut(SessionInput) -> BoxStream<'static, Outcome>,
{
    let mut session: Option<Session> = None;
    loop {
        tokio::select! {
            // Hand a request to Raft before passing on an outcome: Raft
            // starts on it while the answer goes out.
            biased;
            next = queued.recv() => {
                let Some(Queued { id, rpc, spans }) = next else {
                    break;
                };
                let s = session.get_or_insert_with(|| {
                    let (input, requests) = futures::channel::mpsc::unbounded();
                    Session {
                        input,
                        outcomes: open(requests),
                        waiting: VecDeque::new(),
                    }
                });
                s.waiting.push_back(Waiting { id, spans });
                // Refused only when the session already ended on Raft's
                // side; its outcomes then end too, and this request is
                // answered with the others left over.
                let _ = s.input.unbounded_send(rpc);
            }
            outcome = next_outcome(&mut session) => {
                let Some(s) = session.as_mut() else {
                    continue;
                };
                let ends = match outcome {
                    // Raft stopped taking requests.
                    None => true,
                    Some(outcome) => {
                        let (body, ends) = answer(outcome);
                        match s.waiting.pop_front() {
                            Some(waiting) => {
                                respond(&responses, waiting, body);
                                ends
                            }
                            None => {
                                tracing::error!("stream_append answered a request it was not given");
                                true
                            }
                        }
                    }
                };
                if ends {
                    if let Some(s) = session.take() {
                        for waiting in s.waiting {
                            let body = PeerResponse::Error(RemoteError::Unknown(
                                "an earlier AppendEntries on this connection ended its session with Raft"
                                    .into(),
                            ));
                            respond(&responses, waiting, body);
                        }
                    }
                }
            }
        }
    }
    // The connection is gone: nobody reads the answers of what is left.
    if let Some(s) = session {
        for waiting in s.waiting {
            for span in &waiting.spans {
                span.fail(
                    "connection_lost",
                    "peer connection closed before the answer",
                );
            }
        }
    }
}

/// The next outcome of the session; never resolves without one.
async fn next_outcome(session: &mut Option<Session>) -> Option<Outcome> {
    match session {
        Some(s) => futures::StreamExt::next(&mut s.outcomes).await,
        None => std::future::pending().await,
    }
}

/// Sends `body` as the answer to `waiting`, ending its spans (failed, if
/// it is an error).
fn respond(
    responses: &mpsc::UnboundedSender<Envelope<PeerResponse>>,
    waiting: Waiting,
    body: PeerResponse,
) {
    if let PeerResponse::Error(e) = &body {
        for span in &waiting.spans {
            span.fail(e.kind(), &e.to_string());
        }
    }
    drop(waiting.spans);
    let _ = responses.send(Envelope::new(waiting.id, body));
}

/// Maps a `stream_append` outcome to the AppendEntries answer the leader
/// expects (as `Raft::append_entries` would have answered the request
/// alone), and whether the session ends with it (a refusal, a stopped Raft).
fn answer(outcome: Outcome) -> (PeerResponse, bool) {
    match outcome {
        Ok(Ok(_)) => (
            PeerResponse::AppendEntries(AppendEntriesResponse::Success),
            false,
        ),
        Ok(Err(refused)) => (
            PeerResponse::AppendEntries(AppendEntriesResponse::from(Err::<Option<_>, _>(refused))),
            true,
        ),
        Err(fatal) => (
            PeerResponse::Error(RemoteError::Unavailable(fatal.to_string())),
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::StreamExt;
    use openraft::errors::Fatal;
    use openraft::raft::{AppendEntriesResponse, StreamAppendError};
    use tokio::sync::{mpsc, oneshot};

    use super::{AppendPipeline, Outcome, Queued, SessionInput};
    use crate::cluster::rpc::{Envelope, PeerResponse, RemoteError};
    use crate::cluster::types::test_values::{append_after, log_id};
    use crate::cluster::types::Vote;

    /// A stand-in for Raft's `stream_append`: takes every request as soon as
    /// it is given (reporting it on `arrived`), and yields the outcomes in
    /// request order, each once the test settles it; like Raft, the session
    /// ends after the first outcome that is not a success.
    #[derive(Clone)]
    struct FakeRaft {
        arrived: mpsc::UnboundedSender<(usize, u64, oneshot::Sender<Outcome>)>,
        sessions: Arc<Mutex<usize>>,
    }

    impl FakeRaft {
        fn open(&self, mut input: SessionInput) -> openraft::base::BoxStream<'static, Outcome> {
            let session = {
                let mut n = self.sessions.lock().unwrap();
                *n += 1;
                *n
            };
            let arrived = self.arrived.clone();
            let (pending_tx, pending_rx) = mpsc::unbounded_channel::<oneshot::Receiver<Outcome>>();
            tokio::spawn(async move {
                while let Some(rpc) = input.next().await {
                    let (tx, rx) = oneshot::channel();
                    let prev = rpc.prev_log_id.map_or(0, |l| l.index);
                    if arrived.send((session, prev, tx)).is_err() || pending_tx.send(rx).is_err() {
                        break;
                    }
                }
            });
            Box::pin(futures::stream::unfold(Some(pending_rx), |rx| async move {
                let mut rx = rx?;
                let outcome = rx.recv().await?.await.ok()?;
                let more = matches!(outcome, Ok(Ok(_)));
                Some((outcome, more.then_some(rx)))
            }))
        }
    }

    struct Harness {
        pipeline: AppendPipeline,
        arrived: mpsc::UnboundedReceiver<(usize, u64, oneshot::Sender<Outcome>)>,
        responses: mpsc::UnboundedReceiver<Envelope<PeerResponse>>,
        sessions: Arc<Mutex<usize>>,
    }

    impl Harness {
        fn new() -> Harness {
            let (arrived_tx, arrived) = mpsc::unbounded_channel();
            let (responses_tx, responses) = mpsc::unbounded_channel();
            let sessions = Arc::new(Mutex::new(0));
            let raft = FakeRaft {
                arrived: arrived_tx,
                sessions: sessions.clone(),
            };
            let pipeline = AppendPipeline::spawn(move |input| raft.open(input), responses_tx);
            Harness {
                pipeline,
                arrived,
                responses,
                sessions,
            }
        }

        fn push(&self, id: u64, prev: u64) {
            self.pipeline.push(Queued {
                id,
                rpc: append_after(prev),
                spans: Vec::new(),
            });
        }

        /// The next request Raft took: its session and `prev` index.
        async fn arrival(&mut self) -> (usize, u64, oneshot::Sender<Outcome>) {
            tokio::time::timeout(Duration::from_secs(10), self.arrived.recv())
                .await
                .expect("a request reaches Raft")
                .expect("the fake Raft is alive")
        }

        async fn response(&mut self) -> Envelope<PeerResponse> {
            tokio::time::timeout(Duration::from_secs(10), self.responses.recv())
                .await
                .expect("an answer comes back")
                .expect("the pipeline is alive")
        }

        /// Whether an answer is already out (the pipeline's task has run
        /// whatever was ready: see `settle`).
        fn has_response(&mut self) -> bool {
            !self.responses.is_empty()
        }
    }

    /// Lets the pipeline's task run until it waits for something; on the
    /// current-thread runtime nothing else runs meanwhile.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn success() -> Outcome {
        Ok(Ok(None))
    }

    /// Several requests reach Raft, in arrival order, while none is answered
    /// yet; outcomes settled in reverse still go out in request order, each
    /// under its own id.
    #[tokio::test(flavor = "current_thread")]
    async fn requests_reach_raft_in_order_before_any_answer() {
        let mut h = Harness::new();
        for (id, prev) in [(10, 1), (11, 2), (12, 3)] {
            h.push(id, prev);
        }
        let mut settle_later = Vec::new();
        for expected in [1, 2, 3] {
            let (session, prev, tx) = h.arrival().await;
            assert_eq!((session, prev), (1, expected));
            settle_later.push(tx);
        }
        settle().await;
        assert!(!h.has_response(), "nothing is answered before Raft is done");
        for tx in settle_later.into_iter().rev() {
            tx.send(success()).unwrap();
            settle().await;
        }
        for id in [10, 11, 12] {
            let r = h.response().await;
            assert_eq!(r.id, id);
            assert!(
                matches!(
                    r.body,
                    PeerResponse::AppendEntries(AppendEntriesResponse::Success)
                ),
                "{:?}",
                r.body
            );
        }
        assert_eq!(*h.sessions.lock().unwrap(), 1);
    }

    /// A conflict ends the session: the request refused gets the conflict,
    /// the ones handed over after it an "outcome unknown" error, and the
    /// next request opens a new session.
    #[tokio::test(flavor = "current_thread")]
    async fn a_refusal_ends_the_session_and_the_next_request_opens_another() {
        let mut h = Harness::new();
        h.push(20, 1);
        h.push(21, 2);
        let (_, _, first) = h.arrival().await;
        let (_, _, second) = h.arrival().await;
        first
            .send(Ok(Err(StreamAppendError::Conflict(log_id(1)))))
            .unwrap();
        let r = h.response().await;
        assert_eq!(r.id, 20);
        assert!(
            matches!(
                r.body,
                PeerResponse::AppendEntries(AppendEntriesResponse::Conflict)
            ),
            "{:?}",
            r.body
        );
        let r = h.response().await;
        assert_eq!(r.id, 21);
        assert!(
            matches!(r.body, PeerResponse::Error(RemoteError::Unknown(_))),
            "{:?}",
            r.body
        );
        // Raft's answer to the second request has nowhere to go.
        assert!(second.send(success()).is_err());

        h.push(22, 0);
        let (session, prev, tx) = h.arrival().await;
        assert_eq!((session, prev), (2, 0));
        tx.send(success()).unwrap();
        let r = h.response().await;
        assert_eq!(r.id, 22);
        assert!(matches!(
            r.body,
            PeerResponse::AppendEntries(AppendEntriesResponse::Success)
        ));
    }

    /// A higher vote goes back as such; a stopped Raft as an error that
    /// says so.
    #[tokio::test(flavor = "current_thread")]
    async fn a_higher_vote_and_a_stopped_raft_are_answered() {
        let mut h = Harness::new();
        h.push(30, 1);
        let (_, _, tx) = h.arrival().await;
        tx.send(Ok(Err(StreamAppendError::HigherVote(Vote::new(2, 3)))))
            .unwrap();
        let r = h.response().await;
        assert_eq!(r.id, 30);
        assert!(
            matches!(&r.body, PeerResponse::AppendEntries(AppendEntriesResponse::HigherVote(v)) if *v == Vote::new(2, 3)),
            "{:?}",
            r.body
        );

        h.push(31, 1);
        let (session, _, tx) = h.arrival().await;
        assert_eq!(session, 2);
        tx.send(Err(Fatal::Stopped)).unwrap();
        let r = h.response().await;
        assert_eq!(r.id, 31);
        match r.body {
            PeerResponse::Error(RemoteError::Unavailable(why)) => assert_eq!(why, "raft stopped"),
            other => panic!("expected an error, got {other:?}"),
        }
    }
}
