//! Traces exported for real: nodes send their spans over OTLP/gRPC to an
//! [`OtlpReceiver`] the test runs, as they would to Jaeger or a collector.
//!
//! The main test starts three processes that export every trace (sample
//! ratio 1) to the receiver, sends one SET to a follower, and waits until
//! the receiver holds the whole replication path of that write, under the
//! trace id of the SET span, from all three processes: the command on the
//! follower, the forward to the leader, the proposal, each node's log
//! append, fsync and apply, the AppendEntries from the leader to each
//! follower and the commit. It then checks each process's resource
//! (`service.name`, `raftis.node.id`), the span kinds and attributes (the
//! same log index on every node), that every span's parent is in the trace,
//! and the edges that cross processes: the leader's Forward span under the
//! follower's, each follower's AppendEntries span under the leader's call to
//! it (the context travelled in the peer RPCs), and each follower's apply
//! under the leader's proposal (the context travelled inside the entry).
//!
//! A second test checks the receiver itself against the OTLP exporter of
//! `opentelemetry-otlp`, so that a failure of the first points at raftis.

use std::collections::BTreeSet;
use std::time::Duration;

use opentelemetry::trace::{Span as _, SpanKind as ApiSpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use crate::harness::ProcessCluster;
use crate::otlp_receiver::{summary, OtlpReceiver, ReceivedSpan};

/// How long the spans of one write may take to arrive: the nodes export
/// every [`EXPORT_DELAY_MS`], a loaded machine adds seconds.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The nodes' batch export interval (`OTEL_BSP_SCHEDULE_DELAY`, read by
/// the OpenTelemetry SDK; its default is 5 s).
const EXPORT_DELAY_MS: &str = "100";

/// Where a span was recorded and what it is: (node, name, kind).
type Step = (i64, &'static str, SpanKind);

/// The node that exported `span`, from its resource.
fn resource_node(span: &ReceivedSpan) -> Option<i64> {
    match span.resource_attribute("raftis.node.id") {
        Some(Value::IntValue(id)) => Some(*id),
        _ => None,
    }
}

fn int_attribute(span: &ReceivedSpan, key: &str) -> Option<i64> {
    match span.attribute(key) {
        Some(Value::IntValue(n)) => Some(*n),
        _ => None,
    }
}

fn string_attribute<'a>(span: &'a ReceivedSpan, key: &str) -> Option<&'a str> {
    match span.attribute(key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// Every step of one SET sent to `follower`, replicated by `leader` to
/// `follower` and `other`.
fn expected_steps(leader: i64, follower: i64, other: i64) -> Vec<Step> {
    let mut steps = vec![
        (follower, "SET", SpanKind::Server),
        (follower, "raftis.Peer/Forward", SpanKind::Client),
        (leader, "raftis.Peer/Forward", SpanKind::Server),
        (leader, "raftis.propose", SpanKind::Internal),
        (leader, "raftis.Peer/AppendEntries", SpanKind::Client),
        (leader, "raftis.commit", SpanKind::Internal),
    ];
    for node in [leader, follower, other] {
        steps.push((node, "raftis.log.append", SpanKind::Internal));
        steps.push((node, "raftis.log.fsync", SpanKind::Internal));
        steps.push((node, "raftis.apply", SpanKind::Internal));
    }
    for node in [follower, other] {
        steps.push((node, "raftis.Peer/AppendEntries", SpanKind::Server));
    }
    steps
}

/// The spans of the trace whose root is the SET that `follower` received,
/// once every expected step is in it (and the leader's AppendEntries went
/// to both followers); otherwise what is still missing.
fn write_trace(
    spans: &[ReceivedSpan],
    leader: i64,
    follower: i64,
    other: i64,
) -> Result<Vec<ReceivedSpan>, String> {
    let root = spans
        .iter()
        .find(|s| s.name() == "SET" && resource_node(s) == Some(follower))
        .ok_or_else(|| format!("no SET span from node {follower} yet"))?;
    let trace: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.span.trace_id == root.span.trace_id)
        .cloned()
        .collect();
    let have: Vec<(Option<i64>, &str, SpanKind)> = trace
        .iter()
        .map(|s| (resource_node(s), s.name(), s.kind()))
        .collect();
    let missing: Vec<String> = expected_steps(leader, follower, other)
        .into_iter()
        // Kinds are checked once everything is there, so that a wrong kind
        // is reported as such and not as a missing span.
        .filter(|(node, name, _)| !have.iter().any(|(n, m, _)| *n == Some(*node) && m == name))
        .map(|(node, name, kind)| format!("{name} ({kind:?}) on node {node}"))
        .collect();
    let peers: BTreeSet<i64> = trace
        .iter()
        .filter(|s| s.name() == "raftis.Peer/AppendEntries" && s.kind() == SpanKind::Client)
        .filter_map(|s| int_attribute(s, "raftis.peer.id"))
        .collect();
    if !missing.is_empty() || peers != BTreeSet::from([follower, other]) {
        return Err(format!(
            "trace {} lacks: {}; leader's AppendEntries went to {peers:?}",
            root.trace_id(),
            missing.join(", ")
        ));
    }
    Ok(trace)
}

/// The one span of `trace` recorded by `node` named `name` of kind `kind`.
fn step<'a>(trace: &'a [ReceivedSpan], node: i64, name: &str, kind: SpanKind) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = trace
        .iter()
        .filter(|s| resource_node(s) == Some(node) && s.name() == name && s.kind() == kind)
        .collect();
    match found.as_slice() {
        [one] => one,
        _ => panic!(
            "expected one {name} ({kind:?}) on node {node}, found {}:\n{}",
            found.len(),
            summary(trace)
        ),
    }
}

#[test]
fn a_set_sent_to_a_follower_is_traced_on_every_node_over_otlp() {
    // Declared first, so it is dropped last: the nodes go before it does.
    let receiver = OtlpReceiver::start();
    let cluster = ProcessCluster::builder(3)
        .env("RAFTIS_TELEMETRY__OTLP_ENDPOINT", &receiver.endpoint())
        .env("RAFTIS_TELEMETRY__SAMPLE_RATIO", "1")
        .env("OTEL_BSP_SCHEDULE_DELAY", EXPORT_DELAY_MS)
        .start();
    let leader = cluster.leader();
    let followers = cluster.followers();
    let (follower, other) = (followers[0], followers[1]);

    let mut con = cluster.connect(follower);
    let reply: String = redis::cmd("SET")
        .arg("traced")
        .arg("value")
        .query(&mut con)
        .expect("SET through a follower");
    assert_eq!(reply, "OK");

    let [leader, follower, other] = [leader, follower, other].map(|id| id as i64);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("build a runtime");
    let trace = runtime.block_on(receiver.wait_until(
        "the SET's spans from all three nodes",
        ARRIVAL_TIMEOUT,
        |spans| write_trace(spans, leader, follower, other),
    ));
    let all = summary(&trace);

    // Each process names itself in its resource.
    for span in &trace {
        assert_eq!(
            span.resource_attribute("service.name"),
            Some(&Value::StringValue("raftis".into())),
            "service.name of {} from node {:?}",
            span.name(),
            resource_node(span)
        );
        assert_eq!(
            int_attribute(span, "raftis.node.id"),
            resource_node(span),
            "raftis.node.id of {} matches its process's resource:\n{all}",
            span.name()
        );
    }
    let nodes: BTreeSet<i64> = trace.iter().filter_map(resource_node).collect();
    assert_eq!(nodes, BTreeSet::from([leader, follower, other]), "{all}");

    // Every step has the kind the contract gives it.
    for (node, name, kind) in expected_steps(leader, follower, other) {
        assert!(
            trace
                .iter()
                .any(|s| resource_node(s) == Some(node) && s.name() == name && s.kind() == kind),
            "{name} on node {node} is not of kind {kind:?}:\n{all}"
        );
    }

    // The command span: the root, with the database conventions.
    let set = step(&trace, follower, "SET", SpanKind::Server);
    assert!(set.parent_span_id().is_empty(), "SET is the root:\n{all}");
    assert_eq!(string_attribute(set, "db.system.name"), Some("redis"));
    assert_eq!(string_attribute(set, "db.operation.name"), Some("SET"));

    // The log spans name the write's entry, the same index on every node.
    let indexes: BTreeSet<Option<i64>> = trace
        .iter()
        .filter(|s| s.name().starts_with("raftis.log."))
        .map(|s| int_attribute(s, "raftis.log.index"))
        .collect();
    assert!(
        indexes.len() == 1 && indexes.iter().all(Option::is_some),
        "every log span carries the entry's index, the same on every node: {indexes:?}\n{all}"
    );

    // One tree: every parent is a span of this trace...
    for span in &trace {
        if span.span_id() == set.span_id() {
            continue;
        }
        assert!(
            trace.iter().any(|p| p.span_id() == span.parent_span_id()),
            "the parent of {} on node {:?} is not in the trace:\n{all}",
            span.name(),
            resource_node(span)
        );
    }
    // ...and the RPC server spans hang under the caller's client spans,
    // across processes.
    let forward_client = step(&trace, follower, "raftis.Peer/Forward", SpanKind::Client);
    let forward_server = step(&trace, leader, "raftis.Peer/Forward", SpanKind::Server);
    assert_eq!(
        forward_server.parent_span_id(),
        forward_client.span_id(),
        "the leader's Forward span is a child of the follower's:\n{all}"
    );
    // The context also travels inside the replicated entry: the proposal
    // hangs under the forwarded request, and each follower applies the
    // entry under the leader's proposal.
    let propose = step(&trace, leader, "raftis.propose", SpanKind::Internal);
    assert_eq!(
        propose.parent_span_id(),
        forward_server.span_id(),
        "the proposal is a child of the forwarded request:\n{all}"
    );
    for node in [follower, other] {
        let apply = step(&trace, node, "raftis.apply", SpanKind::Internal);
        assert_eq!(
            apply.parent_span_id(),
            propose.span_id(),
            "node {node} applies the entry under the leader's proposal:\n{all}"
        );
    }
    // An AppendEntries may be sent again (after a timeout on a loaded
    // machine), so each follower's server span must hang under one of the
    // leader's calls to that follower, whichever it was.
    for node in [follower, other] {
        let calls: Vec<String> = trace
            .iter()
            .filter(|s| resource_node(s) == Some(leader) && s.kind() == SpanKind::Client)
            .filter(|s| s.name() == "raftis.Peer/AppendEntries")
            .filter(|s| int_attribute(s, "raftis.peer.id") == Some(node))
            .map(ReceivedSpan::span_id)
            .collect();
        let served = trace
            .iter()
            .filter(|s| resource_node(s) == Some(node) && s.kind() == SpanKind::Server)
            .filter(|s| s.name() == "raftis.Peer/AppendEntries");
        for server in served {
            assert!(
                calls.contains(&server.parent_span_id()),
                "node {node}'s AppendEntries span is a child of the leader's call to it:\n{all}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_collects_what_an_otlp_exporter_sends() {
    let receiver = OtlpReceiver::start();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(receiver.endpoint())
        .build()
        .expect("build the OTLP exporter");
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("otlp-receiver-test")
                .with_attribute(KeyValue::new("raftis.node.id", 7_i64))
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("integration");
    let mut span = tracer
        .span_builder("probe")
        .with_kind(ApiSpanKind::Client)
        .with_attributes([KeyValue::new("probe.number", 42_i64)])
        .start(&tracer);
    let trace_id = span.span_context().trace_id().to_string();
    span.end();
    // The exporter blocks while it sends: off the runtime's threads.
    let flushed = tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .expect("join the flush");
    assert!(flushed.is_ok(), "export to the receiver: {flushed:?}");

    let probe = receiver
        .wait_until("the probe span", Duration::from_secs(10), |spans| {
            spans
                .iter()
                .find(|s| s.name() == "probe")
                .cloned()
                .ok_or_else(|| "no probe span".to_owned())
        })
        .await;
    assert_eq!(probe.trace_id(), trace_id);
    assert_eq!(probe.kind(), SpanKind::Client);
    assert!(probe.parent_span_id().is_empty());
    assert_eq!(int_attribute(&probe, "probe.number"), Some(42));
    assert_eq!(resource_node(&probe), Some(7));
    assert_eq!(
        probe.resource_attribute("service.name"),
        Some(&Value::StringValue("otlp-receiver-test".into()))
    );
    assert_eq!(receiver.spans().len(), 1, "{}", summary(&receiver.spans()));
}
