//! Per-connection state: protocol version, client name, read policy.
//!
//! The connection owns one [`Session`] and lends it to every command it runs;
//! connection commands (`HELLO`, `CLIENT SETNAME`, `READONLY`...) change it,
//! and the reply encoder reads its protocol. It also carries the handles on
//! the front end's shared state and on this client's registry entry, which
//! is how `CLIENT LIST`, `CONFIG` and `INFO` reach them.

use std::sync::Arc;

use bytes::Bytes;

use super::reply::Protocol;
use super::state::{ClientEntry, ServerState, Settings};

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
    /// The front end's shared state.
    pub server: Arc<ServerState>,
    /// This client's entry in the registry.
    pub client: Arc<ClientEntry>,
}

impl Session {
    /// The session of a client registered as `client`.
    #[must_use]
    pub fn new(server: Arc<ServerState>, client: Arc<ClientEntry>) -> Self {
        Session {
            id: client.id,
            protocol: 2,
            name: None,
            readonly: false,
            server,
            client,
        }
    }

    /// A session tied to no connection and a private server state with default
    /// settings: for running commands in tests and tools.
    #[must_use]
    pub fn detached() -> Self {
        let server = Arc::new(ServerState::new(Settings::default()));
        let client = Arc::new(ClientEntry::new(server.next_client_id(), None, None, -1));
        Session::new(server, client)
    }

    /// The protocol replies are encoded in.
    #[must_use]
    pub fn reply_protocol(&self) -> Protocol {
        Protocol::from_version(self.protocol)
    }
}
