//! The reply a command produces, independent of the wire protocol.
//!
//! Commands never write to a socket: they return a [`Reply`], and the
//! connection encodes it as RESP2 or RESP3 depending on what the client
//! negotiated with `HELLO`. Keeping the reply abstract lets pipelining,
//! forwarding and tests work without a socket.

use bytes::{Bytes, BytesMut};

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

/// Which RESP version a reply is encoded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, the default.
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Protocol {
    /// The protocol for a `HELLO` version number (2 or 3).
    #[must_use]
    pub fn from_version(v: u8) -> Self {
        if v == 3 {
            Protocol::Resp3
        } else {
            Protocol::Resp2
        }
    }
}

impl Reply {
    /// Appends this reply to `out` in the given protocol, the way Redis
    /// writes it (RESP3-only shapes degrade to their RESP2 forms).
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Reply::Simple(s) => put_line(out, b'+', s),
            Reply::Error(e) => put_line(out, b'-', e),
            Reply::Integer(n) => put_header(out, b':', *n),
            Reply::Bulk(b) => put_bulk(out, b),
            Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                put_header(out, b'*', len_i64(items.len()));
                for item in items {
                    item.encode(protocol, out);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    put_header(out, b'%', len_i64(pairs.len()));
                } else {
                    put_header(out, b'*', len_i64(pairs.len()).saturating_mul(2));
                }
                for (k, v) in pairs {
                    k.encode(protocol, out);
                    v.encode(protocol, out);
                }
            }
            Reply::Set(items) => {
                put_header(out, if resp3 { b'~' } else { b'*' }, len_i64(items.len()));
                for item in items {
                    item.encode(protocol, out);
                }
            }
            Reply::Double(d) => {
                let text = format_double(*d);
                if resp3 {
                    put_line(out, b',', text.as_bytes());
                } else {
                    put_bulk(out, text.as_bytes());
                }
            }
            Reply::Bool(b) if resp3 => {
                out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" });
            }
            Reply::Bool(b) => put_header(out, b':', i64::from(*b)),
            Reply::Verbatim(format, text) if resp3 => {
                put_header(out, b'=', len_i64(text.len() + format.len() + 1));
                out.extend_from_slice(format.as_bytes());
                out.extend_from_slice(b":");
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(_, text) => put_bulk(out, text),
        }
    }

    /// An integer reply.
    #[must_use]
    pub fn integer(n: i64) -> Self {
        Reply::Integer(n)
    }

    /// A bulk string from a static string.
    #[must_use]
    pub fn bulk_static(s: &'static str) -> Self {
        Reply::Bulk(Bytes::from_static(s.as_bytes()))
    }

    /// A verbatim `txt` string (a bulk string in RESP2), as INFO replies.
    #[must_use]
    pub fn text(s: impl Into<Bytes>) -> Self {
        Reply::Verbatim("txt", s.into())
    }
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A status or error line. Redis replaces line breaks inside them with
/// spaces so they cannot break the stream; copying only happens then.
fn put_line(out: &mut BytesMut, tag: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.extend_from_slice(&[tag]);
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(text);
    }
    out.extend_from_slice(b"\r\n");
}

fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    let mut line = HeaderLine::new();
    let header = line.format(b'$', len_i64(data.len()));
    // One reservation for the whole reply, then three copies.
    out.reserve(header.len() + data.len() + 2);
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// `<tag><n>\r\n`, formatted without `fmt` and copied in one piece.
fn put_header(out: &mut BytesMut, tag: u8, n: i64) {
    let mut line = HeaderLine::new();
    out.extend_from_slice(line.format(tag, n));
}

/// `00` to `99`: two digits per division, as `itoa` does.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Room for the longest header line: a tag, `-`, the 19 digits of
/// `i64::MIN` and `\r\n` (23 bytes).
struct HeaderLine([u8; 24]);

impl HeaderLine {
    fn new() -> Self {
        HeaderLine([0; 24])
    }

    /// Formats `<tag><n>\r\n` from the back of the array and returns it.
    fn format(&mut self, tag: u8, n: i64) -> &[u8] {
        let buf = &mut self.0;
        let mut i = buf.len() - 2;
        buf[i] = b'\r';
        buf[i + 1] = b'\n';
        let mut v = n.unsigned_abs();
        while v >= 100 {
            // Below 100, so the cast cannot truncate.
            let pair = (v % 100) as usize * 2;
            v /= 100;
            i -= 2;
            buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        }
        if v >= 10 {
            let pair = v as usize * 2;
            i -= 2;
            buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        } else {
            i -= 1;
            // `v` is below 10 here.
            buf[i] = b'0' + v as u8;
        }
        if n < 0 {
            i -= 1;
            buf[i] = b'-';
        }
        i -= 1;
        buf[i] = tag;
        &buf[i..]
    }
}

/// A double as Redis 7 prints it: `inf`, `-inf`, `nan`, integers without a
/// fraction when exactly representable, otherwise the shortest text that
/// reads back as the same double.
#[must_use]
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "nan".into();
    }
    if d.is_infinite() {
        return if d < 0.0 { "-inf".into() } else { "inf".into() };
    }
    // Below 2^52 in magnitude an integral double is exactly an i64.
    if d.fract() == 0.0 && d.abs() < 4_503_599_627_370_496.0 {
        #[allow(clippy::cast_possible_truncation)]
        let i = d as i64;
        if i == 0 && d.is_sign_negative() {
            return "-0".into();
        }
        return i.to_string();
    }
    let abs = d.abs();
    if (1e-5..1e17).contains(&abs) {
        format!("{d}")
    } else {
        let s = format!("{d:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
            _ => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, p: Protocol) -> Vec<u8> {
        let mut out = BytesMut::new();
        r.encode(p, &mut out);
        out.to_vec()
    }

    fn both(r: &Reply, resp2: &[u8], resp3: &[u8]) {
        assert_eq!(enc(r, Protocol::Resp2), resp2, "RESP2 of {r:?}");
        assert_eq!(enc(r, Protocol::Resp3), resp3, "RESP3 of {r:?}");
    }

    #[test]
    fn scalars() {
        both(&Reply::ok(), b"+OK\r\n", b"+OK\r\n");
        both(&Reply::error("ERR x"), b"-ERR x\r\n", b"-ERR x\r\n");
        both(&Reply::Integer(0), b":0\r\n", b":0\r\n");
        both(&Reply::Integer(-42), b":-42\r\n", b":-42\r\n");
        both(
            &Reply::Integer(i64::MIN),
            b":-9223372036854775808\r\n",
            b":-9223372036854775808\r\n",
        );
        both(
            &Reply::Integer(i64::MAX),
            b":9223372036854775807\r\n",
            b":9223372036854775807\r\n",
        );
        both(
            &Reply::bulk("a\r\nb"),
            b"$4\r\na\r\nb\r\n",
            b"$4\r\na\r\nb\r\n",
        );
        both(&Reply::bulk(""), b"$0\r\n\r\n", b"$0\r\n\r\n");
    }

    #[test]
    fn integers_and_lengths_of_every_width() {
        let mut n: i64 = 1;
        for _ in 0..19 {
            for v in [n - 1, n, n + 1, -(n - 1), -n, -(n + 1), n * 5, -(n * 5)] {
                assert_eq!(
                    enc(&Reply::Integer(v), Protocol::Resp2),
                    format!(":{v}\r\n").into_bytes()
                );
            }
            n = n.saturating_mul(10);
        }
        for len in [0usize, 9, 10, 99, 100, 101, 999, 1000, 65_536] {
            let data = vec![b'z'; len];
            let mut expected = format!("${len}\r\n").into_bytes();
            expected.extend_from_slice(&data);
            expected.extend_from_slice(b"\r\n");
            assert_eq!(enc(&Reply::bulk(data), Protocol::Resp2), expected);
        }
        // Appending keeps what the buffer held.
        let mut out = BytesMut::from(&b"+OK\r\n"[..]);
        Reply::Integer(-7).encode(Protocol::Resp3, &mut out);
        assert_eq!(&out[..], b"+OK\r\n:-7\r\n");
    }

    #[test]
    fn nulls() {
        both(&Reply::Null, b"$-1\r\n", b"_\r\n");
        both(&Reply::NullArray, b"*-1\r\n", b"_\r\n");
    }

    #[test]
    fn aggregates() {
        let arr = Reply::Array(vec![Reply::Integer(1), Reply::bulk("x"), Reply::Null]);
        both(
            &arr,
            b"*3\r\n:1\r\n$1\r\nx\r\n$-1\r\n",
            b"*3\r\n:1\r\n$1\r\nx\r\n_\r\n",
        );
        both(&Reply::Array(vec![]), b"*0\r\n", b"*0\r\n");
        let map = Reply::Map(vec![(Reply::bulk("k"), Reply::Integer(1))]);
        both(&map, b"*2\r\n$1\r\nk\r\n:1\r\n", b"%1\r\n$1\r\nk\r\n:1\r\n");
        let set = Reply::Set(vec![Reply::simple("a")]);
        both(&set, b"*1\r\n+a\r\n", b"~1\r\n+a\r\n");
        let nested = Reply::Array(vec![Reply::Map(vec![])]);
        both(&nested, b"*1\r\n*0\r\n", b"*1\r\n%0\r\n");
    }

    #[test]
    fn resp3_only_shapes_degrade() {
        both(&Reply::Bool(true), b":1\r\n", b"#t\r\n");
        both(&Reply::Bool(false), b":0\r\n", b"#f\r\n");
        both(&Reply::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n");
        both(&Reply::Double(3.0), b"$1\r\n3\r\n", b",3\r\n");
        both(&Reply::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n");
        both(
            &Reply::Double(f64::NEG_INFINITY),
            b"$4\r\n-inf\r\n",
            b",-inf\r\n",
        );
        both(&Reply::Double(f64::NAN), b"$3\r\nnan\r\n", b",nan\r\n");
        both(&Reply::text("hi"), b"$2\r\nhi\r\n", b"=6\r\ntxt:hi\r\n");
    }

    #[test]
    fn line_breaks_in_status_and_errors_become_spaces() {
        both(
            &Reply::error("ERR a\r\nb"),
            b"-ERR a  b\r\n",
            b"-ERR a  b\r\n",
        );
        both(
            &Reply::Simple(Bytes::from_static(b"a\nb")),
            b"+a b\r\n",
            b"+a b\r\n",
        );
    }

    #[test]
    fn doubles_as_redis_prints_them() {
        assert_eq!(format_double(0.1), "0.1");
        assert_eq!(format_double(-0.0), "-0");
        assert_eq!(format_double(10.5), "10.5");
        assert_eq!(format_double(-3.0), "-3");
        assert_eq!(format_double(1e300), "1e+300");
        assert_eq!(format_double(1.5e-10), "1.5e-10");
    }
}
