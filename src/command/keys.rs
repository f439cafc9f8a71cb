//! The generic key commands: DEL UNLINK EXISTS TYPE RENAME RENAMENX EXPIRE
//! PEXPIRE EXPIREAT PEXPIREAT TTL PTTL PERSIST EXPIRETIME PEXPIRETIME KEYS
//! SCAN RANDOMKEY FLUSHDB FLUSHALL DBSIZE.
//!
//! As in `string.rs`, reads run on the local applied state with this node's
//! clock hiding expired keys, and writes only parse into an `Op`. The EXPIRE
//! family keeps a relative time relative in the `Op` (the leader's stamp
//! makes it absolute at apply), and a time already past is not an error:
//! apply deletes the key. SCAN's cursor is the storage layer's (see
//! `storage::read`): an integer clients pass back unchanged.

use bytes::Bytes;

use super::args::{not_an_integer, parse_i64, syntax_error};
use super::string::{invalid_expire_time, unix_now_ms};
use super::{Args, CommandSpec, Flags, Handler};
use crate::cluster::op::{Deadline, ExpireCondition, Op};
use crate::server::Reply;
use crate::storage::{ScanOptions, Store};

const R: Flags = Flags::READONLY;
const RF: Flags = Flags::READONLY.with(Flags::FAST);
const W: Flags = Flags::WRITE;
const WF: Flags = Flags::WRITE.with(Flags::FAST);

/// The keys family's commands, with Redis 7's arity, flags and key
/// positions.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("del", -2, W, (1, -1, 1), Handler::Write(parse_del)),
    CommandSpec::new("unlink", -2, WF, (1, -1, 1), Handler::Write(parse_del)),
    CommandSpec::new("exists", -2, RF, (1, -1, 1), Handler::Read(exists)),
    CommandSpec::new("type", 2, RF, (1, 1, 1), Handler::Read(key_type)),
    CommandSpec::new("rename", 3, W, (1, 2, 1), Handler::Write(parse_rename)),
    CommandSpec::new("renamenx", 3, WF, (1, 2, 1), Handler::Write(parse_renamenx)),
    CommandSpec::new("expire", -3, WF, (1, 1, 1), Handler::Write(parse_expire)),
    CommandSpec::new("pexpire", -3, WF, (1, 1, 1), Handler::Write(parse_pexpire)),
    CommandSpec::new(
        "expireat",
        -3,
        WF,
        (1, 1, 1),
        Handler::Write(parse_expireat),
    ),
    CommandSpec::new(
        "pexpireat",
        -3,
        WF,
        (1, 1, 1),
        Handler::Write(parse_pexpireat),
    ),
    CommandSpec::new("ttl", 2, RF, (1, 1, 1), Handler::Read(ttl)),
    CommandSpec::new("pttl", 2, RF, (1, 1, 1), Handler::Read(pttl)),
    CommandSpec::new("expiretime", 2, RF, (1, 1, 1), Handler::Read(expiretime)),
    CommandSpec::new("pexpiretime", 2, RF, (1, 1, 1), Handler::Read(pexpiretime)),
    CommandSpec::new("persist", 2, WF, (1, 1, 1), Handler::Write(parse_persist)),
    CommandSpec::new("keys", 2, R, (0, 0, 0), Handler::Read(keys)),
    CommandSpec::new("scan", -2, R, (0, 0, 0), Handler::Read(scan)),
    CommandSpec::new("randomkey", 1, R, (0, 0, 0), Handler::Read(randomkey)),
    CommandSpec::new("flushdb", -1, W, (0, 0, 0), Handler::Write(parse_flush)),
    CommandSpec::new("flushall", -1, W, (0, 0, 0), Handler::Write(parse_flush)),
    CommandSpec::new("dbsize", 1, RF, (0, 0, 0), Handler::Read(dbsize)),
];

/// SCAN's COUNT when none is given (Redis's default).
const DEFAULT_SCAN_COUNT: usize = 10;

fn parse_del(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::Del(args.rest()))
}

fn parse_rename(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::Rename {
        from: args.next_bytes()?,
        to: args.next_bytes()?,
        nx: false,
    })
}

fn parse_renamenx(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::Rename {
        from: args.next_bytes()?,
        to: args.next_bytes()?,
        nx: true,
    })
}

fn parse_persist(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::Persist(args.next_bytes()?))
}

fn parse_flush(args: &mut Args) -> Result<Op, Reply> {
    match args.try_next() {
        None => {}
        Some(mode) if mode.eq_ignore_ascii_case(b"ASYNC") || mode.eq_ignore_ascii_case(b"SYNC") => {
        }
        Some(_) => return Err(syntax_error()),
    }
    if args.remaining() > 0 {
        return Err(syntax_error());
    }
    Ok(Op::FlushAll)
}

/// How an EXPIRE-family command reads its time argument.
#[derive(Clone, Copy)]
struct TimeArg {
    command: &'static str,
    seconds: bool,
    absolute: bool,
}

fn parse_expire(args: &mut Args) -> Result<Op, Reply> {
    parse_expire_family(
        args,
        TimeArg {
            command: "expire",
            seconds: true,
            absolute: false,
        },
    )
}

fn parse_pexpire(args: &mut Args) -> Result<Op, Reply> {
    parse_expire_family(
        args,
        TimeArg {
            command: "pexpire",
            seconds: false,
            absolute: false,
        },
    )
}

fn parse_expireat(args: &mut Args) -> Result<Op, Reply> {
    parse_expire_family(
        args,
        TimeArg {
            command: "expireat",
            seconds: true,
            absolute: true,
        },
    )
}

fn parse_pexpireat(args: &mut Args) -> Result<Op, Reply> {
    parse_expire_family(
        args,
        TimeArg {
            command: "pexpireat",
            seconds: false,
            absolute: true,
        },
    )
}

/// Redis 7's `expireGenericCommand` checks, in its order: options first,
/// then the integer, then overflow of the unit conversion and of the
/// addition to the clock.
fn parse_expire_family(args: &mut Args, time: TimeArg) -> Result<Op, Reply> {
    let key = args.next_bytes()?;
    let when = args.next_bytes()?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    while let Some(opt) = args.try_next() {
        if opt.eq_ignore_ascii_case(b"NX") {
            nx = true;
        } else if opt.eq_ignore_ascii_case(b"XX") {
            xx = true;
        } else if opt.eq_ignore_ascii_case(b"GT") {
            gt = true;
        } else if opt.eq_ignore_ascii_case(b"LT") {
            lt = true;
        } else {
            return Err(Reply::error(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(&opt)
            )));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Reply::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(Reply::error(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let condition = match (nx, xx, gt, lt) {
        (true, ..) => ExpireCondition::IfNoExpiry,
        (_, _, true, _) => ExpireCondition::IfLater,
        (_, true, _, true) => ExpireCondition::IfExpiryAndEarlier,
        (_, false, _, true) => ExpireCondition::IfEarlier,
        (_, true, ..) => ExpireCondition::IfExpiry,
        _ => ExpireCondition::Always,
    };

    let n = parse_i64(&when).ok_or_else(not_an_integer)?;
    let ms = if time.seconds {
        n.checked_mul(1000)
    } else {
        Some(n)
    };
    let ms = ms.ok_or_else(|| invalid_expire_time(time.command))?;
    let basetime = if time.absolute { 0 } else { unix_now_ms() };
    if basetime.checked_add(ms).is_none() {
        return Err(invalid_expire_time(time.command));
    }
    let deadline = if time.absolute {
        Deadline::At(ms)
    } else {
        Deadline::After(ms)
    };
    Ok(Op::Expire {
        key,
        deadline,
        condition,
    })
}

fn one_key(args: &mut Args) -> Result<Bytes, Reply> {
    args.next_bytes()
}

fn exists(store: &Store, args: &mut Args, now_ms: u64) -> Reply {
    let keys = args.rest();
    let mut found = 0i64;
    match store.with_keys(&keys, now_ms, |entry| found += i64::from(entry.is_some())) {
        Ok(()) => Reply::Integer(found),
        Err(error) => error.into(),
    }
}

fn key_type(store: &Store, args: &mut Args, now_ms: u64) -> Reply {
    let key = match one_key(args) {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    store
        .with_key(&key, now_ms, |entry| {
            Reply::simple(entry.map_or("none", |e| e.kind.name()))
        })
        .unwrap_or_else(Reply::from)
}

/// What a TTL-family read reports.
#[derive(Clone, Copy)]
enum TtlForm {
    RelativeSeconds,
    RelativeMillis,
    AbsoluteSeconds,
    AbsoluteMillis,
}

/// Redis's `ttlGenericCommand`: -2 for a missing key, -1 without expiry,
/// seconds rounded to the nearest.
fn ttl_reply(store: &Store, args: &mut Args, now_ms: u64, form: TtlForm) -> Reply {
    let key = match one_key(args) {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    store
        .with_key(&key, now_ms, |entry| {
            let Some(entry) = entry else {
                return Reply::Integer(-2);
            };
            let Some(at) = entry.expire_at else {
                return Reply::Integer(-1);
            };
            let at = i64::try_from(at).unwrap_or(i64::MAX);
            let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
            let rounded_seconds = |ms: i64| ms.saturating_add(500) / 1000;
            Reply::Integer(match form {
                TtlForm::RelativeSeconds => rounded_seconds((at - now).max(0)),
                TtlForm::RelativeMillis => (at - now).max(0),
                TtlForm::AbsoluteSeconds => rounded_seconds(at),
                TtlForm::AbsoluteMillis => at,
            })
        })
        .unwrap_or_else(Reply::from)
}

fn ttl(store: &Store, args: &mut Args, now_ms: u64) -> Reply {
    ttl_reply(store, args, now_ms, TtlForm::RelativeSeconds)
}

fn pttl(store: &Store, args: &mut Args, now_ms: u64) -> Reply {
    ttl_reply(store, args, now_ms, TtlForm::RelativeMillis)
}

fn expiretime(store: &Store, args: &mut Args, now_ms: u64) -> Reply {
    ttl_reply(store, args, now_ms, TtlForm::AbsoluteSeconds)
}

fn pexpiretime(store: &Store, args: &mut Args, now_ms: u64) -> Reply {
    ttl_reply(store, args, now_ms, TtlForm::AbsoluteMillis)
}

fn keys(store: &Store, args: &mut Args, now_ms: u64) -> Reply {
    let pattern = match one_key(args) {
        Ok(pattern) => pattern,
        Err(reply) => return reply,
    };
    match store.keys(&pattern, now_ms) {
        Ok(keys) => Reply::Array(keys.into_iter().map(Reply::Bulk).collect()),
        Err(error) => error.into(),
    }
}

/// Parses a SCAN cursor as Redis's `strtoul` does: no leading space, an
/// optional sign (a minus wraps), digits, nothing after; the empty string is
/// cursor 0.
fn parse_cursor(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return Some(0);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

fn scan(store: &Store, args: &mut Args, now_ms: u64) -> Reply {
    let parsed = (|| {
        let cursor = args.next_bytes()?;
        let cursor = parse_cursor(&cursor).ok_or_else(|| Reply::error("ERR invalid cursor"))?;
        let mut count = DEFAULT_SCAN_COUNT;
        let mut pattern = None;
        let mut kind = None;
        while let Some(opt) = args.try_next() {
            if args.remaining() == 0 {
                return Err(syntax_error());
            }
            let value = args.next_bytes()?;
            if opt.eq_ignore_ascii_case(b"COUNT") {
                let n = parse_i64(&value).ok_or_else(not_an_integer)?;
                count = usize::try_from(n)
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(syntax_error)?;
            } else if opt.eq_ignore_ascii_case(b"MATCH") {
                pattern = Some(value);
            } else if opt.eq_ignore_ascii_case(b"TYPE") {
                kind = Some(value);
            } else {
                return Err(syntax_error());
            }
        }
        Ok((cursor, count, pattern, kind))
    })();
    let (cursor, count, pattern, kind) = match parsed {
        Ok(parsed) => parsed,
        Err(reply) => return reply,
    };
    let options = ScanOptions {
        pattern: pattern.as_deref(),
        count,
        kind: kind.as_deref(),
    };
    match store.scan(cursor, &options, now_ms) {
        Ok((next, keys)) => Reply::Array(vec![
            Reply::Bulk(Bytes::from(next.to_string())),
            Reply::Array(keys.into_iter().map(Reply::Bulk).collect()),
        ]),
        Err(error) => error.into(),
    }
}

fn randomkey(store: &Store, _args: &mut Args, now_ms: u64) -> Reply {
    match store.random_key(now_ms) {
        Ok(Some(key)) => Reply::Bulk(key),
        Ok(None) => Reply::Null,
        Err(error) => error.into(),
    }
}

fn dbsize(store: &Store, _args: &mut Args, _now_ms: u64) -> Reply {
    Reply::Integer(i64::try_from(store.key_count()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::args::tests::args;
    use crate::storage::tests::open_store;

    fn spec_of(name: &str) -> &'static CommandSpec {
        COMMANDS.iter().find(|c| c.name == name).unwrap()
    }

    fn parse(parts: &[&str]) -> Result<Op, Reply> {
        let spec = spec_of(parts[0]);
        assert!(spec.arity_ok(parts.len()), "{parts:?} fails arity");
        match spec.handler {
            Handler::Write(f) => f(&mut args(parts)),
            _ => panic!("{} is not a write", parts[0]),
        }
    }

    fn read(store: &Store, parts: &[&str], now_ms: u64) -> Reply {
        let spec = spec_of(parts[0]);
        assert!(spec.arity_ok(parts.len()), "{parts:?} fails arity");
        match spec.handler {
            Handler::Read(f) => f(store, &mut args(parts), now_ms),
            _ => panic!("{} is not a read", parts[0]),
        }
    }

    fn apply(store: &Store, parts: &[&str], now_ms: u64) -> Reply {
        let op = match parse(parts) {
            Ok(op) => op,
            Err(reply) => return reply,
        };
        let mut batch = store.begin();
        let result = batch.apply(&op, now_ms).unwrap();
        batch.commit().unwrap();
        result.into()
    }

    fn b(s: &str) -> Bytes {
        Bytes::from(s.as_bytes().to_vec())
    }

    fn err(msg: &str) -> Result<Op, Reply> {
        Err(Reply::error(msg))
    }

    #[test]
    fn expire_options_and_errors_match_redis() {
        assert_eq!(
            parse(&["expire", "k", "10"]),
            Ok(Op::Expire {
                key: b("k"),
                deadline: Deadline::After(10_000),
                condition: ExpireCondition::Always
            })
        );
        assert_eq!(
            parse(&["pexpireat", "k", "-5", "xx", "lt"]),
            Ok(Op::Expire {
                key: b("k"),
                deadline: Deadline::At(-5),
                condition: ExpireCondition::IfExpiryAndEarlier
            })
        );
        assert_eq!(
            parse(&["expireat", "k", "7", "xx", "gt"]),
            Ok(Op::Expire {
                key: b("k"),
                deadline: Deadline::At(7000),
                condition: ExpireCondition::IfLater
            })
        );
        assert_eq!(
            parse(&["expire", "k", "10", "nx", "nx"]),
            Ok(Op::Expire {
                key: b("k"),
                deadline: Deadline::After(10_000),
                condition: ExpireCondition::IfNoExpiry
            })
        );
        assert_eq!(
            parse(&["pexpire", "k", "1", "LT"]),
            Ok(Op::Expire {
                key: b("k"),
                deadline: Deadline::After(1),
                condition: ExpireCondition::IfEarlier
            })
        );
        let incompatible = "ERR NX and XX, GT or LT options at the same time are not compatible";
        assert_eq!(parse(&["expire", "k", "10", "nx", "xx"]), err(incompatible));
        assert_eq!(parse(&["expire", "k", "10", "nx", "gt"]), err(incompatible));
        assert_eq!(
            parse(&["expire", "k", "10", "gt", "lt"]),
            err("ERR GT and LT options at the same time are not compatible")
        );
        assert_eq!(
            parse(&["expire", "k", "10", "foo"]),
            err("ERR Unsupported option foo")
        );
        assert_eq!(
            parse(&["expire", "k", "abc", "foo"]),
            err("ERR Unsupported option foo")
        );
        assert_eq!(
            parse(&["expire", "k", "abc"]),
            err("ERR value is not an integer or out of range")
        );
        assert_eq!(
            parse(&["expire", "k", "9223372036854775807"]),
            err("ERR invalid expire time in 'expire' command")
        );
        assert_eq!(
            parse(&["expire", "k", "9223372036854775"]),
            err("ERR invalid expire time in 'expire' command")
        );
        assert_eq!(
            parse(&["expire", "k", "-9223372036854775808"]),
            err("ERR invalid expire time in 'expire' command")
        );
        assert_eq!(
            parse(&["pexpire", "k", "9223372036854775807"]),
            err("ERR invalid expire time in 'pexpire' command")
        );
        assert_eq!(
            parse(&["expireat", "k", "9223372036854775807"]),
            err("ERR invalid expire time in 'expireat' command")
        );
        assert!(parse(&["pexpireat", "k", "9223372036854775807"]).is_ok());
    }

    #[test]
    fn flush_modes() {
        assert_eq!(parse(&["flushall"]), Ok(Op::FlushAll));
        assert_eq!(parse(&["flushdb", "ASYNC"]), Ok(Op::FlushAll));
        assert_eq!(parse(&["flushall", "sync"]), Ok(Op::FlushAll));
        assert_eq!(parse(&["flushall", "foo"]), err("ERR syntax error"));
        assert_eq!(
            parse(&["flushall", "async", "sync"]),
            err("ERR syntax error")
        );
    }

    #[test]
    fn cursors_parse_like_strtoul() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b""), Some(0));
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"18446744073709551616"), None);
        assert_eq!(parse_cursor(b"abc"), None);
        assert_eq!(parse_cursor(b" 1"), None);
        assert_eq!(parse_cursor(b"-"), None);
    }

    #[test]
    fn key_commands_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let now = 1_000_000;
        assert_eq!(apply(&store, &["del", "nokey"], now), Reply::Integer(0));
        assert_eq!(apply(&store, &["flushall"], now), Reply::ok());
        for k in ["a", "b", "c"] {
            let op = Op::MSet(vec![(b(k), b("v"))]);
            let mut batch = store.begin();
            batch.apply(&op, now).unwrap();
            batch.commit().unwrap();
        }
        assert_eq!(read(&store, &["dbsize"], now), Reply::Integer(3));
        assert_eq!(
            read(&store, &["exists", "a", "a", "nokey"], now),
            Reply::Integer(2)
        );
        assert_eq!(read(&store, &["type", "a"], now), Reply::simple("string"));
        assert_eq!(read(&store, &["type", "nokey"], now), Reply::simple("none"));
        assert_eq!(read(&store, &["ttl", "a"], now), Reply::Integer(-1));
        assert_eq!(read(&store, &["ttl", "nokey"], now), Reply::Integer(-2));

        assert_eq!(
            apply(&store, &["pexpire", "a", "10400"], now),
            Reply::Integer(1)
        );
        assert_eq!(read(&store, &["ttl", "a"], now), Reply::Integer(10));
        assert_eq!(read(&store, &["ttl", "a"], now + 1_000), Reply::Integer(9));
        assert_eq!(read(&store, &["pttl", "a"], now), Reply::Integer(10_400));
        assert_eq!(
            read(&store, &["pexpiretime", "a"], now),
            Reply::Integer(1_010_400)
        );
        assert_eq!(
            read(&store, &["expiretime", "a"], now),
            Reply::Integer(1_010)
        );
        assert_eq!(
            read(&store, &["exists", "a"], now + 10_400),
            Reply::Integer(0)
        );
        assert_eq!(apply(&store, &["persist", "a"], now), Reply::Integer(1));
        assert_eq!(apply(&store, &["persist", "a"], now), Reply::Integer(0));
        assert_eq!(read(&store, &["ttl", "a"], now), Reply::Integer(-1));

        assert_eq!(
            apply(&store, &["rename", "nokey", "x"], now),
            Reply::error("ERR no such key")
        );
        assert_eq!(
            apply(&store, &["renamenx", "a", "b"], now),
            Reply::Integer(0)
        );
        assert_eq!(apply(&store, &["rename", "a", "z"], now), Reply::ok());
        assert_eq!(read(&store, &["exists", "a", "z"], now), Reply::Integer(1));

        let keys = read(&store, &["keys", "*"], now);
        let Reply::Array(mut keys) = keys else {
            panic!("{keys:?}")
        };
        keys.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
        assert_eq!(
            keys,
            vec![
                Reply::bulk(b("b")),
                Reply::bulk(b("c")),
                Reply::bulk(b("z"))
            ]
        );
        let Reply::Array(mut matched) = read(&store, &["keys", "[bz]"], now) else {
            panic!()
        };
        matched.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
        assert_eq!(matched, vec![Reply::bulk(b("b")), Reply::bulk(b("z"))]);

        let Reply::Array(page) = read(
            &store,
            &["scan", "0", "count", "100", "match", "*", "type", "STRING"],
            now,
        ) else {
            panic!()
        };
        assert_eq!(page[0], Reply::bulk(b("0")));
        assert!(matches!(&page[1], Reply::Array(k) if k.len() == 3));
        let Reply::Array(page) = read(&store, &["scan", "0", "type", "list"], now) else {
            panic!()
        };
        assert_eq!(page[1], Reply::Array(vec![]));
        assert_eq!(
            read(&store, &["scan", "abc"], now),
            Reply::error("ERR invalid cursor")
        );
        assert_eq!(
            read(&store, &["scan", "0", "count", "0"], now),
            Reply::error("ERR syntax error")
        );
        assert_eq!(
            read(&store, &["scan", "0", "count", "abc"], now),
            Reply::error("ERR value is not an integer or out of range")
        );
        assert_eq!(
            read(&store, &["scan", "0", "match"], now),
            Reply::error("ERR syntax error")
        );
        assert_eq!(
            read(&store, &["scan", "0", "foo", "bar"], now),
            Reply::error("ERR syntax error")
        );

        assert!(matches!(read(&store, &["randomkey"], now), Reply::Bulk(_)));
        assert_eq!(
            apply(&store, &["unlink", "b", "c", "z"], now),
            Reply::Integer(3)
        );
        assert_eq!(read(&store, &["randomkey"], now), Reply::Null);
        assert_eq!(read(&store, &["dbsize"], now), Reply::Integer(0));
    }

    #[test]
    fn table_matches_redis_command_info() {
        let rename = spec_of("rename");
        assert_eq!(
            (rename.arity, rename.first_key, rename.last_key, rename.step),
            (3, 1, 2, 1)
        );
        let del = spec_of("del");
        assert_eq!(
            (del.arity, del.first_key, del.last_key, del.step),
            (-2, 1, -1, 1)
        );
        assert!(del.flags.contains(Flags::WRITE));
        let scan = spec_of("scan");
        assert_eq!((scan.arity, scan.first_key), (-2, 0));
        assert!(spec_of("dbsize")
            .flags
            .contains(Flags::READONLY.with(Flags::FAST)));
        assert_eq!(spec_of("flushall").arity, -1);
        assert_eq!(spec_of("expire").arity, -3);
    }
}
