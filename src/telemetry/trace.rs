//! Traces of a write's replication path, across nodes.
//!
//! A sampled write is one trace. Its root is the command on the node the
//! client talks to; the trace context then travels with the write: inside
//! the task that runs it (an OpenTelemetry [`Context`] attached to the
//! future), in the peer request that forwards it to the leader (the
//! envelope's [`TraceParent`]), inside the replicated entry itself
//! (`StampedOp::trace`, the leader's `raftis.propose` span), and in each
//! AppendEntries request (one [`TraceParent`] per sampled entry). So every
//! node can hang its own spans for that write (log append, fsync, apply)
//! under the write's trace, whichever of openraft's tasks does the work.
//!
//! Work that serves many writes at once (one fsync for every append that
//! arrived together, one AppendEntries for many entries, one apply batch)
//! appears in each sampled write's trace as a span of its own, with the
//! batch size as an attribute and span links to the other sampled writes
//! that shared it, never under a made-up parent.
//!
//! Only sampled writes carry a context, so the other writes pay one branch
//! per stage. With no exporter configured the tracer is off: no provider,
//! no sampling decision, nothing recorded.
//!
//! A few stages begin in one component and end in another (the follower's
//! AppendEntries handler and its log store; the leader's log append and its
//! apply, between which the commit happens): the [`TraceBook`] hands the
//! context between them, keyed by log index, and forgets everything at or
//! below the applied index.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, TracerProviderBuilder};
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};

use super::export::ReportedExporter;
use super::TelemetryError;
use crate::config::TelemetryConfig;

/// Longest a stopping node waits for its last spans to be exported.
pub const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Most links one span carries to the other writes of its batch.
const MAX_LINKS: usize = 16;

/// Attribute names: OpenTelemetry's database and RPC conventions, and
/// raftis's own under `raftis.`.
pub mod attr {
    /// `redis`: what clients speak to the node.
    pub const DB_SYSTEM: &str = "db.system.name";
    /// The command name (`SET`).
    pub const DB_OPERATION: &str = "db.operation.name";
    /// Commands in a pipelined run replicated as one entry.
    pub const DB_BATCH_SIZE: &str = "db.operation.batch.size";
    /// `raftis`: the peer protocol.
    pub const RPC_SYSTEM: &str = "rpc.system";
    /// `raftis.Peer`.
    pub const RPC_SERVICE: &str = "rpc.service";
    /// `Forward`, `AppendEntries`.
    pub const RPC_METHOD: &str = "rpc.method";
    /// The callee's host (its peer address without the port).
    pub const SERVER_ADDRESS: &str = "server.address";
    /// The error prefix of a failed command (`CLUSTERDOWN`).
    pub const ERROR_TYPE: &str = "error.type";
    /// Why an attempt did nothing and was retried (`not_leader`).
    pub const OUTCOME: &str = "raftis.outcome";
    /// The callee's port.
    pub const SERVER_PORT: &str = "server.port";
    /// The node that recorded the span.
    pub const NODE_ID: &str = "raftis.node.id";
    /// The other node of an RPC.
    pub const PEER_ID: &str = "raftis.peer.id";
    /// Keys the command names.
    pub const KEY_COUNT: &str = "raftis.command.keys";
    /// The write's log index.
    pub const LOG_INDEX: &str = "raftis.log.index";
    /// The term of the write's log entry.
    pub const LOG_TERM: &str = "raftis.log.term";
    /// Entries (of any write, sampled or not) served by the same batch.
    pub const BATCH_ENTRIES: &str = "raftis.batch.entries";
}

/// A sampled span's identity as the W3C `traceparent` header carries it
/// (trace id, parent span id, flags), in binary, so it fits in log entries
/// and peer frames at 25 bytes. Only sampled contexts are ever propagated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The span to parent on.
    pub span_id: [u8; 8],
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// The context of `span`, when it is valid and sampled.
    #[must_use]
    pub fn of(span: &SpanContext) -> Option<TraceParent> {
        (span.is_valid() && span.is_sampled()).then(|| TraceParent {
            trace_id: span.trace_id().to_bytes(),
            span_id: span.span_id().to_bytes(),
            flags: span.trace_flags().to_u8(),
        })
    }

    /// The sampled span of the task's current [`Context`], if any.
    #[must_use]
    pub fn current() -> Option<TraceParent> {
        Context::map_current(|cx| TraceParent::of(cx.span().span_context()))
    }

    /// As a remote span context, to parent on or link to.
    #[must_use]
    pub fn span_context(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        )
    }

    /// A context whose parent is this span.
    #[must_use]
    pub fn context(&self) -> Context {
        Context::new().with_remote_span_context(self.span_context())
    }
}

impl std::fmt::Display for TraceParent {
    /// The W3C `traceparent` header form: `00-<trace id>-<span id>-<flags>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |bytes: &[u8], f: &mut std::fmt::Formatter<'_>| {
            bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
        };
        f.write_str("00-")?;
        hex(&self.trace_id, f)?;
        f.write_str("-")?;
        hex(&self.span_id, f)?;
        write!(f, "-{:02x}", self.flags)
    }
}

/// An open span, current in the [`Context`] it lives in. Ends when dropped
/// (or with [`ActiveSpan::end`]).
pub struct ActiveSpan {
    cx: Context,
}

impl ActiveSpan {
    /// The context to run the span's work in (attach it to the futures that
    /// do the work with `opentelemetry::context::FutureExt::with_context`).
    #[must_use]
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// This span, as a parent to propagate.
    #[must_use]
    pub fn parent(&self) -> Option<TraceParent> {
        TraceParent::of(self.cx.span().span_context())
    }

    /// Adds an attribute.
    pub fn set(&self, attribute: KeyValue) {
        self.cx.span().set_attribute(attribute);
    }

    /// Marks the span failed, with the error reply's prefix as
    /// `error.type` and its text as the status message.
    pub fn fail(&self, prefix: &str, message: &str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(attr::ERROR_TYPE, prefix.to_owned()));
        span.set_status(Status::error(message.to_owned()));
    }

    /// Marks an attempt that did nothing and is retried (the node asked was
    /// not the leader, or could not be reached): its reason in
    /// `raftis.outcome`, no error status, since the write may well succeed
    /// on the next attempt and the trace would otherwise look failed.
    pub fn not_done(&self, kind: &str) {
        self.cx
            .span()
            .set_attribute(KeyValue::new(attr::OUTCOME, kind.to_owned()));
    }

    /// Ends the span now.
    pub fn end(self) {
        self.cx.span().end();
    }
}

/// A stage of one write that already happened, recorded after the fact
/// (the log store and the state machine know a stage's times only once it
/// is over, and run outside the write's task).
pub struct Stage<'a> {
    /// The span to parent on.
    pub parent: TraceParent,
    /// Span name.
    pub name: &'static str,
    /// Span kind.
    pub kind: SpanKind,
    /// When it began.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Its log entry: index and term.
    pub log_id: Option<(u64, u64)>,
    /// Entries its batch served.
    pub batch_entries: usize,
    /// The other sampled writes of the same batch (linked, at most
    /// [`MAX_LINKS`]).
    pub batch: &'a [TraceParent],
    /// More attributes.
    pub attributes: Vec<KeyValue>,
}

/// A stage handed from one component to another, by log index.
#[derive(Debug, Clone, Copy)]
struct BookEntry {
    /// Where the next stage of this write on this node hangs.
    parent: TraceParent,
    /// When the previous stage ended.
    at: SystemTime,
}

/// Contexts handed between stages that openraft runs apart, by log index.
#[derive(Debug, Default)]
pub struct TraceBook {
    /// Follower: the AppendEntries server span, for the log store's spans.
    received: Mutex<BTreeMap<u64, BookEntry>>,
    /// Leader: in the local log, waiting for a quorum (the commit span).
    appended: Mutex<BTreeMap<u64, BookEntry>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Entries a book keeps at most: records of entries that never reach a
/// stage (a duplicate AppendEntries, a truncated suffix) must not pile up
/// between two applies.
const BOOK_CAP: usize = 4096;

impl TraceBook {
    fn put(map: &Mutex<BTreeMap<u64, BookEntry>>, index: u64, entry: BookEntry) {
        let mut map = lock(map);
        if map.len() >= BOOK_CAP && !map.contains_key(&index) {
            map.pop_first();
        }
        map.insert(index, entry);
    }

    /// A follower received entry `index` in an AppendEntries whose server
    /// span is `parent`.
    pub fn note_received(&self, index: u64, parent: TraceParent) {
        Self::put(
            &self.received,
            index,
            BookEntry {
                parent,
                at: SystemTime::now(),
            },
        );
    }

    /// The AppendEntries server span that brought entry `index`, if any.
    #[must_use]
    pub fn take_received(&self, index: u64) -> Option<TraceParent> {
        lock(&self.received).remove(&index).map(|e| e.parent)
    }

    /// This node (the leader) appended entry `index` to its log at `at`.
    pub fn note_appended(&self, index: u64, parent: TraceParent, at: SystemTime) {
        Self::put(&self.appended, index, BookEntry { parent, at });
    }

    /// When this node (the leader) appended entry `index` to its log.
    #[must_use]
    pub fn take_appended(&self, index: u64) -> Option<SystemTime> {
        lock(&self.appended).remove(&index).map(|e| e.at)
    }

    /// Forgets every record at or below `index` (applied: no later stage).
    pub fn forget_through(&self, index: u64) {
        for map in [&self.received, &self.appended] {
            let mut map = lock(map);
            let keep = map.split_off(&(index.saturating_add(1)));
            *map = keep;
        }
    }
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    node_id: u64,
    book: TraceBook,
}

/// This node's tracer: spans of sampled writes, or nothing at all when no
/// exporter is configured. Cloning shares it.
#[derive(Clone, Default)]
pub struct NodeTracer {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for NodeTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTracer")
            .field("on", &self.inner.is_some())
            .finish()
    }
}

impl NodeTracer {
    /// A tracer that records nothing.
    #[must_use]
    pub fn off() -> NodeTracer {
        NodeTracer::default()
    }

    /// The tracer `[telemetry]` asks for: OTLP/gRPC export to
    /// `otlp_endpoint` and/or spans printed on stdout, sampled at
    /// `sample_ratio`; off when neither is configured. Must run inside the
    /// tokio runtime (the gRPC client lives on it).
    ///
    /// # Errors
    /// [`TelemetryError::Exporter`] when the OTLP exporter cannot be built.
    pub fn from_config(
        node_id: u64,
        config: &TelemetryConfig,
    ) -> Result<NodeTracer, TelemetryError> {
        if config.otlp_endpoint.is_none() && !config.stdout {
            return Ok(NodeTracer::off());
        }
        let mut builder = provider_builder(node_id, config.sample_ratio);
        if let Some(endpoint) = &config.otlp_endpoint {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|source| TelemetryError::Exporter {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            builder = builder.with_batch_exporter(ReportedExporter::new(
                exporter,
                format!("OTLP to {endpoint}"),
            ));
        }
        if config.stdout {
            builder = builder.with_batch_exporter(ReportedExporter::new(
                opentelemetry_stdout::SpanExporter::default(),
                "stdout",
            ));
        }
        Ok(NodeTracer::with_provider(node_id, builder.build()))
    }

    /// A tracer over a provider built by the caller, normally from
    /// [`provider_builder`] with an exporter added.
    #[must_use]
    pub fn with_provider(node_id: u64, provider: SdkTracerProvider) -> NodeTracer {
        let tracer = provider.tracer("raftis");
        NodeTracer {
            inner: Some(Arc::new(Inner {
                provider,
                tracer,
                node_id,
                book: TraceBook::default(),
            })),
        }
    }

    /// The node whose tracer this is; `None` when off.
    #[must_use]
    pub fn node_id(&self) -> Option<u64> {
        self.inner.as_deref().map(|i| i.node_id)
    }

    /// Whether spans are recorded at all.
    #[must_use]
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The book that hands contexts between stages; `None` when off.
    #[must_use]
    pub fn book(&self) -> Option<&TraceBook> {
        self.inner.as_deref().map(|i| &i.book)
    }

    /// Starts the root span of a client write: `name` (`SET`), or for a
    /// pipelined run of `batch` writes replicated as one entry `BATCH SET`
    /// (`BATCH` when the run mixes commands, `name` `None`), sampled by the
    /// configured ratio. `None` when off or not sampled: the command then
    /// runs with no context and no later stage records anything for it.
    #[must_use]
    pub fn command(&self, name: Option<&str>, batch: usize, keys: usize) -> Option<ActiveSpan> {
        let inner = self.inner.as_deref()?;
        let builder = inner
            .tracer
            .span_builder("command")
            .with_kind(SpanKind::Server);
        let span = inner.tracer.build_with_context(builder, &Context::new());
        if !span.span_context().is_sampled() {
            return None;
        }
        let mut span = span;
        let operation = match (name.map(str::to_ascii_uppercase), batch > 1) {
            (Some(upper), false) => upper,
            (Some(upper), true) => format!("BATCH {upper}"),
            (None, _) => "BATCH".to_owned(),
        };
        span.update_name(Cow::Owned(operation.clone()));
        span.set_attributes([
            KeyValue::new(attr::DB_SYSTEM, "redis"),
            KeyValue::new(attr::DB_OPERATION, operation),
            KeyValue::new(attr::NODE_ID, as_i64(inner.node_id)),
            KeyValue::new(attr::KEY_COUNT, as_i64(keys as u64)),
        ]);
        if batch > 1 {
            span.set_attribute(KeyValue::new(attr::DB_BATCH_SIZE, as_i64(batch as u64)));
        }
        Some(ActiveSpan {
            cx: Context::new().with_span(span),
        })
    }

    /// Starts a span under `parent` (a sampled context), or `None` when off
    /// or there is no such parent.
    #[must_use]
    pub fn start(
        &self,
        parent: Option<TraceParent>,
        name: &'static str,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> Option<ActiveSpan> {
        self.start_linked(parent, name, kind, attributes, &[])
    }

    /// [`NodeTracer::start`] for work shared with the other traced writes
    /// in `batch`, which the span links to.
    fn start_linked(
        &self,
        parent: Option<TraceParent>,
        name: &'static str,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
        batch: &[TraceParent],
    ) -> Option<ActiveSpan> {
        let inner = self.inner.as_deref()?;
        let parent = parent?;
        let mut attributes = attributes;
        attributes.push(KeyValue::new(attr::NODE_ID, as_i64(inner.node_id)));
        let span = inner
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .with_links(links(parent, batch))
            .start_with_context(&inner.tracer, &parent.context());
        Some(ActiveSpan {
            cx: Context::new().with_span(span),
        })
    }

    /// Starts a span of the peer RPC `method` under `parent`: the caller's
    /// side (`Client`, to node `peer`) or the callee's (`Server`), linked to
    /// the other traced writes in `batch` that the same request carries.
    #[must_use]
    pub fn rpc(
        &self,
        parent: Option<TraceParent>,
        name: &'static str,
        kind: SpanKind,
        method: &'static str,
        peer: Option<u64>,
        batch: &[TraceParent],
    ) -> Option<ActiveSpan> {
        self.inner.as_ref()?;
        let mut attributes = vec![
            KeyValue::new(attr::RPC_SYSTEM, "raftis"),
            KeyValue::new(attr::RPC_SERVICE, "raftis.Peer"),
            KeyValue::new(attr::RPC_METHOD, method),
        ];
        if let Some(peer) = peer {
            attributes.push(KeyValue::new(attr::PEER_ID, as_i64(peer)));
        }
        self.start_linked(parent, name, kind, attributes, batch)
    }

    /// Records a stage that is over; returns its context.
    pub fn record(&self, stage: Stage<'_>) -> Option<TraceParent> {
        let inner = self.inner.as_deref()?;
        let mut attributes = stage.attributes;
        attributes.push(KeyValue::new(attr::NODE_ID, as_i64(inner.node_id)));
        if let Some((index, term)) = stage.log_id {
            attributes.push(KeyValue::new(attr::LOG_INDEX, as_i64(index)));
            attributes.push(KeyValue::new(attr::LOG_TERM, as_i64(term)));
        }
        if stage.batch_entries > 0 {
            attributes.push(KeyValue::new(
                attr::BATCH_ENTRIES,
                as_i64(stage.batch_entries as u64),
            ));
        }
        let span = inner
            .tracer
            .span_builder(stage.name)
            .with_kind(stage.kind)
            .with_start_time(stage.start)
            .with_attributes(attributes)
            .with_links(links(stage.parent, stage.batch))
            .start_with_context(&inner.tracer, &stage.parent.context());
        let recorded = TraceParent::of(span.span_context());
        let mut span = span;
        span.end_with_timestamp(stage.end);
        recorded
    }

    /// Exports what is queued and stops the exporters, waiting at most
    /// [`SHUTDOWN_WAIT`] for each (a collector that is down must not hold up
    /// the node's stop). Blocking work, done off the runtime's threads.
    pub async fn shutdown(&self) {
        let Some(inner) = self.inner.clone() else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || {
            inner.provider.shutdown_with_timeout(SHUTDOWN_WAIT)
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "trace exporter did not shut down cleanly");
        }
    }
}

/// A provider builder with raftis's resource (`service.name=raftis`, the
/// node id) and sampler (parent-based, new traces at `sample_ratio`); add an
/// exporter and build.
#[must_use]
pub fn provider_builder(node_id: u64, sample_ratio: f64) -> TracerProviderBuilder {
    let resource = Resource::builder()
        .with_service_name("raftis")
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", format!("node-{node_id}")),
            KeyValue::new(attr::NODE_ID, as_i64(node_id)),
        ])
        .build();
    SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            sample_ratio,
        ))))
}

/// Links to the traced writes of `batch` other than `parent`'s own.
fn links(parent: TraceParent, batch: &[TraceParent]) -> Vec<Link> {
    batch
        .iter()
        .filter(|other| other.trace_id != parent.trace_id)
        .take(MAX_LINKS)
        .map(|other| Link::with_context(other.span_context()))
        .collect()
}

/// Ids, indexes and sizes as OpenTelemetry's (signed) integers.
#[must_use]
pub fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_prints_as_w3c() {
        let tp = TraceParent {
            trace_id: [0x4b; 16],
            span_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
            flags: 1,
        };
        let sc = tp.span_context();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(TraceParent::of(&sc), Some(tp));
        assert_eq!(
            tp.to_string(),
            "00-4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b-00f067aa0ba902b7-01"
        );
        let bytes = postcard::to_allocvec(&Some(tp)).unwrap();
        assert_eq!(bytes.len(), 26);
        assert_eq!(postcard::to_allocvec(&None::<TraceParent>).unwrap(), [0]);
    }

    #[test]
    fn unsampled_contexts_are_not_propagated() {
        let sc = SpanContext::new(
            TraceId::from_bytes([1; 16]),
            SpanId::from_bytes([2; 8]),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        assert_eq!(TraceParent::of(&sc), None);
        assert_eq!(TraceParent::of(&SpanContext::empty_context()), None);
        assert_eq!(TraceParent::current(), None);
    }

    #[test]
    fn an_off_tracer_records_nothing() {
        let t = NodeTracer::off();
        assert!(!t.is_on());
        assert!(t.command(Some("set"), 1, 1).is_none());
        assert!(t.book().is_none());
    }

    #[test]
    fn the_book_forgets_what_was_applied() {
        let book = TraceBook::default();
        let tp = TraceParent {
            trace_id: [1; 16],
            span_id: [1; 8],
            flags: 1,
        };
        for i in 1..=5 {
            book.note_received(i, tp);
            book.note_appended(i, tp, SystemTime::now());
        }
        book.forget_through(3);
        assert_eq!(book.take_received(3), None);
        assert_eq!(book.take_received(4), Some(tp));
        assert!(book.take_appended(2).is_none());
        assert!(book.take_appended(5).is_some());
        for i in 0..(BOOK_CAP as u64 + 10) {
            book.note_received(100 + i, tp);
        }
        assert_eq!(lock(&book.received).len(), BOOK_CAP);
    }
}
