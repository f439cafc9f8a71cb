//! The reply a command produces, independent of the wire protocol.
//!
//! Commands never write to a socket: they return a [`Reply`], and the
//! connection encodes it as RESP2 or RESP3 depending on what the client
//! negotiated with `HELLO`. Keeping the reply abstract lets pipelining,
//! forwarding and tests work without a socket.

use bytes::Bytes;

/// One reply value. RESP3-only shapes (maps, sets, doubles, booleans,
/// verbatim strings) degrade to their RESP2 equivalents when encoded for a
/// RESP2 client, exactly as Redis does.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`-style status line. Must not contain `\r` or `\n`.
    Simple(Bytes),
    /// An error line, including its prefix (`ERR ...`, `WRONGTYPE ...`).
    Error(Bytes),
    /// `:n`.
    Integer(i64),
    /// A binary-safe bulk string.
    Bulk(Bytes),
    /// Null bulk (`$-1` in RESP2, `_` in RESP3).
    Null,
    /// Null array (`*-1` in RESP2, `_` in RESP3).
    NullArray,
    /// An array of replies.
    Array(Vec<Reply>),
    /// A map (RESP3); a flat array of key, value, key, value in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A set (RESP3); an array in RESP2.
    Set(Vec<Reply>),
    /// A double (RESP3); a bulk string in RESP2.
    Double(f64),
    /// A boolean (RESP3); the integer 1 or 0 in RESP2.
    Bool(bool),
    /// A verbatim string with a three-letter format such as `txt` (RESP3);
    /// a bulk string in RESP2.
    Verbatim(&'static str, Bytes),
}

impl Reply {
    /// `+OK`.
    #[must_use]
    pub fn ok() -> Self {
        Reply::Simple(Bytes::from_static(b"OK"))
    }

    /// A status line from a static string.
    #[must_use]
    pub fn simple(s: &'static str) -> Self {
        Reply::Simple(Bytes::from_static(s.as_bytes()))
    }

    /// An error reply; `msg` must carry its prefix, e.g. `"ERR syntax error"`.
    #[must_use]
    pub fn error(msg: impl Into<String>) -> Self {
        Reply::Error(Bytes::from(msg.into()))
    }

    /// A bulk string.
    #[must_use]
    pub fn bulk(b: impl Into<Bytes>) -> Self {
        Reply::Bulk(b.into())
    }

    /// True for error replies.
    #[must_use]
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}
