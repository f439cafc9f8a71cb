//! raftis: a replicated key-value store with Raft consensus behind the Redis
//! protocol.
//!
//! # Design
//!
//! A raftis cluster is three or five nodes (one for development) that keep
//! identical copies of the data. Every node speaks RESP, so `redis-cli`,
//! `redis-benchmark` and ordinary Redis client libraries work against any of
//! them, and every node accepts every command: the promise of etcd (a write
//! acknowledged is a write kept, through the loss of any minority of nodes)
//! behind the interface of Redis.
//!
//! A command flows through four layers, each in its own module:
//!
//! 1. [`server`] reads RESP2/RESP3 (and inline) requests from a socket,
//!    enforces Redis's protocol limits, and hands each batch of pipelined
//!    requests to the executor; replies go back in order with one flush per
//!    batch. Commands never touch the socket: they return a [`server::Reply`].
//! 2. [`command`] looks the command up in a table that knows its arity,
//!    flags and keys without running it, and runs it as one of three kinds:
//!    a *read* (after the read barrier, against the local [`storage::Store`]),
//!    a *write* (parsed into a replicated [`cluster::Op`]), or a *server*
//!    command that touches no replicated data.
//! 3. [`cluster`] is everything Raft (openraft): a write is proposed on the
//!    leader, or forwarded to it over the peer channel from a follower, and
//!    acknowledged once a majority has fsynced it and this node has applied
//!    it; a read first obtains a read index from the leader (ReadIndex) and
//!    waits for local apply to reach it, so reads are linearizable on every
//!    node without shipping them to the leader.
//! 4. [`storage`] applies committed operations to fjall deterministically:
//!    no clock (the leader stamps each entry with its time, and expiry is
//!    computed from that stamp), no randomness, one atomic batch per run of
//!    entries with the last-applied position inside it. An in-memory filter
//!    of the stored keys spares a write of a new key the read of its
//!    previous state; it only ever answers "certainly absent".
//!
//! [`node`] ties them together for one process; [`config`] merges defaults,
//! file, environment and flags; [`error`] is the top of the error types, each
//! layer's error mapping to a RESP error prefix.
//!
//! [`telemetry`] watches all four layers: a sampled write is one
//! OpenTelemetry trace across every node (its context rides in the peer
//! requests and inside the replicated log entry, so a follower's fsync and
//! apply join the trace of the command a client sent to another node),
//! Prometheus metrics with `/health` and `/ready` are served over HTTP, and
//! logs say once what an operator needs to know (leader and membership
//! changes, snapshots), never per request. Each node owns its telemetry;
//! nothing is process-global, so tests run several nodes in one process.
//!
//! Operators drive the cluster through the same RESP port (`RAFT.NODE`,
//! `RAFT.NODES`, `RAFT.TRANSFER_LEADER`, `RAFT.BACKUP`, `SHUTDOWN`, carried to
//! the leader from any node) and through [`tool`], the `raftis backup`,
//! `restore` and `status` subcommands, which talk RESP with
//! [`resp_client`] or, for `restore`, write a new data dir offline.
//!
//! # Caveats
//!
//! - Only strings (and the key-space commands over them) exist so far; the
//!   value encoding carries a type tag so other types can follow.
//! - A write whose outcome is unknown (the leader was lost mid-commit) is
//!   answered `-TIMEOUT`, never retried inside the node: without client
//!   request ids there is no way to de-duplicate, and a retried INCR could
//!   apply twice. Clients decide.
//! - `READONLY` connections read the local applied state with no freshness
//!   bound: after a partition heals, a lagging node may answer with old data.
//! - A cluster's identity is its members' ids and logs, nothing more: a
//!   node whose data dir was wiped and that is started again with the same
//!   id and `initial_cluster` initializes afresh and could vote twice in a
//!   term (etcd's cluster id and member ids would catch it). Replace a lost
//!   member under a new id (docs/operations.md).
//! - `--force-new-cluster` gives up what the lost majority committed but
//!   never sent to the surviving node; it is a last resort by design.
//! - A node's memory grows with its key count beyond the block cache: the
//!   key filter (5 to 7 bytes per key; `storage.key_filter`) and fjall's
//!   index and filter blocks, which stay pinned in memory.

pub mod cluster;
pub mod command;
pub mod config;
pub mod error;
pub mod node;
pub mod resp_client;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod tool;
