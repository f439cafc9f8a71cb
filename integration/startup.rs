//! How the binary refuses to start: a configuration it rejects ends with
//! exit status 2 and exactly one line on stderr naming the key and where its
//! value came from (environment variable, flag), before anything is logged
//! or bound; an address already in use ends with a non-zero status and an
//! error naming the address. Only a real process shows exit codes and what
//! reaches stderr, so these live here rather than in the config unit tests.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{free_addrs, raftis_command};
use crate::tools::{self, Output};

/// A refused start takes milliseconds; a bug that lets the node start
/// instead is caught by this deadline rather than hanging the run.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// raftis on free ports and a temp data dir, plus `args`.
fn raftis(data_dir: &Path, args: &[&str]) -> Command {
    let free: Vec<String> = free_addrs(3).iter().map(ToString::to_string).collect();
    raftis_on([&free[0], &free[1], &free[2]], data_dir, args)
}

/// raftis with these RESP, peer and HTTP addresses, plus `args`.
fn raftis_on(addrs: [&str; 3], data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = raftis_command();
    cmd.args(["--listen", addrs[0], "--peer-listen", addrs[1]])
        .args(["--http-listen", addrs[2]])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args);
    cmd
}

/// Asserts exit status 2 and one stderr line containing every `needle`.
fn assert_refused(out: &Output, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one stderr line: {out}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "stderr line does not name {needle:?}: {out}"
        );
    }
    assert!(out.stdout.is_empty(), "nothing belongs on stdout: {out}");
}

#[test]
fn election_timeout_min_above_max_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = raftis(dir.path(), &[]);
    cmd.env("RAFTIS_RAFT__ELECTION_TIMEOUT_MIN_MS", "5000")
        .env("RAFTIS_RAFT__ELECTION_TIMEOUT_MAX_MS", "600");
    let out = tools::run(cmd, None, EXIT_TIMEOUT);
    assert_refused(
        &out,
        &[
            "raft.election_timeout_min_ms",
            "environment variable RAFTIS_RAFT__ELECTION_TIMEOUT_MIN_MS",
        ],
    );
}

#[test]
fn malformed_initial_cluster_flag() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        "1=127.0.0.1",
        "garbage",
        "1=127.0.0.1:7000,x=127.0.0.1:7001",
    ] {
        let cmd = raftis(dir.path(), &["--initial-cluster", bad]);
        let out = tools::run(cmd, None, EXIT_TIMEOUT);
        assert_refused(
            &out,
            &["initial_cluster", "command-line flag --initial-cluster"],
        );
    }
}

#[test]
fn value_of_the_wrong_type_in_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[raft]\nheartbeat_interval_ms = \"soon\"\n").unwrap();
    let cmd = raftis(
        &dir.path().join("data"),
        &["--config", file.to_str().unwrap()],
    );
    let out = tools::run(cmd, None, EXIT_TIMEOUT);
    assert_refused(&out, &["raft.heartbeat_interval_ms", "bad.toml"]);
}

#[test]
fn resp_port_in_use() {
    let dir = tempfile::tempdir().unwrap();
    // Held for the whole test, so the port is certainly taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let free: Vec<String> = free_addrs(2).iter().map(ToString::to_string).collect();
    let cmd = raftis_on([&addr, &free[0], &free[1]], dir.path(), &[]);
    let out = tools::run(cmd, None, EXIT_TIMEOUT);
    assert_port_in_use(&out, &addr, "listen");
}

#[test]
fn peer_port_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let free: Vec<String> = free_addrs(2).iter().map(ToString::to_string).collect();
    let cmd = raftis_on([&free[0], &addr, &free[1]], dir.path(), &[]);
    let out = tools::run(cmd, None, EXIT_TIMEOUT);
    assert_port_in_use(&out, &addr, "peer_listen");
}

#[test]
fn http_port_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let free: Vec<String> = free_addrs(2).iter().map(ToString::to_string).collect();
    let cmd = raftis_on([&free[0], &free[1], &addr], dir.path(), &[]);
    let out = tools::run(cmd, None, EXIT_TIMEOUT);
    assert_port_in_use(&out, &addr, "http_listen");
    assert_eq!(out.status.code(), Some(1), "{out}");
    // Bound before storage is opened: a node that cannot serve its
    // metrics leaves no database behind.
    assert!(!dir.path().join("db").exists(), "{out}");
}

/// A failed bind is a runtime failure, not a usage error: non-zero (not 2),
/// with the last stderr line naming the address, its key and the cause.
fn assert_port_in_use(out: &Output, addr: &str, key: &str) {
    assert!(!out.status.success(), "{out}");
    assert_ne!(
        out.status.code(),
        Some(2),
        "a busy port is not a config error: {out}"
    );
    let last = out.stderr.lines().last().unwrap_or_default();
    for needle in [addr, &format!("({key})"), "in use"] {
        assert!(
            last.contains(needle),
            "last stderr line does not name {needle:?}: {out}"
        );
    }
}
