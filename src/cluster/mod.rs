//! Everything Raft (placeholder until the cluster layer lands).

pub mod op;

pub use op::{Op, OpResult};

/// Handle on this node's Raft group.
pub struct Cluster {}
