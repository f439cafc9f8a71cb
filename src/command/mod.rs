//! Commands: the table that describes each one, and the executor that runs it.
//!
//! A command arrives as an argument vector from `server::connection`. The
//! executor looks its name up in the table (arity, flags, key positions), then
//! runs it according to its [`Handler`] kind:
//! - `Read`: after the node's read barrier for the session's read policy, the
//!   handler reads the local applied state (`storage::Store`) and builds a reply;
//! - `Write`: the handler parses the arguments into a replicated
//!   [`Op`](crate::cluster::Op); the executor submits it through the cluster and
//!   turns the [`OpResult`](crate::cluster::OpResult) into a reply;
//! - `Server`: connection and node commands (PING, HELLO, INFO, CLIENT...) that
//!   touch no replicated data.
//!
//! Handlers are plain functions returning a [`Reply`]: nothing here touches a
//! socket, and nothing here awaits except the executor ([`exec`]), which
//! also runs whole pipelined batches for the front end.

pub mod args;
pub mod backup;
pub mod exec;
pub mod info;
pub mod keys;
pub mod raft;
pub mod server;
pub mod string;
pub mod table;
pub mod transfer;

pub use args::Args;
pub use exec::execute;
pub use table::{lookup, CommandSpec, Flags, Handler, SubcommandSpec};
