//! Traces of a write's replication path: one SET sent to a follower of a
//! three-node cluster, every node exporting to one in-memory exporter (each
//! node with its own tracer provider, as separate processes would have).
//! The spans of all three nodes must form one trace with the parent/link
//! structure the README describes.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use common::{eventually, Cluster, NodeTuning};
use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use raftis::telemetry::trace::{provider_builder, NodeTracer};
use raftis::telemetry::Telemetry;
use redis::AsyncCommands;

/// Starts three nodes that trace every write into `exporter`.
async fn traced_cluster(exporter: &InMemorySpanExporter) -> Cluster {
    Cluster::start_with(3, NodeTuning::default(), |id, _| {
        let provider = provider_builder(id, 1.0)
            .with_simple_exporter(exporter.clone())
            .build();
        Telemetry::untraced(id).with_tracer(NodeTracer::with_provider(id, provider))
    })
    .await
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn int_attr(span: &SpanData, key: &str) -> Option<i64> {
    match attr(span, key)? {
        Value::I64(n) => Some(*n),
        _ => None,
    }
}

fn node_of(span: &SpanData) -> u64 {
    let id = int_attr(span, "raftis.node.id")
        .unwrap_or_else(|| panic!("span {} has no raftis.node.id", span.name));
    u64::try_from(id).unwrap()
}

/// The spans named `name`, by node.
fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Whether every node has recorded its part of a single traced write:
/// the root span, the leader's commit and AppendEntries to each follower,
/// each follower's AppendEntries, and every node's append, fsync and apply.
/// Some of these legitimately end after the client's reply (the leader's
/// own fsync when both followers were faster, the AppendEntries to the
/// slower follower), so a test waits for all of them.
fn complete(spans: &[SpanData], root: &str, leader: u64, followers: &[u64]) -> bool {
    let nodes_with =
        |name: &str| -> BTreeSet<u64> { named(spans, name).into_iter().map(node_of).collect() };
    let all: BTreeSet<u64> = followers.iter().copied().chain([leader]).collect();
    let sent_to: BTreeSet<u64> = named(spans, "raftis.Peer/AppendEntries")
        .into_iter()
        .filter(|s| node_of(s) == leader)
        .filter_map(|s| int_attr(s, "raftis.peer.id"))
        .map(|id| u64::try_from(id).unwrap())
        .collect();
    let received: BTreeSet<u64> = named(spans, "raftis.Peer/AppendEntries")
        .into_iter()
        .map(node_of)
        .filter(|n| *n != leader)
        .collect();
    let followers: BTreeSet<u64> = followers.iter().copied().collect();
    !named(spans, root).is_empty()
        && ["raftis.log.append", "raftis.log.fsync", "raftis.apply"]
            .iter()
            .all(|name| nodes_with(name) == all)
        && nodes_with("raftis.commit") == BTreeSet::from([leader])
        && sent_to == followers
        && received == followers
}

/// Waits until every node has recorded its part of the traced write `root`.
async fn await_complete(
    exporter: &InMemorySpanExporter,
    root: &str,
    leader: u64,
    followers: &[u64],
) {
    eventually(Duration::from_secs(10), || {
        complete(
            &exporter.get_finished_spans().unwrap(),
            root,
            leader,
            followers,
        )
    })
    .await;
}

/// The leader's proposal that went through (a proposal made while the
/// leader could not take writes yet is retried, and carries no index).
fn proposal(spans: &[SpanData], leader: u64) -> &SpanData {
    let done: Vec<_> = named(spans, "raftis.propose")
        .into_iter()
        .filter(|s| node_of(s) == leader && int_attr(s, "raftis.log.index").is_some())
        .collect();
    assert_eq!(done.len(), 1, "{done:#?}");
    for retried in named(spans, "raftis.propose") {
        assert_eq!(retried.status, Status::Unset, "a retry is no failure");
    }
    done[0]
}

/// The one span named `name` on `node`.
fn one<'a>(spans: &'a [SpanData], name: &str, node: u64) -> &'a SpanData {
    let found: Vec<_> = named(spans, name)
        .into_iter()
        .filter(|s| node_of(s) == node)
        .collect();
    assert_eq!(found.len(), 1, "{name} on node {node}: {found:#?}");
    found[0]
}

fn assert_child_of(child: &SpanData, parent: &SpanData) {
    assert_eq!(
        child.parent_span_id,
        parent.span_context.span_id(),
        "{} (node {}) should hang under {} (node {})",
        child.name,
        node_of(child),
        parent.name,
        node_of(parent)
    );
    assert!(
        child.start_time >= parent.start_time,
        "{} starts before its parent {}",
        child.name,
        parent.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_set_through_a_follower_is_one_trace_across_three_nodes() {
    let exporter = InMemorySpanExporter::default();
    let cluster = traced_cluster(&exporter).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    let (via, other) = (followers[0], followers[1]);

    // A first write, once every node has recorded it, shows the leader
    // takes writes; the write under test comes after it.
    let mut client = cluster.client(via).await;
    let () = client.set("warm-up", "v").await.unwrap();
    await_complete(&exporter, "SET", leader, &followers).await;
    exporter.reset();

    let () = client.set("traced-key", "v").await.unwrap();
    await_complete(&exporter, "SET", leader, &followers).await;
    let spans = exporter.get_finished_spans().unwrap();

    // One trace: the SET on the follower is its root.
    let set = one(&spans, "SET", via);
    assert_eq!(set.parent_span_id, SpanId::INVALID, "SET is the root");
    assert_eq!(set.span_kind, SpanKind::Server);
    assert_eq!(
        attr(set, "db.system.name"),
        Some(&Value::from("redis")),
        "{set:#?}"
    );
    assert_eq!(attr(set, "db.operation.name"), Some(&Value::from("SET")));
    assert_eq!(int_attr(set, "raftis.command.keys"), Some(1));
    assert_eq!(set.status, Status::Unset);
    let trace_id = set.span_context.trace_id();
    for span in &spans {
        assert_eq!(
            span.span_context.trace_id(),
            trace_id,
            "{} on node {} is outside the write's trace",
            span.name,
            node_of(span)
        );
    }
    let nodes: BTreeSet<u64> = spans.iter().map(node_of).collect();
    assert_eq!(nodes, BTreeSet::from([1, 2, 3]));

    // The forward: the follower's client side, the leader's server side.
    let fwd_out = one(&spans, "raftis.Peer/Forward", via);
    assert_eq!(fwd_out.span_kind, SpanKind::Client);
    assert_child_of(fwd_out, set);
    assert_eq!(
        int_attr(fwd_out, "raftis.peer.id"),
        Some(i64::try_from(leader).unwrap())
    );
    assert_eq!(attr(fwd_out, "rpc.method"), Some(&Value::from("Forward")));
    let fwd_in = one(&spans, "raftis.Peer/Forward", leader);
    assert_eq!(fwd_in.span_kind, SpanKind::Server);
    assert_child_of(fwd_in, fwd_out);
    assert!(fwd_in.parent_span_is_remote);

    // The proposal on the leader, with the entry's position.
    let propose = proposal(&spans, leader);
    assert_child_of(propose, fwd_in);
    let index = int_attr(propose, "raftis.log.index").expect("log index");
    let term = int_attr(propose, "raftis.log.term").expect("log term");
    assert!(index > 0 && term > 0);

    // The leader's own log: append and fsync under the proposal, then the
    // commit (waiting for a quorum), then apply.
    for name in ["raftis.log.append", "raftis.log.fsync", "raftis.commit"] {
        let span = one(&spans, name, leader);
        assert_child_of(span, propose);
        assert_eq!(int_attr(span, "raftis.log.index"), Some(index), "{name}");
        assert_eq!(int_attr(span, "raftis.log.term"), Some(term), "{name}");
    }
    let fsync = one(&spans, "raftis.log.fsync", leader);
    assert!(int_attr(fsync, "raftis.batch.entries").unwrap_or(0) >= 1);
    assert!(
        one(&spans, "raftis.commit", leader).start_time
            >= one(&spans, "raftis.log.append", leader).end_time
    );

    // Replication: one AppendEntries client span per follower on the
    // leader, the matching server span on that follower, and the
    // follower's append and fsync under it.
    for follower in [via, other] {
        let sent: Vec<_> = named(&spans, "raftis.Peer/AppendEntries")
            .into_iter()
            .filter(|s| {
                node_of(s) == leader
                    && int_attr(s, "raftis.peer.id") == Some(i64::try_from(follower).unwrap())
            })
            .collect();
        assert!(!sent.is_empty(), "no AppendEntries to node {follower}");
        let received = one(&spans, "raftis.Peer/AppendEntries", follower);
        assert_eq!(received.span_kind, SpanKind::Server);
        let client = sent
            .iter()
            .find(|s| s.span_context.span_id() == received.parent_span_id)
            .expect("the follower's AppendEntries hangs under a leader's AppendEntries to it");
        assert_eq!(client.span_kind, SpanKind::Client);
        assert_child_of(client, propose);
        assert_eq!(int_attr(client, "raftis.log.index"), Some(index));
        for name in ["raftis.log.append", "raftis.log.fsync"] {
            let span = one(&spans, name, follower);
            assert_child_of(span, received);
            assert_eq!(int_attr(span, "raftis.log.index"), Some(index));
        }
        assert!(
            named(&spans, "raftis.commit")
                .iter()
                .all(|s| node_of(s) == leader),
            "the commit is the leader's"
        );
    }

    // Apply on every node, under the proposal the entry carried.
    for node in [1, 2, 3] {
        let apply = one(&spans, "raftis.apply", node);
        assert_child_of(apply, propose);
        assert_eq!(int_attr(apply, "raftis.log.index"), Some(index));
    }

    // Every span ended after it started, and the root outlived the
    // leader's apply (the reply waits for it).
    for span in &spans {
        assert!(span.end_time >= span.start_time, "{}", span.name);
    }
    assert!(set.end_time >= one(&spans, "raftis.apply", leader).end_time);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_writes_share_one_trace_and_batches_link_traces() {
    let exporter = InMemorySpanExporter::default();
    let cluster = traced_cluster(&exporter).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);

    // A pipelined run of SETs is one log entry: one BATCH SET trace.
    let mut client = cluster.client(leader).await;
    let mut pipe = redis::pipe();
    for i in 0..5 {
        pipe.set(format!("p{i}"), i).ignore();
    }
    let () = pipe.query_async(&mut client).await.unwrap();
    await_complete(&exporter, "BATCH SET", leader, &followers).await;
    let spans = exporter.get_finished_spans().unwrap();
    let batch = one(&spans, "BATCH SET", leader);
    assert_eq!(int_attr(batch, "db.operation.batch.size"), Some(5));
    assert_eq!(int_attr(batch, "raftis.command.keys"), Some(5));
    assert!(
        named(&spans, "raftis.Peer/Forward").is_empty(),
        "sent to the leader"
    );
    assert_child_of(proposal(&spans, leader), batch);

    // Many concurrent clients: writes that share an fsync or an apply
    // batch link to each other's traces, never to their own.
    exporter.reset();
    let mut tasks = Vec::new();
    for c in 0..16 {
        let mut client = cluster.client(leader).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let () = client.set(format!("c{c}-{i}"), i).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eventually(Duration::from_secs(10), || {
        let spans = exporter.get_finished_spans().unwrap();
        ["raftis.log.fsync", "raftis.apply"]
            .iter()
            .all(|name| named(&spans, name).len() >= 3 * 160)
    })
    .await;
    let spans = exporter.get_finished_spans().unwrap();
    let traces: HashSet<_> = named(&spans, "SET")
        .iter()
        .map(|s| s.span_context.trace_id())
        .collect();
    assert_eq!(traces.len(), 160, "one trace per write");
    let mut linked = 0;
    for span in spans
        .iter()
        .filter(|s| s.name == "raftis.log.fsync" || s.name == "raftis.apply")
    {
        for link in span.links.iter() {
            assert_ne!(link.span_context.trace_id(), span.span_context.trace_id());
            assert!(traces.contains(&link.span_context.trace_id()));
            linked += 1;
        }
    }
    assert!(
        linked > 0,
        "16 concurrent writers never shared an fsync or an apply batch"
    );
}
