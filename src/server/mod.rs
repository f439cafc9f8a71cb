//! The RESP front end: listener, connections, sessions and replies.
//!
//! Bytes flow through it like this: [`listener::serve`] accepts a socket and
//! starts [`connection::serve_connection`] for it; the connection reads into
//! a buffer that [`codec::RequestDecoder`] turns into argument vectors
//! (RESP multibulk or inline, Redis's limits enforced before anything large
//! is buffered); each batch of requests goes to an [`Executor`] (the node's
//! command executor, `command::exec`), which runs them in order against the
//! connection's [`Session`] and encodes every [`Reply`] into one output
//! buffer, written once per batch. [`state::ServerState`] is what all
//! connections share: runtime settings, the client registry, INFO counters.

pub mod codec;
pub mod connection;
pub mod error_stats;
pub mod latency;
pub mod listener;
pub mod rates;
pub mod reply;
pub mod session;
pub mod state;

pub use connection::{serve_connection, Executor};
pub use listener::{serve, serve_node};
pub use reply::{Protocol, Reply};
pub use session::Session;
pub use state::{ServerState, Settings};
