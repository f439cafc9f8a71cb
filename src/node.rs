//! A running raftis node: what every connection and command shares.
//!
//! `main` builds one `Node` from the configuration; the RESP server hands a
//! reference to each command. It owns the local store (reads), the cluster
//! handle (writes, read barriers, status) and the node's configuration.

use std::sync::Arc;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::storage::Store;

/// Everything a command may need.
pub struct Node {
    /// The validated configuration this node started with.
    pub config: Arc<Config>,
    /// Local applied state, for reads.
    pub store: Store,
    /// Raft: writes, read barriers, status.
    pub cluster: Cluster,
}
