//! `raftis backup`, `raftis restore` and `raftis status` as an operator runs
//! them: the real binary against real processes.
//!
//! The backup is taken from a follower of a three-node cluster while
//! writers keep writing, then restored into a brand-new three-node cluster
//! (every member from the same file) and compared key by key. The check is
//! exact without stopping the load first: each writer writes its own keys
//! one at a time, in order (`w<t>:0`, `w<t>:1`, ...), so the backup, a
//! consistent cut of the log, must hold exactly a prefix of each writer's
//! sequence; that prefix must reach at least the last write acknowledged
//! before the backup started, and every key, preloaded or written, must
//! carry the value the source holds.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::harness::{
    connect, eventually, free_addrs, raftis_command, ProcessCluster, CLIENT_TIMEOUT,
    STARTUP_TIMEOUT,
};
use crate::tools::{self, Output};

/// Keys written before the load starts.
const PRELOAD: u64 = 5_000;

/// How long one tool invocation may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `raftis <args>` to completion.
fn raftis(args: &[&str]) -> Output {
    let mut cmd = raftis_command();
    cmd.args(args);
    tools::run(cmd, None, TOOL_TIMEOUT)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// A number after `label ` in a summary line (`index 42,`).
fn number_after(line: &str, label: &str) -> u64 {
    line.split(&format!("{label} "))
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no '{label} N' in {line}"))
}

/// Writers, each writing its own keys one at a time in order, until stopped.
struct Writers {
    stop: Arc<AtomicBool>,
    /// Per writer: how many of its writes were acknowledged.
    acked: Vec<Arc<AtomicU64>>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(addrs: &[SocketAddr], n: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut acked = Vec::new();
        let mut threads = Vec::new();
        for t in 0..n {
            let count = Arc::new(AtomicU64::new(0));
            acked.push(count.clone());
            let (stop, addr) = (stop.clone(), addrs[t % addrs.len()]);
            threads.push(std::thread::spawn(move || {
                let mut con = connect(addr).expect("writer connects");
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    // Every write here must succeed: nothing fails in this
                    // test, and a gap would break the prefix property.
                    let () = redis::cmd("SET")
                        .arg(format!("w{t}:{i}"))
                        .arg(format!("value {t} {i}"))
                        .query(&mut con)
                        .unwrap_or_else(|e| panic!("writer {t}, write {i}: {e}"));
                    i += 1;
                    count.store(i, Ordering::SeqCst);
                }
            }));
        }
        Writers {
            stop,
            acked,
            threads,
        }
    }

    fn acked(&self) -> Vec<u64> {
        self.acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect()
    }

    /// Stops them; returns how many writes each made.
    fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("writer thread");
        }
        self.acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect()
    }
}

/// Every key of the node at `addr` and its value.
fn contents(addr: SocketAddr) -> BTreeMap<String, String> {
    let mut con = connect(addr).expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).expect("KEYS");
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(chunk).query(&mut con).expect("MGET");
        for (k, v) in chunk.iter().zip(values) {
            out.insert(k.clone(), v.expect("a key listed by KEYS exists"));
        }
    }
    out
}

/// Members started from restored data dirs; killed on drop.
struct RestoredCluster {
    resp: Vec<SocketAddr>,
    children: Vec<Child>,
    dir: Option<tempfile::TempDir>,
}

impl RestoredCluster {
    /// Plans `n` members: ports, the member list and data dirs.
    fn plan(n: usize) -> (Vec<[SocketAddr; 3]>, String, tempfile::TempDir) {
        let addrs = free_addrs(3 * n);
        let members: Vec<[SocketAddr; 3]> = addrs.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
        let list = members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{}={}", i + 1, m[1]))
            .collect::<Vec<_>>()
            .join(",");
        let dir = tempfile::Builder::new()
            .prefix("raftis-restore-")
            .tempdir()
            .expect("temp dir");
        (members, list, dir)
    }

    fn data_dir(dir: &Path, id: usize) -> PathBuf {
        dir.join(format!("node{id}"))
    }

    /// Starts member `i + 1` of `members` on its data dir.
    fn start(members: &[[SocketAddr; 3]], list: &str, dir: tempfile::TempDir) -> RestoredCluster {
        let mut children = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let id = i + 1;
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join(format!("node{id}.log")))
                .expect("node log");
            let mut cmd = raftis_command();
            cmd.args(["--id", &id.to_string()])
                .args(["--listen", &m[0].to_string()])
                .args(["--peer-listen", &m[1].to_string()])
                .args(["--http-listen", &m[2].to_string()])
                .args(["--data-dir", path_str(&Self::data_dir(dir.path(), id))])
                .args(["--initial-cluster", list])
                .env("RAFTIS_RAFT__HEARTBEAT_INTERVAL_MS", "50")
                .env("RAFTIS_RAFT__ELECTION_TIMEOUT_MIN_MS", "300")
                .env("RAFTIS_RAFT__ELECTION_TIMEOUT_MAX_MS", "600")
                .stdout(Stdio::from(log.try_clone().expect("log handle")))
                .stderr(Stdio::from(log));
            children.push(cmd.spawn().expect("spawn raftis"));
        }
        RestoredCluster {
            resp: members.iter().map(|m| m[0]).collect(),
            children,
            dir: Some(dir),
        }
    }

    fn endpoints(&self) -> String {
        self.resp
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for RestoredCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            if let Some(dir) = &self.dir {
                for id in 1..=self.children.len() {
                    let log = std::fs::read_to_string(dir.path().join(format!("node{id}.log")))
                        .unwrap_or_default();
                    eprintln!("==== restored node {id} log ====\n{log}");
                }
            }
        }
    }
}

/// One row of `raftis status`' table, by column name.
fn status_rows(table: &str) -> Vec<BTreeMap<String, String>> {
    let lines: Vec<&str> = table.lines().filter(|l| l.starts_with('|')).collect();
    let cells = |line: &str| -> Vec<String> {
        line.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let header = cells(lines[0]);
    lines[1..]
        .iter()
        .map(|l| header.iter().cloned().zip(cells(l)).collect())
        .collect()
}

/// Waits until `raftis status` shows every endpoint with one leader among
/// them; returns the rows.
fn wait_for_status_leader(endpoints: &str) -> Vec<BTreeMap<String, String>> {
    eventually(
        "one leader and settled roles in raftis status",
        STARTUP_TIMEOUT,
        || {
            let out = raftis(&["status", "--endpoints", endpoints]);
            if !out.status.success() {
                return Err(out.to_string());
            }
            let rows = status_rows(&out.stdout);
            let leaders: Vec<&String> = rows.iter().map(|r| &r["LEADER"]).collect();
            let one_leader = rows.iter().filter(|r| r["ROLE"] == "leader").count() == 1;
            // A voter hears of the leader (its vote) a moment before it has
            // the membership that makes it a follower; until then Raft calls
            // it a learner.
            let settled = rows
                .iter()
                .all(|r| r["ROLE"] == "leader" || r["ROLE"] == "follower");
            if one_leader && settled && leaders.iter().all(|l| *l == leaders[0] && *l != "-") {
                Ok(rows)
            } else {
                Err(out.stdout)
            }
        },
    )
}

#[test]
fn backup_under_load_restores_into_a_new_cluster() {
    let source = ProcessCluster::start(3);
    let leader = source.wait_for_leader();
    let follower = source.followers()[0];
    {
        let mut con = source.connect(leader);
        // Enough data that preparing and streaming the backup takes a
        // while, with the writers going on meanwhile.
        let mut pipe = redis::pipe();
        for i in 0..PRELOAD {
            pipe.cmd("SET")
                .arg(format!("pre:{i}"))
                .arg(format!("{i:0>400}"))
                .ignore();
        }
        let () = pipe.query(&mut con).expect("preload");
    }
    let addrs: Vec<SocketAddr> = source
        .ids()
        .iter()
        .map(|id| source.addrs(*id).resp)
        .collect();
    let writers = Writers::start(&addrs, 3);
    eventually("writes under way", CLIENT_TIMEOUT, || {
        if writers.acked().iter().all(|n| *n >= 100) {
            Ok(())
        } else {
            Err(format!("{:?}", writers.acked()))
        }
    });

    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("cluster.backup");
    let acked_before = writers.acked();
    let out = raftis(&[
        "backup",
        "--from",
        &source.addrs(follower).resp.to_string(),
        path_str(&file),
    ]);
    out.assert_success("raftis backup");
    let written = writers.stop();
    let summary = out.stdout.trim();
    assert!(
        summary.starts_with(&format!(
            "backup of {} saved to {}: index ",
            source.addrs(follower).resp,
            file.display()
        )),
        "{out}"
    );
    let index = number_after(summary, "index");
    assert!(number_after(summary, "term") >= 1, "{out}");
    let bytes: u64 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" bytes"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {summary}"));
    assert_eq!(std::fs::metadata(&file).expect("backup file").len(), bytes);
    assert!(out.stderr.is_empty(), "{out}");

    let (members, list, dir) = RestoredCluster::plan(3);
    for id in 1..=3 {
        let data_dir = RestoredCluster::data_dir(dir.path(), id);
        let out = raftis(&[
            "restore",
            path_str(&file),
            "--data-dir",
            path_str(&data_dir),
            "--id",
            &id.to_string(),
            "--initial-cluster",
            &list,
        ]);
        out.assert_success("raftis restore");
        assert!(
            out.stdout.starts_with(&format!(
                "restored {} into {} as member {id} of {list}: index {index}, term ",
                file.display(),
                data_dir.display()
            )),
            "{out}"
        );
    }
    let restored = RestoredCluster::start(&members, &list, dir);
    let rows = wait_for_status_leader(&restored.endpoints());
    for row in &rows {
        assert!(
            row["APPLIED"].parse::<u64>().expect("APPLIED") >= index,
            "{row:?}"
        );
        assert_eq!(row["ERRORS"], "", "{row:?}");
    }

    let source_keys = contents(source.addrs(leader).resp);
    for addr in &restored.resp {
        let got = contents(*addr);
        let mut prefixes = vec![0u64; acked_before.len()];
        for (key, value) in &got {
            assert_eq!(Some(value), source_keys.get(key), "{key} on {addr}");
            if let Some(rest) = key.strip_prefix('w') {
                let (t, i) = rest.split_once(':').expect("w<t>:<i>");
                let (t, i): (usize, u64) = (t.parse().unwrap(), i.parse().unwrap());
                prefixes[t] = prefixes[t].max(i + 1);
            }
        }
        for (t, n) in prefixes.iter().enumerate() {
            for i in 0..*n {
                assert!(
                    got.contains_key(&format!("w{t}:{i}")),
                    "w{t}:{i} missing on {addr}: not a prefix"
                );
            }
            assert!(
                *n >= acked_before[t],
                "writer {t}: {} writes acknowledged before the backup, only {n} restored on {addr}",
                acked_before[t]
            );
            assert!(*n <= written[t]);
        }
        let pre = got.keys().filter(|k| k.starts_with("pre:")).count();
        assert_eq!(pre as u64, PRELOAD, "preloaded keys on {addr}");
        assert_eq!(
            got.len() as u64,
            PRELOAD + prefixes.iter().sum::<u64>(),
            "nothing else on {addr}"
        );
    }
    eprintln!(
        "backup at index {index}: writes acknowledged before it {acked_before:?}, made in all {written:?}"
    );
}

#[test]
fn damaged_backups_and_bad_invocations_are_refused() {
    let source = ProcessCluster::start(1);
    {
        let mut con = source.connect(1);
        let () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query(&mut con)
            .expect("SET");
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("good.backup");
    let resp = source.addrs(1).resp.to_string();
    raftis(&["backup", "--from", &resp, path_str(&file)]).assert_success("raftis backup");
    let good = std::fs::read(&file).expect("read backup");

    let restore = |backup: &Path, data_dir: &Path, id: &str, list: &str| {
        raftis(&[
            "restore",
            path_str(backup),
            "--data-dir",
            path_str(data_dir),
            "--id",
            id,
            "--initial-cluster",
            list,
        ])
    };
    let list = "1=127.0.0.1:7001,2=127.0.0.1:7002";
    let target = scratch.path().join("target");

    let mut corrupt = good.clone();
    let at = corrupt.len() / 2;
    corrupt[at] ^= 0xff;
    let truncated = good[..good.len() - 100].to_vec();
    for (name, bytes, message) in [
        (
            "corrupt",
            corrupt,
            "the backup is corrupt: its checksum is ",
        ),
        ("truncated", truncated, "the backup is truncated: "),
    ] {
        let path = scratch.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let out = restore(&path, &target, "1", list);
        assert_eq!(out.status.code(), Some(1), "{out}");
        let expected = format!(
            "raftis restore: {} is not a usable backup: {message}",
            path.display()
        );
        assert!(out.stderr.starts_with(&expected), "{out}");
        assert!(
            out.stderr.trim_end().ends_with("; nothing was written"),
            "{out}"
        );
        assert!(out.stdout.is_empty(), "{out}");
        assert!(!target.exists(), "{name}: nothing may be written");
    }

    std::fs::create_dir_all(&target).expect("mkdir");
    std::fs::write(target.join("old"), b"x").expect("write");
    let out = restore(&file, &target, "1", list);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "raftis restore: data dir {} is not empty; restore only seeds a new, empty data dir",
            target.display()
        )
    );

    let fresh = scratch.path().join("fresh");
    let out = restore(&file, &fresh, "3", list);
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert_eq!(
        out.stderr.trim_end(),
        "raftis restore: --id 3 is not in --initial-cluster (ids: 1, 2)"
    );
    let out = restore(&file, &fresh, "1", "1=nowhere");
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains("invalid value '1=nowhere' for '--initial-cluster <LIST>'"),
        "{out}"
    );
    assert!(!fresh.exists());

    let dead = free_addrs(1)[0].to_string();
    let out = raftis(&[
        "backup",
        "--from",
        &dead,
        path_str(&scratch.path().join("x")),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .starts_with(&format!("raftis backup: cannot connect to {dead}: ")),
        "{out}"
    );
    let out = raftis(&["backup", path_str(&scratch.path().join("x"))]);
    assert_eq!(out.status.code(), Some(2), "{out}");

    // The good one still restores.
    restore(&file, &fresh, "1", list).assert_success("restore of the good backup");
}

#[test]
fn status_prints_one_row_per_endpoint() {
    let cluster = ProcessCluster::start(3);
    let leader = cluster.wait_for_leader();
    let dead = free_addrs(1)[0].to_string();
    let endpoints: Vec<String> = cluster
        .ids()
        .iter()
        .map(|id| cluster.addrs(*id).resp.to_string())
        .collect();
    let all = endpoints.join(",");
    let rows = wait_for_status_leader(&all);
    assert_eq!(rows.len(), 3);
    for (row, id) in rows.iter().zip(cluster.ids()) {
        assert_eq!(row["ENDPOINT"], cluster.addrs(id).resp.to_string());
        assert_eq!(row["ID"], id.to_string());
        assert_eq!(
            row["ROLE"],
            if id == leader { "leader" } else { "follower" }
        );
        assert_eq!(row["LEADER"], leader.to_string());
        let term: u64 = row["TERM"].parse().expect("TERM");
        assert!(term >= 1);
        let commit: u64 = row["COMMIT"].parse().expect("COMMIT");
        let applied: u64 = row["APPLIED"].parse().expect("APPLIED");
        assert!(applied <= commit + 1, "{row:?}");
        assert!(!row["DB SIZE"].is_empty(), "{row:?}");
    }

    let out = raftis(&[
        "status",
        "--endpoints",
        &format!("{all},{dead}"),
        "--timeout",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let rows = status_rows(&out.stdout);
    assert_eq!(rows.len(), 4, "{out}");
    assert_eq!(rows[3]["ENDPOINT"], dead);
    assert!(
        rows[3]["ERRORS"].starts_with(&format!("cannot connect to {dead}: ")),
        "{out}"
    );
    assert_eq!(rows[3]["ID"], "");
    assert!(rows[..3].iter().all(|r| r["ERRORS"].is_empty()), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .all(|l| l.chars().count() == lines[0].chars().count()),
        "{out}"
    );
}

/// A `redis-server` on a free port, killed on drop.
struct RedisServer {
    addr: SocketAddr,
    child: Child,
}

impl RedisServer {
    fn start() -> RedisServer {
        let program = tools::require(
            "redis-server",
            "apt-get install redis-server (Debian/Ubuntu; .ci/run does it)",
        );
        let addr = free_addrs(1)[0];
        let child = std::process::Command::new(program)
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let server = RedisServer { addr, child };
        eventually("redis-server answers", STARTUP_TIMEOUT, || {
            let mut con = connect(server.addr).map_err(|e| e.to_string())?;
            redis::cmd("PING")
                .query::<String>(&mut con)
                .map_err(|e| e.to_string())
        });
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tools_pointed_at_a_plain_redis_server_say_so() {
    let redis = RedisServer::start();
    let addr = redis.addr.to_string();
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("b");
    let out = raftis(&["backup", "--from", &addr, path_str(&file)]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr.starts_with(&format!(
            "raftis backup: {addr} refused RAFT.BACKUP BEGIN: ERR unknown command 'RAFT.BACKUP'"
        )),
        "{out}"
    );
    assert!(!file.exists() && !scratch.path().join("b.tmp").exists());

    let out = raftis(&["status", "--endpoints", &addr]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let rows = status_rows(&out.stdout);
    assert_eq!(
        rows[0]["ERRORS"], "INFO raft has no 'leader_id' field (not a raftis node?)",
        "{out}"
    );
}
