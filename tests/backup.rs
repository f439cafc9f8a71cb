//! Backup and restore with every node in this process: `raftis backup`'s
//! code against a running cluster, `raftis restore`'s into new data dirs,
//! and a new cluster started from them, compared key by key (value, type
//! and expiry) with the source through the stores themselves. Also the
//! refusals: corrupt and truncated backups, a non-empty data dir, an id not
//! in the list, bad `RAFT.BACKUP` arguments, no quorum; a transfer that
//! survives a lost connection; idle backups expiring; and that a member
//! that starts empty in a restored cluster, or joins it with `--join`, is
//! caught up by the snapshot, with the new membership.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, node_config};
use raftis::config::{Config, InitialCluster};
use raftis::node::{Node, RunningNode};
use raftis::resp_client::{RespClient, RespValue};
use raftis::storage::Store;
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(10);

/// Every live key of `store` with its value and expiry, sorted.
fn dump(store: &Store) -> Vec<(Bytes, Option<u64>, Bytes)> {
    let mut keys = store.keys(b"*", 0).unwrap();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let v = store.get(&k, 0).unwrap().unwrap();
            (k, v.expire_at, v.payload)
        })
        .collect()
}

/// Fills the source with small keys, binary keys and values, keys with a
/// TTL, and a few values large enough that the backup spans several READ
/// chunks.
async fn populate(con: &mut redis::aio::MultiplexedConnection) {
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET")
            .arg(format!("key:{i}"))
            .arg(format!("value {i}"))
            .ignore();
    }
    pipe.cmd("SET")
        .arg(&b"bin\x00\xff\r\n"[..])
        .arg(&b"\x00\x01\x02"[..])
        .ignore();
    pipe.cmd("SET")
        .arg("ttl:a")
        .arg("1")
        .arg("EX")
        .arg(3600)
        .ignore();
    pipe.cmd("SET")
        .arg("ttl:b")
        .arg("2")
        .arg("PXAT")
        .arg(4_000_000_000_000u64)
        .ignore();
    pipe.cmd("INCRBY").arg("counter").arg(42).ignore();
    let _: () = pipe.query_async(con).await.unwrap();
    for i in 0..3 {
        let big = vec![b'a' + i as u8; 3 * 1024 * 1024];
        let _: () = redis::cmd("SET")
            .arg(format!("big:{i}"))
            .arg(big)
            .query_async(con)
            .await
            .unwrap();
    }
}

/// A one-node cluster filled by [`populate`].
async fn populated_node() -> Nodes {
    let source = Nodes::fresh(1).await;
    let mut con = source.client(1).await;
    populate(&mut con).await;
    source
}

/// A backup of a populated one-node cluster, with what a cluster restored
/// from it must hold. The source keeps running while this lives.
struct SourceBackup {
    _source: Nodes,
    file: PathBuf,
    index: u64,
    dump: Vec<(Bytes, Option<u64>, Bytes)>,
    _scratch: tempfile::TempDir,
}

impl SourceBackup {
    async fn take() -> SourceBackup {
        let source = populated_node().await;
        let scratch = tempfile::tempdir().unwrap();
        let file = scratch.path().join("b");
        let index = index_in(&backup_to(&source, 1, &file).await);
        let dump = dump(source.store(1));
        SourceBackup {
            _source: source,
            file,
            index,
            dump,
            _scratch: scratch,
        }
    }
}

/// The member slots of an in-process cluster before it starts: listeners
/// bound on port 0 (so the member list is known before anything is
/// restored) and a data dir each, under one temp dir.
struct Planned {
    members: Vec<(u64, TcpListener, TcpListener)>,
    list: InitialCluster,
    dir: tempfile::TempDir,
}

/// A running in-process cluster; dropping it stops every node.
struct Nodes {
    nodes: Vec<RunningNode>,
    _dir: tempfile::TempDir,
}

impl Planned {
    async fn new(n: u64) -> Planned {
        let mut members = Vec::new();
        for id in 1..=n {
            let resp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
            members.push((id, resp, peer));
        }
        let list = members
            .iter()
            .map(|(id, _, peer)| format!("{id}={}", peer.local_addr().unwrap()))
            .collect::<Vec<_>>()
            .join(",")
            .parse()
            .unwrap();
        Planned {
            members,
            list,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    /// Restores `file` into the data dirs of members `ids`.
    async fn restore(&self, file: &Path, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            raftis::tool::restore::run(file, &self.data_dir(id), id, &self.list)
                .await
                .unwrap();
        }
    }

    /// Starts every member on its data dir (restored or empty) and waits
    /// for a leader.
    async fn start(self) -> Nodes {
        let mut nodes = Vec::new();
        for (id, resp, peer) in self.members {
            let config = Config {
                initial_cluster: Some(self.list.clone()),
                ..node_config(id, &resp, &peer, self.dir.path().join(format!("node{id}")))
            };
            nodes.push(
                raftis::node::start(config, resp, peer)
                    .await
                    .expect("node starts"),
            );
        }
        let nodes = Nodes {
            nodes,
            _dir: self.dir,
        };
        nodes.wait_for_leader().await;
        nodes
    }
}

impl Nodes {
    async fn fresh(n: u64) -> Nodes {
        Planned::new(n).await.start().await
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes[(id - 1) as usize].node()
    }

    fn resp_addr(&self, id: u64) -> String {
        self.nodes[(id - 1) as usize].resp_addr().to_string()
    }

    fn store(&self, id: u64) -> &Store {
        &self.node(id).store
    }

    async fn client(&self, id: u64) -> redis::aio::MultiplexedConnection {
        // Longer than any request timeout: the server, not the client,
        // decides when a request has failed.
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        redis::Client::open(format!("redis://{}", self.resp_addr(id)))
            .unwrap()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap()
    }

    /// Waits until every node knows the same leader; returns it.
    async fn wait_for_leader(&self) -> u64 {
        let mut leader = 0;
        eventually(T, || {
            let seen: Vec<Option<u64>> = self
                .nodes
                .iter()
                .map(|n| n.node().cluster.status().leader_id)
                .collect();
            match seen.first() {
                Some(Some(l)) if seen.iter().all(|s| *s == Some(*l)) => {
                    leader = *l;
                    self.node(*l).cluster.status().role == "leader"
                }
                _ => false,
            }
        })
        .await;
        leader
    }
}

async fn backup_to(cluster: &Nodes, id: u64, file: &Path) -> String {
    raftis::tool::backup::run(&cluster.resp_addr(id), file, T)
        .await
        .expect("backup succeeds")
}

/// The error `raftis backup` ends with.
async fn backup_error(addr: &str, file: &Path, timeout: Duration) -> String {
    raftis::tool::backup::run(addr, file, timeout)
        .await
        .unwrap_err()
        .to_string()
}

/// The error `raftis restore` refuses with.
async fn restore_error(file: &Path, target: &Path, id: u64, list: &InitialCluster) -> String {
    raftis::tool::restore::run(file, target, id, list)
        .await
        .unwrap_err()
        .to_string()
}

/// `index N` out of a summary line.
fn index_in(summary: &str) -> u64 {
    summary
        .split("index ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no index in {summary}"))
}

/// `term N` out of a summary line.
fn term_in(summary: &str) -> u64 {
    summary
        .split("term ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no term in {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restore_start_every_key_equal() {
    let source = Nodes::fresh(3).await;
    let leader = source.wait_for_leader().await;
    let follower = if leader == 1 { 2 } else { 1 };
    let mut con = source.client(follower).await;
    populate(&mut con).await;

    // From a follower: its read barrier makes the backup include every
    // write acknowledged above.
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("raftis.backup");
    let summary = backup_to(&source, follower, &file).await;
    assert!(
        summary.starts_with(&format!(
            "backup of {} saved to {}: index ",
            source.resp_addr(follower),
            file.display()
        )),
        "{summary}"
    );
    let entries: Vec<String> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["raftis.backup"], "no .tmp left behind");
    let backup_index = index_in(&summary);
    let backup_term = term_in(&summary);
    assert!(backup_index <= source.node(follower).cluster.status().last_applied);
    // The node deleted its copy when the tool ended the backup.
    let backups =
        raftis::cluster::backup::Backups::in_data_dir(&source.node(follower).config.data_dir);
    assert_eq!(backups.running().unwrap(), 0);

    // No write happened after the backup: the source's state is the backup's.
    let source_dump = dump(source.store(leader));
    assert_eq!(source_dump.len(), 2000 + 1 + 2 + 1 + 3);
    assert_eq!(dump(source.store(follower)), source_dump);

    let new = Planned::new(3).await;
    for id in 1..=3 {
        let line = raftis::tool::restore::run(&file, &new.data_dir(id), id, &new.list)
            .await
            .expect("restore succeeds");
        let prefix = format!(
            "restored {} into {} as member {id} of {}: index {backup_index}, term ",
            file.display(),
            new.data_dir(id).display(),
            new.list,
        );
        assert!(line.starts_with(&prefix), "{line}");
        assert!(
            line.ends_with(&format!(", {} keys", source_dump.len())),
            "{line}"
        );
    }
    let restored = new.start().await;
    let new_leader = restored.wait_for_leader().await;
    for id in 1..=3 {
        let status = restored.node(id).cluster.status();
        assert_eq!(status.voters, vec![1, 2, 3]);
        assert!(status.last_applied >= backup_index, "{status:?}");
        assert!(
            status.term > backup_term,
            "elections start above the backup's term: {status:?}"
        );
        assert_eq!(
            status.purged_index, backup_index,
            "the log starts after the backup"
        );
        assert_eq!(dump(restored.store(id)), source_dump, "node {id}");
        assert_eq!(restored.store(id).expires_count(), 2, "node {id}");
    }
    // The new cluster takes writes, through any member.
    let mut c = restored.client(new_leader % 3 + 1).await;
    let n: i64 = redis::cmd("INCR")
        .arg("counter")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_backups_and_bad_targets_are_refused_before_writing() {
    let source = populated_node().await;
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("good.backup");
    backup_to(&source, 1, &file).await;
    let good = std::fs::read(&file).unwrap();
    let list: InitialCluster = "1=127.0.0.1:7001".parse().unwrap();

    let refused = |bytes: Vec<u8>, name: &str| {
        let path = scratch.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let mut flipped_trailer = good.clone();
    let near_end = flipped_trailer.len() - 30;
    flipped_trailer[near_end] ^= 0x80;
    let cases = [
        (
            refused(flipped, "flipped"),
            "the backup is corrupt: its checksum is ",
        ),
        (
            refused(flipped_trailer, "flipped_trailer"),
            "the backup is corrupt: its checksum is ",
        ),
        (
            refused(good[..good.len() - 1].to_vec(), "short_by_one"),
            &*format!(
                "the backup is truncated: {} of {} bytes",
                good.len() - 1,
                good.len()
            ),
        ),
        (
            refused(good[..good.len() / 3].to_vec(), "third"),
            &*format!(
                "the backup is truncated: {} of {} bytes",
                good.len() / 3,
                good.len()
            ),
        ),
        (
            refused(b"*1\r\n$4\r\nPING\r\n".to_vec(), "foreign"),
            "not a raftis backup file",
        ),
    ];
    for (path, message) in cases {
        let target = scratch.path().join("target");
        let err = restore_error(&path, &target, 1, &list).await;
        assert!(
            err.starts_with(&format!(
                "{} is not a usable backup: {message}",
                path.display()
            )),
            "{err}"
        );
        assert!(err.ends_with("; nothing was written"), "{err}");
        assert!(
            !target.exists(),
            "{}: nothing may be written",
            path.display()
        );
    }

    // A backup whose own checksum is right but whose snapshot data is not
    // (as a faulty node would send): the import's own checksum catches it,
    // and the half-seeded data dir is removed again.
    let mut inner = good.clone();
    let header_len = raftis::tool::backup_file::HEADER_LEN as usize;
    inner[header_len + 12] ^= 0x01;
    let header = raftis::tool::backup_file::Header {
        payload_len: (inner.len() - header_len) as u64,
        payload_xxh3: xxhash_rust::xxh3::xxh3_64(&inner[header_len..]),
    };
    inner[..header_len].copy_from_slice(&header.encode());
    let path = refused(inner, "inner");
    let target = scratch.path().join("target-inner");
    let err = restore_error(&path, &target, 1, &list).await;
    assert!(
        err.starts_with(&format!(
            "restore failed: cannot seed {}: importing the snapshot: ",
            target.display()
        )),
        "{err}"
    );
    assert!(!target.exists(), "a failed restore removes what it wrote");
    assert!(!scratch.path().join(".target-inner.restoring").exists());

    let missing = restore_error(
        &scratch.path().join("nope"),
        &scratch.path().join("t"),
        1,
        &list,
    )
    .await;
    assert!(
        missing.starts_with(&format!(
            "cannot open {}: ",
            scratch.path().join("nope").display()
        )),
        "{missing}"
    );

    let busy = scratch.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("something"), b"x").unwrap();
    let err = restore_error(&file, &busy, 1, &list).await;
    assert_eq!(
        err,
        format!(
            "data dir {} is not empty; restore only seeds a new, empty data dir",
            busy.display()
        )
    );
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    let err = restore_error(&file, &scratch.path().join("t2"), 4, &list).await;
    assert_eq!(err, "--id 4 is not in --initial-cluster (ids: 1)");

    // An existing empty dir is fine, and the leftover of a restore into it
    // that was killed midway is cleared.
    let empty = scratch.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let leftover = scratch.path().join(".empty.restoring");
    std::fs::create_dir_all(leftover.join("db")).unwrap();
    std::fs::write(leftover.join("db").join("junk"), b"x").unwrap();
    raftis::tool::restore::run(&file, &empty, 1, &list)
        .await
        .unwrap();
    assert!(empty.join("db").is_dir() && empty.join("snapshots").is_dir());
    assert!(!empty.join("db").join("junk").exists());
    assert!(!leftover.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_member_of_a_restored_cluster_is_caught_up_by_snapshot() {
    let backup = SourceBackup::take().await;

    // Members 1 and 2 are restored; member 3 starts with an empty data dir,
    // so everything before the restored log (which does not exist) must
    // reach it as the snapshot.
    let new = Planned::new(3).await;
    new.restore(&backup.file, 1..=2).await;
    let restored = new.start().await;
    let third = restored.node(3);
    eventually(T, || third.cluster.status().last_applied >= backup.index).await;
    let status = third.cluster.status();
    assert!(status.snapshot_index >= backup.index, "{status:?}");
    assert_eq!(status.voters, vec![1, 2, 3]);
    let members: Vec<u64> = status.members.iter().map(|(id, _)| *id).collect();
    assert_eq!(members, vec![1, 2, 3]);
    assert_eq!(
        status.members,
        restored.node(1).cluster.status().members,
        "the snapshot carries the new cluster's membership"
    );
    assert_eq!(dump(&third.store), backup.dump);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_backup_over_resp() {
    let source = Nodes::fresh(1).await;
    let addr = source.resp_addr(1);
    let mut c = RespClient::connect(&addr, T).await.unwrap();
    let begin = c.call(&[b"RAFT.BACKUP", b"BEGIN"]).await.unwrap();
    let items = begin.as_array().expect("a map as a flat array").to_vec();
    let names: Vec<&str> = items
        .iter()
        .step_by(2)
        .filter_map(RespValue::as_str)
        .collect();
    assert_eq!(
        names,
        ["id", "size", "xxh3", "last_log_index", "last_log_term"]
    );
    let id = items[1].as_str().unwrap().to_owned();
    let size = items[3].as_integer().unwrap();
    assert_eq!(items[5].as_str().unwrap().len(), 16);

    let chunk = c
        .call(&[b"RAFT.BACKUP", b"READ", id.as_bytes(), b"0", b"10"])
        .await
        .unwrap();
    assert_eq!(chunk.as_bytes().map(<[u8]>::len), Some(10));
    let past_end = size.to_string();
    let empty = c
        .call(&[
            b"RAFT.BACKUP",
            b"READ",
            id.as_bytes(),
            past_end.as_bytes(),
            b"10",
        ])
        .await
        .unwrap();
    assert_eq!(empty, RespValue::Bulk(Some(Bytes::new())));

    let expect_error = |reply: RespValue, text: &str| {
        assert_eq!(reply, RespValue::Error(text.to_owned()));
    };
    expect_error(
        c.call(&[b"RAFT.BACKUP", b"READ", id.as_bytes(), b"0", b"0"])
            .await
            .unwrap(),
        "ERR count must be between 1 and 8388608",
    );
    expect_error(
        c.call(&[b"RAFT.BACKUP", b"READ", id.as_bytes(), b"-1", b"1"])
            .await
            .unwrap(),
        "ERR offset must not be negative",
    );
    expect_error(
        c.call(&[b"RAFT.BACKUP", b"READ", b"../../etc/passwd", b"0", b"1"])
            .await
            .unwrap(),
        "ERR no such backup '../../etc/passwd' (ended, idle for too long, or the node restarted)",
    );
    expect_error(
        c.call(&[b"RAFT.BACKUP", b"BEGIN", b"extra"]).await.unwrap(),
        "ERR wrong number of arguments for 'raft.backup|begin' command",
    );
    expect_error(
        c.call(&[b"RAFT.BACKUP", b"NOPE"]).await.unwrap(),
        "ERR unknown subcommand 'NOPE'. Try RAFT.BACKUP HELP.",
    );
    expect_error(
        c.call(&[b"RAFT.BACKUP"]).await.unwrap(),
        "ERR wrong number of arguments for 'raft.backup' command",
    );
    assert!(c
        .call(&[b"RAFT.BACKUP", b"HELP"])
        .await
        .unwrap()
        .as_array()
        .is_some());

    assert_eq!(
        c.call(&[b"RAFT.BACKUP", b"END", id.as_bytes()])
            .await
            .unwrap(),
        RespValue::Simple("OK".into())
    );
    expect_error(
        c.call(&[b"RAFT.BACKUP", b"END", id.as_bytes()])
            .await
            .unwrap(),
        &format!("ERR no such backup '{id}' (ended, idle for too long, or the node restarted)"),
    );
    expect_error(
        c.call(&[b"RAFT.BACKUP", b"READ", id.as_bytes(), b"0", b"1"])
            .await
            .unwrap(),
        &format!("ERR no such backup '{id}' (ended, idle for too long, or the node restarted)"),
    );

    // At most four at once; ending one makes room.
    let mut ids = Vec::new();
    for _ in 0..4 {
        let begin = c.call(&[b"RAFT.BACKUP", b"BEGIN"]).await.unwrap();
        ids.push(begin.as_array().unwrap()[1].as_str().unwrap().to_owned());
    }
    expect_error(
        c.call(&[b"RAFT.BACKUP", b"BEGIN"]).await.unwrap(),
        "ERR too many backups in progress on this node (4); try again later",
    );
    c.call(&[b"RAFT.BACKUP", b"END", ids[0].as_bytes()])
        .await
        .unwrap();
    assert!(!c
        .call(&[b"RAFT.BACKUP", b"BEGIN"])
        .await
        .unwrap()
        .is_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_errors_are_clear() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("b");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = backup_error(&dead, &file, T).await;
    assert!(
        err.starts_with(&format!("cannot connect to {dead}: ")),
        "{err}"
    );
    assert!(!file.exists());

    // A local file that cannot be written: the node's session is still
    // ended, so nothing stays behind on it.
    let source = Nodes::fresh(1).await;
    let addr = source.resp_addr(1);
    let target = scratch.path().join("no-such-dir").join("b");
    let err = backup_error(&addr, &target, T).await;
    assert!(
        err.starts_with(&format!("cannot write {}.tmp: ", target.display())),
        "{err}"
    );
    let backups = raftis::cluster::backup::Backups::in_data_dir(&source.node(1).config.data_dir);
    assert_eq!(backups.running().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_keep_a_backup_alive_and_idle_ones_expire() {
    let source = Nodes::fresh(1).await;
    let node = source.node(1);
    let dir = node.config.data_dir.clone();

    // A read marks the backup as in use (its file's modification time).
    let kept = raftis::cluster::backup::Backups::in_data_dir(&dir);
    let info = kept.begin(&node.cluster, node.store.clone()).await.unwrap();
    let path = dir
        .join("snapshots")
        .join(format!("backup-{}.tmp", info.id));
    let long_ago = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    std::fs::File::open(&path)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    kept.read(&info.id, 0, 1).await.unwrap();
    let touched = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert!(touched > long_ago + Duration::from_secs(1_000_000));
    kept.end(&info.id).unwrap();

    // One nobody reads is deleted after the idle timeout.
    let short = raftis::cluster::backup::Backups::in_data_dir(&dir)
        .with_idle_timeout(Duration::from_millis(300));
    let info = short
        .begin(&node.cluster, node.store.clone())
        .await
        .unwrap();
    assert_eq!(short.running().unwrap(), 1);
    eventually(Duration::from_secs(10), || short.running().unwrap() == 0).await;
    let gone = short.read(&info.id, 0, 1).await.unwrap_err().to_string();
    assert!(gone.starts_with("ERR no such backup"), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_without_quorum_is_refused_as_clusterdown() {
    let mut source = Nodes::fresh(3).await;
    let leader = source.wait_for_leader().await;
    let survivor = if leader == 1 { 2 } else { 1 };
    let addr = source.resp_addr(survivor);
    // Stop the two others: the survivor can confirm no read index.
    let mut others: Vec<RunningNode> = Vec::new();
    for id in (1..=3).rev() {
        if id != survivor {
            others.push(source.nodes.remove((id - 1) as usize));
        }
    }
    for node in others {
        node.stop().await;
    }
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("b");
    let err = backup_error(&addr, &file, Duration::from_secs(30)).await;
    assert!(
        err.starts_with(&format!("{addr} refused RAFT.BACKUP BEGIN: CLUSTERDOWN ")),
        "{err}"
    );
    assert!(!file.exists());
    assert!(!scratch.path().join("b.tmp").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_joins_a_restored_cluster_gets_the_restored_data() {
    let backup = SourceBackup::take().await;
    let new = Planned::new(3).await;
    new.restore(&backup.file, 1..=3).await;
    let restored = new.start().await;

    // A fourth node with an empty data dir joins through member 2
    // (RAFT.NODE ADD under the hood): the restored log is purged behind
    // the backup, so only the snapshot can bring it the data.
    let resp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        join: Some(restored.resp_addr(2).parse().unwrap()),
        ..node_config(4, &resp, &peer, dir.path().to_path_buf())
    };
    let fourth = raftis::node::start(config, resp, peer)
        .await
        .expect("node 4 starts");
    eventually(Duration::from_secs(30), || {
        let status = fourth.node().cluster.status();
        status.voters == [1, 2, 3, 4] && status.last_applied >= backup.index
    })
    .await;
    let status = fourth.node().cluster.status();
    assert!(status.snapshot_index >= backup.index, "{status:?}");
    assert_eq!(dump(&fourth.node().store), backup.dump);
    assert_eq!(restored.node(1).cluster.status().voters, [1, 2, 3, 4]);
}

/// A TCP relay to `upstream` that cuts its first connection once it has
/// relayed `cut_after` bytes towards the client; later connections relay
/// everything. Returns its address.
async fn cutting_relay(upstream: String, cut_after: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let limit = if first { Some(cut_after) } else { None };
            first = false;
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut relayed = 0usize;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if limit.is_some_and(|l| relayed + n > l) {
                        break;
                    }
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    relayed += n;
                }
                up.abort();
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_lost_mid_transfer_is_resumed() {
    let source = populated_node().await;
    // Cut after the first 4 MiB chunk and part of the second.
    let relay = cutting_relay(source.resp_addr(1), 6 * 1024 * 1024).await;
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("b");
    let summary = raftis::tool::backup::run(&relay, &file, T)
        .await
        .expect("the backup survives one lost connection");
    let backup_index = index_in(&summary);

    let new = Planned::new(1).await;
    new.restore(&file, [1]).await;
    let restored = new.start().await;
    assert!(restored.node(1).cluster.status().last_applied >= backup_index);
    assert_eq!(dump(restored.store(1)), dump(source.store(1)));
}
