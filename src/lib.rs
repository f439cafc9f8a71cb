//! raftis: a replicated key-value store with Raft consensus behind the Redis protocol.
//!
//! (Design essay: see the end of the session; filled in once the layers exist.)

pub mod cluster;
pub mod command;
pub mod config;
pub mod error;
pub mod node;
pub mod server;
pub mod storage;
