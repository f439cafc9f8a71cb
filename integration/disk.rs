//! A full disk, for real: nodes whose data dir is on a small tmpfs.
//!
//! - With the free-space check on (`storage.min_free_mb`), a filler file
//!   takes the tmpfs below the threshold: the node refuses writes with
//!   `-MISCONF`, keeps answering reads, hands leadership away, and the rest
//!   of the cluster keeps taking writes. Below half the threshold it stops
//!   storing new log entries (`READONLY` reads still answer). Once the
//!   filler is gone it takes writes again and catches up on every key.
//! - With the check off, a one-node cluster is written to until the disk is
//!   really full (ENOSPC): every command answers within the request timeout,
//!   Raft stops with a clear log line and `-CLUSTERDOWN`, and after the
//!   tmpfs is grown and the node restarted, every acknowledged write is
//!   there.
//!
//! Mounting needs root. Without it each test prints
//! `skipped: needs root to mount tmpfs` and returns; as root, a failed mount
//! fails the test. The tmpfs is unmounted when the test ends, also when it
//! panics (after the nodes on it are killed).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{eventually, ProcessCluster};

/// The server's request timeout in these clusters.
const REQUEST_TIMEOUT_MS: u64 = 3000;

/// How long the node may take to notice a change in free space, move
/// leadership or catch up.
const SETTLE: Duration = Duration::from_secs(15);

const MIB: u64 = 1024 * 1024;

/// A tmpfs mounted on a fresh temp dir; unmounted on drop.
struct Tmpfs {
    dir: Option<tempfile::TempDir>,
    target: CString,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes, or returns `None` (after saying so)
    /// when this process is not root.
    ///
    /// # Panics
    /// If the mount fails as root.
    fn mount(size: u64) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to mount tmpfs");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("raftis-tmpfs-")
            .tempdir()
            .expect("create mount point");
        let target = CString::new(dir.path().as_os_str().as_bytes()).expect("path without NUL");
        let fs = Tmpfs {
            dir: Some(dir),
            target,
        };
        fs.call_mount(0, size);
        Some(fs)
    }

    /// Changes the size limit, as an operator growing a volume would.
    fn resize(&self, size: u64) {
        self.call_mount(libc::MS_REMOUNT, size);
    }

    fn call_mount(&self, flags: libc::c_ulong, size: u64) {
        let data = CString::new(format!("size={size}")).expect("no NUL");
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                self.target.as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount tmpfs (size {size}) on {}: {}",
            self.path().display(),
            std::io::Error::last_os_error()
        );
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/"), |d| d.path())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: detaches at once even if a killed node's files are still
        // being closed; the memory goes when the last one is.
        // SAFETY: `target` is a NUL-terminated path.
        let rc = unsafe { libc::umount2(self.target.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            eprintln!(
                "unmount {}: {}",
                self.path().display(),
                std::io::Error::last_os_error()
            );
        }
        // The now empty mount point goes with the temp dir.
        drop(self.dir.take());
    }
}

/// Fields of one `INFO` section of a node.
fn info(
    cluster: &ProcessCluster,
    id: u64,
    section: &str,
) -> Result<BTreeMap<String, String>, String> {
    let mut con = cluster.try_connect(id).map_err(|e| e.to_string())?;
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut con)
        .map_err(|e| format!("node {id}: INFO {section}: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

fn number(fields: &BTreeMap<String, String>, key: &str) -> u64 {
    fields
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Grows (or writes) the filler until free space on the tmpfs, as the node
/// reports it, is about `target` bytes. Written, not sparse: tmpfs must
/// allocate it.
fn fill_to(cluster: &ProcessCluster, id: u64, filler: &Path, target: u64) {
    let free = number(
        &info(cluster, id, "persistence").expect("INFO"),
        "disk_free_bytes",
    );
    assert!(
        free > target,
        "only {free} bytes free, wanted to leave {target}"
    );
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(filler)
        .expect("open filler");
    let chunk = vec![0x5Au8; MIB as usize];
    let mut left = free - target;
    while left > 0 {
        let n = left.min(MIB);
        file.write_all(&chunk[..n as usize]).expect("grow filler");
        left -= n;
    }
    file.sync_all().expect("sync filler");
}

fn last_log_index(cluster: &ProcessCluster, id: u64) -> u64 {
    number(
        &info(cluster, id, "raft").expect("INFO raft"),
        "last_log_index",
    )
}

/// `len` bytes that do not compress (the storage engine compresses), the
/// same for the same `seed`.
fn incompressible(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn set(
    cluster: &ProcessCluster,
    id: u64,
    key: &str,
    value: impl redis::ToRedisArgs,
) -> redis::RedisResult<()> {
    let mut con = cluster.try_connect(id)?;
    redis::cmd("SET").arg(key).arg(value).query(&mut con)
}

fn get(
    cluster: &ProcessCluster,
    id: u64,
    key: &str,
    readonly: bool,
) -> redis::RedisResult<Option<String>> {
    let mut con = cluster.try_connect(id)?;
    if readonly {
        redis::cmd("READONLY").query::<()>(&mut con)?;
    }
    redis::cmd("GET").arg(key).query(&mut con)
}

/// `size` nodes, node 1's data dir on `fs`, with the free-space check at
/// `min_free_mb` (0 turns it off) and the request timeout above.
fn start_with_node_1_on(fs: &Tmpfs, size: u64, min_free_mb: u64) -> ProcessCluster {
    ProcessCluster::builder(size)
        .env("RAFTIS_STORAGE__MIN_FREE_MB", &min_free_mb.to_string())
        .env("RAFTIS_REQUEST_TIMEOUT_MS", &REQUEST_TIMEOUT_MS.to_string())
        .data_dir_under(1, fs.path())
        .start()
}

/// Waits until node 1's `INFO persistence` shows `flag:1`.
fn wait_for_node_1_flag(cluster: &ProcessCluster, flag: &str, what: &str) {
    eventually(what, SETTLE, || {
        let p = info(cluster, 1, "persistence")?;
        (p.get(flag).map(String::as_str) == Some("1"))
            .then_some(())
            .ok_or_else(|| format!("{p:?}"))
    });
}

/// Asserts that a linearizable GET on node 1 sees every write in `written`.
fn assert_node_1_reads(cluster: &ProcessCluster, written: &BTreeMap<String, String>) {
    for (k, v) in written {
        assert_eq!(
            get(cluster, 1, k, false).expect("GET on node 1").as_deref(),
            Some(v.as_str()),
            "{k}"
        );
    }
}

#[test]
fn a_node_low_on_disk_refuses_writes_serves_reads_and_recovers() {
    let Some(fs) = Tmpfs::mount(64 * MIB) else {
        return;
    };
    let started = Instant::now();
    let mut cluster = start_with_node_1_on(&fs, 3, 16);
    // Node 1, on the tmpfs, leads: the case where the low node must hand
    // leadership away for the others to keep taking writes.
    eventually("node 1 to lead", SETTLE, || {
        let mut con = cluster.try_connect(2).map_err(|e| e.to_string())?;
        let moved: redis::RedisResult<redis::Value> =
            redis::cmd("RAFT.TRANSFER_LEADER").arg(1).query(&mut con);
        moved.map_err(|e| e.to_string())?;
        match cluster.wait_for_leader() {
            1 => Ok(()),
            other => Err(format!("node {other} leads")),
        }
    });
    let mut written = BTreeMap::new();
    for i in 0..20 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        set(&cluster, 1, &k, &v).expect("SET on a healthy node");
        written.insert(k, v);
    }
    let p = info(&cluster, 1, "persistence").expect("INFO persistence");
    assert_eq!(p["disk_low"], "0", "{p:?}");
    assert_eq!(number(&p, "min_free_bytes"), 16 * MIB);
    assert!(number(&p, "raft_log_entries") >= 20, "{p:?}");
    assert!(number(&p, "db_size_bytes") > 0, "{p:?}");

    // Low: between the threshold and its half.
    let filler = fs.path().join("filler");
    fill_to(&cluster, 1, &filler, 12 * MIB);
    wait_for_node_1_flag(&cluster, "disk_low", "node 1 to report low disk space");
    // Prometheus sees it too, to alert on.
    let (status, metrics) =
        crate::health::get(cluster.addrs(1).http, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.lines().any(|l| l == "raftis_disk_low 1"),
        "no raftis_disk_low 1 in:\n{metrics}"
    );
    let refused = set(&cluster, 1, "refused", "x").expect_err("a write on a node low on disk");
    assert_eq!(refused.code(), Some("MISCONF"), "{refused}");
    let detail = refused.detail().unwrap_or_default().to_owned();
    assert!(
        detail.starts_with("disk space low on node 1: ")
            && detail.contains(&format!("under {}", fs.path().display()))
            && detail.ends_with(
                "below storage.min_free_mb (16 MiB); writes are refused until space is freed"
            ),
        "{detail}"
    );
    let p = info(&cluster, 1, "persistence").expect("INFO persistence");
    assert_eq!(p["aof_last_write_status"], "err", "{p:?}");
    // Leadership moves to a healthy node, which keeps taking writes, also
    // those clients send through the low node's peers.
    let leader = eventually("leadership to leave node 1", SETTLE, || {
        match cluster.wait_for_leader() {
            1 => Err("node 1 still leads".to_owned()),
            other => Ok(other),
        }
    });
    for i in 20..40 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        let via = if i % 2 == 0 { 2 } else { 3 };
        set(&cluster, via, &k, &v)
            .unwrap_or_else(|e| panic!("SET {k} via node {via} (leader {leader}): {e}"));
        written.insert(k, v);
    }
    // A low node still stores what the leader replicates, so its
    // linearizable reads see every write.
    assert_node_1_reads(&cluster, &written);
    assert_eq!(get(&cluster, 1, "refused", false).expect("GET"), None);

    // Critical: below half the threshold it stores no new entries; its
    // applied state still answers READONLY reads.
    fill_to(&cluster, 1, &filler, 5 * MIB);
    wait_for_node_1_flag(
        &cluster,
        "disk_critical",
        "node 1 to report critically low disk space",
    );
    let stored_before = last_log_index(&cluster, 1);
    for i in 40..50 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        set(&cluster, 3, &k, &v).expect("SET via node 3 while node 1 is critical");
        written.insert(k, v);
    }
    // The leader sent those entries to node 1 as soon as to node 3, and
    // node 3 stored them: had node 1 taken them, they would be in its log.
    assert!(last_log_index(&cluster, leader) >= stored_before + 10);
    assert_eq!(
        last_log_index(&cluster, 1),
        stored_before,
        "node 1 stored entries while critical"
    );
    assert_eq!(
        get(&cluster, 1, "k0", true)
            .expect("READONLY GET on node 1")
            .as_deref(),
        Some("v0")
    );
    assert_eq!(
        get(&cluster, 1, "k45", true).expect("READONLY GET on node 1"),
        None
    );
    // Heartbeats still reach it: it follows, it does not campaign.
    assert_eq!(cluster.raft_info(1).expect("INFO raft").role, "follower");
    assert_eq!(cluster.wait_for_leader(), leader);

    // Space returns: node 1 takes writes again and catches up.
    std::fs::remove_file(&filler).expect("remove filler");
    eventually("node 1 to take writes again", SETTLE, || {
        set(&cluster, 1, "after", "space").map_err(|e| e.to_string())
    });
    written.insert("after".into(), "space".into());
    assert_node_1_reads(&cluster, &written);
    let p = info(&cluster, 1, "persistence").expect("INFO persistence");
    assert_eq!(p["disk_low"], "0", "{p:?}");
    assert!(
        cluster.log(1).contains("disk space low on node 1"),
        "no log line about it"
    );
    cluster.kill_all();
    eprintln!("disk low/recover test took {:?}", started.elapsed());
}

/// Files named `incoming-*` (snapshots being received) anywhere under `dir`.
fn incoming_snapshot_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if entry.file_name().to_string_lossy().starts_with("incoming-") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn a_node_low_on_disk_refuses_a_snapshot_it_cannot_install_and_takes_it_later() {
    let Some(fs) = Tmpfs::mount(64 * MIB) else {
        return;
    };
    let started = Instant::now();
    let mut cluster = ProcessCluster::builder(3)
        .env("RAFTIS_STORAGE__MIN_FREE_MB", "16")
        .env("RAFTIS_REQUEST_TIMEOUT_MS", &REQUEST_TIMEOUT_MS.to_string())
        .env("RAFTIS_RAFT__SNAPSHOT_LOGS_SINCE_LAST", "10")
        .env("RAFTIS_RAFT__MAX_IN_SNAPSHOT_LOG_TO_KEEP", "0")
        .data_dir_under(1, fs.path())
        .start();
    let leader = eventually("a leader other than node 1", SETTLE, || {
        match cluster.wait_for_leader() {
            1 => {
                let mut con = cluster.try_connect(1).map_err(|e| e.to_string())?;
                let _: redis::Value = redis::cmd("RAFT.TRANSFER_LEADER")
                    .arg(2)
                    .query(&mut con)
                    .map_err(|e| e.to_string())?;
                Err("node 1 leads".to_owned())
            }
            other => Ok(other),
        }
    });
    // About 3 MiB of state that does not compress: the snapshot spans
    // several 1 MiB chunks, and installing it takes about 9 MiB.
    let value_of = |i: u64| incompressible(i, 256 * 1024);
    for i in 0..12 {
        set(&cluster, leader, &format!("big{i}"), value_of(i)).expect("SET big value");
    }
    eventually("node 1 to store every entry", SETTLE, || {
        let (mine, theirs) = (
            last_log_index(&cluster, 1),
            last_log_index(&cluster, leader),
        );
        (mine >= theirs)
            .then_some(())
            .ok_or_else(|| format!("node 1 at {mine}, leader at {theirs}"))
    });
    // Low: 12 MiB free leaves 4 MiB above the 8 MiB reserve, too little.
    let filler = fs.path().join("filler");
    fill_to(&cluster, 1, &filler, 12 * MIB);
    wait_for_node_1_flag(&cluster, "disk_low", "node 1 to report low disk space");
    // Node 1 misses some writes and the leader purges them behind a
    // snapshot: node 1 can only catch up by that snapshot.
    let node_1_last = last_log_index(&cluster, 1);
    cluster.pause(1);
    let mut small = BTreeMap::new();
    for i in 0..30 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        set(&cluster, leader, &k, &v).expect("SET while node 1 is paused");
        small.insert(k, v);
    }
    let purged_snapshot = eventually("the leader to purge past node 1", SETTLE, || {
        let p = info(&cluster, leader, "persistence")?;
        (number(&p, "raft_log_first_index") > node_1_last + 1)
            .then(|| number(&p, "raft_last_snapshot_index"))
            .ok_or_else(|| format!("node 1 at {node_1_last}: {p:?}"))
    });
    cluster.resume(1);
    eventually("node 1 to refuse the snapshot", SETTLE, || {
        cluster
            .log(1)
            .contains("the snapshot is refused until space is freed")
            .then_some(())
            .ok_or_else(|| "no refusal logged yet".to_owned())
    });
    // Refused and abandoned: no partial file stays (the refusal is logged
    // just before the file is removed), and node 1 installed nothing (a
    // file sent again is refused before it is written).
    eventually("the refused transfer's file to be removed", SETTLE, || {
        let files = incoming_snapshot_files(fs.path());
        files
            .is_empty()
            .then_some(())
            .ok_or_else(|| format!("{files:?}"))
    });
    // Node 1 may still build a snapshot of its own log (entries that were
    // in flight when it was paused can take it past the snapshot policy's
    // threshold), so its snapshot index may move; what it must not have
    // done is install the leader's.
    assert!(
        !cluster.log(1).contains("snapshot installed"),
        "node 1 installed a snapshot while low on disk"
    );
    let p = info(&cluster, 1, "persistence").expect("INFO persistence");
    assert_eq!(
        p["disk_critical"], "0",
        "the refusal kept the reserve: {p:?}"
    );
    // Entries sent while it was paused may have reached it (the leader
    // keeps several AppendEntries in flight, and each carries every entry
    // it had when it left): only the snapshot, checked above, is certain
    // not to have been installed.
    assert!(cluster.raft_info(1).is_ok(), "node 1 still runs raft");

    // Space returns: node 1 catches up, by the leader's next try at the
    // snapshot or, when the entries in flight at the pause reached it and
    // the leader still holds the rest, from the log (a loaded run saw that).
    std::fs::remove_file(&filler).expect("remove filler");
    eventually("node 1 to catch up past the purged entries", SETTLE, || {
        let p = info(&cluster, 1, "persistence")?;
        (number(&p, "raft_last_snapshot_index") >= purged_snapshot)
            .then_some(())
            .ok_or_else(|| format!("{p:?}"))
    });
    assert_node_1_reads(&cluster, &small);
    for i in 0..12 {
        let got: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("big{i}"))
            .query(&mut cluster.connect(1))
            .expect("GET big value");
        assert!(got == Some(value_of(i)), "big{i} lost or changed");
    }
    assert_eq!(
        incoming_snapshot_files(fs.path()),
        Vec::<std::path::PathBuf>::new()
    );
    cluster.kill_all();
    eprintln!("snapshot refusal test took {:?}", started.elapsed());
}

#[test]
fn leadership_leaves_low_nodes_once_and_settles_on_a_healthy_one() {
    let (Some(fs1), Some(fs2)) = (Tmpfs::mount(64 * MIB), Tmpfs::mount(64 * MIB)) else {
        return;
    };
    let started = Instant::now();
    let mut cluster = ProcessCluster::builder(3)
        .env("RAFTIS_STORAGE__MIN_FREE_MB", "16")
        .env("RAFTIS_REQUEST_TIMEOUT_MS", &REQUEST_TIMEOUT_MS.to_string())
        .data_dir_under(1, fs1.path())
        .data_dir_under(2, fs2.path())
        .start();
    // Node 1 leads, and took leadership from node 3.
    for target in [3, 1] {
        eventually(&format!("node {target} to lead"), SETTLE, || {
            let mut con = cluster.try_connect(2).map_err(|e| e.to_string())?;
            let moved: redis::RedisResult<redis::Value> = redis::cmd("RAFT.TRANSFER_LEADER")
                .arg(target)
                .query(&mut con);
            moved.map_err(|e| e.to_string())?;
            match cluster.raft_info(1)?.leader_id {
                Some(l) if l == target => Ok(()),
                other => Err(format!("node 1 follows {other:?}")),
            }
        });
        // Node 1's guard notes who leads every CHECK_PERIOD (250 ms).
        std::thread::sleep(Duration::from_millis(600));
    }
    set(&cluster, 1, "before", "low").expect("SET on a healthy leader");
    // Both nodes on a tmpfs go low: node 1 hands leadership to node 2 (not
    // back to node 3, where it came from); node 2, low too, hands it on
    // once, not back to node 1 (that would go on back and forth), but to
    // node 3.
    for (id, fs) in [(2, &fs2), (1, &fs1)] {
        fill_to(&cluster, id, &fs.path().join("filler"), 12 * MIB);
        eventually(
            &format!("node {id} to report low disk space"),
            SETTLE,
            || {
                let p = info(&cluster, id, "persistence")?;
                (p["disk_low"] == "1")
                    .then_some(())
                    .ok_or_else(|| format!("{p:?}"))
            },
        );
    }
    eventually("node 3 to lead", SETTLE, || {
        match cluster.wait_for_leader() {
            3 => Ok(()),
            other => Err(format!("node {other} leads")),
        }
    });
    // It stays there: no more handoffs, no elections (each would bump the
    // term), for longer than two handoff periods.
    let term = cluster.raft_info(3).expect("INFO raft").term;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(7) {
        let info = cluster.raft_info(3).expect("INFO raft");
        assert_eq!(
            (info.role.as_str(), info.term),
            ("leader", term),
            "leadership moved again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    set(&cluster, 3, "after", "handoff").expect("a write on the healthy leader");
    for id in [1, 2] {
        assert_eq!(
            cluster.log(id).matches("handed leadership over").count(),
            1,
            "node {id} handed off other than once"
        );
    }
    cluster.kill_all();
    eprintln!("low nodes handoff test took {:?}", started.elapsed());
}

#[test]
fn a_really_full_disk_stops_raft_cleanly_and_loses_no_acknowledged_write() {
    let Some(fs) = Tmpfs::mount(24 * MIB) else {
        return;
    };
    let started = Instant::now();
    let mut cluster = start_with_node_1_on(&fs, 1, 0);
    let value_of = |i: u64| incompressible(i, 256 * 1024);
    let mut acknowledged = Vec::new();
    let mut first_error = None;
    // 24 MiB of tmpfs holds far fewer than 200 values of 256 KiB (each is
    // in the log and in the data).
    for i in 0..200 {
        let key = format!("big{i}");
        let asked = Instant::now();
        let result = set(&cluster, 1, &key, value_of(i));
        assert!(
            asked.elapsed() < Duration::from_millis(REQUEST_TIMEOUT_MS + 2000),
            "SET {key} took {:?}",
            asked.elapsed()
        );
        match result {
            Ok(()) => acknowledged.push((key, i)),
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    let first_error = first_error.expect("the disk never filled");
    assert!(
        ["TIMEOUT", "CLUSTERDOWN"].contains(&first_error.code().unwrap_or("")),
        "{first_error}"
    );
    assert!(
        !acknowledged.is_empty(),
        "nothing fit before the disk was full"
    );
    // Raft stopped: the node answers at once, with a clear reason, and
    // stays up (no crash loop).
    let stopped = eventually("raft to report it stopped", SETTLE, || {
        let asked = Instant::now();
        let e = match set(&cluster, 1, "after-full", "x") {
            Ok(()) => return Err("a write succeeded on a full disk".into()),
            Err(e) => e,
        };
        let detail = e.detail().unwrap_or_default().to_owned();
        (e.code() == Some("CLUSTERDOWN")
            && detail.starts_with("raft stopped on node 1 after a storage error")
            && asked.elapsed() < Duration::from_secs(1))
        .then_some(detail)
        .ok_or_else(|| format!("{e} after {:?}", asked.elapsed()))
    });
    assert!(
        stopped.ends_with("free disk space if it is full, then restart the node"),
        "{stopped}"
    );
    let mut con = cluster.connect(1);
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");
    // A linearizable read needs Raft too: it fails within the request
    // timeout, it does not hang.
    let asked = Instant::now();
    let read = get(&cluster, 1, "big0", false).expect_err("a read without raft");
    assert_eq!(read.code(), Some("CLUSTERDOWN"), "{read}");
    assert!(
        asked.elapsed() < Duration::from_millis(REQUEST_TIMEOUT_MS + 2000),
        "GET took {:?}",
        asked.elapsed()
    );
    eprintln!("read on a stopped node: {read} after {:?}", asked.elapsed());
    eventually("a log line saying raft stopped", SETTLE, || {
        cluster
            .log(1)
            .contains("raft stopped on node 1 after a storage error")
            .then_some(())
            .ok_or_else(|| "not logged yet".to_owned())
    });

    // Space returns (the volume grows); after a restart every acknowledged
    // write is there.
    fs.resize(64 * MIB);
    cluster.kill(1);
    cluster.restart(1);
    cluster.wait_for_leader();
    for (key, i) in &acknowledged {
        let got: Option<Vec<u8>> = eventually(&format!("GET {key}"), SETTLE, || {
            let mut con = cluster.try_connect(1).map_err(|e| e.to_string())?;
            redis::cmd("GET")
                .arg(key)
                .query(&mut con)
                .map_err(|e| e.to_string())
        });
        assert!(got == Some(value_of(*i)), "{key} lost or changed");
    }
    set(&cluster, 1, "after-restart", "ok").expect("a write after the restart");
    cluster.kill_all();
    eprintln!(
        "full disk test: {} writes acknowledged, took {:?}",
        acknowledged.len(),
        started.elapsed()
    );
}
