//! A minimal RESP2 client: what the `raftis` tools (backup, status) and a
//! joining node use to talk to a running member over its client port.
//!
//! One [`RespClient`] is one TCP connection carrying one request at a time:
//! [`RespClient::call`] encodes the argument vector as a RESP2 multibulk with
//! redis-protocol, writes it, then reads until one whole reply frame has
//! arrived and decodes it (zero-copy: bulk strings are slices of the read
//! buffer) into a [`RespValue`]. An error reply (`-ERR ...`) is a value, not
//! a [`ClientError`]: the request reached the server and the connection is
//! still usable; [`RespValue::into_result`] turns it into an error when the
//! caller wants `?`. A [`ClientError`] means the connection failed (refused,
//! closed, timed out, a reply that is not RESP); after one, the stream is out
//! of step with the server, so every later call fails with
//! [`ClientError::Broken`] and the caller reconnects.
//!
//! The server's RESP2 default is used; RESP3 is never negotiated, so a RESP2
//! null (`$-1` or `*-1`, which the decoder does not tell apart) is reported
//! as `Bulk(None)`.

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::error::RedisProtocolError;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, BytesFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest reply this client buffers (a 512 MB bulk, Redis's
/// `proto-max-bulk-len`, plus headroom for its header): a server announcing
/// more is treated as broken rather than allowed to exhaust memory.
pub const MAX_REPLY_BYTES: usize = 513 * 1024 * 1024;

/// How much the read buffer grows by at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Why a connection or a call failed. Every variant names the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Connecting took longer than the timeout.
    #[error("cannot connect to {addr}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// The address dialled.
        addr: String,
        /// The timeout.
        timeout: Duration,
    },
    /// Reading or writing the socket failed.
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// The server.
        addr: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// No whole reply arrived within the timeout.
    #[error("no reply from {addr} within {timeout:?}")]
    Timeout {
        /// The server.
        addr: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The server closed the connection before replying.
    #[error("{addr} closed the connection")]
    Closed {
        /// The server.
        addr: String,
    },
    /// The server's bytes are not a RESP2 reply.
    #[error("{addr} sent an invalid reply: {source}")]
    Protocol {
        /// The server.
        addr: String,
        /// What the decoder found.
        #[source]
        source: RedisProtocolError,
    },
    /// A reply longer than [`MAX_REPLY_BYTES`].
    #[error("{addr} sent a reply longer than {MAX_REPLY_BYTES} bytes")]
    ReplyTooLarge {
        /// The server.
        addr: String,
    },
    /// An earlier call on this connection failed, leaving it out of step.
    #[error("the connection to {addr} failed earlier; reconnect")]
    Broken {
        /// The server.
        addr: String,
    },
    /// The server answered with an error reply (from [`RespValue::into_result`]).
    #[error("{addr} answered: {message}")]
    ErrorReply {
        /// The server.
        addr: String,
        /// The error line, prefix included (`ERR unknown command ...`).
        message: String,
    },
    /// The reply had another shape than the caller expected.
    #[error("unexpected reply from {addr}: {what}")]
    Unexpected {
        /// The server.
        addr: String,
        /// What was expected and what came.
        what: String,
    },
}

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`, the whole line after `-`.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nabc`; `None` for a null (`$-1` or `*-1`).
    Bulk(Option<Bytes>),
    /// `*2\r\n...`; RESP2's null array decodes as `Bulk(None)`.
    Array(Option<Vec<RespValue>>),
}

impl RespValue {
    /// The bytes of a simple string or a non-null bulk string.
    #[must_use]
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            RespValue::Simple(s) => Some(s.as_bytes()),
            RespValue::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// A simple string, or a bulk string that is UTF-8.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer reply, or a string reply that is a decimal integer (Redis
    /// often answers numbers as bulk strings).
    #[must_use]
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            RespValue::Integer(i) => Some(*i),
            _ => self.as_str().and_then(|s| s.parse().ok()),
        }
    }

    /// The elements of a non-null array.
    #[must_use]
    pub fn as_array(&self) -> Option<&[RespValue]> {
        match self {
            RespValue::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// Takes a non-null bulk string out (no copy).
    #[must_use]
    pub fn into_bulk(self) -> Option<Bytes> {
        match self {
            RespValue::Bulk(b) => b,
            _ => None,
        }
    }

    /// Takes the elements of a non-null array out.
    #[must_use]
    pub fn into_array(self) -> Option<Vec<RespValue>> {
        match self {
            RespValue::Array(items) => items,
            _ => None,
        }
    }

    /// Whether this is an error reply.
    #[must_use]
    pub fn is_error(&self) -> bool {
        matches!(self, RespValue::Error(_))
    }

    /// The value itself, or [`ClientError::ErrorReply`] for an error reply,
    /// naming `addr` (the server that sent it).
    ///
    /// # Errors
    ///
    /// [`ClientError::ErrorReply`] if this is an error reply.
    pub fn into_result(self, addr: &str) -> Result<RespValue, ClientError> {
        match self {
            RespValue::Error(message) => Err(ClientError::ErrorReply {
                addr: addr.to_owned(),
                message,
            }),
            other => Ok(other),
        }
    }

    fn from_frame(frame: BytesFrame) -> RespValue {
        match frame {
            BytesFrame::SimpleString(s) => {
                RespValue::Simple(String::from_utf8_lossy(&s).into_owned())
            }
            BytesFrame::Error(e) => RespValue::Error(e.to_string()),
            BytesFrame::Integer(i) => RespValue::Integer(i),
            BytesFrame::BulkString(b) => RespValue::Bulk(Some(b)),
            BytesFrame::Array(items) => {
                RespValue::Array(Some(items.into_iter().map(RespValue::from_frame).collect()))
            }
            BytesFrame::Null => RespValue::Bulk(None),
        }
    }
}

impl fmt::Display for RespValue {
    /// A short, redis-cli-like rendering for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespValue::Simple(s) => write!(f, "{s}"),
            RespValue::Error(e) => write!(f, "(error) {e}"),
            RespValue::Integer(i) => write!(f, "(integer) {i}"),
            RespValue::Bulk(None) | RespValue::Array(None) => write!(f, "(nil)"),
            RespValue::Bulk(Some(b)) => write!(f, "\"{}\"", b.escape_ascii()),
            RespValue::Array(Some(items)) => {
                write!(f, "[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// One connection to a RESP server, one request at a time.
#[derive(Debug)]
pub struct RespClient {
    addr: String,
    stream: TcpStream,
    read_buf: BytesMut,
    timeout: Duration,
    broken: bool,
}

impl RespClient {
    /// Opens a connection to `addr` (`host:port`); `timeout` bounds the
    /// connect and, afterwards, each [`call`](RespClient::call).
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] if the connection is refused or the address
    /// does not resolve, [`ClientError::ConnectTimeout`] if it takes longer
    /// than `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<RespClient, ClientError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    addr: addr.to_owned(),
                    source,
                })
            }
            Err(_) => {
                return Err(ClientError::ConnectTimeout {
                    addr: addr.to_owned(),
                    timeout,
                })
            }
        };
        // Requests are small and answered one at a time: Nagle would only
        // add latency.
        stream.set_nodelay(true).map_err(|source| ClientError::Io {
            addr: addr.to_owned(),
            source,
        })?;
        Ok(RespClient {
            addr: addr.to_owned(),
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            timeout,
            broken: false,
        })
    }

    /// The address this client was connected to.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The timeout of each call.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the timeout of later calls (a backup waits longer for its
    /// first reply than a status query).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends `argv` as one command and waits, up to the timeout, for its
    /// reply. An error reply is `Ok(RespValue::Error(..))`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Timeout`], [`ClientError::Io`], [`ClientError::Closed`],
    /// [`ClientError::Protocol`] or [`ClientError::ReplyTooLarge`] if no
    /// well-formed reply arrived; [`ClientError::Broken`] if an earlier call
    /// failed that way. Any of these leaves the connection unusable.
    pub async fn call(&mut self, argv: &[&[u8]]) -> Result<RespValue, ClientError> {
        if self.broken {
            return Err(ClientError::Broken {
                addr: self.addr.clone(),
            });
        }
        let timeout = self.timeout;
        let outcome = tokio::time::timeout(timeout, self.round_trip(argv)).await;
        let result = match outcome {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                addr: self.addr.clone(),
                timeout,
            }),
        };
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    async fn round_trip(&mut self, argv: &[&[u8]]) -> Result<RespValue, ClientError> {
        let args: Vec<BorrowedFrame<'_>> =
            argv.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
        let mut request = BytesMut::new();
        extend_encode_borrowed(&mut request, &BorrowedFrame::Array(&args), false).map_err(
            |source| ClientError::Protocol {
                addr: self.addr.clone(),
                source,
            },
        )?;
        self.stream
            .write_all(&request)
            .await
            .map_err(|source| self.io_error(source))?;
        loop {
            match decode_bytes_mut(&mut self.read_buf) {
                Ok(Some((frame, _, _))) => return Ok(RespValue::from_frame(frame)),
                Ok(None) => {}
                Err(source) => {
                    return Err(ClientError::Protocol {
                        addr: self.addr.clone(),
                        source,
                    })
                }
            }
            if self.read_buf.len() >= MAX_REPLY_BYTES {
                return Err(ClientError::ReplyTooLarge {
                    addr: self.addr.clone(),
                });
            }
            self.read_buf.reserve(READ_CHUNK);
            let n = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(|source| self.io_error(source))?;
            if n == 0 {
                return Err(ClientError::Closed {
                    addr: self.addr.clone(),
                });
            }
        }
    }

    fn io_error(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            addr: self.addr.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(5);

    /// A scripted peer: accepts one connection, and for each request it
    /// reads (one multibulk), writes the next canned reply bytes; returns the
    /// requests it saw. The point is to feed the client exact byte streams,
    /// including broken ones, that a real server would never send.
    async fn scripted(replies: Vec<Vec<u8>>) -> (String, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            let mut read = BufReader::new(read);
            let mut seen = Vec::new();
            for reply in replies {
                let mut request = Vec::new();
                let mut line = String::new();
                read.read_line(&mut line).await.unwrap();
                request.extend_from_slice(line.as_bytes());
                let n: usize = line.trim_start_matches('*').trim().parse().unwrap();
                for _ in 0..n {
                    line.clear();
                    read.read_line(&mut line).await.unwrap();
                    request.extend_from_slice(line.as_bytes());
                    let len: usize = line.trim_start_matches('$').trim().parse().unwrap();
                    let mut arg = vec![0u8; len + 2];
                    read.read_exact(&mut arg).await.unwrap();
                    request.extend_from_slice(&arg);
                }
                seen.push(request);
                // Dribble the reply in two parts to exercise partial frames.
                let (a, b) = reply.split_at(reply.len() / 2);
                write.write_all(a).await.unwrap();
                write.flush().await.unwrap();
                tokio::task::yield_now().await;
                write.write_all(b).await.unwrap();
            }
            // Keep the socket open until the client is done.
            let mut rest = Vec::new();
            let _ = read.read_to_end(&mut rest).await;
            seen
        });
        (addr, task)
    }

    #[tokio::test]
    async fn encodes_requests_and_decodes_every_reply_type() {
        let (addr, server) = scripted(vec![
            b"+OK\r\n".to_vec(),
            b"-ERR unknown command 'NOPE'\r\n".to_vec(),
            b":-42\r\n".to_vec(),
            b"$5\r\nhe\r\no\r\n".to_vec(),
            b"$-1\r\n".to_vec(),
            b"*3\r\n:1\r\n$1\r\nx\r\n*1\r\n+y\r\n".to_vec(),
            b"*0\r\n".to_vec(),
        ])
        .await;
        let mut c = RespClient::connect(&addr, T).await.unwrap();
        assert_eq!(
            c.call(&[b"SET", b"k", b"v"]).await.unwrap(),
            RespValue::Simple("OK".into())
        );
        let err = c.call(&[b"NOPE"]).await.unwrap();
        assert_eq!(err, RespValue::Error("ERR unknown command 'NOPE'".into()));
        assert!(err.is_error());
        assert!(matches!(
            err.into_result("srv"),
            Err(ClientError::ErrorReply { message, .. }) if message == "ERR unknown command 'NOPE'"
        ));
        assert_eq!(c.call(&[b"X"]).await.unwrap().as_integer(), Some(-42));
        let bulk = c.call(&[b"X"]).await.unwrap();
        assert_eq!(bulk.as_bytes(), Some(&b"he\r\no"[..]));
        assert_eq!(
            bulk.clone().into_bulk(),
            Some(Bytes::from_static(b"he\r\no"))
        );
        assert_eq!(c.call(&[b"X"]).await.unwrap(), RespValue::Bulk(None));
        let array = c.call(&[b"X"]).await.unwrap();
        assert_eq!(
            array,
            RespValue::Array(Some(vec![
                RespValue::Integer(1),
                RespValue::Bulk(Some(Bytes::from_static(b"x"))),
                RespValue::Array(Some(vec![RespValue::Simple("y".into())])),
            ]))
        );
        assert_eq!(array.to_string(), "[(integer) 1, \"x\", [y]]");
        assert_eq!(c.call(&[b"X"]).await.unwrap().as_array(), Some(&[][..]));
        drop(c);
        let seen = server.await.unwrap();
        assert_eq!(seen[0], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
    }

    #[tokio::test]
    async fn binary_arguments_are_sent_verbatim() {
        let (addr, server) = scripted(vec![b"+OK\r\n".to_vec()]).await;
        let mut c = RespClient::connect(&addr, T).await.unwrap();
        c.call(&[b"SET", b"a b\r\n", b""]).await.unwrap();
        drop(c);
        assert_eq!(
            server.await.unwrap()[0],
            b"*3\r\n$3\r\nSET\r\n$5\r\na b\r\n\r\n$0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn refused_connection_names_the_address() {
        // Bind then drop to get a port nobody listens on.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = RespClient::connect(&addr, T).await.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot connect to {addr}: ")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unresolvable_address_is_a_connect_error() {
        let err = RespClient::connect("no-port", T).await.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn silent_server_times_out_and_the_connection_is_then_broken() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hold = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        let mut c = RespClient::connect(&addr, Duration::from_millis(100))
            .await
            .unwrap();
        let err = c.call(&[b"PING"]).await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("no reply from {addr} within 100ms")
        );
        let err = c.call(&[b"PING"]).await.unwrap_err();
        assert!(matches!(err, ClientError::Broken { .. }), "{err:?}");
        hold.abort();
    }

    #[tokio::test]
    async fn server_closing_mid_reply_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = socket.read(&mut buf).await;
            socket.write_all(b"$10\r\nabc").await.unwrap();
        });
        let mut c = RespClient::connect(&addr, T).await.unwrap();
        let err = c.call(&[b"GET", b"k"]).await.unwrap_err();
        assert!(matches!(err, ClientError::Closed { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("{addr} closed the connection"));
    }

    #[tokio::test]
    async fn garbage_reply_is_a_protocol_error() {
        let (addr, _server) = scripted(vec![b"?what\r\n".to_vec()]).await;
        let mut c = RespClient::connect(&addr, T).await.unwrap();
        let err = c.call(&[b"PING"]).await.unwrap_err();
        assert!(matches!(err, ClientError::Protocol { .. }), "{err:?}");
        assert!(matches!(
            c.call(&[b"PING"]).await,
            Err(ClientError::Broken { .. })
        ));
    }

    #[test]
    fn accessors() {
        assert_eq!(
            RespValue::Bulk(Some(Bytes::from_static(b"12"))).as_integer(),
            Some(12)
        );
        assert_eq!(RespValue::Simple("x".into()).as_integer(), None);
        assert_eq!(RespValue::Integer(3).as_str(), None);
        assert_eq!(RespValue::Bulk(None).as_bytes(), None);
        assert_eq!(RespValue::Array(None).into_array(), None);
        assert_eq!(RespValue::Error("E".into()).to_string(), "(error) E");
        assert_eq!(
            RespValue::Bulk(Some(Bytes::from_static(b"\x00a"))).to_string(),
            "\"\\x00a\""
        );
    }
}
