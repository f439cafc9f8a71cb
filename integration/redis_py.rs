//! redis-py, the most used Python client, against a follower of a three-node
//! cluster: `clients/redis_py_smoke.py` does basic commands, a pipeline,
//! RESP3 and error handling, and reads its writes back on every node. The
//! script exits non-zero on any failed check; its output is shown when this
//! test fails.

use std::process::Command;
use std::time::Duration;

use crate::harness::ProcessCluster;
use crate::tools;

#[test]
fn redis_py_through_a_follower() {
    let python = tools::python_with_redis();
    let cluster = ProcessCluster::start(3);
    let follower = cluster.followers()[0];
    let all_ports = cluster
        .ids()
        .iter()
        .map(|id| cluster.port(*id).to_string())
        .collect::<Vec<_>>()
        .join(",");

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/integration/clients/redis_py_smoke.py"
    );
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg("--port")
        .arg(cluster.port(follower).to_string())
        .arg("--all-ports")
        .arg(all_ports)
        // No stray .pyc files in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = tools::run(cmd, None, Duration::from_secs(60));
    // Shown with --nocapture, and with the failure otherwise.
    eprintln!("{out}");
    out.assert_success("redis_py_smoke.py");
    // Prove it ran every step rather than exiting 0 early.
    assert!(
        out.stdout.contains("ok: read back on every node"),
        "redis_py_smoke.py did not finish: {out}"
    );
}
