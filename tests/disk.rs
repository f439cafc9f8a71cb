//! `INFO persistence` on in-process nodes: the log, snapshot and disk
//! figures an operator watches, before and after log compaction. (A full
//! disk itself is tested with real processes on a tmpfs: `integration/disk.rs`.)

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Cluster, NodeTuning};

async fn persistence(cluster: &Cluster, id: u64) -> BTreeMap<String, u64> {
    let mut con = cluster.client(id).await;
    let text: String = redis::cmd("INFO")
        .arg("persistence")
        .query_async(&mut con)
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn info_persistence_shows_log_snapshot_and_disk_figures() {
    let tuning = NodeTuning {
        snapshot_logs_since_last: 20,
        max_in_snapshot_log_to_keep: 5,
        ..NodeTuning::default()
    };
    let cluster = Cluster::start(1, tuning).await;
    let leader = cluster.wait_for_leader().await;
    let fresh = persistence(&cluster, leader).await;
    assert_eq!(fresh["raft_last_snapshot_index"], 0, "{fresh:?}");
    assert_eq!(fresh["raft_last_snapshot_time"], 0, "{fresh:?}");
    assert_eq!(fresh["raft_log_first_index"], 0, "{fresh:?}");
    assert_eq!(fresh["disk_low"], 0, "{fresh:?}");
    assert_eq!(fresh["disk_critical"], 0, "{fresh:?}");
    assert_eq!(fresh["min_free_bytes"], 256 * 1024 * 1024, "{fresh:?}");
    assert!(fresh["disk_free_bytes"] > 0, "{fresh:?}");
    assert!(fresh["db_size_bytes"] > 0, "{fresh:?}");
    // The engine's background work and cache: idle on a fresh node.
    assert_eq!(fresh["storage_flushes_pending"], 0, "{fresh:?}");
    assert_eq!(fresh["storage_compactions_running"], 0, "{fresh:?}");
    assert_eq!(
        fresh["storage_block_cache_capacity_bytes"],
        32 * 1024 * 1024,
        "{fresh:?}"
    );
    for field in [
        "storage_compactions_completed",
        "storage_compaction_time_ms",
        "storage_block_cache_used_bytes",
    ] {
        assert!(fresh.contains_key(field), "{field} missing: {fresh:?}");
    }
    assert_eq!(
        fresh["raft_log_entries"],
        fresh["raft_log_last_index"] + 1 - fresh["raft_log_first_index"],
        "{fresh:?}"
    );

    let before = now_secs();
    cluster.set_numbered_keys(leader, "key:", 100).await;
    // Snapshots every 20 entries and the purge behind them keep the log
    // short; INFO says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let p = loop {
        let p = persistence(&cluster, leader).await;
        if p["raft_last_snapshot_index"] >= 80 && p["raft_log_first_index"] > 1 {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot and purge: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(p["raft_log_last_index"] >= 100, "{p:?}");
    assert_eq!(
        p["raft_log_entries"],
        p["raft_log_last_index"] + 1 - p["raft_log_first_index"],
        "{p:?}"
    );
    assert!(
        p["raft_log_entries"] < 50,
        "the log was not compacted: {p:?}"
    );
    // At most max_in_snapshot_log_to_keep entries stay behind the snapshot.
    assert!(
        p["raft_log_first_index"] + 5 >= p["raft_last_snapshot_index"],
        "{p:?}"
    );
    let at = p["raft_last_snapshot_time"];
    assert!(
        (before..=now_secs()).contains(&at),
        "snapshot time {at} not between {before} and now: {p:?}"
    );
}
