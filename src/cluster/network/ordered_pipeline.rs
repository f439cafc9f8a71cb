//! Ordered pipelining: several requests in flight, answers in request order.
//!
//! [`ordered`] pulls requests from an input stream and hands each to a
//! `send` step at once, without waiting for earlier answers, as long as
//! fewer than [`Limits::requests`] requests and fewer than [`Limits::bytes`]
//! bytes are unanswered (one request always may go, however big). Until the
//! first answer is in, it sends one request at a time: a peer that is not
//! answering (stopped, partitioned, overloaded) gets one request per stream,
//! as with stop-and-wait, not a pile that it would take in all at once when
//! it wakes up.
//!
//! `send` runs one request at a time, in input order, so the requests reach
//! the wire in that order too; what it returns is the wait for that
//! request's answer, and those waits run concurrently.
//! The output yields the answers strictly in request order (an early answer
//! waits for the ones before it) and ends after the first answer marked
//! `last`, or when the input ends and every answer is out. An answer that
//! is in is handed on before anything more is sent, so nothing follows a
//! refusal that has arrived.
//!
//! Only the oldest unanswered request is timed: its answer must come within
//! [`Limits::answer_timeout`] of the later of its send and the previous
//! answer. A peer working through a long queue answers steadily, and a
//! request waiting behind others is not failed for the time it waited;
//! a peer that stops answering is noticed one timeout after its last
//! answer. A timeout ends the output with the `timed_out` item.
//!
//! `network.rs` uses it for openraft's `stream_append` (AppendEntries to one
//! follower). It knows nothing of Raft, so its tests drive it with plain
//! values.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use futures::future::{ready, Either, Ready};
use futures::stream::{FuturesOrdered, Stream, StreamExt};
use tokio::time::Instant;

/// One answer, and whether the output stream ends with it.
#[derive(Debug)]
pub(super) struct Answer<T> {
    /// What the output yields.
    pub item: T,
    /// No later answer is wanted: the stream ends after this one and
    /// pulls no more requests.
    pub last: bool,
}

/// A request put on its way by the `send` step.
pub(super) struct Sent<W> {
    /// Resolves to the request's answer; has no deadline of its own.
    pub answer: W,
    /// The request's size on the wire, counted against [`Limits::bytes`]
    /// until it is answered.
    pub bytes: usize,
}

/// How much may be unanswered, and for how long.
pub(super) struct Limits<L> {
    /// At most this many requests unanswered (asked before each request,
    /// taken as at least one).
    pub requests: L,
    /// No further request is sent while this many bytes or more are
    /// unanswered.
    pub bytes: usize,
    /// How long the oldest unanswered request may go without its answer,
    /// counted from its send or the previous answer, whichever is later.
    pub answer_timeout: Duration,
}

/// One unanswered request's bookkeeping, oldest first (as `in_flight`).
struct Unanswered {
    sent_at: Instant,
    bytes: usize,
}

/// The state carried between the output stream's items.
struct Pipeline<S, L, F, E, W: Future<Output = Answer<T>>, T> {
    /// `None` once the input ended, or once a send failed (no request may
    /// follow one that never left).
    input: Option<S>,
    limits: Limits<L>,
    send: F,
    timed_out: E,
    in_flight: FuturesOrdered<Either<W, Ready<Answer<T>>>>,
    /// Send time and size of each request in `in_flight`, in the same order.
    unanswered: VecDeque<Unanswered>,
    bytes_in_flight: usize,
    /// When the last answer came out: the oldest request's clock starts no
    /// earlier. `None` until the first answer, which also means only one
    /// request may be in flight.
    answered_at: Option<Instant>,
    ended: bool,
}

impl<S, L, F, E, W: Future<Output = Answer<T>>, T> Pipeline<S, L, F, E, W, T>
where
    L: Fn() -> usize,
{
    /// Whether another request may be sent now.
    fn can_send(&self) -> bool {
        if self.input.is_none() {
            return false;
        }
        if self.in_flight.is_empty() {
            return true;
        }
        let limit = match self.answered_at {
            Some(_) => (self.limits.requests)().max(1),
            None => 1,
        };
        self.in_flight.len() < limit && self.bytes_in_flight < self.limits.bytes
    }

    /// When the oldest unanswered request times out.
    fn deadline(&self) -> Instant {
        let now = Instant::now();
        let since = match (self.unanswered.front(), self.answered_at) {
            (Some(oldest), Some(answered)) => oldest.sent_at.max(answered),
            (Some(oldest), None) => oldest.sent_at,
            (None, _) => now,
        };
        since + self.limits.answer_timeout
    }
}

/// The answers to the requests of `input`, in request order, within
/// `limits` (see the module comment). When the oldest unanswered request
/// times out, the output ends with `timed_out()`.
///
/// `send(request)` puts one request on its way and resolves to `Ok(sent)`,
/// or to `Err(item)` when the request could not be sent: `item` is then
/// that request's (last) answer.
pub(super) fn ordered<S, L, F, SF, W, E, T>(
    input: S,
    limits: Limits<L>,
    send: F,
    timed_out: E,
) -> impl Stream<Item = T>
where
    S: Stream + Unpin,
    L: Fn() -> usize,
    F: FnMut(S::Item) -> SF,
    SF: Future<Output = Result<Sent<W>, T>>,
    W: Future<Output = Answer<T>>,
    E: FnMut() -> T,
{
    let pipeline = Pipeline {
        input: Some(input),
        limits,
        send,
        timed_out,
        in_flight: FuturesOrdered::new(),
        unanswered: VecDeque::new(),
        bytes_in_flight: 0,
        answered_at: None,
        ended: false,
    };
    futures::stream::unfold(pipeline, |mut p| async move {
        loop {
            if p.ended {
                return None;
            }
            let can_send = p.can_send();
            if !can_send && p.in_flight.is_empty() {
                return None;
            }
            let deadline = p.deadline();
            tokio::select! {
                // An answer that is in goes out before anything more is
                // sent: after a refusal nothing more is wanted.
                biased;
                answer = tokio::time::timeout_at(deadline, p.in_flight.next()),
                    if !p.in_flight.is_empty() =>
                {
                    let answer: Result<Option<Answer<T>>, _> = answer;
                    let Ok(Some(answer)) = answer else {
                        // The oldest request went unanswered for too long
                        // (`None` cannot be: `in_flight` is not empty).
                        p.ended = true;
                        return Some(((p.timed_out)(), p));
                    };
                    if let Some(done) = p.unanswered.pop_front() {
                        p.bytes_in_flight = p.bytes_in_flight.saturating_sub(done.bytes);
                    }
                    p.answered_at = Some(Instant::now());
                    if answer.last {
                        p.ended = true;
                    }
                    return Some((answer.item, p));
                }
                request = next_of(&mut p.input), if can_send => match request {
                    None => p.input = None,
                    Some(request) => match (p.send)(request).await {
                        Ok(sent) => {
                            p.in_flight.push_back(Either::Left(sent.answer));
                            p.unanswered.push_back(Unanswered {
                                sent_at: Instant::now(),
                                bytes: sent.bytes,
                            });
                            p.bytes_in_flight += sent.bytes;
                        }
                        Err(item) => {
                            p.in_flight.push_back(Either::Right(ready(Answer { item, last: true })));
                            p.unanswered.push_back(Unanswered {
                                sent_at: Instant::now(),
                                bytes: 0,
                            });
                            p.input = None;
                        }
                    },
                },
                // Not reached: the check above leaves a branch enabled.
                else => return None,
            }
        }
    })
    // Polling an ended stream again is allowed, and answers "ended".
    .fuse()
}

/// The next item of `input`; never resolves when there is no input (the
/// branch that polls it is disabled then, but `select!` still builds it).
async fn next_of<S: Stream + Unpin>(input: &mut Option<S>) -> Option<S::Item> {
    match input {
        Some(input) => input.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::channel::{mpsc, oneshot};
    use futures::{FutureExt, StreamExt};

    use super::{ordered, Answer, Limits, Sent};

    /// Requests sent and not answered yet, with the way to answer each.
    type Unanswered = Vec<(u32, oneshot::Sender<Answer<u32>>)>;

    /// What the output yields when the oldest request times out.
    const TIMED_OUT: u32 = 2000;

    /// A fake peer: records what was sent, in order, and answers each
    /// request when the test says so. Request `r` is `10 * r` bytes long.
    #[derive(Clone, Default)]
    struct Peer {
        sent: Arc<Mutex<Vec<u32>>>,
        answers: Arc<Mutex<Unanswered>>,
    }

    impl Peer {
        fn send(
            &self,
            request: u32,
        ) -> impl std::future::Future<
            Output = Result<Sent<impl std::future::Future<Output = Answer<u32>>>, u32>,
        > {
            let peer = self.clone();
            async move {
                if request == 0 {
                    // Request 0 "cannot be sent".
                    return Err(1000);
                }
                peer.sent.lock().unwrap().push(request);
                let (tx, rx) = oneshot::channel();
                peer.answers.lock().unwrap().push((request, tx));
                Ok(Sent {
                    answer: rx.map(|r| r.expect("the test answers every request it keeps")),
                    bytes: 10 * request as usize,
                })
            }
        }

        /// [`ordered`] over `input`, with this peer taking the requests.
        fn pipeline(
            &self,
            input: impl futures::Stream<Item = u32> + Unpin,
            limits: Limits<impl Fn() -> usize>,
        ) -> impl futures::Stream<Item = u32> {
            let peer = self.clone();
            ordered(input, limits, move |r| peer.send(r), || TIMED_OUT)
        }

        fn sent(&self) -> Vec<u32> {
            self.sent.lock().unwrap().clone()
        }

        fn answer(&self, request: u32, last: bool) {
            let mut answers = self.answers.lock().unwrap();
            let at = answers.iter().position(|(r, _)| *r == request).unwrap();
            let (_, tx) = answers.remove(at);
            tx.send(Answer {
                item: request,
                last,
            })
            .unwrap();
        }
    }

    /// At most `requests` in flight, no byte limit to speak of, and a
    /// timeout no test reaches.
    fn by_count(requests: usize) -> Limits<impl Fn() -> usize> {
        Limits {
            requests: move || requests,
            bytes: usize::MAX,
            answer_timeout: Duration::from_secs(600),
        }
    }

    /// Polls `output` once; `None` means it is still waiting.
    fn poll_once<S: futures::Stream + Unpin>(output: &mut S) -> Option<Option<S::Item>> {
        output.next().now_or_never()
    }

    /// The first request goes alone; once it is answered, up to `limit`
    /// go out before any further answer, the rest as answers come in; answers
    /// given out of order come out in request order.
    #[tokio::test]
    async fn sends_ahead_up_to_the_limit_and_answers_in_order() {
        let peer = Peer::default();
        let input = futures::stream::iter([1, 2, 3, 4, 5, 6]);
        let mut output = pin!(peer.pipeline(input, by_count(3)));

        assert_eq!(poll_once(&mut output), None);
        assert_eq!(peer.sent(), [1], "alone until the peer has answered");
        peer.answer(1, false);
        assert_eq!(poll_once(&mut output), Some(Some(1)));
        assert_eq!(poll_once(&mut output), None);
        assert_eq!(peer.sent(), [1, 2, 3, 4], "three in flight, none answered");

        // The fourth answer arrives first: nothing comes out before the second.
        peer.answer(4, false);
        assert_eq!(poll_once(&mut output), None);
        assert_eq!(peer.sent(), [1, 2, 3, 4], "still three unanswered");
        peer.answer(3, false);
        assert_eq!(poll_once(&mut output), None);
        peer.answer(2, false);
        // Answers that are in come out before anything more is sent.
        assert_eq!(poll_once(&mut output), Some(Some(2)));
        assert_eq!(poll_once(&mut output), Some(Some(3)));
        assert_eq!(poll_once(&mut output), Some(Some(4)));
        assert_eq!(peer.sent(), [1, 2, 3, 4]);
        assert_eq!(poll_once(&mut output), None);
        assert_eq!(peer.sent(), [1, 2, 3, 4, 5, 6]);
        peer.answer(6, false);
        peer.answer(5, false);
        assert_eq!(poll_once(&mut output), Some(Some(5)));
        assert_eq!(poll_once(&mut output), Some(Some(6)));
        assert_eq!(poll_once(&mut output), Some(None), "input and answers done");
    }

    /// A peer that never answers gets one request, however many wait.
    #[tokio::test]
    async fn a_silent_peer_gets_one_request() {
        let peer = Peer::default();
        let input = futures::stream::iter([1, 2, 3]);
        let mut output = pin!(peer.pipeline(input, by_count(8)));
        for _ in 0..3 {
            assert_eq!(poll_once(&mut output), None);
        }
        assert_eq!(peer.sent(), [1]);
    }

    /// An answer marked last ends the output even when later answers are
    /// in; once it is in, no further request is pulled or sent.
    #[tokio::test]
    async fn ends_after_the_first_last_answer() {
        let peer = Peer::default();
        let (input_tx, input) = mpsc::unbounded();
        for r in [1, 2, 3, 4] {
            input_tx.unbounded_send(r).unwrap();
        }
        let mut output = pin!(peer.pipeline(input, by_count(8)));
        assert_eq!(poll_once(&mut output), None);
        peer.answer(1, false);
        assert_eq!(poll_once(&mut output), Some(Some(1)));
        assert_eq!(poll_once(&mut output), None);
        assert_eq!(peer.sent(), [1, 2, 3, 4]);
        peer.answer(4, false);
        peer.answer(3, true);
        peer.answer(2, false);
        input_tx.unbounded_send(5).unwrap();
        assert_eq!(poll_once(&mut output), Some(Some(2)));
        assert_eq!(poll_once(&mut output), Some(Some(3)));
        assert_eq!(poll_once(&mut output), Some(None));
        // Request 5 was waiting, but the refusal was in: it was not sent,
        // and once the output has ended the input is dropped.
        assert_eq!(peer.sent(), [1, 2, 3, 4]);
        assert!(input_tx.unbounded_send(6).is_err());
        assert_eq!(poll_once(&mut output), Some(None));
    }

    /// A request that cannot be sent is answered in its place and is the
    /// last: nothing after it is sent, the answers before it still come out.
    #[tokio::test]
    async fn a_failed_send_stops_sending_and_ends_in_order() {
        let peer = Peer::default();
        let input = futures::stream::iter([1, 2, 0, 3]);
        let mut output = pin!(peer.pipeline(input, by_count(8)));
        assert_eq!(poll_once(&mut output), None);
        peer.answer(1, false);
        assert_eq!(poll_once(&mut output), Some(Some(1)));
        assert_eq!(poll_once(&mut output), None);
        assert_eq!(peer.sent(), [1, 2], "nothing is sent after a failed send");
        peer.answer(2, false);
        assert_eq!(poll_once(&mut output), Some(Some(2)));
        assert_eq!(poll_once(&mut output), Some(Some(1000)));
        assert_eq!(poll_once(&mut output), Some(None));
    }

    /// With a limit of one, it is stop-and-wait.
    #[tokio::test]
    async fn a_limit_of_one_waits_for_each_answer() {
        let peer = Peer::default();
        let input = futures::stream::iter([1, 2]);
        let mut output = pin!(peer.pipeline(input, by_count(1)));
        assert_eq!(poll_once(&mut output), None);
        assert_eq!(peer.sent(), [1]);
        peer.answer(1, false);
        assert_eq!(poll_once(&mut output), Some(Some(1)));
        assert_eq!(poll_once(&mut output), None);
        assert_eq!(peer.sent(), [1, 2]);
        peer.answer(2, false);
        assert_eq!(poll_once(&mut output), Some(Some(2)));
        assert_eq!(poll_once(&mut output), Some(None));
    }

    /// No request is sent while the unanswered ones reach the byte limit,
    /// however few they are; a request bigger than the limit still goes
    /// when nothing else is in flight.
    #[tokio::test]
    async fn stops_sending_at_the_byte_limit() {
        let peer = Peer::default();
        // Request r is 10 * r bytes, the limit is 60 bytes.
        let input = futures::stream::iter([9, 2, 3, 4, 1]);
        let limits = Limits {
            requests: || 8,
            bytes: 60,
            answer_timeout: Duration::from_secs(600),
        };
        let mut output = pin!(peer.pipeline(input, limits));
        assert_eq!(poll_once(&mut output), None);
        assert_eq!(peer.sent(), [9], "alone, a request may exceed the limit");
        peer.answer(9, false);
        assert_eq!(poll_once(&mut output), Some(Some(9)));
        assert_eq!(poll_once(&mut output), None);
        assert_eq!(peer.sent(), [9, 2, 3, 4], "90 bytes unanswered");
        peer.answer(2, false);
        assert_eq!(poll_once(&mut output), Some(Some(2)));
        assert_eq!(poll_once(&mut output), None);
        assert_eq!(peer.sent(), [9, 2, 3, 4], "70 bytes unanswered");
        peer.answer(3, false);
        assert_eq!(poll_once(&mut output), Some(Some(3)));
        assert_eq!(poll_once(&mut output), None);
        assert_eq!(peer.sent(), [9, 2, 3, 4, 1], "40 bytes were unanswered");
        peer.answer(1, false);
        peer.answer(4, false);
        assert_eq!(poll_once(&mut output), Some(Some(4)));
        assert_eq!(poll_once(&mut output), Some(Some(1)));
        assert_eq!(poll_once(&mut output), Some(None));
    }

    /// How long the timing tests give the oldest request, and how far
    /// apart their peer answers. Those tests run on tokio's paused clock:
    /// time moves only when every task waits, so they are exact.
    const TIMEOUT: Duration = Duration::from_millis(500);
    const ANSWER_GAP: Duration = Duration::from_millis(100);

    /// Eight in flight, no byte limit, and [`TIMEOUT`] for the oldest.
    fn timed() -> Limits<impl Fn() -> usize> {
        Limits {
            requests: || 8,
            bytes: usize::MAX,
            answer_timeout: TIMEOUT,
        }
    }

    /// Answers requests 1..=`count` in order, one every [`ANSWER_GAP`],
    /// each once it has been sent.
    fn answer_steadily(peer: Peer, count: u32) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            for r in 1..=count {
                tokio::time::sleep(ANSWER_GAP).await;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while !peer.sent().contains(&r) {
                    assert!(tokio::time::Instant::now() < deadline, "{r} never sent");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                peer.answer(r, false);
            }
        })
    }

    /// A request is not failed for the time it waits behind earlier ones:
    /// the ninth request is answered 8 × [`ANSWER_GAP`], well over one
    /// [`TIMEOUT`], after it was sent (with the second to eighth, on the
    /// first answer), but each answer comes within one timeout of the one
    /// before it, so every answer comes out.
    #[tokio::test(start_paused = true)]
    async fn a_steady_peer_is_not_timed_out_for_the_queue() {
        let peer = Peer::default();
        let input = futures::stream::iter(1..=9);
        let output = peer.pipeline(input, timed());
        let answering = answer_steadily(peer.clone(), 9);
        let started = tokio::time::Instant::now();
        let out: Vec<u32> = tokio::time::timeout(Duration::from_secs(30), output.collect())
            .await
            .unwrap();
        assert_eq!(out, (1..=9).collect::<Vec<_>>());
        assert!(
            started.elapsed() >= ANSWER_GAP * 9,
            "the last answer came {:?} after the start, 8 gaps after its send",
            started.elapsed()
        );
        answering.await.unwrap();
    }

    /// When the oldest request gets no answer within the timeout of the
    /// previous answer, the output ends with the timeout item, though
    /// later requests were sent well after that answer.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_answering_times_out() {
        let peer = Peer::default();
        let input = futures::stream::iter(1..=4);
        let output = peer.pipeline(input, timed());
        // Answers 1 and 2, then nothing more.
        let answering = answer_steadily(peer.clone(), 2);
        let started = tokio::time::Instant::now();
        let out: Vec<u32> = tokio::time::timeout(Duration::from_secs(30), output.collect())
            .await
            .unwrap();
        assert_eq!(out, [1, 2, TIMED_OUT]);
        assert!(started.elapsed() >= ANSWER_GAP * 2 + TIMEOUT);
        answering.await.unwrap();
        assert_eq!(peer.sent(), [1, 2, 3, 4]);
    }
}
