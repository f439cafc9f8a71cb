//! `/metrics`, `/health` and `/ready` of in-process nodes, read over plain
//! HTTP as Prometheus and a load balancer would, the metrics parsed with a
//! Prometheus text parser.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{eventually_async, Cluster, NodeTuning};
use prometheus_parse::{Sample, Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP response: status code, headers (names lowercased), body.
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// `GET path` with the given extra header lines, over HTTP/1.0 so the body
/// ends where the connection does (no chunked encoding to undo).
async fn get_with(addr: SocketAddr, path: &str, extra: &str) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("no complete response within 10 s"))??;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no end of headers in {raw:?}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {raw:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_owned(),
    })
}

async fn get(addr: SocketAddr, path: &str) -> Response {
    get_with(addr, path, "").await.expect("HTTP GET")
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let response = get(addr, "/metrics").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape::parse(response.body.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && has_labels(s, labels))
        .and_then(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            _ => None,
        })
}

fn has_labels(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v))
}

fn must(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(scrape, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
}

/// Checks every histogram: cumulative buckets never decrease, and the
/// `+Inf` bucket equals `_count`. Returns their count.
fn check_histograms(scrape: &Scrape) -> usize {
    let mut checked = 0;
    for sample in &scrape.samples {
        let Value::Histogram(buckets) = &sample.value else {
            continue;
        };
        let mut buckets = buckets.clone();
        buckets.sort_by(|a, b| a.less_than.total_cmp(&b.less_than));
        for pair in buckets.windows(2) {
            assert!(
                pair[0].count <= pair[1].count,
                "{} {}: buckets decrease: {buckets:?}",
                sample.metric,
                sample.labels
            );
        }
        let inf = buckets.last().expect("a bucket");
        assert!(
            inf.less_than.is_infinite(),
            "{}: no +Inf bucket",
            sample.metric
        );
        let labels: Vec<(&str, &str)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let count = must(scrape, &format!("{}_count", sample.metric), &labels);
        assert_eq!(inf.count, count, "{} {}", sample.metric, sample.labels);
        checked += 1;
    }
    checked
}

fn histogram_count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    must(scrape, &format!("{name}_count"), labels)
}

async fn set(con: &mut redis::aio::MultiplexedConnection, key: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("v")
        .query_async(con)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_of_a_three_node_cluster_parse_and_add_up() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers(leader)[0];
    let mut via_follower = cluster.client(follower).await;
    let mut via_leader = cluster.client(leader).await;
    for i in 0..10 {
        set(&mut via_follower, &format!("f{i}")).await;
    }
    for i in 0..5 {
        set(&mut via_leader, &format!("l{i}")).await;
    }
    for i in 0..3 {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("f{i}"))
            .query_async(&mut via_follower)
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("v"));
    }
    // An error reply, counted by prefix.
    let refused: redis::RedisResult<i64> = redis::cmd("INCR")
        .arg("f0")
        .query_async(&mut via_follower)
        .await;
    assert!(refused.is_err());
    // A write its own parser refuses is a failed call too, as in INFO.
    let unparsed: redis::RedisResult<()> = redis::cmd("SET")
        .arg("f0")
        .arg("v")
        .arg("EX")
        .arg("soon")
        .query_async(&mut via_follower)
        .await;
    assert!(unparsed.is_err());

    // A write is acknowledged once a majority has it: let the third node
    // catch up before reading every node's indexes.
    let last = cluster.status(leader).last_log_index;
    common::eventually(Duration::from_secs(15), || {
        cluster
            .ids()
            .iter()
            .all(|id| cluster.status(*id).last_applied >= last)
    })
    .await;
    let mut leaders = Vec::new();
    for id in cluster.ids() {
        let m = scrape(cluster.http_addr(id)).await;
        assert!(must(&m, "raftis_raft_term", &[]) >= 1.0, "node {id}");
        let roles: f64 = ["leader", "follower", "candidate", "learner", "removed"]
            .iter()
            .map(|role| must(&m, "raftis_raft_role", &[("role", role)]))
            .sum();
        assert_eq!(roles, 1.0, "node {id}: exactly one role");
        if must(&m, "raftis_raft_role", &[("role", "leader")]) == 1.0 {
            leaders.push(id);
        }
        assert_eq!(must(&m, "raftis_raft_running", &[]), 1.0, "node {id}");
        assert!(
            must(&m, "raftis_raft_leader_changes_total", &[]) >= 1.0,
            "node {id}"
        );
        assert_eq!(
            must(&m, "raftis_node_info", &[("node_id", &id.to_string())]),
            1.0
        );
        // Every node appended, fsynced and applied the 16 writes' entries.
        for index in [
            "raftis_raft_last_log_index",
            "raftis_raft_commit_index",
            "raftis_raft_applied_index",
        ] {
            assert!(must(&m, index, &[]) >= 16.0, "node {id}: {index}");
        }
        assert!(
            histogram_count(&m, "raftis_raft_log_fsync_duration_seconds", &[]) > 0.0,
            "node {id}: no fsync observed"
        );
        assert!(check_histograms(&m) >= 4, "node {id}: histograms missing");
        // Disk and storage engine figures, as INFO persistence has them.
        assert!(must(&m, "raftis_db_size_bytes", &[]) > 0.0, "node {id}");
        assert!(must(&m, "raftis_disk_free_bytes", &[]) > 0.0, "node {id}");
        assert_eq!(must(&m, "raftis_disk_low", &[]), 0.0, "node {id}");
        assert_eq!(must(&m, "raftis_disk_critical", &[]), 0.0, "node {id}");
        assert_eq!(
            must(&m, "raftis_storage_block_cache_capacity_bytes", &[]),
            32.0 * 1024.0 * 1024.0,
            "node {id}"
        );
        // The rest vary with the engine's timing: present is what holds.
        for family in [
            "raftis_storage_flushes_pending",
            "raftis_storage_compactions_running",
            "raftis_storage_compactions_total",
            "raftis_storage_compaction_seconds_total",
            "raftis_storage_block_cache_bytes",
            "raftis_key_filter_bytes",
        ] {
            must(&m, family, &[]);
        }
    }
    assert_eq!(leaders, vec![leader], "exactly one leader, the known one");

    let on_leader = scrape(cluster.http_addr(leader)).await;
    assert_eq!(
        must(
            &on_leader,
            "raftis_commands_total",
            &[("command", "set"), ("result", "ok")]
        ),
        5.0
    );
    assert_eq!(must(&on_leader, "raftis_forwarded_writes_total", &[]), 0.0);
    // The leader proposed all 16 writes (11 forwarded to it).
    assert!(
        histogram_count(
            &on_leader,
            "raftis_raft_proposal_commit_duration_seconds",
            &[]
        ) >= 16.0
    );

    let on_follower = scrape(cluster.http_addr(follower)).await;
    assert_eq!(
        must(
            &on_follower,
            "raftis_commands_total",
            &[("command", "set"), ("result", "ok")]
        ),
        10.0
    );
    assert_eq!(
        must(
            &on_follower,
            "raftis_commands_total",
            &[("command", "set"), ("result", "error")]
        ),
        1.0
    );
    assert_eq!(
        histogram_count(
            &on_follower,
            "raftis_command_duration_seconds",
            &[("command", "set")]
        ),
        11.0
    );
    assert_eq!(
        must(
            &on_follower,
            "raftis_commands_total",
            &[("command", "get"), ("result", "ok")]
        ),
        3.0
    );
    assert_eq!(
        must(
            &on_follower,
            "raftis_commands_total",
            &[("command", "incr"), ("result", "error")]
        ),
        1.0
    );
    assert!(must(&on_follower, "raftis_forwarded_writes_total", &[]) >= 11.0);
    assert_eq!(
        must(
            &on_follower,
            "raftis_error_replies_total",
            &[("prefix", "ERR")]
        ),
        2.0
    );
    assert_eq!(must(&on_follower, "raftis_client_connections", &[]), 1.0);
    assert!(
        must(
            &on_follower,
            "raftis_client_connections_received_total",
            &[]
        ) >= 1.0
    );
    assert_eq!(
        must(&on_follower, "raftis_raft_leader_id", &[]),
        leader as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openmetrics_is_served_to_a_scraper_that_asks_for_it() {
    let cluster = Cluster::start(1, NodeTuning::default()).await;
    cluster.wait_for_leader().await;
    let accept = "Accept: application/openmetrics-text;version=1.0.0;q=0.5,\
                  text/plain;version=0.0.4;q=0.4\r\n";
    let response = get_with(cluster.http_addr(1), "/metrics", accept)
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(response.body.ends_with("# EOF\n"), "{}", response.body);
    assert!(
        response
            .body
            .lines()
            .any(|l| l.starts_with("raftis_raft_term ")),
        "{}",
        response.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_and_ready_on_a_working_cluster_and_unknown_paths() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    cluster.wait_for_leader().await;
    for id in cluster.ids() {
        let addr = cluster.http_addr(id);
        eventually_async(Duration::from_secs(15), || async move {
            let r = get(addr, "/health").await;
            r.status == 200 && r.body == "ok\n"
        })
        .await;
        let ready = get(addr, "/ready").await;
        assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
        let missing = get(addr, "/nope").await;
        assert_eq!(missing.status, 404, "{}", missing.body);
        assert!(missing.body.contains("/nope"), "{}", missing.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_fails_without_a_quorum_while_ready_holds_and_the_server_stops_with_the_node() {
    let mut cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    let survivor = followers[0];
    let addr = cluster.http_addr(survivor);
    cluster.stop(leader).await;
    cluster.stop(followers[1]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let why = loop {
        let r = get(addr, "/health").await;
        if r.status == 503 {
            break r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/health still {} {:?} without a quorum",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(why.lines().count(), 1, "one-line reason: {why:?}");
    // Still serving clients (they get CLUSTERDOWN): ready.
    let ready = get(addr, "/ready").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));

    cluster.stop(survivor).await;
    eventually_async(Duration::from_secs(10), || async move {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_built_and_installed_are_counted() {
    let tuning = NodeTuning {
        snapshot_logs_since_last: 20,
        max_in_snapshot_log_to_keep: 0,
        ..NodeTuning::default()
    };
    let mut cluster = Cluster::start(3, tuning).await;
    let leader = cluster.wait_for_leader().await;
    let lagging = cluster.followers(leader)[0];
    let lagging_last = cluster.status(lagging).last_log_index;
    cluster.stop(lagging).await;
    cluster.set_numbered_keys(leader, "key:", 100).await;
    common::eventually(Duration::from_secs(15), || {
        cluster.status(leader).purged_index > lagging_last
    })
    .await;
    let on_leader = scrape(cluster.http_addr(leader)).await;
    let build = [("kind", "build")];
    let install = [("kind", "install")];
    let snapshots = "raftis_raft_snapshot_duration_seconds";
    assert!(histogram_count(&on_leader, snapshots, &build) >= 1.0);
    assert_eq!(histogram_count(&on_leader, snapshots, &install), 0.0);
    assert!(
        must(&on_leader, "raftis_raft_snapshot_index", &[]) > lagging_last as f64,
        "the gauge follows the snapshot"
    );

    // Behind the purged log, the restarted node can only catch up by
    // installing the leader's snapshot.
    cluster.restart(lagging).await;
    let addr = cluster.http_addr(lagging);
    eventually_async(Duration::from_secs(15), || async move {
        let m = scrape(addr).await;
        histogram_count(&m, snapshots, &install) >= 1.0
    })
    .await;
    let on_lagging = scrape(addr).await;
    assert!(check_histograms(&on_lagging) >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_still_joining_is_neither_ready_nor_healthy_but_serves_metrics() {
    let resp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // A member that never answers: the join keeps retrying.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::node_config(4, &resp, &peer, dir.path().to_path_buf());
    config.join = Some(raftis::config::HostPort::new("127.0.0.1", nobody.port()));
    let node = raftis::node::start(config, resp, peer).await.unwrap();
    let addr = node.http_addr();
    for path in ["/ready", "/health"] {
        let r = get(addr, path).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, "not a member of the cluster (yet)\n"),
            "{path}"
        );
    }
    let m = scrape(addr).await;
    assert_eq!(must(&m, "raftis_raft_has_leader", &[]), 0.0);
    assert_eq!(must(&m, "raftis_raft_voters", &[]), 0.0);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_says_so_on_every_endpoint() {
    let cluster = Cluster::start(3, NodeTuning::default()).await;
    let leader = cluster.wait_for_leader().await;
    let removed = cluster.followers(leader)[0];
    let mut con = cluster.client(leader).await;
    let _: () = redis::cmd("RAFT.NODE")
        .arg("REMOVE")
        .arg(removed)
        .query_async(&mut con)
        .await
        .unwrap();
    let addr = cluster.http_addr(removed);
    // While the change is in flight the node may first see itself out of
    // the membership ("not a member"); once committed, it knows it was
    // removed.
    eventually_async(Duration::from_secs(15), || async move {
        get(addr, "/ready").await.body == "removed from the cluster\n"
    })
    .await;
    for path in ["/ready", "/health"] {
        let r = get(addr, path).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, "removed from the cluster\n"),
            "{path}"
        );
    }
    let m = scrape(addr).await;
    assert_eq!(must(&m, "raftis_raft_role", &[("role", "removed")]), 1.0);
    assert_eq!(must(&m, "raftis_raft_running", &[]), 0.0);
}
