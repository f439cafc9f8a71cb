//! Golden scripts for behaviour tests: a command per line and the reply that
//! Redis 7 gives to it, rendered the way `redis-cli` prints it.
//!
//! A script line is `COMMAND ARG ... => EXPECTED`. Arguments are split on
//! whitespace; `\s` stands for a space and `\0` for a NUL byte inside one
//! argument. Expected replies are rendered by [`render`]: `OK` and other
//! status lines as they are, `(integer) 3`, `"bulk"` (with `\xNN` escapes),
//! `(nil)`, `[a, b]` for arrays, `{k: v}` for maps and
//! `(error) ERR text` for error replies. Every expectation was taken from a
//! real `redis-server` 7 given the same line, unless a comment next to it
//! says why raftis deliberately answers otherwise.
//!
//! [`check`] runs every line, then reports every mismatch at once, so one
//! failing run shows the whole picture.

#![allow(dead_code)]

use redis::aio::MultiplexedConnection;
use redis::Value;

/// Renders a reply like `redis-cli` (one line; arrays in brackets).
pub fn render(v: &Value) -> String {
    fn join<'a>(items: impl Iterator<Item = &'a Value>) -> String {
        items.map(render).collect::<Vec<_>>().join(", ")
    }
    match v {
        Value::Nil => "(nil)".into(),
        Value::Int(n) => format!("(integer) {n}"),
        Value::BulkString(b) => format!("\"{}\"", escape(b)),
        Value::Array(items) => format!("[{}]", join(items.iter())),
        Value::Set(items) => format!("~[{}]", join(items.iter())),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::Map(kv) => format!(
            "{{{}}}",
            kv.iter()
                .map(|(k, v)| format!("{}: {}", render(k), render(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Double(d) => format!("(double) {d}"),
        Value::Boolean(b) => format!("({b})"),
        Value::VerbatimString { text, .. } => format!("\"{}\"", escape(text.as_bytes())),
        Value::ServerError(e) => format!("(error) {} {}", e.code(), e.details().unwrap_or("")),
        other => format!("{other:?}"),
    }
}

/// Printable ASCII as is; quotes, backslashes and other bytes escaped.
pub fn escape(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            0x20..=0x7e => s.push(char::from(c)),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

/// The exact error line of a failed request (`ERR syntax error`), or the
/// client-side failure for anything that is not a server reply.
pub fn error_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("(error) {code} {detail}"),
        (Some(code), None) => format!("(error) {code}"),
        _ => format!("(client failure) {e}"),
    }
}

/// Builds the request for one script line.
pub fn command(line: &str) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for arg in line.split_whitespace() {
        cmd.arg(arg.replace("\\s", " ").replace("\\0", "\0"));
    }
    cmd
}

/// Sends one line and renders what comes back, errors included.
pub async fn run(con: &mut MultiplexedConnection, line: &str) -> String {
    match command(line).query_async::<Value>(con).await {
        Ok(v) => render(&v),
        Err(e) => error_text(&e),
    }
}

/// Runs a script (see the module doc) on `con` and fails with every line
/// whose reply differs. Blank lines and `#` comments are skipped.
pub async fn check(con: &mut MultiplexedConnection, script: &str) {
    let mut mismatches = Vec::new();
    let mut lines = 0;
    for raw in script.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (request, expected) = line
            .split_once(" => ")
            .unwrap_or_else(|| panic!("script line without ' => ': {line}"));
        let got = run(con, request.trim()).await;
        lines += 1;
        // Lines are trimmed, so a trailing space in a reply (Redis's unknown
        // command error has one) is compared without it.
        if got.trim_end() != expected.trim() {
            mismatches.push(format!(
                "  {}\n    expected: {}\n    got:      {got}",
                request.trim(),
                expected.trim()
            ));
        }
    }
    assert!(lines > 0, "empty script");
    assert!(
        mismatches.is_empty(),
        "{} of {lines} lines differ from Redis:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// Sends one line that must succeed and returns its integer reply.
pub async fn int(con: &mut MultiplexedConnection, line: &str) -> i64 {
    match command(line).query_async::<Value>(con).await {
        Ok(Value::Int(n)) => n,
        other => panic!("{line}: expected an integer, got {other:?}"),
    }
}
