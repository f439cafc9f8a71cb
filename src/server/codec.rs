//! Decoding client requests: RESP multibulk arrays and inline commands.
//!
//! A connection reads bytes into one `BytesMut` and calls
//! [`RequestDecoder::decode`] until it returns `Ok(None)`; each `Some(argv)`
//! is one request. A multibulk request is scanned header by header the way
//! Redis's `processMultibulkBuffer` reads it: an oversize count or bulk
//! length is rejected as soon as its header line arrives, with Redis's exact
//! error text, before anything large is buffered; the byte after a header's
//! `\r` and the two bytes after a bulk's data are skipped unchecked, as
//! Redis skips them. The scan notes where each argument lies in a list the
//! decoder reuses from request to request, and remembers how far it got, so
//! bytes are never scanned twice while a large request trickles in. Once
//! the whole request is there, it is split off the read buffer and every
//! argument is a shared slice of it (no copy), gathered in the request's
//! argument vector: one allocation per request, of exactly its argument
//! count. Anything not starting with `*` is an inline command, split the way
//! Redis's `sdssplitargs` splits it; empty lines and `*0`/`*-1` are consumed
//! without producing a request, as Redis does.
//!
//! Every [`ProtocolError`] ends the connection: the connection writes
//! [`ProtocolError::reply`] (when there is one) and closes.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use super::Reply;

/// Redis's `PROTO_INLINE_MAX_SIZE`: the longest inline request, and the
/// longest count line of a multibulk request, that may sit unterminated.
pub const INLINE_MAX_SIZE: usize = 64 * 1024;

/// Argument positions kept for reuse after a request: a request with more
/// arguments than this gives its list back instead of keeping it for the
/// connection's lifetime.
const KEEP_SPANS: usize = 1024;

/// Limits on what one request may announce or buffer, with Redis's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolLimits {
    /// `proto-max-bulk-len`: the largest bulk string a client may send.
    pub max_bulk_len: u64,
    /// The largest multibulk count (Redis: `INT_MAX`, not configurable there).
    pub max_multibulk_len: u64,
    /// Longest unterminated inline request or count line.
    pub max_inline_len: usize,
    /// `client-query-buffer-limit`: the most bytes one request may occupy.
    pub max_query_buffer: u64,
}

impl Default for ProtocolLimits {
    fn default() -> Self {
        ProtocolLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as u64,
            max_inline_len: INLINE_MAX_SIZE,
            max_query_buffer: 1024 * 1024 * 1024,
        }
    }
}

/// A broken request stream. The connection answers with [`Self::reply`]
/// (Redis's exact text) and closes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// `*` count not an integer or above the multibulk limit.
    #[error("ERR Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$` length not an integer, negative, or above `proto-max-bulk-len`.
    #[error("ERR Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A `*` count line longer than the inline limit without `\r`.
    #[error("ERR Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    /// A `$` length line longer than the inline limit without `\r`.
    #[error("ERR Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An inline request longer than the inline limit without `\n`.
    #[error("ERR Protocol error: too big inline request")]
    TooBigInline,
    /// An element of a multibulk request that is not a bulk string.
    #[error("ERR Protocol error: expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    /// An inline request with an unterminated quote, or a closing quote
    /// followed by something other than a space.
    #[error("ERR Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// One request would need more than `client-query-buffer-limit` bytes.
    /// Redis closes such a client without a reply, and so do we.
    #[error("query buffer limit of {limit} bytes reached")]
    QueryBufferLimit {
        /// The limit in force.
        limit: u64,
    },
}

impl ProtocolError {
    /// The error reply Redis sends before closing, if it sends one.
    #[must_use]
    pub fn reply(&self) -> Option<Reply> {
        match self {
            ProtocolError::QueryBufferLimit { .. } => None,
            // Redis prints the offending byte raw (`%c`), not as UTF-8.
            ProtocolError::ExpectedBulk(b) => {
                let mut msg = b"ERR Protocol error: expected '$', got '".to_vec();
                msg.push(*b);
                msg.push(b'\'');
                Some(Reply::Error(Bytes::from(msg)))
            }
            other => Some(Reply::error(other.to_string())),
        }
    }
}

/// Where the decoder stopped inside a request that has not fully arrived.
#[derive(Debug, Clone, Copy)]
enum Progress {
    /// At the start of a request.
    Idle,
    /// An inline request: this many bytes hold no `\n`.
    Inline { scanned: usize },
    /// A multibulk request whose count line is consumed into `pos`.
    Multibulk(MultibulkScan),
}

#[derive(Debug, Clone, Copy)]
struct MultibulkScan {
    /// Elements whose header has not been read yet, plus the current one.
    args_left: u64,
    /// Elements in the whole request.
    argc: u64,
    /// Offset (from the request's start) of the next unscanned byte.
    pos: usize,
    /// The current element's announced length once its `$` line is read.
    bulk_len: Option<usize>,
}

/// Where one argument of a multibulk request lies, from the request's first byte.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
}

/// Incremental request decoder for one connection.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: ProtocolLimits,
    progress: Progress,
    /// The arguments of the multibulk request being scanned whose data has
    /// fully arrived, in order. Cleared, not freed, between requests.
    spans: Vec<Span>,
}

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    #[must_use]
    pub fn new(limits: ProtocolLimits) -> Self {
        RequestDecoder {
            limits,
            progress: Progress::Idle,
            spans: Vec::new(),
        }
    }

    /// Replaces the limits (after `CONFIG SET`); takes effect from the next header.
    pub fn set_limits(&mut self, limits: ProtocolLimits) {
        self.limits = limits;
    }

    /// Takes the next complete request off the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds no complete request (read more and
    /// call again); the bytes of a partial request stay in `buf`.
    ///
    /// # Errors
    /// A [`ProtocolError`] when the stream breaks a rule; the connection must
    /// close after replying. The decoder is then back at the start of a
    /// request, and the offending bytes are still in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let decoded = self.next_request(buf);
        if decoded.is_err() {
            self.progress = Progress::Idle;
            self.spans.clear();
        }
        decoded
    }

    fn next_request(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            let progress = match self.progress {
                Progress::Idle => match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => match self.start_multibulk(buf)? {
                        Start::Incomplete => return Ok(None),
                        Start::Empty => continue,
                        Start::Scan(scan) => Progress::Multibulk(scan),
                    },
                    Some(_) => Progress::Inline { scanned: 0 },
                },
                other => other,
            };
            match progress {
                Progress::Idle => {}
                Progress::Inline { scanned } => match self.inline(buf, scanned)? {
                    Step::Incomplete(p) => {
                        self.progress = p;
                        return Ok(None);
                    }
                    Step::Done(argv) => {
                        self.progress = Progress::Idle;
                        if argv.is_empty() {
                            continue;
                        }
                        return Ok(Some(argv));
                    }
                },
                Progress::Multibulk(scan) => match self.multibulk(buf, scan)? {
                    Step::Incomplete(p) => {
                        self.progress = p;
                        return Ok(None);
                    }
                    Step::Done(argv) => {
                        self.progress = Progress::Idle;
                        return Ok(Some(argv));
                    }
                },
            }
        }
    }

    /// Reads the `*<count>\r\n` line.
    fn start_multibulk(&mut self, buf: &mut BytesMut) -> Result<Start, ProtocolError> {
        let Some(cr) = find(buf, 0, b'\r') else {
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError::TooBigMultibulkCount);
            }
            return Ok(Start::Incomplete);
        };
        // Like Redis, the byte after `\r` is taken as the `\n` unchecked.
        if cr + 1 >= buf.len() {
            return Ok(Start::Incomplete);
        }
        let count = parse_len(&buf[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
        if count > i64::try_from(self.limits.max_multibulk_len).unwrap_or(i64::MAX) {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        if count <= 0 {
            buf.advance(cr + 2);
            return Ok(Start::Empty);
        }
        let argc = count.unsigned_abs();
        self.spans.clear();
        Ok(Start::Scan(MultibulkScan {
            args_left: argc,
            argc,
            pos: cr + 2,
            bulk_len: None,
        }))
    }

    fn multibulk(
        &mut self,
        buf: &mut BytesMut,
        mut scan: MultibulkScan,
    ) -> Result<Step, ProtocolError> {
        while scan.args_left > 0 {
            let len = match scan.bulk_len {
                Some(len) => len,
                None => {
                    let Some(cr) = find(buf, scan.pos, b'\r') else {
                        if buf.len() - scan.pos > self.limits.max_inline_len {
                            return Err(ProtocolError::TooBigBulkCount);
                        }
                        self.check_query_buffer(scan.pos as u64)?;
                        return Ok(Step::Incomplete(Progress::Multibulk(scan)));
                    };
                    if cr + 1 >= buf.len() {
                        return Ok(Step::Incomplete(Progress::Multibulk(scan)));
                    }
                    let tag = buf[scan.pos];
                    if tag != b'$' {
                        return Err(ProtocolError::ExpectedBulk(tag));
                    }
                    let len = parse_len(&buf[scan.pos + 1..cr])
                        .and_then(|n| u64::try_from(n).ok())
                        .filter(|&n| n <= self.limits.max_bulk_len)
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    scan.pos = cr + 2;
                    scan.bulk_len = Some(len);
                    len
                }
            };
            let end = scan.pos + len + 2;
            if buf.len() < end {
                // Refuse before buffering: the announced size is known now.
                self.check_query_buffer(end as u64)?;
                // One allocation for the whole argument instead of repeated doubling.
                buf.reserve(end - buf.len());
                return Ok(Step::Incomplete(Progress::Multibulk(scan)));
            }
            self.spans.push(Span {
                start: scan.pos,
                len,
            });
            scan.pos = end;
            scan.bulk_len = None;
            scan.args_left -= 1;
        }
        debug_assert_eq!(self.spans.len() as u64, scan.argc);
        // The request leaves the buffer as one shared handle; every argument
        // is a zero-copy slice of it, the last one the handle itself, cut down.
        let mut request = buf.split_to(scan.pos).freeze();
        let mut argv = Vec::with_capacity(self.spans.len());
        if let Some((last, others)) = self.spans.split_last() {
            argv.extend(
                others
                    .iter()
                    .map(|span| request.slice(span.start..span.start + span.len)),
            );
            request.truncate(last.start + last.len);
            request.advance(last.start);
            argv.push(request);
        }
        if self.spans.capacity() > KEEP_SPANS {
            self.spans = Vec::new();
        }
        Ok(Step::Done(argv))
    }

    fn inline(&self, buf: &mut BytesMut, scanned: usize) -> Result<Step, ProtocolError> {
        let Some(nl) = find(buf, scanned, b'\n') else {
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError::TooBigInline);
            }
            return Ok(Step::Incomplete(Progress::Inline { scanned: buf.len() }));
        };
        let line = buf.split_to(nl + 1).freeze();
        let mut end = nl;
        if end > 0 && line[end - 1] == b'\r' {
            end -= 1;
        }
        let argv = split_inline(&line.slice(..end))?;
        Ok(Step::Done(argv))
    }

    fn check_query_buffer(&self, needed: u64) -> Result<(), ProtocolError> {
        if needed > self.limits.max_query_buffer {
            return Err(ProtocolError::QueryBufferLimit {
                limit: self.limits.max_query_buffer,
            });
        }
        Ok(())
    }
}

enum Start {
    Incomplete,
    Empty,
    Scan(MultibulkScan),
}

enum Step {
    Incomplete(Progress),
    Done(Vec<Bytes>),
}

fn find(buf: &[u8], from: usize, byte: u8) -> Option<usize> {
    buf.get(from..)?
        .iter()
        .position(|&b| b == byte)
        .map(|i| i + from)
}

/// Redis's `string2ll` as its request parser uses it: optional `-`, no `+`,
/// no leading zeros, no spaces.
fn parse_len(s: &[u8]) -> Option<i64> {
    // Every header of every request goes through here: the usual case (a
    // few digits, no sign, no leading zero, too short to overflow) is
    // parsed inline; the rest takes the general parser.
    match s {
        [b'1'..=b'9', rest @ ..] if rest.len() < 18 => {
            let mut value = i64::from(s[0] - b'0');
            for &d in rest {
                if !d.is_ascii_digit() {
                    return None;
                }
                value = value * 10 + i64::from(d - b'0');
            }
            Some(value)
        }
        _ => crate::storage::parse_i64(s),
    }
}

/// Splits an inline request line exactly as Redis's `sdssplitargs` does:
/// blanks separate arguments; `"..."` understands `\n \r \t \b \a \xHH` and
/// `\<any>`; `'...'` understands only `\'`; a closing quote must be followed
/// by a blank or the end of the line. Unquoted arguments are slices of `line`.
///
/// # Errors
/// [`ProtocolError::UnbalancedQuotes`].
pub fn split_inline(line: &Bytes) -> Result<Vec<Bytes>, ProtocolError> {
    // sdssplitargs works on a C string: a NUL byte ends the line.
    let s: &[u8] = match line.iter().position(|&b| b == 0) {
        Some(n) => &line[..n],
        None => line,
    };
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let mut argv = Vec::new();
    let mut i = 0;
    loop {
        while i < s.len() && is_c_space(s[i]) {
            i += 1;
        }
        if i >= s.len() {
            return Ok(argv);
        }
        let start = i;
        let mut owned: Option<Vec<u8>> = None;
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let c = at(i);
            if in_double {
                let cur = owned.get_or_insert_with(Vec::new);
                let escaped_hex = match (c, at(i + 1), hex(at(i + 2)), hex(at(i + 3))) {
                    (b'\\', b'x', Some(hi), Some(lo)) => Some(hi * 16 + lo),
                    _ => None,
                };
                if let Some(byte) = escaped_hex {
                    cur.push(byte);
                    i += 3;
                } else if c == b'\\' && at(i + 1) != 0 {
                    i += 1;
                    cur.push(match at(i) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(i + 1) != 0 && !is_c_space(at(i + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    cur.push(c);
                }
            } else if in_single {
                let cur = owned.get_or_insert_with(Vec::new);
                if c == b'\\' && at(i + 1) == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if at(i + 1) != 0 && !is_c_space(at(i + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    cur.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' | b'\'' => {
                        // A quote mid-argument keeps what came before it.
                        owned = Some(s[start..i].to_vec());
                        in_double = c == b'"';
                        in_single = c == b'\'';
                    }
                    // Unquoted bytes stay in `line` and are sliced at the end.
                    _ => {}
                }
            }
            i += 1;
        }
        argv.push(match owned {
            Some(v) => Bytes::from(v),
            None => line.slice(start..i),
        });
    }
}

/// C's `isspace` in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> RequestDecoder {
        RequestDecoder::new(ProtocolLimits::default())
    }

    fn all(input: &[u8]) -> (Vec<Vec<Bytes>>, Result<(), ProtocolError>, usize) {
        let mut d = decoder();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(Some(argv)) => out.push(argv),
                Ok(None) => return (out, Ok(()), buf.len()),
                Err(e) => return (out, Err(e), buf.len()),
            }
        }
    }

    fn args(v: &[&str]) -> Vec<Bytes> {
        v.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn multibulk_requests_pipelined() {
        let (reqs, res, left) =
            all(b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*2\r\n$3\r\nGET");
        assert_eq!(res, Ok(()));
        assert_eq!(reqs, vec![args(&["PING"]), args(&["SET", "k", ""])]);
        assert_eq!(left, 11, "the partial request stays buffered");
    }

    #[test]
    fn arguments_are_slices_of_the_read_buffer() {
        let mut buf = BytesMut::from(&b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n"[..]);
        let base = buf.as_ptr() as usize;
        let argv = decoder().decode(&mut buf).unwrap().unwrap();
        assert_eq!(argv[1].as_ptr() as usize, base + 18);
    }

    #[test]
    fn binary_safe_bulk() {
        let (reqs, res, _) = all(b"*2\r\n$4\r\nECHO\r\n$4\r\na\r\n\0\r\n");
        assert_eq!(res, Ok(()));
        assert_eq!(&reqs[0][1][..], b"a\r\n\0");
    }

    #[test]
    fn byte_by_byte_arrival() {
        let input = b"*2\r\n$4\r\nECHO\r\n$11\r\nhello world\r\nPING\r\n";
        let mut d = decoder();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            while let Some(argv) = d.decode(&mut buf).unwrap() {
                out.push(argv);
            }
        }
        assert_eq!(out, vec![args(&["ECHO", "hello world"]), args(&["PING"])]);
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_multibulk_and_empty_lines_are_skipped() {
        let (reqs, res, left) = all(b"*0\r\n*-1\r\n\r\n\n   \r\nPING\r\n");
        assert_eq!(res, Ok(()));
        assert_eq!(reqs, vec![args(&["PING"])]);
        assert_eq!(left, 0);
    }

    #[test]
    fn invalid_multibulk_length() {
        for input in [
            &b"*abc\r\n"[..],
            b"*3000000000\r\n",
            b"*01\r\n",
            b"*+1\r\n",
            b"*\r\n",
            b"*-\r\n",
        ] {
            assert_eq!(
                all(input).1,
                Err(ProtocolError::InvalidMultibulkLength),
                "{input:?}"
            );
        }
    }

    #[test]
    fn multibulk_limit_is_configurable() {
        let mut d = RequestDecoder::new(ProtocolLimits {
            max_multibulk_len: 2,
            ..ProtocolLimits::default()
        });
        let mut buf = BytesMut::from(&b"*3\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(ProtocolError::InvalidMultibulkLength)
        );
    }

    #[test]
    fn invalid_bulk_length() {
        for input in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$+4\r\nPING\r\n",
            b"*1\r\n$04\r\nPING\r\n",
            b"*1\r\n$x\r\n",
            b"*1\r\n$600000000\r\n",
        ] {
            assert_eq!(
                all(input).1,
                Err(ProtocolError::InvalidBulkLength),
                "{input:?}"
            );
        }
    }

    #[test]
    fn oversize_bulk_is_refused_from_its_header_alone() {
        let mut d = RequestDecoder::new(ProtocolLimits {
            max_bulk_len: 10,
            ..ProtocolLimits::default()
        });
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$11\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Err(ProtocolError::InvalidBulkLength));
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$10\r\n"[..]);
        let mut fresh = RequestDecoder::new(d.limits);
        assert_eq!(fresh.decode(&mut buf), Ok(None));
    }

    #[test]
    fn expected_dollar() {
        let (_, res, _) = all(b"*1\r\nPING\r\n");
        let err = res.unwrap_err();
        assert_eq!(err, ProtocolError::ExpectedBulk(b'P'));
        assert_eq!(
            err.reply(),
            Some(Reply::error("ERR Protocol error: expected '$', got 'P'"))
        );
        assert_eq!(
            ProtocolError::ExpectedBulk(0xff).reply(),
            Some(Reply::Error(Bytes::from_static(
                b"ERR Protocol error: expected '$', got '\xff'"
            )))
        );
    }

    #[test]
    fn requests_before_an_error_are_returned() {
        let (reqs, res, _) = all(b"PING\r\n*1\r\n$4\r\nPING\r\n*1\r\nx\r\n");
        assert_eq!(reqs.len(), 2);
        assert_eq!(res, Err(ProtocolError::ExpectedBulk(b'x')));
    }

    #[test]
    fn too_big_count_strings_and_inline() {
        let mut long = b"*".to_vec();
        long.extend(std::iter::repeat_n(b'1', 70_000));
        assert_eq!(all(&long).1, Err(ProtocolError::TooBigMultibulkCount));
        let mut long = b"*1\r\n$".to_vec();
        long.extend(std::iter::repeat_n(b'1', 70_000));
        assert_eq!(all(&long).1, Err(ProtocolError::TooBigBulkCount));
        let long = vec![b'A'; 70_000];
        assert_eq!(all(&long).1, Err(ProtocolError::TooBigInline));
        // Up to the limit an unterminated inline request just waits.
        assert_eq!(all(&long[..INLINE_MAX_SIZE]).1, Ok(()));
        // A long line that is terminated is accepted, as in Redis.
        let mut line = vec![b'A'; 70_000];
        line.extend_from_slice(b"\r\n");
        let (reqs, res, _) = all(&line);
        assert_eq!(res, Ok(()));
        assert_eq!(reqs[0][0].len(), 70_000);
    }

    #[test]
    fn query_buffer_limit_refuses_before_buffering() {
        let mut d = RequestDecoder::new(ProtocolLimits {
            max_query_buffer: 100,
            ..ProtocolLimits::default()
        });
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$90\r\n"[..]);
        let err = d.decode(&mut buf).unwrap_err();
        assert_eq!(err, ProtocolError::QueryBufferLimit { limit: 100 });
        assert_eq!(err.reply(), None, "Redis closes without a reply");
    }

    #[test]
    fn announced_bulk_reserves_its_space_once() {
        let mut d = decoder();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$100000\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(buf.capacity() >= 21 + 100_002);
    }

    #[test]
    fn bulk_terminator_is_not_checked_as_in_redis() {
        let (reqs, res, _) = all(b"*2\r\n$4\r\nECHO\r\n$1\r\nabXYPING\r\n");
        assert_eq!(res, Ok(()));
        assert_eq!(reqs, vec![args(&["ECHO", "a"]), args(&["YPING"])]);
    }

    #[test]
    fn header_terminators_are_not_checked_as_in_redis() {
        // Redis takes the byte after a header's `\r` as its `\n` unseen
        // (redis-server 7.0 answers +PONG to both).
        let (reqs, res, left) = all(b"*1\rX$4\r\nPING\r\n*1\r\n$4\rXPING\r\n");
        assert_eq!(res, Ok(()));
        assert_eq!(reqs, vec![args(&["PING"]), args(&["PING"])]);
        assert_eq!(left, 0);
    }

    #[test]
    fn an_error_mid_request_leaves_no_arguments_behind() {
        let mut d = decoder();
        // One argument of a two-argument request arrives, then a bad header.
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"x1\r\nk\r\n");
        assert_eq!(d.decode(&mut buf), Err(ProtocolError::ExpectedBulk(b'x')));
        assert_eq!(buf.len(), 20, "the offending request stays in the buffer");
        // The same decoder then starts clean: no argument of the broken
        // request leaks into the next one.
        let mut fresh = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"[..]);
        assert_eq!(d.decode(&mut fresh), Ok(Some(args(&["GET", "k"]))));
        assert_eq!(d.decode(&mut fresh), Ok(Some(args(&["PING"]))));
        assert_eq!(d.decode(&mut fresh), Ok(None));
        // And the broken buffer fails the same way again.
        assert_eq!(d.decode(&mut buf), Err(ProtocolError::ExpectedBulk(b'x')));
    }

    /// `*<n>` requests of `MSET k0 v0 k1 v1 ...` with `pairs` pairs.
    fn mset(pairs: usize) -> (Vec<u8>, Vec<Bytes>) {
        let mut argv = vec![Bytes::from_static(b"MSET")];
        for i in 0..pairs {
            argv.push(Bytes::from(format!("key:{i}")));
            argv.push(Bytes::from(format!("value-{i}").repeat(i % 7)));
        }
        let mut wire = format!("*{}\r\n", argv.len()).into_bytes();
        for a in &argv {
            wire.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            wire.extend_from_slice(a);
            wire.extend_from_slice(b"\r\n");
        }
        (wire, argv)
    }

    #[test]
    fn long_argument_lists_in_one_buffer_and_in_pieces() {
        let (long, long_argv) = mset(5_000);
        let (short, short_argv) = mset(1);
        let mut wire = long.clone();
        wire.extend_from_slice(&short);
        wire.extend_from_slice(&long);
        let (reqs, res, left) = all(&wire);
        assert_eq!(res, Ok(()));
        assert_eq!(left, 0);
        assert_eq!(reqs, vec![long_argv.clone(), short_argv, long_argv.clone()]);
        // In uneven pieces, through one decoder: each argument is recorded once.
        let mut d = decoder();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(997) {
            buf.extend_from_slice(piece);
            while let Some(argv) = d.decode(&mut buf).unwrap() {
                out.push(argv);
            }
        }
        assert_eq!(out, reqs);
        assert!(buf.is_empty());
        // A list grown for 10 001 arguments is not kept for the connection's life.
        assert!(d.spans.capacity() <= KEEP_SPANS, "{}", d.spans.capacity());
    }

    #[test]
    fn argument_lists_are_reused_between_requests() {
        let mut d = decoder();
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(args(&["SET", "k", "v"]))));
        let kept = d.spans.as_ptr();
        buf.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(d.decode(&mut buf), Ok(Some(args(&["GET", "k"]))));
        assert_eq!(d.spans.as_ptr(), kept, "the same list, not a new one");
    }

    #[test]
    fn limits_can_change_between_requests() {
        let mut d = decoder();
        let mut buf = BytesMut::from(&b"*1\r\n$5\r\nhello\r\n"[..]);
        d.set_limits(ProtocolLimits {
            max_bulk_len: 4,
            ..ProtocolLimits::default()
        });
        assert_eq!(d.decode(&mut buf), Err(ProtocolError::InvalidBulkLength));
    }

    fn split(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
        split_inline(&Bytes::copy_from_slice(line))
    }

    #[test]
    fn inline_splitting() {
        assert_eq!(split(b"  SET  k   v "), Ok(args(&["SET", "k", "v"])));
        assert_eq!(split(b"SET k \"a b\""), Ok(args(&["SET", "k", "a b"])));
        assert_eq!(
            split(b"ECHO \"\\x41\\x4a\\n\\t\\\"q\\z\""),
            Ok(args(&["ECHO", "AJ\n\t\"qz"]))
        );
        assert_eq!(split(b"ECHO \"\\xZZ\""), Ok(args(&["ECHO", "xZZ"])));
        assert_eq!(
            split(b"ECHO 'it\\'s' 'a\\nb'"),
            Ok(args(&["ECHO", "it's", "a\\nb"]))
        );
        assert_eq!(split(b"ECHO ab\"cd ef\""), Ok(args(&["ECHO", "abcd ef"])));
        assert_eq!(split(b"ECHO \"\""), Ok(args(&["ECHO", ""])));
        assert_eq!(split(b"ECHO a\0b c"), Ok(args(&["ECHO", "a"])));
        assert_eq!(split(b"ECHO\x0bx"), Ok(args(&["ECHO\x0bx"])));
        assert_eq!(split(b""), Ok(vec![]));
    }

    #[test]
    fn inline_unbalanced_quotes() {
        for line in [
            &b"SET \"a b"[..],
            b"ECHO \"a\"b",
            b"ECHO 'a",
            b"ECHO 'a'b",
            b"ECHO a\"b c\"d",
        ] {
            assert_eq!(
                split(line),
                Err(ProtocolError::UnbalancedQuotes),
                "{line:?}"
            );
        }
        assert_eq!(
            all(b"SET \"a b\r\n").1.unwrap_err().reply(),
            Some(Reply::error(
                "ERR Protocol error: unbalanced quotes in request"
            ))
        );
    }

    #[test]
    fn inline_line_endings() {
        let (reqs, _, _) = all(b"PING\nECHO x\r\n");
        assert_eq!(reqs, vec![args(&["PING"]), args(&["ECHO", "x"])]);
    }

    #[test]
    fn inline_arguments_are_slices() {
        let mut buf = BytesMut::from(&b"ECHO hello\r\n"[..]);
        let base = buf.as_ptr() as usize;
        let argv = decoder().decode(&mut buf).unwrap().unwrap();
        assert_eq!(argv[1].as_ptr() as usize, base + 5);
    }

    #[test]
    fn redis_integer_rules() {
        assert_eq!(parse_len(b"0"), Some(0));
        assert_eq!(parse_len(b"-1"), Some(-1));
        assert_eq!(parse_len(b"123"), Some(123));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"00",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1x",
            b"12345678901234567x",
            b"99999999999999999999",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_len(bad), None, "{bad:?}");
        }
        // Around the length where the inline path hands over (18 digits).
        for n in [
            9i64,
            99_999_999_999_999_999,
            100_000_000_000_000_000,
            999_999_999_999_999_999,
            i64::MAX,
            -5,
            i64::MIN,
        ] {
            assert_eq!(parse_len(n.to_string().as_bytes()), Some(n), "{n}");
        }
    }
}
