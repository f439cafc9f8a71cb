//! A concurrent client workload that records a [`History`] for the
//! linearizability checker.
//!
//! Each client is one thread with one connection (the `redis` crate, sync),
//! started on node `client % n` so that the clients are spread over every
//! node, and moved to the next node whenever its connection fails. It does
//! one operation at a time, chosen at random on a small key set, so that
//! operations on a key overlap often (which is what can reveal a stale read
//! or a lost write): GET, SET with a value unique in the whole run
//! (`c<client>-<n>`) and DEL on the `r*` keys, and INCR and GET on the
//! separate `n*` counters (INCR on a string would only be an error).
//!
//! Every operation is timed on one monotonic clock shared by all threads,
//! and its outcome classified as the contract says (DESIGN.md §1):
//! `-CLUSTERDOWN` → `Failed` (not applied), `-TIMEOUT`, a lost connection
//! or the client's own timeout → `Unknown`. Any other error is a bug in the
//! server (or the test), collected and reported by [`Workload::stop`] with
//! the node that gave it.
//!
//! [`Workload::pin`] adds clients of another kind to a running workload:
//! pinned to one node, they never move to another, and they can be held
//! idle on open connections and then released to send one request each at
//! a moment the test chooses (say, while that node is paused), recorded in
//! the same history.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::harness::eventually;
use crate::history::{Call, History, Operation, Outcome};

/// What the clients do.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// Keys for GET/SET/DEL: `r0`, `r1`...
    pub registers: usize,
    /// Keys for INCR/GET: `n0`, `n1`...
    pub counters: usize,
    /// How long a client waits for a reply before giving up (outcome
    /// unknown): a bit longer than the server's request timeout, so that
    /// normally the server decides, and a paused node costs only this long.
    pub client_timeout: Duration,
}

impl WorkloadConfig {
    /// Every key the workload uses.
    pub fn keys(&self) -> Vec<String> {
        (0..self.registers)
            .map(|i| format!("r{i}"))
            .chain((0..self.counters).map(|i| format!("n{i}")))
            .collect()
    }
}

/// One clock for every thread of a run: nanoseconds since it started.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Clock {
        Clock(Instant::now())
    }

    pub fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// What a finished workload saw.
pub struct WorkloadReport {
    pub history: History,
    /// The node each operation of `history.ops` was sent to (same index).
    pub served_by: Vec<u64>,
    /// Errors no honest server gives, with the node and operation.
    pub unexpected: Vec<String>,
    /// When the workload was stopped (ns on its clock).
    pub stopped_ns: u64,
    /// How many client ids the workload used (`0..clients`, pinned clients
    /// included): operations added later need ids of their own.
    pub clients: usize,
}

impl WorkloadReport {
    /// The longest time, within the run, with no write (SET, DEL, INCR)
    /// completing successfully: from the start to the first, between two,
    /// and from the last to the stop.
    pub fn longest_write_gap(&self) -> Duration {
        let mut done: Vec<u64> = self
            .history
            .ops
            .iter()
            .filter(|op| op.call != Call::Get && matches!(op.outcome, Outcome::Ok(_)))
            .map(|op| op.completed_ns)
            .collect();
        done.push(0);
        done.push(self.stopped_ns);
        done.sort_unstable();
        let gap = done.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        Duration::from_nanos(gap)
    }

    /// Operations by outcome: (ok, failed, unknown).
    pub fn outcome_counts(&self) -> (usize, usize, usize) {
        let ops = &self.history.ops;
        let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|op| f(&op.outcome)).count();
        (
            count(|o| matches!(o, Outcome::Ok(_))),
            count(|o| matches!(o, Outcome::Failed)),
            count(|o| matches!(o, Outcome::Unknown)),
        )
    }
}

/// Running client threads.
pub struct Workload {
    pub clock: Clock,
    config: WorkloadConfig,
    /// The next client id for [`Workload::pin`].
    next_client: AtomicUsize,
    stop: Arc<AtomicBool>,
    acked_writes: Arc<AtomicU64>,
    shared: Arc<Mutex<WorkloadReport>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts `config.clients` clients over `nodes` (id and RESP address).
    pub fn start(nodes: &[(u64, SocketAddr)], config: &WorkloadConfig) -> Workload {
        assert!(!nodes.is_empty(), "a workload needs nodes");
        let clock = Clock::new();
        let stop = Arc::new(AtomicBool::new(false));
        let acked_writes = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Mutex::new(WorkloadReport {
            history: History::default(),
            served_by: Vec::new(),
            unexpected: Vec::new(),
            stopped_ns: 0,
            clients: 0,
        }));
        let threads = (0..config.clients)
            .map(|client| {
                let mut state = Client {
                    id: client,
                    nodes: nodes.to_vec(),
                    node_index: client % nodes.len(),
                    config: config.clone(),
                    clock,
                    next_value: 0,
                    stop: stop.clone(),
                    acked_writes: acked_writes.clone(),
                    shared: shared.clone(),
                    pin: None,
                };
                std::thread::Builder::new()
                    .name(format!("client-{client}"))
                    .spawn(move || state.run())
                    .expect("spawn client thread")
            })
            .collect();
        Workload {
            clock,
            config: config.clone(),
            next_client: AtomicUsize::new(config.clients),
            stop,
            acked_writes,
            shared,
            threads,
        }
    }

    /// Starts `clients` more clients, all on node `node` at `addr`, which
    /// record into this workload's history; see [`Pinned`].
    pub fn pin(&self, node: u64, addr: SocketAddr, clients: usize) -> Pinned {
        let first = self.next_client.fetch_add(clients, Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let pin = Arc::new(Pin {
            gate: Mutex::new(GateState::default()),
            changed: Condvar::new(),
            completed: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            sent_released: AtomicUsize::new(0),
        });
        let threads = (0..clients)
            .map(|i| {
                let id = first + i;
                let mut state = Client {
                    id,
                    nodes: vec![(node, addr)],
                    node_index: 0,
                    config: self.config.clone(),
                    clock: self.clock,
                    next_value: 0,
                    stop: stop.clone(),
                    acked_writes: self.acked_writes.clone(),
                    shared: self.shared.clone(),
                    pin: Some((i, pin.clone())),
                };
                std::thread::Builder::new()
                    .name(format!("pinned-{id}"))
                    .spawn(move || state.run())
                    .expect("spawn pinned client thread")
            })
            .collect();
        Pinned {
            node,
            ids: (first..first + clients).collect(),
            stop,
            pin,
            shared: self.shared.clone(),
            released_at: Vec::new(),
            threads,
        }
    }

    /// Successful writes so far.
    pub fn acked_writes(&self) -> u64 {
        self.acked_writes.load(Ordering::SeqCst)
    }

    /// Waits until `n` more writes than now have succeeded: the cluster is
    /// available for writes again.
    pub fn wait_for_more_writes(&self, n: u64, timeout: Duration) {
        let target = self.acked_writes() + n;
        eventually(&format!("{n} more acknowledged writes"), timeout, || {
            let acked = self.acked_writes();
            if acked >= target {
                Ok(())
            } else if self.threads.iter().all(JoinHandle::is_finished) {
                Err("every client thread has ended".to_owned())
            } else {
                Err(format!("{acked} of {target}"))
            }
        });
    }

    /// Stops the clients (each finishes the operation it is in) and returns
    /// what they saw.
    pub fn stop(self) -> WorkloadReport {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        let mut report = std::mem::replace(
            &mut *self.shared.lock().unwrap_or_else(|e| e.into_inner()),
            WorkloadReport {
                history: History::default(),
                served_by: Vec::new(),
                unexpected: Vec::new(),
                stopped_ns: 0,
                clients: 0,
            },
        );
        report.stopped_ns = self.clock.now_ns();
        report.clients = self.next_client.load(Ordering::SeqCst);
        report
    }
}

/// One client thread's state.
struct Client {
    id: usize,
    nodes: Vec<(u64, SocketAddr)>,
    node_index: usize,
    config: WorkloadConfig,
    clock: Clock,
    next_value: u64,
    stop: Arc<AtomicBool>,
    acked_writes: Arc<AtomicU64>,
    shared: Arc<Mutex<WorkloadReport>>,
    /// For a pinned client: its index among its group, and the group's
    /// gate and progress.
    pin: Option<(usize, Arc<Pin>)>,
}

/// Clients pinned to one node by [`Workload::pin`]: they connect to that
/// node only, and stay on it whatever happens (a timeout, a lost
/// connection, `-CLUSTERDOWN`: they reconnect to the same node), so that a
/// test decides which node serves them. Outcomes are recorded as for any
/// client (`Unknown` on their own timeout).
///
/// [`Pinned::hold`] stops them, each between two operations with its
/// connection open; [`Pinned::release`] lets each send one request (a GET
/// for even ones, a SET for odd ones, so that both kinds race, on register
/// `r<index / 2>`: reads and writes on the same few keys) and returns
/// once every request is on the wire, whether or not the node reads it. Then
/// they run freely again until [`Pinned::stop`].
pub struct Pinned {
    /// The node they are pinned to.
    pub node: u64,
    /// Their client ids in the history.
    pub ids: Vec<usize>,
    stop: Arc<AtomicBool>,
    pin: Arc<Pin>,
    /// The workload's report, for the errors of a client that ended.
    shared: Arc<Mutex<WorkloadReport>>,
    /// Operations each had completed when last released.
    released_at: Vec<u64>,
    threads: Vec<JoinHandle<()>>,
}

/// What a group of pinned clients shares with its [`Pinned`] handle.
struct Pin {
    gate: Mutex<GateState>,
    changed: Condvar,
    /// Operations completed (recorded), per client.
    completed: Vec<AtomicU64>,
    /// Released requests sent so far.
    sent_released: AtomicUsize,
}

#[derive(Debug, Default)]
struct GateState {
    /// Clients must wait before their next operation.
    closed: bool,
    /// Clients waiting at the closed gate.
    waiting: usize,
}

impl Pin {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by a client before each operation: returns at once while the
    /// gate is open (false), or waits until it opens (true: this operation
    /// is a released one) or the clients stop.
    fn pass(&self, stop: &AtomicBool) -> bool {
        let mut gate = self.lock();
        if !gate.closed {
            return false;
        }
        gate.waiting += 1;
        while gate.closed && !stop.load(Ordering::SeqCst) {
            gate = self
                .changed
                .wait_timeout(gate, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        gate.waiting -= 1;
        true
    }
}

impl Pinned {
    /// Waits until every pinned client has completed `n` more operations
    /// than now.
    pub fn wait_for_ops(&self, n: u64, timeout: Duration) {
        self.wait_for_ops_since(&self.completed(), n, timeout);
    }

    /// Waits until every pinned client has completed `n` operations since
    /// the last [`Pinned::release`] (its released one included).
    pub fn wait_for_ops_since_release(&self, n: u64, timeout: Duration) {
        assert!(!self.released_at.is_empty(), "never released");
        self.wait_for_ops_since(&self.released_at, n, timeout);
    }

    fn wait_for_ops_since(&self, base: &[u64], n: u64, timeout: Duration) {
        let node = self.node;
        eventually(
            &format!("{n} operations by each client pinned to node {node}"),
            timeout,
            || {
                let done = self.completed();
                if let Some(i) = (0..done.len()).find(|&i| done[i] < base[i] + n) {
                    if self.threads[i].is_finished() {
                        return Err(format!(
                            "pinned client {} has ended; errors: {:?}",
                            self.ids[i],
                            self.shared
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .unexpected
                        ));
                    }
                    return Err(format!(
                        "pinned client {} completed {} of {}",
                        self.ids[i],
                        done[i] - base[i],
                        n
                    ));
                }
                Ok(())
            },
        );
    }

    /// Holds every pinned client before its next operation, with its
    /// connection open; returns once all of them wait.
    pub fn hold(&self, timeout: Duration) {
        self.pin.lock().closed = true;
        let clients = self.ids.len();
        eventually(
            &format!("every client pinned to node {} to be held", self.node),
            timeout,
            || {
                let waiting = self.pin.lock().waiting;
                if waiting == clients {
                    Ok(())
                } else if self.threads.iter().any(JoinHandle::is_finished) {
                    Err("a pinned client has ended".to_owned())
                } else {
                    Err(format!("{waiting} of {clients} held"))
                }
            },
        );
    }

    /// Lets the held clients go, and returns once each has sent one request
    /// (the replies may come much later). Panics if they were not held.
    pub fn release(&mut self, timeout: Duration) {
        assert!(self.pin.lock().closed, "release without hold");
        self.released_at = self.completed();
        let target = self.pin.sent_released.load(Ordering::SeqCst) + self.ids.len();
        self.pin.lock().closed = false;
        self.pin.changed.notify_all();
        eventually(
            &format!("every client pinned to node {} to send", self.node),
            timeout,
            || {
                let sent = self.pin.sent_released.load(Ordering::SeqCst);
                (sent >= target)
                    .then_some(())
                    .ok_or_else(|| format!("{sent} of {target} sent"))
            },
        );
    }

    /// Stops the clients (each finishes the operation it is in); what they
    /// did is in the workload's history.
    pub fn stop(mut self) {
        self.signal_stop();
        for thread in std::mem::take(&mut self.threads) {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }

    fn signal_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.pin.lock().closed = false;
        self.pin.changed.notify_all();
    }

    fn completed(&self) -> Vec<u64> {
        self.pin
            .completed
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }
}

impl Drop for Pinned {
    /// Clients left running by a failing test stop on their own, soon.
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// How one request ended, before it becomes an [`Outcome`].
enum Reply {
    Ok(Option<String>),
    Failed,
    Unknown,
    Unexpected(String),
}

impl Client {
    fn run(&mut self) {
        let mut rng = rand::rng();
        let mut con: Option<redis::Connection> = None;
        while !self.stop.load(Ordering::SeqCst) {
            let Some(c) = con.as_mut() else {
                con = self.connect();
                continue;
            };
            let released = match &self.pin {
                Some((_, pin)) => pin.pass(&self.stop),
                None => false,
            };
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let (key, call) = match &self.pin {
                Some((index, _)) if released => self.released_op(*index),
                _ => self.next_op(&mut rng),
            };
            let node = self.nodes[self.node_index].0;
            let invoked_ns = self.clock.now_ns();
            let sent = send(c, &key, &call);
            if released {
                if let Some((_, pin)) = &self.pin {
                    pin.sent_released.fetch_add(1, Ordering::SeqCst);
                }
            }
            let reply = match sent {
                Ok(()) => receive(c, &call),
                Err(e) => classify(&e),
            };
            let completed_ns = self.clock.now_ns();
            match (&reply, &self.pin) {
                (Reply::Ok(_) | Reply::Unexpected(_), _) => {}
                // A pinned client stays on its node: a new connection after
                // an unknown outcome (the old one may still deliver a late
                // reply), the same one after a refusal, after a pause so
                // as not to spin on a node without a leader.
                (Reply::Unknown, Some(_)) => con = None,
                (Reply::Failed, Some(_)) => std::thread::sleep(Duration::from_millis(10)),
                // A node that could not serve this request may be cut off
                // or down: try the next one, as a client of a real cluster
                // would, or clients would pile up on a minority node.
                (Reply::Unknown | Reply::Failed, None) => {
                    self.node_index = (self.node_index + 1) % self.nodes.len();
                    con = None;
                }
            }
            let outcome = match reply {
                Reply::Ok(value) => Outcome::Ok(value),
                Reply::Failed => Outcome::Failed,
                Reply::Unknown => Outcome::Unknown,
                Reply::Unexpected(error) => {
                    self.shared
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .unexpected
                        .push(format!(
                            "client {} on node {node}: {call:?} {key}: {error}",
                            self.id
                        ));
                    // Stop this client: the run has failed anyway.
                    return;
                }
            };
            if call != Call::Get && matches!(outcome, Outcome::Ok(_)) {
                self.acked_writes.fetch_add(1, Ordering::SeqCst);
            }
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            shared.history.ops.push(Operation {
                client: self.id,
                key,
                call,
                invoked_ns,
                completed_ns,
                outcome,
            });
            shared.served_by.push(node);
            drop(shared);
            if let Some((index, pin)) = &self.pin {
                pin.completed[*index].fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// The request a pinned client sends when released: a GET for even
    /// ones, a SET for odd ones, on register `index / 2`.
    fn released_op(&mut self, index: usize) -> (String, Call) {
        let key = format!("r{}", (index / 2) % self.config.registers);
        if index % 2 == 0 {
            (key, Call::Get)
        } else {
            self.next_value += 1;
            (key, Call::Set(format!("c{}-{}", self.id, self.next_value)))
        }
    }

    /// Connects to the current node, or to the next ones in turn; `None`
    /// after a whole round of refusals (every node down).
    fn connect(&mut self) -> Option<redis::Connection> {
        for _ in 0..self.nodes.len() {
            let addr = self.nodes[self.node_index].1;
            if let Ok(con) = connect(addr, self.config.client_timeout) {
                return Some(con);
            }
            self.node_index = (self.node_index + 1) % self.nodes.len();
        }
        // Every node refused: they are being restarted. Back off a little
        // rather than spin on refused connections.
        std::thread::sleep(Duration::from_millis(20));
        None
    }

    fn next_op(&mut self, rng: &mut impl Rng) -> (String, Call) {
        let config = &self.config;
        let register = config.counters == 0 || rng.random_bool(0.7);
        if register {
            let key = format!("r{}", rng.random_range(0..config.registers));
            let call = match rng.random_range(0..100) {
                0..50 => Call::Get,
                50..85 => {
                    self.next_value += 1;
                    Call::Set(format!("c{}-{}", self.id, self.next_value))
                }
                _ => Call::Del,
            };
            (key, call)
        } else {
            let key = format!("n{}", rng.random_range(0..config.counters));
            let call = if rng.random_bool(0.6) {
                Call::Incr
            } else {
                Call::Get
            };
            (key, call)
        }
    }
}

/// A connection to `addr` that gives up on a reply after `timeout`.
pub fn connect(addr: SocketAddr, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

/// Sends one command and classifies the reply.
fn execute(con: &mut redis::Connection, key: &str, call: &Call) -> Reply {
    match send(con, key, call) {
        Ok(()) => receive(con, call),
        Err(e) => classify(&e),
    }
}

/// Writes one command to the connection, without waiting for its reply.
fn send(con: &mut redis::Connection, key: &str, call: &Call) -> redis::RedisResult<()> {
    let mut cmd = match call {
        Call::Get => redis::cmd("GET"),
        Call::Set(_) => redis::cmd("SET"),
        Call::Incr => redis::cmd("INCR"),
        Call::Del => redis::cmd("DEL"),
    };
    cmd.arg(key);
    if let Call::Set(value) = call {
        cmd.arg(value);
    }
    con.send_packed_command(&cmd.get_packed_command())
}

/// Reads the reply to the command [`send`] wrote, and classifies it.
fn receive(con: &mut redis::Connection, call: &Call) -> Reply {
    let result = con
        .recv_response()
        .and_then(redis::Value::extract_error)
        .and_then(|value| parse(call, value));
    match result {
        Ok(value) => Reply::Ok(value),
        Err(e) => classify(&e),
    }
}

/// A successful reply as the history records it.
fn parse(call: &Call, value: redis::Value) -> redis::RedisResult<Option<String>> {
    Ok(match call {
        Call::Get => redis::from_redis_value::<Option<String>>(value)?,
        Call::Set(_) => Some(redis::from_redis_value::<String>(value)?),
        Call::Incr | Call::Del => Some(redis::from_redis_value::<i64>(value)?.to_string()),
    })
}

/// Sorts an error into the contract's outcomes.
fn classify(e: &redis::RedisError) -> Reply {
    match e.code() {
        Some("CLUSTERDOWN") => Reply::Failed,
        Some("TIMEOUT") => Reply::Unknown,
        Some(_) => Reply::Unexpected(e.to_string()),
        None if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error() =>
        {
            Reply::Unknown
        }
        None => Reply::Unexpected(e.to_string()),
    }
}

/// Runs one operation outside the workload (the final reads), recording
/// it in `history` as `client`; returns its outcome.
pub fn record_one(
    history: &mut History,
    clock: &Clock,
    client: usize,
    con: &mut redis::Connection,
    key: &str,
    call: Call,
) -> Result<Outcome, String> {
    let invoked_ns = clock.now_ns();
    let reply = execute(con, key, &call);
    let completed_ns = clock.now_ns();
    let outcome = match reply {
        Reply::Ok(value) => Outcome::Ok(value),
        Reply::Failed => Outcome::Failed,
        Reply::Unknown => Outcome::Unknown,
        Reply::Unexpected(error) => return Err(format!("{call:?} {key}: {error}")),
    };
    history.ops.push(Operation {
        client,
        key: key.to_owned(),
        call,
        invoked_ns,
        completed_ns,
        outcome: outcome.clone(),
    });
    Ok(outcome)
}
