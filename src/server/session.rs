//! Per-connection state: protocol version, client name, read policy.

use bytes::Bytes;

/// What one client connection has negotiated and set.
#[derive(Debug, Clone)]
pub struct Session {
    /// Unique client id (`CLIENT ID`).
    pub id: u64,
    /// 2 or 3, as set by `HELLO`.
    pub protocol: u8,
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// `READONLY` was sent: reads skip the read barrier and see local applied state.
    pub readonly: bool,
}
