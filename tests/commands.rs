//! Every string and key-space command of raftis, driven through a real node
//! with the `redis` crate, against Redis 7's behaviour: replies, their
//! types, exact error texts, and that the connection keeps serving after
//! each error (every script runs on one connection and ends with a PING).
//!
//! Most checks are golden scripts (see `script/mod.rs`) whose expected
//! replies were taken from a real `redis-server` 7 given the same lines.
//! What depends on time (TTLs, expiry) or on order Redis does not define
//! (KEYS, SCAN, RANDOMKEY) is checked with ranges, sets and polling with a
//! deadline instead. One node serves each test; the last test uses three,
//! to show that writes entering through a follower, and their errors,
//! reach every node.

mod common;
mod script;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{eventually_async, Cluster, NodeTuning};
use redis::aio::MultiplexedConnection;
use script::{check, int, run};

/// Longest a TTL may take to expire a key in these tests: far above the
/// TTLs used, so only a key that never expires fails.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(10);

async fn one_node() -> (Cluster, MultiplexedConnection) {
    let cluster = Cluster::start(1, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let con = cluster.client(leader).await;
    (cluster, con)
}

fn unix_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    i64::try_from(ms).unwrap()
}

/// The reply of `cmd` as bytes: for binary keys and values that a script
/// line cannot spell.
async fn bytes_of(con: &mut MultiplexedConnection, cmd: &redis::Cmd) -> Option<Vec<u8>> {
    cmd.query_async(con).await.unwrap()
}

/// KEYS' reply as a sorted set: Redis does not define its order.
async fn keys(con: &mut MultiplexedConnection, pattern: &str) -> BTreeSet<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async::<Vec<String>>(con)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_and_their_variants_match_redis() {
    let (_cluster, mut con) = one_node().await;
    check(
        &mut con,
        r#"
        GET s => (nil)
        SET s hello => OK
        GET s => "hello"
        SET s world NX => (nil)
        SET s world XX => OK
        GET s => "world"
        SET nx1 v XX => (nil)
        SET nx1 v NX => OK
        SET s v NX XX => (error) ERR syntax error
        SET s v XX NX => (error) ERR syntax error
        SET s v EX 10 PX 100 => (error) ERR syntax error
        SET s v EX => (error) ERR syntax error
        SET s v EX 0 => (error) ERR invalid expire time in 'set' command
        SET s v EX -5 => (error) ERR invalid expire time in 'set' command
        SET s v EX abc => (error) ERR value is not an integer or out of range
        SET s v PX 0 => (error) ERR invalid expire time in 'set' command
        SET s v EXAT 0 => (error) ERR invalid expire time in 'set' command
        SET s v PXAT -1 => (error) ERR invalid expire time in 'set' command
        SET s v EX 9223372036854775807 => (error) ERR invalid expire time in 'set' command
        SET s v EX 9223372036854775 => (error) ERR invalid expire time in 'set' command
        SET s v KEEPTTL EX 10 => (error) ERR syntax error
        SET s v EX 10 KEEPTTL => (error) ERR syntax error
        SET s v FOO => (error) ERR syntax error
        SET s v GET => "world"
        SET s v2 GET NX => "v"
        SET s v3 GET XX => "v"
        SET nokey v GET => (nil)
        SET nokey2 v GET XX => (nil)
        SET s v ex 100 nx => (nil)
        SET s v px 100 xx => OK
        SET s v EX 10 EX 20 => OK
        SET s v NX NX => (nil)
        SET s v GET GET => "v"
        SET s v KEEPTTL KEEPTTL => OK
        GETSET s x => "v"
        GETSET nokey3 y => (nil)
        GET nokey3 => "y"
        SETNX s z => (integer) 0
        SETNX snx z => (integer) 1
        GET snx => "z"
        SETEX sx 0 v => (error) ERR invalid expire time in 'setex' command
        SETEX sx -1 v => (error) ERR invalid expire time in 'setex' command
        SETEX sx abc v => (error) ERR value is not an integer or out of range
        SETEX sx 100 v => OK
        GET sx => "v"
        PSETEX px 0 v => (error) ERR invalid expire time in 'psetex' command
        PSETEX px 100000 v => OK
        GET px => "v"
        GETDEL px => "v"
        GETDEL px => (nil)
        GET px => (nil)
        GETEX s => "x"
        GETEX nokey => "v"
        GETEX s PERSIST => "x"
        GETEX s EX 100 => "x"
        GETEX s PX 0 => (error) ERR invalid expire time in 'getex' command
        GETEX s EX 10 PERSIST => (error) ERR syntax error
        GETEX s PERSIST EX 10 => (error) ERR syntax error
        GETEX s FOO => (error) ERR syntax error
        GETEX s NX => (error) ERR syntax error
        GETEX s EX => (error) ERR syntax error
        GETEX s EXAT 9223372036854775807 => (error) ERR invalid expire time in 'getex' command
        GETEX s PXAT 9223372036854775807 => "x"
        MGET s snx nokey => ["x", "z", "v"]
        PING => PONG
        "#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_key_and_counter_commands_match_redis() {
    let (_cluster, mut con) = one_node().await;
    check(
        &mut con,
        r#"
        SET s x => OK
        MSET a 1 b 2 => OK
        MSET a 1 b => (error) ERR wrong number of arguments for 'mset' command
        MSET a => (error) ERR wrong number of arguments for 'mset' command
        MGET a b c => ["1", "2", (nil)]
        MSETNX a 1 c 3 => (integer) 0
        MSETNX c 3 d 4 => (integer) 1
        MSETNX c 3 c 4 => (integer) 0
        MSETNX e 1 f => (error) ERR wrong number of arguments for 'msetnx' command
        MGET c d => ["3", "4"]
        INCR n => (integer) 1
        INCR n => (integer) 2
        DECR n => (integer) 1
        INCRBY n 10 => (integer) 11
        INCRBY n -20 => (integer) -9
        INCRBY n abc => (error) ERR value is not an integer or out of range
        INCRBY n 1.5 => (error) ERR value is not an integer or out of range
        DECRBY n 5 => (integer) -14
        DECRBY n -9223372036854775808 => (error) ERR decrement would overflow
        INCR s => (error) ERR value is not an integer or out of range
        SET big 9223372036854775807 => OK
        INCR big => (error) ERR increment or decrement would overflow
        SET small -9223372036854775808 => OK
        DECR small => (error) ERR increment or decrement would overflow
        DECRBY small 1 => (error) ERR increment or decrement would overflow
        INCRBY n 9223372036854775807 => (integer) 9223372036854775793
        SET lead 007 => OK
        INCR lead => (error) ERR value is not an integer or out of range
        SET sp \s1 => OK
        INCR sp => (error) ERR value is not an integer or out of range
        SET plus +1 => OK
        INCR plus => (error) ERR value is not an integer or out of range
        SET ws 1\s => OK
        INCR ws => (error) ERR value is not an integer or out of range
        INCRBY n +5 => (error) ERR value is not an integer or out of range
        INCRBY n 01 => (error) ERR value is not an integer or out of range
        SET f 10.50 => OK
        INCRBYFLOAT f 0.1 => "10.6"
        INCRBYFLOAT f -5 => "5.6"
        INCRBYFLOAT f abc => (error) ERR value is not a valid float
        INCRBYFLOAT s 1 => (error) ERR value is not a valid float
        INCRBYFLOAT nf 3 => "3"
        INCRBYFLOAT nf inf => (error) ERR increment would produce NaN or Infinity
        INCRBYFLOAT nf nan => (error) ERR value is not a valid float
        INCRBYFLOAT nf -inf => (error) ERR increment would produce NaN or Infinity
        INCRBYFLOAT nf \s1 => (error) ERR value is not a valid float
        INCRBYFLOAT nf 1\s => (error) ERR value is not a valid float
        INCRBYFLOAT nf2 .5 => "0.5"
        INCRBYFLOAT nf2 5. => "5.5"
        INCRBYFLOAT nf3 1e-400 => "0"
        SET ff 3.0 => OK
        INCRBYFLOAT ff 0 => "3"
        SET ff2 1.2e10 => OK
        INCRBYFLOAT ff2 0 => "12000000000"
        INCRBYFLOAT int7 7 => "7"
        INCRBYFLOAT i8 -0.0 => "0"
        # The documented INCRBYFLOAT examples, exact in decimal.
        SET mykey 5.0e3 => OK
        INCRBYFLOAT mykey 2.0e2 => "5200"
        SET t 1.5 => OK
        INCRBYFLOAT t 1e17 => "100000000000000001.5"
        INCRBYFLOAT neg -3.5 => "-3.5"
        INCRBYFLOAT neg 1.25 => "-2.25"
        PING => PONG
        "#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_range_commands_match_redis() {
    let (_cluster, mut con) = one_node().await;
    check(
        &mut con,
        r#"
        APPEND ap hello => (integer) 5
        APPEND ap \sworld => (integer) 11
        GET ap => "hello world"
        STRLEN ap => (integer) 11
        STRLEN absent => (integer) 0
        SET n 9223372036854775793 => OK
        APPEND n 1 => (integer) 20
        GET n => "92233720368547757931"
        GETRANGE ap 0 4 => "hello"
        GETRANGE ap -5 -1 => "world"
        GETRANGE ap 5 2 => ""
        GETRANGE ap -1 -5 => ""
        GETRANGE ap 0 -100 => "h"
        GETRANGE ap 100 200 => ""
        GETRANGE ap -100 -90 => "h"
        GETRANGE absent 0 -1 => ""
        GETRANGE ap a 1 => (error) ERR value is not an integer or out of range
        GETRANGE ap 0 9223372036854775807 => "hello world"
        SUBSTR ap 0 2 => "hel"
        SETRANGE ap 6 WORLD => (integer) 11
        GET ap => "hello WORLD"
        SETRANGE sr 5 x => (integer) 6
        GET sr => "\x00\x00\x00\x00\x00x"
        SETRANGE sr2 0 \s => (integer) 1
        SETRANGE sr3 5 \0 => (integer) 6
        SETRANGE sr4 -1 x => (error) ERR offset is out of range
        SETRANGE sr5 abc x => (error) ERR value is not an integer or out of range
        SETRANGE sr6 536870912 x => (error) ERR string exceeds maximum allowed size (proto-max-bulk-len)
        SETRANGE sr8 99999999999 x => (error) ERR string exceeds maximum allowed size (proto-max-bulk-len)
        SETRANGE nokey8 3 => (error) ERR wrong number of arguments for 'setrange' command
        SETRANGE ap 0 \0 => (integer) 11
        EXISTS sr2 sr3 sr4 sr6 => (integer) 2
        GET sr3 => "\x00\x00\x00\x00\x00\x00"
        SET bin a\0b => OK
        GET bin => "a\x00b"
        STRLEN bin => (integer) 3
        GET => (error) ERR wrong number of arguments for 'get' command
        SET k => (error) ERR wrong number of arguments for 'set' command
        GETEX => (error) ERR wrong number of arguments for 'getex' command
        MGET => (error) ERR wrong number of arguments for 'mget' command
        INCR => (error) ERR wrong number of arguments for 'incr' command
        INCRBY n => (error) ERR wrong number of arguments for 'incrby' command
        APPEND a => (error) ERR wrong number of arguments for 'append' command
        SETRANGE a 1 => (error) ERR wrong number of arguments for 'setrange' command
        GETRANGE a 1 => (error) ERR wrong number of arguments for 'getrange' command
        SETNX a => (error) ERR wrong number of arguments for 'setnx' command
        PING => PONG
        "#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_argument_counts_are_refused_like_redis() {
    let (_cluster, mut con) = one_node().await;
    check(
        &mut con,
        r#"
        GET => (error) ERR wrong number of arguments for 'get' command
        GET a b => (error) ERR wrong number of arguments for 'get' command
        SET a => (error) ERR wrong number of arguments for 'set' command
        SETNX a => (error) ERR wrong number of arguments for 'setnx' command
        SETNX a b c => (error) ERR wrong number of arguments for 'setnx' command
        SETEX a 1 => (error) ERR wrong number of arguments for 'setex' command
        SETEX a 1 v x => (error) ERR wrong number of arguments for 'setex' command
        PSETEX a 1 => (error) ERR wrong number of arguments for 'psetex' command
        GETSET a => (error) ERR wrong number of arguments for 'getset' command
        GETSET a b c => (error) ERR wrong number of arguments for 'getset' command
        GETDEL => (error) ERR wrong number of arguments for 'getdel' command
        GETDEL a b => (error) ERR wrong number of arguments for 'getdel' command
        GETEX => (error) ERR wrong number of arguments for 'getex' command
        MGET => (error) ERR wrong number of arguments for 'mget' command
        MSET => (error) ERR wrong number of arguments for 'mset' command
        MSET a => (error) ERR wrong number of arguments for 'mset' command
        MSETNX a => (error) ERR wrong number of arguments for 'msetnx' command
        INCR => (error) ERR wrong number of arguments for 'incr' command
        INCR a b => (error) ERR wrong number of arguments for 'incr' command
        DECR => (error) ERR wrong number of arguments for 'decr' command
        DECR a b => (error) ERR wrong number of arguments for 'decr' command
        INCRBY a => (error) ERR wrong number of arguments for 'incrby' command
        INCRBY a 1 2 => (error) ERR wrong number of arguments for 'incrby' command
        DECRBY a => (error) ERR wrong number of arguments for 'decrby' command
        INCRBYFLOAT a => (error) ERR wrong number of arguments for 'incrbyfloat' command
        APPEND a => (error) ERR wrong number of arguments for 'append' command
        STRLEN => (error) ERR wrong number of arguments for 'strlen' command
        STRLEN a b => (error) ERR wrong number of arguments for 'strlen' command
        GETRANGE a 1 => (error) ERR wrong number of arguments for 'getrange' command
        SETRANGE a 1 => (error) ERR wrong number of arguments for 'setrange' command
        DEL => (error) ERR wrong number of arguments for 'del' command
        UNLINK => (error) ERR wrong number of arguments for 'unlink' command
        EXISTS => (error) ERR wrong number of arguments for 'exists' command
        TYPE => (error) ERR wrong number of arguments for 'type' command
        RENAME a => (error) ERR wrong number of arguments for 'rename' command
        RENAME a b c => (error) ERR wrong number of arguments for 'rename' command
        RENAMENX a => (error) ERR wrong number of arguments for 'renamenx' command
        EXPIRE a => (error) ERR wrong number of arguments for 'expire' command
        PEXPIRE a => (error) ERR wrong number of arguments for 'pexpire' command
        EXPIREAT a => (error) ERR wrong number of arguments for 'expireat' command
        PEXPIREAT a => (error) ERR wrong number of arguments for 'pexpireat' command
        TTL => (error) ERR wrong number of arguments for 'ttl' command
        TTL a b => (error) ERR wrong number of arguments for 'ttl' command
        PTTL => (error) ERR wrong number of arguments for 'pttl' command
        PERSIST => (error) ERR wrong number of arguments for 'persist' command
        PERSIST a b => (error) ERR wrong number of arguments for 'persist' command
        EXPIRETIME => (error) ERR wrong number of arguments for 'expiretime' command
        PEXPIRETIME a b => (error) ERR wrong number of arguments for 'pexpiretime' command
        KEYS => (error) ERR wrong number of arguments for 'keys' command
        KEYS a b => (error) ERR wrong number of arguments for 'keys' command
        SCAN => (error) ERR wrong number of arguments for 'scan' command
        RANDOMKEY x => (error) ERR wrong number of arguments for 'randomkey' command
        DBSIZE x => (error) ERR wrong number of arguments for 'dbsize' command
        ECHO => (error) ERR wrong number of arguments for 'echo' command
        SELECT => (error) ERR wrong number of arguments for 'select' command
        READONLY x => (error) ERR wrong number of arguments for 'readonly' command
        READWRITE x => (error) ERR wrong number of arguments for 'readwrite' command
        TIME x => (error) ERR wrong number of arguments for 'time' command
        CLIENT => (error) ERR wrong number of arguments for 'client' command
        CONFIG => (error) ERR wrong number of arguments for 'config' command
        CONFIG GET => (error) ERR wrong number of arguments for 'config|get' command
        CLIENT SETNAME => (error) ERR wrong number of arguments for 'client|setname' command
        CLIENT GETNAME x => (error) ERR wrong number of arguments for 'client|getname' command
        CLIENT ID x => (error) ERR wrong number of arguments for 'client|id' command
        CLIENT INFO x => (error) ERR wrong number of arguments for 'client|info' command
        COMMAND COUNT x => (error) ERR wrong number of arguments for 'command|count' command
        PING => PONG
        "#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_commands_match_redis() {
    let (_cluster, mut con) = one_node().await;
    check(
        &mut con,
        r#"
        MSET a 1 b 2 c 3 => OK
        DEL a b nokey => (integer) 2
        DEL a => (integer) 0
        UNLINK c nokey => (integer) 1
        EXISTS a => (integer) 0
        MSET a 1 b 2 => OK
        EXISTS a a b nokey => (integer) 3
        TYPE a => string
        TYPE nokey => none
        DEL => (error) ERR wrong number of arguments for 'del' command
        EXISTS => (error) ERR wrong number of arguments for 'exists' command
        TYPE => (error) ERR wrong number of arguments for 'type' command
        TYPE a b => (error) ERR wrong number of arguments for 'type' command
        RENAME a a2 => OK
        GET a2 => "1"
        EXISTS a => (integer) 0
        RENAME nokey x => (error) ERR no such key
        RENAME a2 a2 => OK
        RENAME nokey nokey => (error) ERR no such key
        RENAMENX a2 b => (integer) 0
        RENAMENX a2 a3 => (integer) 1
        RENAMENX a3 a3 => (integer) 0
        RENAMENX nokey z => (error) ERR no such key
        PING => PONG
        "#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_family_matches_redis() {
    let (_cluster, mut con) = one_node().await;
    // TTL and PTTL of a fresh 100 s expiry are checked below as ranges: the
    // script's other lines do not depend on when they run.
    check(
        &mut con,
        r#"
        SET t v => OK
        EXPIRE t 100 => (integer) 1
        EXPIRE t 100 NX => (integer) 0
        EXPIRE t 200 XX => (integer) 1
        EXPIRE t 50 GT => (integer) 0
        EXPIRE t 300 GT => (integer) 1
        EXPIRE t 500 LT => (integer) 0
        EXPIRE t 100 LT => (integer) 1
        EXPIRE t 100 NX XX => (error) ERR NX and XX, GT or LT options at the same time are not compatible
        EXPIRE t 100 GT LT => (error) ERR GT and LT options at the same time are not compatible
        EXPIRE t 100 NX GT => (error) ERR NX and XX, GT or LT options at the same time are not compatible
        EXPIRE t 100 XX LT => (integer) 0
        EXPIRE t 100 FOO => (error) ERR Unsupported option FOO
        EXPIRE t abc => (error) ERR value is not an integer or out of range
        EXPIRE t 1.5 => (error) ERR value is not an integer or out of range
        EXPIRE t 9223372036854775807 => (error) ERR invalid expire time in 'expire' command
        EXPIRE t -9223372036854775808 => (error) ERR invalid expire time in 'expire' command
        EXPIRE t 9223372036854775 => (error) ERR invalid expire time in 'expire' command
        EXPIRE nokey 100 => (integer) 0
        PERSIST t => (integer) 1
        PERSIST t => (integer) 0
        PERSIST nokey => (integer) 0
        TTL t => (integer) -1
        EXPIRE t 100 XX => (integer) 0
        EXPIRE t 100 GT => (integer) 0
        EXPIRE t 100 LT => (integer) 1
        PERSIST t => (integer) 1
        EXPIRE t 100 NX => (integer) 1
        PEXPIRE t 100000 => (integer) 1
        PEXPIRE t abc => (error) ERR value is not an integer or out of range
        PEXPIRE t 9223372036854775807 => (error) ERR invalid expire time in 'pexpire' command
        EXPIREAT t 4102444800 => (integer) 1
        EXPIRETIME t => (integer) 4102444800
        PEXPIRETIME t => (integer) 4102444800000
        EXPIREAT t 9223372036854775807 => (error) ERR invalid expire time in 'expireat' command
        EXPIREAT t 9223372036854775 => (integer) 1
        PEXPIREAT t 4102444800000 => (integer) 1
        PEXPIRETIME t => (integer) 4102444800000
        PEXPIREAT t 9223372036854775807 => (integer) 1
        EXPIRETIME nokey => (integer) -2
        PEXPIRETIME nokey => (integer) -2
        SET np v => OK
        EXPIRETIME np => (integer) -1
        PEXPIRETIME np => (integer) -1
        TTL np => (integer) -1
        PTTL np => (integer) -1
        TTL nokey => (integer) -2
        PTTL nokey => (integer) -2
        EXPIRE np -1 => (integer) 1
        EXISTS np => (integer) 0
        SET np v => OK
        EXPIRE np 0 => (integer) 1
        EXISTS np => (integer) 0
        SET np v => OK
        EXPIREAT np 1 => (integer) 1
        EXISTS np => (integer) 0
        SET np v => OK
        PEXPIREAT np 0 => (integer) 1
        GET np => (nil)
        SET np v => OK
        EXPIRE np -1 XX => (integer) 0
        EXISTS np => (integer) 1
        EXPIRE np -1 NX => (integer) 1
        EXISTS np => (integer) 0
        SET np v => OK
        EXPIRE np -1 GT => (integer) 0
        EXISTS np => (integer) 1
        EXPIRE np -1 LT => (integer) 1
        EXISTS np => (integer) 0
        EXPIRE => (error) ERR wrong number of arguments for 'expire' command
        TTL => (error) ERR wrong number of arguments for 'ttl' command
        PERSIST => (error) ERR wrong number of arguments for 'persist' command
        RENAME a => (error) ERR wrong number of arguments for 'rename' command
        PING => PONG
        "#,
    )
    .await;

    check(&mut con, "SET t v EX 100 => OK").await;
    let ttl = int(&mut con, "TTL t").await;
    assert!((99..=100).contains(&ttl), "TTL {ttl}");
    let pttl = int(&mut con, "PTTL t").await;
    assert!((90_000..=100_000).contains(&pttl), "PTTL {pttl}");
    check(&mut con, "PEXPIRE t 5500 => (integer) 1").await;
    let ttl = int(&mut con, "TTL t").await;
    // Rounded to the nearest second, as Redis does: 5.5 s reads as 6 until
    // half a millisecond has passed, then 5.
    assert!((5..=6).contains(&ttl), "TTL {ttl}");
    let at = unix_ms() + 60_000;
    check(
        &mut con,
        &format!("PEXPIREAT t {at} => (integer) 1\nPEXPIRETIME t => (integer) {at}"),
    )
    .await;
    let pttl = int(&mut con, "PTTL t").await;
    assert!((50_000..=60_000).contains(&pttl), "PTTL {pttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_keep_or_clear_the_ttl_like_redis() {
    let (_cluster, mut con) = one_node().await;
    check(
        &mut con,
        r#"
        FLUSHALL => OK
        SET k v PXAT 4102444800123 => OK
        PEXPIRETIME k => (integer) 4102444800123
        EXPIRETIME k => (integer) 4102444800
        SET k v PXAT 4102444800623 => OK
        EXPIRETIME k => (integer) 4102444801
        SET k v2 KEEPTTL => OK
        PEXPIRETIME k => (integer) 4102444800623
        SET k v3 => OK
        TTL k => (integer) -1
        SET c 1 PXAT 4102444800623 => OK
        INCR c => (integer) 2
        APPEND c 0 => (integer) 2
        SETRANGE c 0 3 => (integer) 2
        PEXPIRETIME c => (integer) 4102444800623
        RENAME c d => OK
        PEXPIRETIME d => (integer) 4102444800623
        GETSET d 5 => "30"
        TTL d => (integer) -1
        SET d 5 PXAT 4102444800623 => OK
        MSET d 6 => OK
        TTL d => (integer) -1
        SET d 5 PXAT 4102444800623 => OK
        INCRBYFLOAT d 1.5 => "6.5"
        PEXPIRETIME d => (integer) 4102444800623
        GETEX d PXAT 4102444800999 => "6.5"
        PEXPIRETIME d => (integer) 4102444800999
        GETEX d PERSIST => "6.5"
        TTL d => (integer) -1
        SET e v PXAT 4102444800623 => OK
        SETNX e w => (integer) 0
        PEXPIRETIME e => (integer) 4102444800623
        MSETNX e 1 f 2 => (integer) 0
        PEXPIRETIME e => (integer) 4102444800623
        SET e v PXAT 4102444800623 => OK
        SET e w NX => (nil)
        SET e w XX => OK
        TTL e => (integer) -1
        SET e v PXAT 4102444800623 => OK
        SET e w GET => "v"
        TTL e => (integer) -1
        SET x v PXAT 4102444800623 => OK
        RENAME e x => OK
        TTL x => (integer) -1
        SET x v PXAT 4102444800623 => OK
        SET y w => OK
        RENAME y x => OK
        TTL x => (integer) -1
        PING => PONG
        "#,
    )
    .await;

    // Relative expiries of every command that sets one.
    for (line, low, high) in [
        ("SET k v EX 100", 99_000, 100_000),
        ("SET k v PX 100000", 99_000, 100_000),
        ("SETEX k 100 v", 99_000, 100_000),
        ("PSETEX k 100000 v", 99_000, 100_000),
        ("GETEX k EX 200", 199_000, 200_000),
        ("GETEX k PX 300000", 299_000, 300_000),
        ("EXPIRE k 400", 399_000, 400_000),
        ("PEXPIRE k 500000", 499_000, 500_000),
    ] {
        let reply = run(&mut con, line).await;
        assert!(
            ["OK", "\"v\"", "(integer) 1"].contains(&reply.as_str()),
            "{line}: {reply}"
        );
        let pttl = int(&mut con, "PTTL k").await;
        assert!((low..=high).contains(&pttl), "{line}: PTTL {pttl}");
    }
    let at_seconds = unix_ms() / 1000 + 1000;
    check(
        &mut con,
        &format!(
            "SET k v EXAT {at_seconds} => OK\nEXPIRETIME k => (integer) {at_seconds}\n\
             GETEX k EXAT {} => \"v\"\nEXPIRETIME k => (integer) {}\n\
             EXPIREAT k {at_seconds} => (integer) 1\nPEXPIRETIME k => (integer) {}",
            at_seconds + 1,
            at_seconds + 1,
            at_seconds * 1000
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_vanish_everywhere() {
    let (cluster, mut con) = one_node().await;
    check(
        &mut con,
        "SET a v PX 100 => OK\nSET b v => OK\nPEXPIRE b 100 => (integer) 1\n\
         SET c v => OK\nSETEX d 1 v => OK\nSET kept v PX 100 => OK\nSET kept w => OK",
    )
    .await;
    // A SET without options clears the TTL: `kept` must outlive the others.
    eventually_async(EXPIRY_DEADLINE, || {
        let mut con = con.clone();
        async move { run(&mut con, "EXISTS a b d").await == "(integer) 0" }
    })
    .await;
    check(
        &mut con,
        r#"
        GET a => (nil)
        TTL b => (integer) -2
        PTTL d => (integer) -2
        MGET a b c d kept => [(nil), (nil), "v", (nil), "w"]
        TTL kept => (integer) -1
        GETEX a PERSIST => (nil)
        PERSIST b => (integer) 0
        EXPIRE d 100 => (integer) 0
        RENAME a z => (error) ERR no such key
        INCR a => (integer) 1
        "#,
    )
    .await;
    assert_eq!(keys(&mut con, "*").await, set_of(&["a", "c", "kept"]));
    // The leader deletes what expired; DBSIZE counts stored keys, so it
    // drops once that deletion is applied.
    eventually_async(EXPIRY_DEADLINE, || {
        let mut con = con.clone();
        async move { int(&mut con, "DBSIZE").await == 3 }
    })
    .await;
    assert_eq!(cluster.key_count(1), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scan_randomkey_and_flush_match_redis() {
    let (_cluster, mut con) = one_node().await;
    check(
        &mut con,
        r#"
        MSET k1 1 k2 2 k3 3 key 4 other 5 => OK
        KEYS nomatch => []
        KEYS => (error) ERR wrong number of arguments for 'keys' command
        DBSIZE => (integer) 5
        DBSIZE x => (error) ERR wrong number of arguments for 'dbsize' command
        RANDOMKEY x => (error) ERR wrong number of arguments for 'randomkey' command
        FLUSHDB => OK
        DBSIZE => (integer) 0
        RANDOMKEY => (nil)
        KEYS * => []
        SET only v => OK
        RANDOMKEY => "only"
        FLUSHDB ASYNC => OK
        FLUSHDB SYNC => OK
        FLUSHDB FOO => (error) ERR syntax error
        FLUSHALL ASYNC => OK
        FLUSHALL sync => OK
        FLUSHALL FOO => (error) ERR syntax error
        FLUSHALL SYNC SYNC => (error) ERR syntax error
        SCAN 0 COUNT 0 => (error) ERR syntax error
        SCAN 0 COUNT -1 => (error) ERR syntax error
        SCAN 0 COUNT abc => (error) ERR value is not an integer or out of range
        SCAN 0 MATCH => (error) ERR syntax error
        SCAN 0 FOO bar => (error) ERR syntax error
        SCAN abc => (error) ERR invalid cursor
        SCAN -1 => ["0", []]
        SCAN 1.5 => (error) ERR invalid cursor
        SCAN 0 TYPE string => ["0", []]
        SCAN 0 TYPE foo => ["0", []]
        SCAN => (error) ERR wrong number of arguments for 'scan' command
        PING => PONG
        "#,
    )
    .await;

    check(&mut con, "MSET k1 1 k2 2 k3 3 key 4 other 5 => OK").await;
    assert_eq!(keys(&mut con, "k?").await, set_of(&["k1", "k2", "k3"]));
    assert_eq!(
        keys(&mut con, "*").await,
        set_of(&["k1", "k2", "k3", "key", "other"])
    );
    assert_eq!(keys(&mut con, "k[12]").await, set_of(&["k1", "k2"]));
    assert_eq!(keys(&mut con, "k[^1]*").await, set_of(&["k2", "k3", "key"]));
    assert_eq!(keys(&mut con, "*e*").await, set_of(&["key", "other"]));
    assert_eq!(keys(&mut con, "k\\?").await, set_of(&[]));

    let all = set_of(&["k1", "k2", "k3", "key", "other"]);
    for _ in 0..20 {
        let key: String = redis::cmd("RANDOMKEY").query_async(&mut con).await.unwrap();
        assert!(all.contains(&key), "RANDOMKEY gave {key}");
    }

    // A full SCAN returns every key present throughout, with any COUNT, and
    // MATCH / TYPE filter what it returns.
    let mut pipe = redis::pipe();
    for i in 0..60 {
        pipe.set(format!("scan:{i}"), i).ignore();
    }
    pipe.query_async::<()>(&mut con).await.unwrap();
    for (options, expected) in [
        (vec![], 65),
        (vec!["COUNT", "1"], 65),
        (vec!["COUNT", "7"], 65),
        (vec!["COUNT", "1000"], 65),
        (vec!["MATCH", "scan:1*"], 11),
        (vec!["MATCH", "scan:1*", "COUNT", "3"], 11),
        (vec!["TYPE", "string"], 65),
        (vec!["TYPE", "STRING", "MATCH", "k*"], 4),
        (vec!["TYPE", "hash"], 0),
    ] {
        let mut seen = BTreeSet::new();
        let mut cursor = "0".to_owned();
        let mut calls = 0;
        loop {
            let (next, batch): (String, Vec<String>) = redis::cmd("SCAN")
                .arg(&cursor)
                .arg(&options)
                .query_async(&mut con)
                .await
                .unwrap();
            seen.extend(batch);
            calls += 1;
            assert!(calls < 1000, "SCAN {options:?} does not finish");
            if next == "0" {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen.len(), expected, "SCAN {options:?}: {seen:?}");
    }
    check(
        &mut con,
        "FLUSHALL => OK\nDBSIZE => (integer) 0\nSCAN 0 => [\"0\", []]",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_values_are_binary_safe() {
    let (_cluster, mut con) = one_node().await;
    let key: &[u8] = b"k\r\n\0\xff*?[ ";
    let value: Vec<u8> = (0..=255u8).collect();
    let ok: String = redis::cmd("SET")
        .arg(key)
        .arg(&value)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(
        bytes_of(&mut con, redis::cmd("GET").arg(key)).await,
        Some(value.clone())
    );
    let n: i64 = redis::cmd("APPEND")
        .arg(key)
        .arg(b"\r\n")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(n, 258);
    assert_eq!(
        bytes_of(&mut con, redis::cmd("GETRANGE").arg(key).arg(-3).arg(-1)).await,
        Some(b"\xff\r\n".to_vec())
    );
    let listed: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(listed, vec![key.to_vec()]);
    let ok: String = redis::cmd("RENAME")
        .arg(key)
        .arg(b"\0")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(ok, "OK");
    let found: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(key)
        .arg(b"\0")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(found[0], None);
    assert_eq!(found[1].as_ref().map(Vec::len), Some(258));
    let empty: Option<Vec<u8>> = {
        let _: () = redis::cmd("SET")
            .arg("")
            .arg("")
            .query_async(&mut con)
            .await
            .unwrap();
        bytes_of(&mut con, redis::cmd("GET").arg("")).await
    };
    assert_eq!(empty, Some(Vec::new()));
    check(
        &mut con,
        "STRLEN \\0 => (integer) 258\nEXISTS \\0 => (integer) 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_a_follower_reach_every_node() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    let mut con = cluster.client(followers[0]).await;
    // Every reply, errors decided at apply included, comes back to the
    // follower's client as the leader computed it.
    check(
        &mut con,
        r#"
        SET s hello => OK
        APPEND s \sworld => (integer) 11
        SETRANGE s 0 H => (integer) 11
        MSET a 1 b 2 gone x => OK
        INCRBY a 41 => (integer) 42
        INCRBYFLOAT b 0.5 => "2.5"
        INCR s => (error) ERR value is not an integer or out of range
        RENAME nokey x => (error) ERR no such key
        SET s v EX 0 => (error) ERR invalid expire time in 'set' command
        RENAME b c => OK
        PEXPIREAT c 4102444800623 => (integer) 1
        GETDEL gone => "x"
        SETNX a 0 => (integer) 0
        MSETNX a 0 z 0 => (integer) 0
        DEL z => (integer) 0
        "#,
    )
    .await;
    // Linearizable reads on every node see all of it; READONLY on the
    // other follower sees it once applied there.
    let expected = r#"
        MGET s a b c gone => ["Hello world", "42", (nil), "2.5", (nil)]
        PEXPIRETIME c => (integer) 4102444800623
        TTL a => (integer) -1
        EXISTS s a b c gone => (integer) 3
        DBSIZE => (integer) 3
        "#;
    for id in cluster.ids() {
        let mut c = cluster.client(id).await;
        check(&mut c, expected).await;
    }
    let mut stale = cluster.client(followers[1]).await;
    check(&mut stale, "READONLY => OK\nSET late v => OK").await;
    eventually_async(Duration::from_secs(10), || {
        let mut c = stale.clone();
        async move { run(&mut c, "GET late").await == "\"v\"" }
    })
    .await;
    check(
        &mut stale,
        "FLUSHALL => OK\nREADWRITE => OK\nDBSIZE => (integer) 0",
    )
    .await;
    for id in cluster.ids() {
        let mut c = cluster.client(id).await;
        check(&mut c, "DBSIZE => (integer) 0\nGET s => (nil)").await;
    }
}
