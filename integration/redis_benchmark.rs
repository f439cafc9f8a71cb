//! `redis-benchmark` against a follower of a three-node cluster: the
//! commands it sends on connect (`CONFIG GET save`/`appendonly`), inline
//! and multibulk PING, SET, GET, INCR and MSET from ten connections, once
//! one request at a time and once pipelined 16 deep.
//!
//! redis-benchmark exits 1 with `Error from server: ...` on stderr at the
//! first error reply, so "exit 0, no error text, one result line per test"
//! is what passing means. Speed is not asserted: timing never decides a
//! test (benches/ measures it).

use std::process::Command;
use std::time::Duration;

use crate::harness::ProcessCluster;
use crate::tools::{self, Output};

/// The tests run, and the name redis-benchmark prints for each.
const TESTS: &str = "ping_inline,ping_mbulk,set,get,incr,mset";
const NAMES: [&str; 6] = [
    "PING_INLINE",
    "PING_MBULK",
    "SET",
    "GET",
    "INCR",
    "MSET (10 keys)",
];

fn benchmark(port: u16, extra: &[&str]) -> Output {
    let mut cmd = Command::new(tools::redis_benchmark());
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", TESTS, "-n", "2000", "-c", "10", "-q"])
        .args(extra);
    // Every SET is an fsync on a majority of a debug build; on a loaded
    // 2-core machine the unpipelined run takes several seconds.
    tools::run(cmd, None, Duration::from_secs(90))
}

/// Checks that the run succeeded and printed a final result for each test.
fn assert_complete(out: &Output, what: &str) {
    out.assert_success(what);
    assert!(
        !out.stderr.contains("Error") && !out.stdout.contains("Error"),
        "{what} saw error replies: {out}"
    );
    // -q overwrites a progress line with '\r' while a test runs and ends it
    // with "NAME: <rate> requests per second, p50=..." and a newline.
    let finals: Vec<&str> = out
        .stdout
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|line| line.contains(" requests per second"))
        .collect();
    for name in NAMES {
        let line = finals
            .iter()
            .find(|line| line.starts_with(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{what}: no result line for {name}: {out}"));
        let rate = line[name.len() + 2..]
            .split_whitespace()
            .next()
            .and_then(|r| r.parse::<f64>().ok());
        assert!(
            rate.is_some_and(|r| r > 0.0),
            "{what}: bad result line for {name}: {line:?}"
        );
    }
}

#[test]
fn redis_benchmark_through_a_follower() {
    tools::redis_benchmark();
    let cluster = ProcessCluster::start(3);
    let follower = cluster.followers()[0];

    let plain = benchmark(cluster.port(follower), &[]);
    assert_complete(&plain, "redis-benchmark");
    let pipelined = benchmark(cluster.port(follower), &["-P", "16"]);
    assert_complete(&pipelined, "redis-benchmark -P 16");

    // The benchmark's INCRs went through Raft: every node has the same
    // count (2000 per run; -P changes batching, not the number sent).
    for id in cluster.ids() {
        let mut con = cluster.connect(id);
        let counter: i64 = redis::cmd("GET")
            .arg("counter:__rand_int__")
            .query(&mut con)
            .unwrap();
        assert_eq!(counter, 4000, "counter on node {id}");
    }
}
