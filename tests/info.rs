//! `INFO` on an in-process node, read as Redis dashboards and exporters
//! read it: Redis 7's sections in Redis's order, every line `name:value`,
//! and counters that move with what clients do (commands, error replies by
//! prefix, keyspace hits and misses, expiry deletions, instantaneous
//! rates, CPU time), and that `CONFIG RESETSTAT` zeroes.
//!
//! The section lists and formats were compared with a real `redis-server`
//! 7 given the same commands.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Cluster, NodeTuning};
use redis::aio::MultiplexedConnection;
use redis::Value;

/// How long a counter may take to move (expiry runs every 100 ms; rates
/// are sampled every 100 ms).
const DEADLINE: Duration = Duration::from_secs(10);

async fn one_node() -> (Cluster, MultiplexedConnection) {
    let cluster = Cluster::start(1, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let con = cluster.client(leader).await;
    (cluster, con)
}

/// `INFO <args>` as text, whatever its RESP type.
async fn info(con: &mut MultiplexedConnection, args: &[&str]) -> String {
    let mut cmd = redis::cmd("INFO");
    for a in args {
        cmd.arg(*a);
    }
    match cmd.query_async::<Value>(con).await.unwrap() {
        Value::BulkString(b) => String::from_utf8(b).unwrap(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("not a text reply: {other:?}"),
    }
}

/// Parses INFO as redis_exporter and client libraries do: `# Name` lines
/// open a section, empty lines separate them, every other line is
/// `name:value` split at the first colon. Panics on any other line, or on a
/// name repeated anywhere in the reply (exporters key fields by name alone,
/// so `role` must mean Replication's). Returns the sections and the fields.
fn parse(text: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let mut sections: Vec<String> = Vec::new();
    let mut fields = BTreeMap::new();
    assert!(text.is_empty() || text.ends_with("\r\n"), "{text:?}");
    for line in text.split("\r\n") {
        if line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix("# ") {
            sections.push(section.to_owned());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("not name:value: {line:?}"));
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'|'),
            "bad field name in {line:?}"
        );
        assert!(!value.contains('\n') && !value.contains('\r'), "{line:?}");
        assert!(
            fields.insert(name.to_owned(), value.to_owned()).is_none(),
            "{name} in two sections"
        );
    }
    (sections, fields)
}

fn number(fields: &BTreeMap<String, String>, name: &str) -> u64 {
    let value = fields
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {fields:?}"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("{name}:{value} is not a count"))
}

fn float(fields: &BTreeMap<String, String>, name: &str) -> f64 {
    let value = fields
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {fields:?}"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("{name}:{value} is not a number"))
}

async fn send(con: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async::<Value>(con).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sections_come_in_redis_groups_and_order() {
    let (cluster, mut con) = one_node().await;
    send(&mut con, &["SET", "k", "v"]).await.unwrap();

    let default = [
        "Server",
        "Clients",
        "Memory",
        "Persistence",
        "Stats",
        "Replication",
        "CPU",
        "Modules",
        "Errorstats",
        "Cluster",
        "Keyspace",
        "Raft",
    ];
    let (sections, fields) = parse(&info(&mut con, &[]).await);
    assert_eq!(sections, default);
    let (again, _) = parse(&info(&mut con, &["default"]).await);
    assert_eq!(again, default);
    // `all` and `everything` add the per-command section, in Redis's place.
    for group in ["all", "EVERYTHING"] {
        let (sections, _) = parse(&info(&mut con, &[group]).await);
        let mut expected = default.to_vec();
        expected.insert(8, "Commandstats");
        expected.insert(10, "Latencystats");
        assert_eq!(sections, expected, "INFO {group}");
    }
    // Several names, any case, printed in Redis's order; unknown ones add
    // nothing.
    let (sections, _) = parse(&info(&mut con, &["errorstats", "CPU", "nosuch", "Server"]).await);
    assert_eq!(sections, ["Server", "CPU", "Errorstats"]);
    assert_eq!(info(&mut con, &["nosuch"]).await, "");

    // Server.
    let run_id = &fields["run_id"];
    assert_eq!(run_id.len(), 40);
    assert!(run_id.bytes().all(|b| b.is_ascii_hexdigit()), "{run_id}");
    let port = cluster.resp_addr(1).port();
    assert_eq!(number(&fields, "tcp_port"), u64::from(port));
    assert_eq!(number(&fields, "process_id"), u64::from(std::process::id()));
    assert!(fields["os"].starts_with("Linux "), "{}", fields["os"]);
    // Memory: the resident set, its peak, the machine's memory.
    let used = number(&fields, "used_memory");
    let peak = number(&fields, "used_memory_peak");
    assert!(used > 0 && peak >= used, "used {used}, peak {peak}");
    assert!(fields["used_memory_peak_perc"].ends_with('%'));
    assert!(number(&fields, "total_system_memory") > used);
    // The key filter's table (0 until its build, on a thread, ends).
    assert!(number(&fields, "key_filter_bytes") < used);
    for human in ["used_memory_human", "used_memory_peak_human"] {
        let v = &fields[human];
        assert!(
            v.ends_with(['B', 'K', 'M', 'G']) && v.len() > 1,
            "{human}:{v}"
        );
    }
    // CPU: seconds with six decimals; this process has used some.
    for name in [
        "used_cpu_sys",
        "used_cpu_user",
        "used_cpu_sys_children",
        "used_cpu_user_children",
    ] {
        let (_, decimals) = fields[name].split_once('.').expect(name);
        assert_eq!(decimals.len(), 6, "{name}:{}", fields[name]);
        assert!(float(&fields, name) >= 0.0);
    }
    assert!(float(&fields, "used_cpu_sys") + float(&fields, "used_cpu_user") > 0.0);
    assert_eq!(number(&fields, "cluster_enabled"), 0);
    // The Raft section and the existing persistence fields stay.
    assert_eq!(fields["node_id"], "1");
    assert!(fields.contains_key("raft_log_last_index"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_commands_and_reset() {
    let (_cluster, mut con) = one_node().await;
    send(&mut con, &["CONFIG", "RESETSTAT"]).await.unwrap();

    send(&mut con, &["SET", "a", "1"]).await.unwrap();
    send(&mut con, &["SET", "s", "text"]).await.unwrap();
    send(&mut con, &["GET", "a"]).await.unwrap(); // hit
    send(&mut con, &["GET", "nosuch"]).await.unwrap(); // miss
    send(&mut con, &["MGET", "a", "nosuch", "s"]).await.unwrap(); // 2 hits, 1 miss
    send(&mut con, &["EXISTS", "s"]).await.unwrap(); // hit

    // Errors under three prefixes, refused or failed while running.
    assert!(send(&mut con, &["INCR", "s"]).await.is_err()); // ERR, ran and failed
    assert!(send(&mut con, &["NOSUCHCMD", "x"]).await.is_err()); // ERR, refused
    assert!(send(&mut con, &["GET"]).await.is_err()); // ERR, refused (arity)
    assert!(send(&mut con, &["HELLO", "4"]).await.is_err()); // NOPROTO
    assert!(send(&mut con, &["AUTH", "nobody", "pw"]).await.is_err()); // WRONGPASS

    let (_, fields) = parse(&info(&mut con, &["stats", "errorstats", "commandstats"]).await);
    assert_eq!(number(&fields, "keyspace_hits"), 4, "{fields:?}");
    assert_eq!(number(&fields, "keyspace_misses"), 2);
    assert_eq!(fields["errorstat_ERR"], "count=3");
    assert_eq!(fields["errorstat_NOPROTO"], "count=1");
    assert_eq!(fields["errorstat_WRONGPASS"], "count=1");
    let by_prefix = fields
        .keys()
        .filter(|k| k.starts_with("errorstat_"))
        .count();
    assert_eq!(by_prefix, 3, "{fields:?}");
    assert_eq!(number(&fields, "total_error_replies"), 5);
    // As Redis counts them: CONFIG RESETSTAT itself and every command that
    // ran (the unknown command and the wrong arity did not); this INFO is
    // counted once it has answered.
    assert_eq!(number(&fields, "total_commands_processed"), 10);
    assert!(fields["cmdstat_incr"].contains("calls=1,"), "{fields:?}");
    assert!(fields["cmdstat_incr"].ends_with("failed_calls=1"));
    assert!(fields["cmdstat_get"].contains("rejected_calls=1,"));
    // Redis's latency percentiles: microseconds, three decimals, ordered.
    let (_, latency) = parse(&info(&mut con, &["latencystats"]).await);
    let get = &latency["latency_percentiles_usec_get"];
    let values: Vec<f64> = get
        .split(',')
        .zip(["p50=", "p99=", "p99.9="])
        .map(|(part, label)| {
            let value = part.strip_prefix(label).unwrap_or_else(|| panic!("{get}"));
            assert_eq!(
                value.split_once('.').map(|(_, d)| d.len()),
                Some(3),
                "{get}"
            );
            value.parse().unwrap()
        })
        .collect();
    assert_eq!(values.len(), 3, "{get}");
    assert!(values[0] > 0.0 && values[0] <= values[1] && values[1] <= values[2]);
    assert!(latency.contains_key("latency_percentiles_usec_incr"));
    assert!(!latency.contains_key("latency_percentiles_usec_nosuchcmd"));
    assert_eq!(number(&fields, "unexpected_error_replies"), 0);

    // Expiry deletions applied on this node.
    send(&mut con, &["SET", "short", "v", "PX", "1"])
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, fields) = parse(&info(&mut con, &["stats"]).await);
        if number(&fields, "expired_keys") >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "expired_keys never moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Instantaneous rates: positive while commands flow.
    let deadline = Instant::now() + DEADLINE;
    loop {
        for _ in 0..20 {
            send(&mut con, &["GET", "a"]).await.unwrap();
        }
        let (_, fields) = parse(&info(&mut con, &["stats"]).await);
        let ops = number(&fields, "instantaneous_ops_per_sec");
        let input = float(&fields, "instantaneous_input_kbps");
        let output = float(&fields, "instantaneous_output_kbps");
        if ops > 0 && input > 0.0 && output > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "rates never moved: {fields:?}");
    }

    send(&mut con, &["CONFIG", "RESETSTAT"]).await.unwrap();
    let (_, fields) = parse(&info(&mut con, &["stats", "errorstats"]).await);
    for name in [
        "keyspace_hits",
        "keyspace_misses",
        "expired_keys",
        "total_error_replies",
        "instantaneous_ops_per_sec",
    ] {
        assert_eq!(number(&fields, name), 0, "{name} after RESETSTAT");
    }
    assert_eq!(number(&fields, "total_commands_processed"), 1);
    assert!(
        !fields.keys().any(|k| k.starts_with("errorstat_")),
        "{fields:?}"
    );
    let (_, latency) = parse(&info(&mut con, &["latencystats"]).await);
    let commands: Vec<&String> = latency.keys().collect();
    assert_eq!(
        commands,
        [
            "latency_percentiles_usec_config|resetstat",
            "latency_percentiles_usec_info"
        ],
        "only what ran since RESETSTAT"
    );
}

/// On three nodes: a read counts a hit or miss on the node that served it
/// (a follower serves its own reads), and every node counts the expiry
/// deletions it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_node_counts_its_own_reads_and_applied_expiries() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers(leader)[0];
    let mut on_leader = cluster.client(leader).await;
    let mut on_follower = cluster.client(follower).await;
    send(&mut on_leader, &["SET", "k", "v"]).await.unwrap();
    send(&mut on_follower, &["GET", "k"]).await.unwrap();
    send(&mut on_follower, &["GET", "nosuch"]).await.unwrap();
    let (_, follower_stats) = parse(&info(&mut on_follower, &["stats"]).await);
    assert_eq!(number(&follower_stats, "keyspace_hits"), 1);
    assert_eq!(number(&follower_stats, "keyspace_misses"), 1);
    let (_, leader_stats) = parse(&info(&mut on_leader, &["stats"]).await);
    assert_eq!(number(&leader_stats, "keyspace_hits"), 0);
    assert_eq!(number(&leader_stats, "keyspace_misses"), 0);

    send(&mut on_leader, &["SET", "short", "v", "PX", "1"])
        .await
        .unwrap();
    for id in cluster.ids() {
        let mut con = cluster.client(id).await;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (_, fields) = parse(&info(&mut con, &["stats"]).await);
            if number(&fields, "expired_keys") == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "node {id}: {fields:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `key_filter_bytes`: the filter's table once its build is done (on a
/// thread at start), whose writes of new keys stay exact (DBSIZE, SET NX);
/// 0 on a node started with `storage.key_filter = false`, which answers the
/// same.
#[tokio::test]
async fn the_key_filter_shows_its_memory_and_can_be_turned_off() {
    let (mut cluster, mut con) = one_node().await;
    let filter_bytes = |text: &str| number(&parse(text).1, "key_filter_bytes");
    let probe = con.clone();
    common::eventually_async(DEADLINE, || {
        let mut con = probe.clone();
        async move { filter_bytes(&info(&mut con, &["memory"]).await) > 0 }
    })
    .await;
    let bytes = filter_bytes(&info(&mut con, &["memory"]).await);
    // 256 shards of at least 64 slots of 4 bytes.
    assert!(bytes >= 256 * 64 * 4, "key_filter_bytes:{bytes}");

    let writes = |con: &mut MultiplexedConnection| {
        let mut con = con.clone();
        async move {
            for i in 0..50 {
                let key = format!("k{i}");
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg("v")
                    .query_async(&mut con)
                    .await
                    .unwrap();
            }
            let again: Option<String> = redis::cmd("SET")
                .arg(&["k7", "w", "NX"])
                .query_async(&mut con)
                .await
                .unwrap();
            assert_eq!(again, None, "k7 exists");
            let dbsize: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
            dbsize
        }
    };
    assert_eq!(writes(&mut con).await, 50);

    cluster.stop(1).await;
    cluster.config_mut(1).storage.key_filter = false;
    cluster.restart(1).await;
    cluster.wait_for_leader().await;
    let mut con = cluster.client(1).await;
    assert_eq!(filter_bytes(&info(&mut con, &["memory"]).await), 0);
    let _: () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
    assert_eq!(writes(&mut con).await, 50);
    assert_eq!(
        filter_bytes(&info(&mut con, &["memory"]).await),
        0,
        "FLUSHALL left it off"
    );
}
