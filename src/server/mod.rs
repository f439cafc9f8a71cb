//! The RESP front end: listener, connections, sessions and replies.

pub mod reply;
pub mod session;

pub use reply::Reply;
pub use session::Session;
