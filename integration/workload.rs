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

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
                };
                std::thread::Builder::new()
                    .name(format!("client-{client}"))
                    .spawn(move || state.run())
                    .expect("spawn client thread")
            })
            .collect();
        Workload {
            clock,
            stop,
            acked_writes,
            shared,
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
            },
        );
        report.stopped_ns = self.clock.now_ns();
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
            let (key, call) = self.next_op(&mut rng);
            let node = self.nodes[self.node_index].0;
            let invoked_ns = self.clock.now_ns();
            let reply = execute(c, &key, &call);
            let completed_ns = self.clock.now_ns();
            if !matches!(reply, Reply::Ok(_) | Reply::Unexpected(_)) {
                // A node that could not serve this request may be cut off
                // or down: try the next one, as a client of a real cluster
                // would, or clients would pile up on a minority node.
                self.node_index = (self.node_index + 1) % self.nodes.len();
                con = None;
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
    let result: redis::RedisResult<Option<String>> = match call {
        Call::Get => redis::cmd("GET").arg(key).query(con),
        Call::Set(value) => redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query::<String>(con)
            .map(Some),
        Call::Incr => redis::cmd("INCR")
            .arg(key)
            .query::<i64>(con)
            .map(|n| Some(n.to_string())),
        Call::Del => redis::cmd("DEL")
            .arg(key)
            .query::<i64>(con)
            .map(|n| Some(n.to_string())),
    };
    match result {
        Ok(value) => Reply::Ok(value),
        Err(e) => classify(&e),
    }
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
