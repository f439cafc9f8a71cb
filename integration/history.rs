//! What a workload records: one entry per client operation, with the times
//! it was invoked and completed and what came back, as input for the
//! linearizability checker (`checker.rs`).
//!
//! Times are nanoseconds since the workload started, from one monotonic
//! clock shared by every client thread, so "completed before invoked"
//! between two operations means they really did not overlap.

#![allow(dead_code)]

/// What an operation did to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// GET: the value read (None = nil) is in the outcome.
    Get,
    /// SET with a value unique in the whole history.
    Set(String),
    /// INCR: the value it returned is in the outcome.
    Incr,
    /// DEL: the count it returned is in the outcome.
    Del,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Completed; for GET the value read, for INCR the new value as a
    /// string, for DEL the count as a string, for SET "OK".
    Ok(Option<String>),
    /// Definitely not applied (`-CLUSTERDOWN`): as if never invoked.
    Failed,
    /// May or may not have taken effect, at any time after invocation
    /// (`-TIMEOUT`, connection lost, client timeout).
    Unknown,
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Which client thread issued it (each client is sequential).
    pub client: usize,
    /// The key.
    pub key: String,
    /// What was asked.
    pub call: Call,
    /// When the request was sent (ns since the workload began).
    pub invoked_ns: u64,
    /// When the reply arrived; for `Unknown`, when the client gave up.
    pub completed_ns: u64,
    /// What came back.
    pub outcome: Outcome,
}

/// A whole run's operations, in no particular order.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every operation invoked.
    pub ops: Vec<Operation>,
}
