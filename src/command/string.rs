//! The string commands: GET SET SETNX SETEX PSETEX GETSET GETDEL GETEX MGET
//! MSET MSETNX INCR DECR INCRBY DECRBY INCRBYFLOAT APPEND STRLEN GETRANGE
//! SUBSTR SETRANGE.
//!
//! Reads (GET, MGET, STRLEN, GETRANGE) run on the local applied state after
//! the read barrier. Writes only parse here: they check what Redis checks
//! before looking at any data (syntax, integers, expire times) and return
//! the `Op` the executor proposes; everything that depends on the stored
//! value (WRONGTYPE, not an integer, overflow) is decided at apply, in
//! `storage::ApplyBatch`, so every replica decides the same.

use bytes::Bytes;

use super::args::{not_an_integer, syntax_error};
use super::{Args, CommandSpec, Flags, Handler};
use crate::cluster::op::{Deadline, GetExExpiry, Op, SetCondition, SetExpiry};
use crate::server::Reply;
use crate::storage::{Entry, Kind, Store};

const R: Flags = Flags::READONLY;
const RF: Flags = Flags::READONLY.with(Flags::FAST);
const WF: Flags = Flags::WRITE.with(Flags::FAST);
const WD: Flags = Flags::WRITE.with(Flags::DENYOOM);
const WDF: Flags = Flags::WRITE.with(Flags::DENYOOM).with(Flags::FAST);

/// The string family's commands, with Redis 7's arity, flags and key
/// positions.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("get", 2, RF, (1, 1, 1), Handler::Read(get)),
    CommandSpec::new("set", -3, WD, (1, 1, 1), Handler::Write(parse_set)),
    CommandSpec::new("setnx", 3, WDF, (1, 1, 1), Handler::Write(parse_setnx)),
    CommandSpec::new("setex", 4, WD, (1, 1, 1), Handler::Write(parse_setex)),
    CommandSpec::new("psetex", 4, WD, (1, 1, 1), Handler::Write(parse_psetex)),
    CommandSpec::new("getset", 3, WDF, (1, 1, 1), Handler::Write(parse_getset)),
    CommandSpec::new("getdel", 2, WF, (1, 1, 1), Handler::Write(parse_getdel)),
    CommandSpec::new("getex", -2, WF, (1, 1, 1), Handler::Write(parse_getex)),
    CommandSpec::new("mget", -2, RF, (1, -1, 1), Handler::Read(mget)),
    CommandSpec::new("mset", -3, WD, (1, -1, 2), Handler::Write(parse_mset)),
    CommandSpec::new("msetnx", -3, WD, (1, -1, 2), Handler::Write(parse_msetnx)),
    CommandSpec::new("incr", 2, WDF, (1, 1, 1), Handler::Write(parse_incr)),
    CommandSpec::new("decr", 2, WDF, (1, 1, 1), Handler::Write(parse_decr)),
    CommandSpec::new("incrby", 3, WDF, (1, 1, 1), Handler::Write(parse_incrby)),
    CommandSpec::new("decrby", 3, WDF, (1, 1, 1), Handler::Write(parse_decrby)),
    CommandSpec::new(
        "incrbyfloat",
        3,
        WDF,
        (1, 1, 1),
        Handler::Write(parse_incrbyfloat),
    ),
    CommandSpec::new("append", 3, WDF, (1, 1, 1), Handler::Write(parse_append)),
    CommandSpec::new("strlen", 2, RF, (1, 1, 1), Handler::Read(strlen)),
    CommandSpec::new("getrange", 4, R, (1, 1, 1), Handler::Read(getrange)),
    CommandSpec::new("substr", 4, R, (1, 1, 1), Handler::Read(getrange)),
    CommandSpec::new("setrange", 4, WD, (1, 1, 1), Handler::Write(parse_setrange)),
];

/// `WRONGTYPE Operation against a key holding the wrong kind of value`.
pub(super) fn wrong_type() -> Reply {
    Reply::Error(Bytes::from_static(
        b"WRONGTYPE Operation against a key holding the wrong kind of value",
    ))
}

/// `ERR invalid expire time in '<command>' command`.
pub(super) fn invalid_expire_time(command: &str) -> Reply {
    Reply::error(format!("ERR invalid expire time in '{command}' command"))
}

/// This node's wall clock in unix milliseconds. Parse functions use it only
/// to refuse expire times that would overflow once the leader adds its own
/// (nearly identical) clock, as Redis refuses them; apply never reads it.
pub(super) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn string_reply(entry: Option<Entry<'_>>, f: impl FnOnce(&[u8]) -> Reply, absent: Reply) -> Reply {
    match entry {
        None => absent,
        Some(e) if e.kind != Kind::String => wrong_type(),
        Some(e) => f(e.payload),
    }
}

fn get(store: &Store, args: &mut Args, now_ms: u64) -> Reply {
    let key = match args.next_bytes() {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    store
        .with_key(&key, now_ms, |e| {
            string_reply(e, |p| Reply::Bulk(Bytes::copy_from_slice(p)), Reply::Null)
        })
        .unwrap_or_else(Reply::from)
}

fn strlen(store: &Store, args: &mut Args, now_ms: u64) -> Reply {
    let key = match args.next_bytes() {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    store
        .with_key(&key, now_ms, |e| {
            string_reply(
                e,
                |p| Reply::Integer(i64::try_from(p.len()).unwrap_or(i64::MAX)),
                Reply::Integer(0),
            )
        })
        .unwrap_or_else(Reply::from)
}

fn mget(store: &Store, args: &mut Args, now_ms: u64) -> Reply {
    let keys = args.rest();
    let mut out = Vec::with_capacity(keys.len());
    let read = store.with_keys(&keys, now_ms, |e| {
        // MGET answers nil, not WRONGTYPE, for values that are not strings.
        out.push(match e {
            Some(e) if e.kind == Kind::String => Reply::Bulk(Bytes::copy_from_slice(e.payload)),
            _ => Reply::Null,
        });
    });
    match read {
        Ok(()) => Reply::Array(out),
        Err(error) => error.into(),
    }
}

fn getrange(store: &Store, args: &mut Args, now_ms: u64) -> Reply {
    let parsed = (|| Ok::<_, Reply>((args.next_bytes()?, args.next_i64()?, args.next_i64()?)))();
    let (key, start, end) = match parsed {
        Ok(parsed) => parsed,
        Err(reply) => return reply,
    };
    let empty = || Reply::Bulk(Bytes::new());
    store
        .with_key(&key, now_ms, |e| {
            string_reply(
                e,
                |p| {
                    p.get(string_range(p.len(), start, end))
                        .map_or_else(empty, |s| Reply::Bulk(Bytes::copy_from_slice(s)))
                },
                empty(),
            )
        })
        .unwrap_or_else(Reply::from)
}

/// GETRANGE's index rules (Redis 7.0): negative indexes count from the end,
/// both ends are clamped and inclusive; an empty range when start > end.
fn string_range(len: usize, start: i64, end: i64) -> std::ops::Range<usize> {
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return 0..0;
    }
    let len_i = i64::try_from(len).unwrap_or(i64::MAX);
    let mut start = if start < 0 {
        len_i.saturating_add(start)
    } else {
        start
    };
    let mut end = if end < 0 {
        len_i.saturating_add(end)
    } else {
        end
    };
    start = start.max(0);
    end = end.max(0);
    if end >= len_i {
        end = len_i - 1;
    }
    if start > end {
        return 0..0;
    }
    // Both are now within 0..len.
    let start = usize::try_from(start).unwrap_or(0);
    let end = usize::try_from(end).unwrap_or(0);
    start..end + 1
}

/// Which command's expiry options are being parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OptionsFor {
    Set,
    GetEx,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ExpireUnit {
    Ex,
    Px,
    ExAt,
    PxAt,
}

/// SET's and GETEX's options as parsed.
struct StringOptions {
    condition: SetCondition,
    get: bool,
    keep_ttl: bool,
    persist: bool,
    expiry: Option<Deadline>,
}

/// Parses SET / GETEX options the way Redis's
/// `parseExtendedStringArgumentsOrReply` does: repeating an option is fine,
/// conflicting ones are a syntax error, and the expire time is validated
/// only after every option parsed.
fn parse_string_options(args: &mut Args, command: OptionsFor) -> Result<StringOptions, Reply> {
    let mut opts = StringOptions {
        condition: SetCondition::Always,
        get: false,
        keep_ttl: false,
        persist: false,
        expiry: None,
    };
    let mut expire: Option<(ExpireUnit, Bytes)> = None;
    let is_set = command == OptionsFor::Set;
    while let Some(opt) = args.try_next() {
        let unit = match_unit(&opt);
        if is_set && opt.eq_ignore_ascii_case(b"NX") && opts.condition != SetCondition::IfPresent {
            opts.condition = SetCondition::IfAbsent;
        } else if is_set
            && opt.eq_ignore_ascii_case(b"XX")
            && opts.condition != SetCondition::IfAbsent
        {
            opts.condition = SetCondition::IfPresent;
        } else if is_set && opt.eq_ignore_ascii_case(b"GET") {
            opts.get = true;
        } else if is_set && opt.eq_ignore_ascii_case(b"KEEPTTL") && expire.is_none() {
            opts.keep_ttl = true;
        } else if !is_set && opt.eq_ignore_ascii_case(b"PERSIST") && expire.is_none() {
            opts.persist = true;
        } else if let Some(unit) = unit.filter(|u| {
            !opts.keep_ttl
                && !opts.persist
                && expire.as_ref().is_none_or(|(prev, _)| prev == u)
                && args.remaining() > 0
        }) {
            expire = Some((unit, args.next_bytes()?));
        } else {
            return Err(syntax_error());
        }
    }
    if let Some((unit, text)) = expire {
        let name = if is_set { "set" } else { "getex" };
        opts.expiry = Some(parse_positive_expire(&text, unit, name)?);
    }
    Ok(opts)
}

fn match_unit(opt: &[u8]) -> Option<ExpireUnit> {
    [
        (&b"EX"[..], ExpireUnit::Ex),
        (b"PX", ExpireUnit::Px),
        (b"EXAT", ExpireUnit::ExAt),
        (b"PXAT", ExpireUnit::PxAt),
    ]
    .into_iter()
    .find(|(name, _)| opt.eq_ignore_ascii_case(name))
    .map(|(_, unit)| unit)
}

/// Redis's `getExpireMillisecondsOrReply`: a positive integer, in range once
/// converted to milliseconds and (for relative units) added to the clock.
fn parse_positive_expire(text: &[u8], unit: ExpireUnit, command: &str) -> Result<Deadline, Reply> {
    let n = super::args::parse_i64(text).ok_or_else(not_an_integer)?;
    let seconds = matches!(unit, ExpireUnit::Ex | ExpireUnit::ExAt);
    if n <= 0 || (seconds && n > i64::MAX / 1000) {
        return Err(invalid_expire_time(command));
    }
    let ms = if seconds { n * 1000 } else { n };
    Ok(match unit {
        ExpireUnit::Ex | ExpireUnit::Px => {
            if unix_now_ms().checked_add(ms).is_none() {
                return Err(invalid_expire_time(command));
            }
            Deadline::After(ms)
        }
        ExpireUnit::ExAt | ExpireUnit::PxAt => Deadline::At(ms),
    })
}

fn parse_set(args: &mut Args) -> Result<Op, Reply> {
    let key = args.next_bytes()?;
    let value = args.next_bytes()?;
    let opts = parse_string_options(args, OptionsFor::Set)?;
    let expiry = match (opts.expiry, opts.keep_ttl) {
        (Some(deadline), _) => SetExpiry::Set(deadline),
        (None, true) => SetExpiry::Keep,
        (None, false) => SetExpiry::Clear,
    };
    Ok(Op::Set {
        key,
        value,
        condition: opts.condition,
        expiry,
        get: opts.get,
    })
}

fn parse_setnx(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::SetNx {
        key: args.next_bytes()?,
        value: args.next_bytes()?,
    })
}

fn parse_setex_like(args: &mut Args, unit: ExpireUnit, command: &str) -> Result<Op, Reply> {
    let key = args.next_bytes()?;
    let ttl = args.next_bytes()?;
    let value = args.next_bytes()?;
    let deadline = parse_positive_expire(&ttl, unit, command)?;
    Ok(Op::Set {
        key,
        value,
        condition: SetCondition::Always,
        expiry: SetExpiry::Set(deadline),
        get: false,
    })
}

fn parse_setex(args: &mut Args) -> Result<Op, Reply> {
    parse_setex_like(args, ExpireUnit::Ex, "setex")
}

fn parse_psetex(args: &mut Args) -> Result<Op, Reply> {
    parse_setex_like(args, ExpireUnit::Px, "psetex")
}

fn parse_getset(args: &mut Args) -> Result<Op, Reply> {
    let key = args.next_bytes()?;
    let value = args.next_bytes()?;
    Ok(Op::Set {
        key,
        value,
        condition: SetCondition::Always,
        expiry: SetExpiry::Clear,
        get: true,
    })
}

fn parse_getdel(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::GetDel(args.next_bytes()?))
}

/// GETEX is a write in the table (a handler kind is per command), so even
/// a plain `GETEX key` goes through the log, as `GetExExpiry::Keep`, which
/// applies as a read.
fn parse_getex(args: &mut Args) -> Result<Op, Reply> {
    let key = args.next_bytes()?;
    let opts = parse_string_options(args, OptionsFor::GetEx)?;
    let expiry = match (opts.expiry, opts.persist) {
        (Some(deadline), _) => GetExExpiry::Set(deadline),
        (None, true) => GetExExpiry::Persist,
        (None, false) => GetExExpiry::Keep,
    };
    Ok(Op::GetEx { key, expiry })
}

fn parse_pairs(args: &mut Args) -> Result<Vec<(Bytes, Bytes)>, Reply> {
    if args.remaining() == 0 || args.remaining() % 2 != 0 {
        let name = String::from_utf8_lossy(args.name()).to_ascii_lowercase();
        return Err(Reply::error(format!(
            "ERR wrong number of arguments for '{name}' command"
        )));
    }
    let mut pairs = Vec::with_capacity(args.remaining() / 2);
    while let (Some(key), Some(value)) = (args.try_next(), args.try_next()) {
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn parse_mset(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::MSet(parse_pairs(args)?))
}

fn parse_msetnx(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::MSetNx(parse_pairs(args)?))
}

fn parse_incr(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::IncrBy {
        key: args.next_bytes()?,
        delta: 1,
    })
}

fn parse_decr(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::IncrBy {
        key: args.next_bytes()?,
        delta: -1,
    })
}

fn parse_incrby(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::IncrBy {
        key: args.next_bytes()?,
        delta: args.next_i64()?,
    })
}

fn parse_decrby(args: &mut Args) -> Result<Op, Reply> {
    let key = args.next_bytes()?;
    let delta = args.next_i64()?;
    let delta = delta
        .checked_neg()
        .ok_or_else(|| Reply::error("ERR decrement would overflow"))?;
    Ok(Op::IncrBy { key, delta })
}

/// The increment is validated at apply, after the type check, as Redis
/// orders them.
fn parse_incrbyfloat(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::IncrByFloat {
        key: args.next_bytes()?,
        delta: args.next_bytes()?,
    })
}

fn parse_append(args: &mut Args) -> Result<Op, Reply> {
    Ok(Op::Append {
        key: args.next_bytes()?,
        value: args.next_bytes()?,
    })
}

/// A negative offset is refused here; the size limit is checked at apply,
/// after the type check, as Redis orders them.
fn parse_setrange(args: &mut Args) -> Result<Op, Reply> {
    let key = args.next_bytes()?;
    let offset = args.next_i64()?;
    let offset = u64::try_from(offset).map_err(|_| Reply::error("ERR offset is out of range"))?;
    Ok(Op::SetRange {
        key,
        offset,
        value: args.next_bytes()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::args::tests::args;
    use crate::storage::tests::open_store;

    fn parse(parts: &[&str]) -> Result<Op, Reply> {
        let spec = COMMANDS.iter().find(|c| c.name == parts[0]).unwrap();
        assert!(spec.arity_ok(parts.len()), "{parts:?} fails arity");
        match spec.handler {
            Handler::Write(f) => f(&mut args(parts)),
            _ => panic!("{} is not a write", parts[0]),
        }
    }

    fn read(store: &Store, parts: &[&str], now_ms: u64) -> Reply {
        let spec = COMMANDS.iter().find(|c| c.name == parts[0]).unwrap();
        match spec.handler {
            Handler::Read(f) => f(store, &mut args(parts), now_ms),
            _ => panic!("{} is not a read", parts[0]),
        }
    }

    fn err(msg: &str) -> Result<Op, Reply> {
        Err(Reply::error(msg))
    }

    fn b(s: &str) -> Bytes {
        Bytes::from(s.as_bytes().to_vec())
    }

    #[test]
    fn set_options_parse_like_redis() {
        assert_eq!(
            parse(&["set", "k", "v"]),
            Ok(Op::Set {
                key: b("k"),
                value: b("v"),
                condition: SetCondition::Always,
                expiry: SetExpiry::Clear,
                get: false
            })
        );
        assert_eq!(
            parse(&["set", "k", "v", "nx", "get", "px", "1500"]),
            Ok(Op::Set {
                key: b("k"),
                value: b("v"),
                condition: SetCondition::IfAbsent,
                expiry: SetExpiry::Set(Deadline::After(1500)),
                get: true
            })
        );
        assert_eq!(
            parse(&["set", "k", "v", "EX", "10", "ex", "20"]),
            Ok(Op::Set {
                key: b("k"),
                value: b("v"),
                condition: SetCondition::Always,
                expiry: SetExpiry::Set(Deadline::After(20_000)),
                get: false
            })
        );
        assert_eq!(
            parse(&["set", "k", "v", "xx", "keepttl"]),
            Ok(Op::Set {
                key: b("k"),
                value: b("v"),
                condition: SetCondition::IfPresent,
                expiry: SetExpiry::Keep,
                get: false
            })
        );
        assert_eq!(
            parse(&["set", "k", "v", "pxat", "9223372036854775807"]),
            Ok(Op::Set {
                key: b("k"),
                value: b("v"),
                condition: SetCondition::Always,
                expiry: SetExpiry::Set(Deadline::At(i64::MAX)),
                get: false
            })
        );
        assert_eq!(parse(&["set", "k", "v", "exat", "5"]).map(|_| ()), Ok(()));
    }

    #[test]
    fn set_errors_match_redis() {
        let invalid = "ERR invalid expire time in 'set' command";
        for bad in [
            ["ex", "0"],
            ["ex", "-1"],
            ["px", "0"],
            ["exat", "0"],
            ["ex", "9223372036854775807"],
            ["ex", "9223372036854775"],
        ] {
            assert_eq!(
                parse(&["set", "k", "v", bad[0], bad[1]]),
                err(invalid),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse(&["set", "k", "v", "ex", "abc"]),
            err("ERR value is not an integer or out of range")
        );
        for bad in [
            &["ex", "abc", "foo"][..],
            &["ex", "10", "px", "10"],
            &["nx", "xx"],
            &["keepttl", "ex", "10"],
            &["ex"],
            &["foo"],
            &["persist"],
        ] {
            let mut parts = vec!["set", "k", "v"];
            parts.extend_from_slice(bad);
            assert_eq!(parse(&parts), err("ERR syntax error"), "{bad:?}");
        }
    }

    #[test]
    fn setex_family() {
        assert_eq!(
            parse(&["setex", "k", "0", "v"]),
            err("ERR invalid expire time in 'setex' command")
        );
        assert_eq!(
            parse(&["psetex", "k", "-5", "v"]),
            err("ERR invalid expire time in 'psetex' command")
        );
        assert_eq!(
            parse(&["setex", "k", "abc", "v"]),
            err("ERR value is not an integer or out of range")
        );
        assert_eq!(
            parse(&["setex", "k", "3", "v"]),
            Ok(Op::Set {
                key: b("k"),
                value: b("v"),
                condition: SetCondition::Always,
                expiry: SetExpiry::Set(Deadline::After(3000)),
                get: false
            })
        );
        assert_eq!(
            parse(&["getset", "k", "v"]),
            Ok(Op::Set {
                key: b("k"),
                value: b("v"),
                condition: SetCondition::Always,
                expiry: SetExpiry::Clear,
                get: true
            })
        );
    }

    #[test]
    fn getex_options() {
        assert_eq!(
            parse(&["getex", "k"]),
            Ok(Op::GetEx {
                key: b("k"),
                expiry: GetExExpiry::Keep
            })
        );
        assert_eq!(
            parse(&["getex", "k", "persist", "PERSIST"]),
            Ok(Op::GetEx {
                key: b("k"),
                expiry: GetExExpiry::Persist
            })
        );
        assert_eq!(
            parse(&["getex", "k", "exat", "7"]),
            Ok(Op::GetEx {
                key: b("k"),
                expiry: GetExExpiry::Set(Deadline::At(7000))
            })
        );
        assert_eq!(
            parse(&["getex", "k", "ex", "0"]),
            err("ERR invalid expire time in 'getex' command")
        );
        assert_eq!(
            parse(&["getex", "k", "exat", "9223372036854775807"]),
            err("ERR invalid expire time in 'getex' command")
        );
        for bad in [
            &["persist", "ex", "10"][..],
            &["foo"],
            &["ex", "10", "px", "10"],
            &["ex"],
            &["nx"],
            &["keepttl"],
            &["get"],
        ] {
            let mut parts = vec!["getex", "k"];
            parts.extend_from_slice(bad);
            assert_eq!(parse(&parts), err("ERR syntax error"), "{bad:?}");
        }
    }

    #[test]
    fn counters_and_ranges() {
        assert_eq!(
            parse(&["incr", "k"]),
            Ok(Op::IncrBy {
                key: b("k"),
                delta: 1
            })
        );
        assert_eq!(
            parse(&["decr", "k"]),
            Ok(Op::IncrBy {
                key: b("k"),
                delta: -1
            })
        );
        assert_eq!(
            parse(&["decrby", "k", "5"]),
            Ok(Op::IncrBy {
                key: b("k"),
                delta: -5
            })
        );
        assert_eq!(
            parse(&["decrby", "k", "-9223372036854775808"]),
            err("ERR decrement would overflow")
        );
        assert_eq!(
            parse(&["incrby", "k", "abc"]),
            err("ERR value is not an integer or out of range")
        );
        assert_eq!(
            parse(&["setrange", "k", "-1", "x"]),
            err("ERR offset is out of range")
        );
        assert_eq!(
            parse(&["setrange", "k", "abc", "x"]),
            err("ERR value is not an integer or out of range")
        );
        assert_eq!(
            parse(&["setrange", "k", "3", "x"]),
            Ok(Op::SetRange {
                key: b("k"),
                offset: 3,
                value: b("x")
            })
        );
    }

    #[test]
    fn mset_needs_pairs() {
        assert_eq!(
            parse(&["mset", "a", "1", "b"]),
            err("ERR wrong number of arguments for 'mset' command")
        );
        assert_eq!(
            parse(&["msetnx", "a", "1", "b"]),
            err("ERR wrong number of arguments for 'msetnx' command")
        );
        assert_eq!(
            parse(&["mset", "a", "1", "b", "2"]),
            Ok(Op::MSet(vec![(b("a"), b("1")), (b("b"), b("2"))]))
        );
    }

    #[test]
    fn string_ranges_follow_redis() {
        // "hello  W" is 8 bytes long.
        assert_eq!(string_range(8, 0, -1), 0..8);
        assert_eq!(string_range(8, -100, 100), 0..8);
        assert_eq!(string_range(8, 5, 2), 0..0);
        assert_eq!(string_range(8, -1, -5), 0..0);
        assert_eq!(string_range(8, 0, -100), 0..1);
        assert_eq!(string_range(0, 0, -1), 0..0);
        assert_eq!(string_range(5, 1, 3), 1..4);
        assert_eq!(string_range(5, i64::MIN, i64::MAX), 0..5);
    }

    #[test]
    fn reads_against_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let mut batch = store.begin();
        batch
            .apply(&parse(&["set", "s", "hello"]).unwrap(), 1_000)
            .unwrap();
        batch
            .apply(&parse(&["set", "gone", "x", "px", "10"]).unwrap(), 1_000)
            .unwrap();
        batch.commit().unwrap();

        assert_eq!(read(&store, &["get", "s"], 1_000), Reply::bulk(b("hello")));
        assert_eq!(read(&store, &["get", "nokey"], 1_000), Reply::Null);
        assert_eq!(read(&store, &["get", "gone"], 1_005), Reply::bulk(b("x")));
        assert_eq!(read(&store, &["get", "gone"], 1_010), Reply::Null);
        assert_eq!(read(&store, &["strlen", "s"], 1_000), Reply::Integer(5));
        assert_eq!(read(&store, &["strlen", "nokey"], 1_000), Reply::Integer(0));
        assert_eq!(
            read(&store, &["getrange", "s", "1", "-2"], 1_000),
            Reply::bulk(b("ell"))
        );
        assert_eq!(
            read(&store, &["substr", "s", "10", "20"], 1_000),
            Reply::bulk(Bytes::new())
        );
        assert_eq!(
            read(&store, &["getrange", "s", "x", "1"], 1_000),
            Reply::error("ERR value is not an integer or out of range")
        );
        assert_eq!(
            read(&store, &["mget", "s", "nokey", "gone"], 1_010),
            Reply::Array(vec![Reply::bulk(b("hello")), Reply::Null, Reply::Null])
        );
    }

    #[test]
    fn table_matches_redis_command_info() {
        let find = |n: &str| COMMANDS.iter().find(|c| c.name == n).unwrap();
        let get = find("get");
        assert_eq!(
            (get.arity, get.first_key, get.last_key, get.step),
            (2, 1, 1, 1)
        );
        assert!(get.flags.contains(Flags::READONLY.with(Flags::FAST)));
        let mset = find("mset");
        assert_eq!(
            (mset.arity, mset.first_key, mset.last_key, mset.step),
            (-3, 1, -1, 2)
        );
        assert!(mset.flags.contains(Flags::WRITE.with(Flags::DENYOOM)));
        assert_eq!(find("set").arity, -3);
        assert_eq!(find("getex").arity, -2);
        assert_eq!(find("mget").last_key, -1);
    }
}
