//! `redis-cli` against a three-node cluster, always through a follower, so
//! that every write is forwarded to the leader and every read goes through
//! the read index: one-shot commands, commands read from stdin (`-x`, a
//! script of commands, `--pipe` mass insertion), RESP3 (`-3`, `HELLO 3`),
//! and how an error reply is printed and reflected in the exit status.
//!
//! The expected texts and exit statuses are what redis-cli 7 prints for the
//! same replies from a real Redis: when stdout is not a terminal it prints
//! raw replies unless given `--no-raw`, exits 0 after an error reply unless
//! given `-e`, and with `-e` prints the error on stderr and exits 1.

use std::process::Command;
use std::time::Duration;

use crate::harness::ProcessCluster;
use crate::tools::{self, Output};

/// One redis-cli invocation may take this long; a command waits at most
/// the server's request timeout (5 s).
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `redis-cli -p <node's port> args...` with `stdin` as input.
fn cli(cluster: &ProcessCluster, id: u64, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(tools::redis_cli());
    cmd.arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(cluster.port(id).to_string())
        .args(args);
    tools::run(cmd, stdin, CLI_TIMEOUT)
}

/// Runs a command that must succeed and returns its stdout.
fn cli_ok(cluster: &ProcessCluster, id: u64, args: &[&str]) -> String {
    let out = cli(cluster, id, args, None);
    out.assert_success(&format!("redis-cli -p <node {id}> {}", args.join(" ")));
    out.stdout
}

/// A command in the RESP protocol, as `redis-cli --pipe` wants its input.
fn resp_command(args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    out
}

#[test]
fn set_on_a_follower_is_read_back_on_every_node() {
    tools::redis_cli();
    let cluster = ProcessCluster::start(3);
    let follower = cluster.followers()[0];

    assert_eq!(cli_ok(&cluster, follower, &["SET", "k", "v"]), "OK\n");
    for id in cluster.ids() {
        assert_eq!(
            cli_ok(&cluster, id, &["GET", "k"]),
            "v\n",
            "GET k on node {id}"
        );
        // Redis's own formatting of the same reply.
        assert_eq!(
            cli_ok(&cluster, id, &["--no-raw", "GET", "k"]),
            "\"v\"\n",
            "GET k --no-raw on node {id}"
        );
    }
    assert_eq!(
        cli_ok(&cluster, follower, &["--no-raw", "GET", "missing"]),
        "(nil)\n"
    );
}

#[test]
fn stdin_commands_x_argument_and_pipe_mode() {
    tools::redis_cli();
    let cluster = ProcessCluster::start(3);
    let follower = cluster.followers()[0];

    // Commands read one per line from stdin, answered in order.
    let script = b"SET n 1\nINCR n\nINCRBY n 40\nGET n\n";
    let out = cli(&cluster, follower, &[], Some(script));
    out.assert_success("redis-cli < script");
    assert_eq!(out.stdout, "OK\n2\n42\n42\n", "{out}");

    // -x: the last argument is stdin, byte for byte (newlines included).
    let blob = "line one\nline two\n\ttabbed";
    let out = cli(
        &cluster,
        follower,
        &["-x", "SET", "blob"],
        Some(blob.as_bytes()),
    );
    out.assert_success("redis-cli -x SET blob");
    assert_eq!(out.stdout, "OK\n", "{out}");

    // --pipe: mass insertion of raw RESP, with redis-cli's own summary.
    const KEYS: usize = 300;
    let mut input = String::new();
    for i in 0..KEYS {
        input.push_str(&resp_command(&[
            "SET",
            &format!("pipe:{i}"),
            &format!("value-{i}"),
        ]));
        input.push_str(&resp_command(&["INCR", "pipe:count"]));
    }
    let out = cli(&cluster, follower, &["--pipe"], Some(input.as_bytes()));
    out.assert_success("redis-cli --pipe");
    assert!(
        out.stdout
            .contains(&format!("errors: 0, replies: {}", 2 * KEYS)),
        "unexpected --pipe summary: {out}"
    );

    // Everything is on every node, read through each node's read index.
    let keys: Vec<String> = (0..KEYS).map(|i| format!("pipe:{i}")).collect();
    let expected: Vec<Option<String>> = (0..KEYS).map(|i| Some(format!("value-{i}"))).collect();
    for id in cluster.ids() {
        let mut con = cluster.connect(id);
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
        assert_eq!(values, expected, "pipe:* on node {id}");
        let count: i64 = redis::cmd("GET").arg("pipe:count").query(&mut con).unwrap();
        assert_eq!(count, KEYS as i64, "pipe:count on node {id}");
        let stored: Vec<u8> = redis::cmd("GET").arg("blob").query(&mut con).unwrap();
        assert_eq!(stored, blob.as_bytes(), "blob on node {id}");
    }
}

#[test]
fn resp3_hello_and_replies() {
    tools::redis_cli();
    let cluster = ProcessCluster::start(3);
    let follower = cluster.followers()[0];

    // redis-cli -3 sends HELLO 3 itself; the explicit HELLO 3 then answers
    // with a RESP3 map, which redis-cli prints as `key => value` lines.
    let hello = cli_ok(&cluster, follower, &["-3", "--no-raw", "HELLO", "3"]);
    assert!(
        hello.contains("\"proto\" => (integer) 3"),
        "HELLO 3 did not report protocol 3:\n{hello}"
    );
    assert!(
        hello.contains("\"server\" =>"),
        "HELLO 3 has no server field:\n{hello}"
    );

    assert_eq!(
        cli_ok(&cluster, follower, &["-3", "--no-raw", "SET", "r3", "x"]),
        "OK\n"
    );
    assert_eq!(
        cli_ok(&cluster, follower, &["-3", "--no-raw", "GET", "r3"]),
        "\"x\"\n"
    );
    // RESP3 null.
    assert_eq!(
        cli_ok(&cluster, follower, &["-3", "--no-raw", "GET", "nothing"]),
        "(nil)\n"
    );
    assert_eq!(
        cli_ok(&cluster, follower, &["-3", "--no-raw", "INCR", "c3"]),
        "(integer) 1\n"
    );
    let mget = cli_ok(
        &cluster,
        follower,
        &["-3", "--no-raw", "MGET", "r3", "nothing"],
    );
    assert_eq!(mget, "1) \"x\"\n2) (nil)\n");
}

#[test]
fn error_reply_text_and_exit_status() {
    tools::redis_cli();
    let cluster = ProcessCluster::start(3);
    let follower = cluster.followers()[0];
    const MESSAGE: &str = "ERR value is not an integer or out of range";

    assert_eq!(cli_ok(&cluster, follower, &["SET", "s", "abc"]), "OK\n");

    // Formatted: `(error) ...` on stdout, and redis-cli still exits 0.
    let out = cli(&cluster, follower, &["--no-raw", "INCR", "s"], None);
    assert_eq!(out.stdout, format!("(error) {MESSAGE}\n"), "{out}");
    assert_eq!(out.status.code(), Some(0), "{out}");

    // Raw (stdout not a terminal): the bare error line, exit status 0.
    let out = cli(&cluster, follower, &["INCR", "s"], None);
    assert!(out.stdout.starts_with(&format!("{MESSAGE}\n")), "{out}");
    assert_eq!(out.status.code(), Some(0), "{out}");

    // -e: the error on stderr and exit status 1.
    let out = cli(&cluster, follower, &["-e", "INCR", "s"], None);
    assert_eq!(out.stderr.trim_end(), MESSAGE, "{out}");
    assert_eq!(out.status.code(), Some(1), "{out}");

    // The failed INCR changed nothing, on any node.
    for id in cluster.ids() {
        assert_eq!(
            cli_ok(&cluster, id, &["GET", "s"]),
            "abc\n",
            "GET s on node {id}"
        );
    }

    // An error in the middle of a script does not stop the script.
    let out = cli(
        &cluster,
        follower,
        &[],
        Some(b"INCR s\nSET after 1\nGET after\n"),
    );
    out.assert_success("redis-cli < script with an error");
    assert!(out.stdout.starts_with(&format!("{MESSAGE}\n")), "{out}");
    assert!(out.stdout.ends_with("OK\n1\n"), "{out}");
}
