//! The connection and server commands of a real node (PING ECHO QUIT HELLO
//! SELECT CLIENT COMMAND CONFIG INFO DBSIZE TIME READONLY READWRITE) and the
//! wire protocol around them: pipelines, RESP3 reply shapes, inline
//! commands, and malformed or oversize frames sent raw over TCP, which get
//! `-ERR Protocol error: ...` and a closed connection while the node keeps
//! serving everyone else.
//!
//! Expected replies and raw bytes were taken from a real `redis-server` 7
//! given the same input; where raftis answers otherwise on purpose (one
//! database, READONLY without cluster mode, `appendonly yes` because every
//! write is in the fsynced Raft log), a comment says so.

mod common;
mod script;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Cluster, NodeTuning};
use redis::aio::MultiplexedConnection;
use redis::Value;
use script::{check, int, render, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a raw socket waits for bytes that must come.
const READ_DEADLINE: Duration = Duration::from_secs(10);

async fn one_node() -> (Cluster, MultiplexedConnection) {
    let cluster = Cluster::start(1, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let con = cluster.client(leader).await;
    (cluster, con)
}

/// A text reply (INFO, CLIENT INFO/LIST) as a string, whatever its RESP
/// type.
async fn text(con: &mut MultiplexedConnection, cmd: &redis::Cmd) -> String {
    match cmd.query_async::<Value>(con).await.unwrap() {
        Value::BulkString(b) => String::from_utf8(b).unwrap(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("not a text reply: {other:?}"),
    }
}

/// The `field:value` lines of an INFO reply.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
}

/// Reads exactly `expected.len()` bytes and compares them.
async fn expect_bytes(stream: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(READ_DEADLINE, stream.read_exact(&mut got))
        .await
        .expect("reply in time")
        .expect("reply before the connection closed");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

/// The server must close the connection, with nothing more to say.
async fn expect_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(READ_DEADLINE, stream.read_to_end(&mut rest))
        .await
        .expect("connection closed in time");
    // A reset instead of an orderly close also ends the connection.
    if read.is_ok() {
        assert_eq!(String::from_utf8_lossy(&rest), "", "bytes after the error");
    }
}

/// Sends raw bytes on a fresh connection.
async fn raw(cluster: &Cluster, id: u64, send: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(cluster.resp_addr(id)).await.unwrap();
    stream.write_all(send).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_server_commands_match_redis() {
    let (_cluster, mut con) = one_node().await;
    check(
        &mut con,
        r#"
        PING => PONG
        PING hello => "hello"
        PING a b => (error) ERR wrong number of arguments for 'ping' command
        ECHO hi => "hi"
        ECHO => (error) ERR wrong number of arguments for 'echo' command
        ECHO a b => (error) ERR wrong number of arguments for 'echo' command
        SELECT 0 => OK
        SELECT 16 => (error) ERR DB index is out of range
        SELECT -1 => (error) ERR DB index is out of range
        SELECT abc => (error) ERR value is not an integer or out of range
        SELECT => (error) ERR wrong number of arguments for 'select' command
        READONLY x => (error) ERR wrong number of arguments for 'readonly' command
        CLIENT SETNAME myname => OK
        CLIENT GETNAME => "myname"
        CLIENT SETNAME has\sspace => (error) ERR Client names cannot contain spaces, newlines or special characters.
        CLIENT SETNAME => (error) ERR wrong number of arguments for 'client|setname' command
        CLIENT SETNAME a b => (error) ERR wrong number of arguments for 'client|setname' command
        CLIENT GETNAME x => (error) ERR wrong number of arguments for 'client|getname' command
        CLIENT SETNAME \s => (error) ERR Client names cannot contain spaces, newlines or special characters.
        CLIENT FOO => (error) ERR unknown subcommand 'FOO'. Try CLIENT HELP.
        CLIENT => (error) ERR wrong number of arguments for 'client' command
        CLIENT ID x => (error) ERR wrong number of arguments for 'client|id' command
        CLIENT LIST TYPE foo => (error) ERR Unknown client type 'foo'
        CLIENT LIST ID abc => (error) ERR Invalid client ID
        CLIENT LIST FOO => (error) ERR syntax error
        CLIENT LIST ID 999999 => ""
        CLIENT SETNAME => (error) ERR wrong number of arguments for 'client|setname' command
        COMMAND INFO nosuch => [(nil)]
        COMMAND DOCS nosuch => []
        COMMAND FOO => (error) ERR unknown subcommand 'FOO'. Try COMMAND HELP.
        COMMAND COUNT x => (error) ERR wrong number of arguments for 'command|count' command
        COMMAND GETKEYS get k => ["k"]
        COMMAND GETKEYS mset a 1 b 2 => ["a", "b"]
        COMMAND GETKEYS nosuch a => (error) ERR Invalid command specified
        CONFIG GET save => ["save", ""]
        CONFIG GET nosuch => []
        CONFIG GET => (error) ERR wrong number of arguments for 'config|get' command
        CONFIG FOO => (error) ERR unknown subcommand 'FOO'. Try CONFIG HELP.
        CONFIG => (error) ERR wrong number of arguments for 'config' command
        CONFIG SET nosuch 1 => (error) ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'
        CONFIG SET maxclients abc => (error) ERR CONFIG SET failed (possibly related to argument 'maxclients') - argument couldn't be parsed into an integer
        CONFIG SET maxclients => (error) ERR wrong number of arguments for 'config|set' command
        HELLO 4 => (error) NOPROTO unsupported protocol version
        HELLO abc => (error) ERR Protocol version is not an integer or out of range
        HELLO 2 FOO => (error) ERR Syntax error in HELLO option 'FOO'
        HELLO 2 AUTH default => (error) ERR Syntax error in HELLO option 'AUTH'
        HELLO 2 AUTH nouser pw => (error) WRONGPASS invalid username-password pair or user is disabled.
        HELLO 2 SETNAME a\sb => (error) ERR Client names cannot contain spaces, newlines or special characters.
        TIME x => (error) ERR wrong number of arguments for 'time' command
        INFO nosuchsection => ""
        DBSIZE => (integer) 0
        NOSUCHCMD a b => (error) ERR unknown command 'NOSUCHCMD', with args beginning with: 'a' 'b' 
        nosuchcmd => (error) ERR unknown command 'nosuchcmd', with args beginning with: 
        AUTH pw => (error) ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?
        AUTH a b c => (error) ERR syntax error
        # One keyspace (Raft replicates one state machine): raftis answers
        # as Redis does when started with `databases 1`.
        SELECT 1 => (error) ERR DB index is out of range
        CONFIG GET databases => ["databases", "1"]
        # Redis 7.2's CLIENT SETINFO.
        CLIENT SETINFO lib-name mylib => OK
        CLIENT SETINFO lib-ver 1.0 => OK
        CLIENT SETINFO foo bar => (error) ERR Unrecognized option 'foo'
        CLIENT SETINFO lib-name a\sb => (error) ERR lib-name cannot contain spaces, newlines or special characters.
        # READONLY/READWRITE choose stale or linearizable reads; Redis
        # without cluster mode refuses them.
        READONLY => OK
        READWRITE => OK
        PING => PONG
        "#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_out_of_int_range_names_the_range() {
    let (_cluster, mut con) = one_node().await;
    check(
        &mut con,
        "SELECT 99999999999 => (error) ERR value is out of range, value must between -2147483648 and 2147483647",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_name_id_info_and_list() {
    let (cluster, mut con) = one_node().await;
    let mut other = cluster.client(1).await;
    let id = int(&mut con, "CLIENT ID").await;
    let other_id = int(&mut other, "CLIENT ID").await;
    assert!(id > 0 && other_id > 0 && id != other_id, "{id} {other_id}");
    check(
        &mut con,
        "CLIENT GETNAME => (nil)\nCLIENT SETNAME probe => OK\nCLIENT GETNAME => \"probe\"",
    )
    .await;

    let info = text(&mut con, redis::cmd("CLIENT").arg("INFO")).await;
    assert_eq!(info.lines().count(), 1, "{info}");
    let fields: Vec<&str> = info.split_whitespace().collect();
    assert!(fields.contains(&format!("id={id}").as_str()), "{info}");
    assert!(fields.contains(&"name=probe"), "{info}");
    assert!(fields.contains(&"db=0"), "{info}");
    assert!(fields.contains(&"cmd=client|info"), "{info}");

    let list = text(&mut con, redis::cmd("CLIENT").arg("LIST")).await;
    let ids: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert!(ids.contains(&format!("id={id}")), "{list}");
    assert!(ids.contains(&format!("id={other_id}")), "{list}");
    let only = text(
        &mut con,
        redis::cmd("CLIENT").arg("LIST").arg("ID").arg(other_id),
    )
    .await;
    assert_eq!(only.lines().count(), 1, "{only}");
    assert!(only.starts_with(&format!("id={other_id} ")), "{only}");

    // An empty name clears it.
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("")
        .query_async(&mut con)
        .await
        .unwrap();
    check(&mut con, "CLIENT GETNAME => (nil)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_introspection() {
    let (_cluster, mut con) = one_node().await;
    let count = int(&mut con, "COMMAND COUNT").await;
    let all: Vec<Value> = redis::cmd("COMMAND").query_async(&mut con).await.unwrap();
    assert_eq!(usize::try_from(count).unwrap(), all.len());
    let names: Vec<String> = all
        .iter()
        .map(|entry| match entry {
            Value::Array(fields) => match &fields[0] {
                Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("name {other:?}"),
            },
            other => panic!("entry {other:?}"),
        })
        .collect();
    for name in "ping echo quit hello select client command config info dbsize time readonly \
         readwrite get set setnx setex psetex getset getdel getex mget mset msetnx incr decr \
         incrby decrby incrbyfloat append strlen getrange setrange del unlink exists type rename \
         renamenx expire pexpire expireat pexpireat ttl pttl persist expiretime pexpiretime keys \
         scan randomkey flushdb flushall"
        .split_whitespace()
    {
        assert!(names.iter().any(|n| n == name), "COMMAND lacks {name}");
    }

    // Name, arity, flags, first key, last key, step: as Redis 7 reports.
    let render_head = |v: &Value| match v {
        Value::Array(entries) => match &entries[0] {
            Value::Array(fields) => fields[..6].iter().map(render).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    for (command, head) in [
        (
            "get",
            r#""get" (integer) 2 [readonly, fast] (integer) 1 (integer) 1 (integer) 1"#,
        ),
        (
            "set",
            r#""set" (integer) -3 [write, denyoom] (integer) 1 (integer) 1 (integer) 1"#,
        ),
        (
            "mset",
            r#""mset" (integer) -3 [write, denyoom] (integer) 1 (integer) -1 (integer) 2"#,
        ),
        (
            "rename",
            r#""rename" (integer) 3 [write] (integer) 1 (integer) 2 (integer) 1"#,
        ),
    ] {
        let info: Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(command)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(render_head(&info).join(" "), head);
    }

    let docs: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("get")
        .query_async(&mut con)
        .await
        .unwrap();
    let rendered = render(&docs);
    for part in [
        r#""get""#,
        r#""summary""#,
        r#""since", "1.0.0""#,
        r#""group", "string""#,
        r#""complexity", "O(1)""#,
    ] {
        assert!(rendered.contains(part), "{rendered} lacks {part}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_get_answers_what_clients_probe() {
    let (_cluster, mut con) = one_node().await;
    check(
        &mut con,
        r#"
        CONFIG GET save => ["save", ""]
        # Every write is in the Raft log, fsynced before it is acknowledged.
        CONFIG GET appendonly => ["appendonly", "yes"]
        CONFIG GET SAVE => ["save", ""]
        CONFIG GET nosuch => []
        CONFIG GET maxclients => ["maxclients", "10000"]
        CONFIG SET maxclients 5000 => OK
        CONFIG GET maxclients => ["maxclients", "5000"]
        CONFIG SET maxclients 0 => (error) ERR CONFIG SET failed (possibly related to argument 'maxclients') - argument must be between 1 and 4294967295 inclusive
        "#,
    )
    .await;
    let both: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .arg("appendonly")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(both.len(), 4, "{both:?}");
    assert!(both.contains(&"appendonly".to_owned()) && both.contains(&"save".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_dbsize_and_time_on_one_node() {
    let (_cluster, mut con) = one_node().await;
    check(
        &mut con,
        "DBSIZE => (integer) 0\nMSET a 1 b 2 => OK\nDBSIZE => (integer) 2",
    )
    .await;
    let info = text(&mut con, &redis::cmd("INFO")).await;
    for section in [
        "# Server",
        "# Clients",
        "# Replication",
        "# Keyspace",
        "# Raft",
    ] {
        assert!(info.lines().any(|l| l == section), "INFO lacks {section}");
    }
    assert_eq!(info_field(&info, "role"), Some("master"));
    assert!(info.lines().any(|l| l.starts_with("db0:keys=2,")), "{info}");
    let raft = text(&mut con, redis::cmd("INFO").arg("raft")).await;
    assert!(raft.starts_with("# Raft\r\n"), "{raft}");
    assert_eq!(info_field(&raft, "node_id"), Some("1"));
    assert_eq!(info_field(&raft, "raft_role"), Some("leader"));
    assert_eq!(info_field(&raft, "leader_id"), Some("1"));
    assert_eq!(info_field(&raft, "voters"), Some("1"));
    assert_eq!(info_field(&raft, "learners"), Some(""));
    let term: u64 = info_field(&raft, "term").unwrap().parse().unwrap();
    assert!(term >= 1);
    let commit: u64 = info_field(&raft, "commit_index").unwrap().parse().unwrap();
    let applied: u64 = info_field(&raft, "last_applied").unwrap().parse().unwrap();
    // The MSET was acknowledged, so it is committed and applied here.
    assert!(commit >= 2 && applied >= 2, "{raft}");
    assert!(!raft.contains("# Server"), "INFO raft shows only Raft");
    check(&mut con, "INFO nosuchsection => \"\"").await;

    let (secs, micros): (String, String) = redis::cmd("TIME").query_async(&mut con).await.unwrap();
    let secs: u64 = secs.parse().unwrap();
    let micros: u64 = micros.parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(secs.abs_diff(now) <= 5, "TIME {secs} vs {now}");
    assert!(micros < 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_keyspace_counts_keys_with_a_ttl() {
    let (_cluster, mut con) = one_node().await;
    check(&mut con, "SET a 1 EX 1000 => OK\nSET b 2 => OK").await;
    let info = text(&mut con, redis::cmd("INFO").arg("keyspace")).await;
    assert!(
        info.lines().any(|l| l.starts_with("db0:keys=2,expires=1,")),
        "{info}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn info_reports_roles_on_three_nodes() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    for id in cluster.ids() {
        let mut con = cluster.client(id).await;
        let info = text(&mut con, redis::cmd("INFO").arg("replication").arg("raft")).await;
        let raft = &info[info.find("# Raft").expect("raft section")..];
        let replication = &info[..info.find("# Raft").unwrap()];
        assert_eq!(info_field(raft, "node_id"), Some(id.to_string().as_str()));
        assert_eq!(
            info_field(raft, "leader_id"),
            Some(leader.to_string().as_str())
        );
        assert_eq!(info_field(raft, "voters"), Some("1,2,3"));
        assert_eq!(info_field(raft, "learners"), Some(""));
        for field in ["term", "commit_index", "last_applied"] {
            let value = info_field(raft, field).unwrap_or_else(|| panic!("no {field}"));
            assert!(value.parse::<u64>().is_ok(), "{field}:{value}");
        }
        if id == leader {
            assert_eq!(info_field(raft, "raft_role"), Some("leader"));
            assert_eq!(info_field(replication, "role"), Some("master"));
            assert_eq!(info_field(replication, "connected_slaves"), Some("2"));
        } else {
            assert_eq!(info_field(raft, "raft_role"), Some("follower"));
            assert_eq!(info_field(replication, "role"), Some("slave"));
            let port = cluster.resp_addr(leader).port().to_string();
            assert_eq!(info_field(replication, "master_port"), Some(port.as_str()));
            assert_eq!(info_field(replication, "master_link_status"), Some("up"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_answer_in_order_with_errors_in_place() {
    let (_cluster, mut con) = one_node().await;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe.cmd("SET").arg("p").arg("1");
    pipe.cmd("INCR").arg("p");
    pipe.cmd("GET").arg("p");
    pipe.cmd("SET").arg("p").arg("1").arg("EX").arg("0");
    pipe.cmd("NOSUCH");
    pipe.cmd("APPEND").arg("p").arg("x");
    pipe.cmd("INCR").arg("p");
    pipe.cmd("GET").arg("p");
    pipe.cmd("PING");
    pipe.cmd("DEL").arg("p");
    pipe.cmd("GET").arg("p");
    let replies: Vec<Value> = pipe.query_async(&mut con).await.unwrap();
    let rendered: Vec<String> = replies.iter().map(render).collect();
    assert_eq!(
        rendered,
        [
            "OK",
            "(integer) 2",
            "\"2\"",
            "(error) ERR invalid expire time in 'set' command",
            "(error) ERR unknown command 'NOSUCH', with args beginning with: ",
            "(integer) 2",
            "(error) ERR value is not an integer or out of range",
            "\"2x\"",
            "PONG",
            "(integer) 1",
            "(nil)",
        ]
    );

    // A long pipeline of writes applies every one, in order.
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("INCR").arg("n");
        pipe.cmd("APPEND").arg("log").arg(format!("{},", i % 10));
    }
    let replies: Vec<i64> = pipe.query_async(&mut con).await.unwrap();
    let counters: Vec<i64> = replies.iter().step_by(2).copied().collect();
    assert_eq!(counters, (1..=500).collect::<Vec<i64>>());
    let log: String = redis::cmd("GET")
        .arg("log")
        .query_async(&mut con)
        .await
        .unwrap();
    let expected: String = (0..500).map(|i| format!("{},", i % 10)).collect();
    assert_eq!(log, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_clients_get_resp3_shapes() {
    let cluster = Cluster::start(1, NodeTuning::default()).await;
    cluster.wait_for_leader().await;
    let client =
        redis::Client::open(format!("redis://{}/?protocol=resp3", cluster.resp_addr(1))).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let hello = run(&mut con, "HELLO 3").await;
    for part in [
        r#""server": "redis""#,
        r#""proto": (integer) 3"#,
        r#""mode": "standalone""#,
        r#""role": "master""#,
        r#""modules": []"#,
    ] {
        assert!(hello.starts_with('{') && hello.contains(part), "{hello}");
    }
    check(
        &mut con,
        r#"
        GET nosuch => (nil)
        CLIENT GETNAME => (nil)
        CONFIG GET save => {"save": ""}
        INCRBYFLOAT f 1.5 => "1.5"
        MGET f nosuch => ["1.5", (nil)]
        SCAN 0 => ["0", ["f"]]
        TTL f => (integer) -1
        "#,
    )
    .await;
    // INFO is verbatim text in RESP3.
    let info: Value = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        matches!(&info, Value::VerbatimString { text, .. } if text.contains("db0:keys=1")),
        "{info:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_on_the_wire() {
    let cluster = Cluster::start(1, NodeTuning::default()).await;
    cluster.wait_for_leader().await;
    let mut s = raw(
        &cluster,
        1,
        b"HELLO 3 SETNAME wire\r\nGET nosuch\r\nCONFIG GET save\r\nINCRBYFLOAT fl 1.5\r\n\
          CLIENT GETNAME\r\nDEL nosuch\r\nHELLO 2\r\nGET nosuch\r\nCONFIG GET save\r\n",
    )
    .await;
    expect_bytes(
        &mut s,
        b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n",
    )
    .await;
    // The version, then the rest of the map.
    let mut len_line = [0u8; 4];
    s.read_exact(&mut len_line).await.unwrap();
    assert_eq!(len_line[0], b'$');
    let len: usize = std::str::from_utf8(&len_line[1..2])
        .unwrap()
        .parse()
        .unwrap();
    let mut version = vec![0u8; len + 2];
    s.read_exact(&mut version).await.unwrap();
    expect_bytes(&mut s, b"$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:").await;
    let mut id_line = Vec::new();
    loop {
        let b = s.read_u8().await.unwrap();
        id_line.push(b);
        if b == b'\n' {
            break;
        }
    }
    expect_bytes(
        &mut s,
        b"$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n\
          _\r\n%1\r\n$4\r\nsave\r\n$0\r\n\r\n$3\r\n1.5\r\n$4\r\nwire\r\n:0\r\n",
    )
    .await;
    expect_bytes(&mut s, b"*14\r\n").await;
    // HELLO 2 answers a flat array; skip it by counting its 14 elements.
    for _ in 0..14 {
        let mut line = Vec::new();
        loop {
            let b = s.read_u8().await.unwrap();
            line.push(b);
            if b == b'\n' {
                break;
            }
        }
        if line[0] == b'$' {
            let n: usize = std::str::from_utf8(&line[1..line.len() - 2])
                .unwrap()
                .parse()
                .unwrap();
            let mut body = vec![0u8; n + 2];
            s.read_exact(&mut body).await.unwrap();
        } else if line[0] == b'*' {
            assert_eq!(line, b"*0\r\n");
        }
    }
    expect_bytes(&mut s, b"$-1\r\n*2\r\n$4\r\nsave\r\n$0\r\n\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_and_quit() {
    let cluster = Cluster::start(1, NodeTuning::default()).await;
    cluster.wait_for_leader().await;
    let mut s = raw(
        &cluster,
        1,
        b"PING\r\nECHO  \"a b\"  \r\nSET ik \"x\\ny\"\r\nGET ik\r\n\r\n   \r\nPING\nQUIT\r\nPING\r\n",
    )
    .await;
    // Blank lines are skipped, a bare \n ends a line, QUIT answers and
    // closes before the next command.
    expect_bytes(
        &mut s,
        b"+PONG\r\n$3\r\na b\r\n+OK\r\n$3\r\nx\ny\r\n+PONG\r\n+OK\r\n",
    )
    .await;
    expect_closed(&mut s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_close_only_their_connection() {
    let (cluster, mut bystander) = one_node().await;
    check(&mut bystander, "SET kept v => OK").await;
    let cases: [(&[u8], &[u8]); 9] = [
        (
            b"ECHO \"unbalanced\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (
            b"*1\r\n$4\r\nPING\r\n*x\r\n",
            b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\n$4\r\nECHO\r\n$abc\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2\r\n$4\r\nECHO\r\n$-5\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$-1\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        // One byte over the default proto-max-bulk-len (512 MB).
        (
            b"*1\r\n$536870913\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*3000000000\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n:1\r\n",
            b"-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"SET k v\r\n*1\r\n+PING\r\n",
            b"+OK\r\n-ERR Protocol error: expected '$', got '+'\r\n",
        ),
    ];
    for (send, reply) in cases {
        let mut s = raw(&cluster, 1, send).await;
        expect_bytes(&mut s, reply).await;
        expect_closed(&mut s).await;
    }

    // An inline request over 64 KB without a line end.
    let mut s = raw(&cluster, 1, &vec![b'a'; 70_000]).await;
    expect_bytes(&mut s, b"-ERR Protocol error: too big inline request\r\n").await;
    expect_closed(&mut s).await;

    // Not protocol errors: an unknown command or a lone RESP type byte is a
    // command error, and the connection keeps serving.
    let mut s = raw(&cluster, 1, b":1\r\n*0\r\n*-1\r\nPING\r\n").await;
    expect_bytes(
        &mut s,
        b"-ERR unknown command ':1', with args beginning with: \r\n+PONG\r\n",
    )
    .await;
    s.write_all(b"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n")
        .await
        .unwrap();
    expect_bytes(&mut s, b"$3\r\nabc\r\n").await;
    // Like Redis, the two bytes after a bulk string are skipped unchecked.
    s.write_all(b"*2\r\n$3\r\nGET\r\n$4\r\nkeptXXPING\r\n")
        .await
        .unwrap();
    expect_bytes(&mut s, b"$1\r\nv\r\n+PONG\r\n").await;

    // Everyone else was served throughout, and new connections still are.
    check(&mut bystander, "GET kept => \"v\"").await;
    let mut fresh = cluster.client(1).await;
    check(&mut fresh, "PING => PONG\nDBSIZE => (integer) 2").await;
}
