//! The allocator options the binary starts mimalloc with (src/main.rs): a
//! node started without them runs with them, in the very process that was
//! spawned (it executes itself again, keeping its pid), and an option the
//! operator set is left as set. Only a real process shows its environment
//! and pid, so these live here.

use crate::harness::ProcessCluster;

/// `NAME=value` pairs of a process's environment, from /proc.
fn environment(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read /proc/PID/environ");
    raw.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect()
}

/// The pid a node reports in `INFO server`.
fn reported_pid(cluster: &ProcessCluster, id: u64) -> u32 {
    let mut con = cluster.connect(id);
    let info: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .expect("INFO server has process_id")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_node_runs_with_the_allocator_options_in_the_process_spawned() {
    let cluster = ProcessCluster::start(1);
    let pid = cluster.pid(1);
    assert_eq!(reported_pid(&cluster, 1), pid, "the spawned process serves");
    let env = environment(pid);
    for option in ["MIMALLOC_ARENA_EAGER_COMMIT=0", "MIMALLOC_PURGE_DELAY=0"] {
        assert!(
            env.iter().any(|kv| kv == option),
            "{option} missing: {env:?}"
        );
    }
}

#[test]
fn an_allocator_option_the_operator_set_is_kept() {
    let cluster = ProcessCluster::builder(1)
        .env("MIMALLOC_PURGE_DELAY", "250")
        .start();
    let pid = cluster.pid(1);
    assert_eq!(reported_pid(&cluster, 1), pid);
    let env = environment(pid);
    assert!(
        env.iter().any(|kv| kv == "MIMALLOC_PURGE_DELAY=250"),
        "{env:?}"
    );
    assert!(
        !env.iter().any(|kv| kv == "MIMALLOC_PURGE_DELAY=0"),
        "{env:?}"
    );
    assert!(
        env.iter().any(|kv| kv == "MIMALLOC_ARENA_EAGER_COMMIT=0"),
        "{env:?}"
    );
}
