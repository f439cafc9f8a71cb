//! Observability of a node: traces of every write's replication path,
//! Prometheus metrics with health endpoints, and logs.
//!
//! `main` builds the log subscriber ([`logging`]) before anything else, then
//! [`Telemetry::from_config`] builds this node's tracer ([`trace`]: an
//! OpenTelemetry tracer provider with its own resource and exporter, or
//! nothing when no exporter is configured) and its metric registry
//! ([`metrics`]). The node hands one [`Telemetry`] to the cluster layer
//! (log store, state machine, peer transport), the command executor and the
//! HTTP server ([`http`], `/metrics`, `/health`, `/ready` on `http_listen`).
//! Nothing here is global: nodes started in one process (the tests) each keep
//! their own tracer and metrics. When the node stops, [`Telemetry::shutdown`]
//! flushes the spans still queued for export.

pub mod export;
pub mod http;
pub mod http_listener;
pub mod logging;
pub mod metrics;
pub mod trace;

use std::sync::Arc;

use crate::config::Config;

pub use metrics::Metrics;
pub use trace::{NodeTracer, TraceParent};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from `telemetry.otlp_endpoint`.
    #[error("cannot export traces to {endpoint}: {source}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// What the exporter builder said.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// This node's tracer and metrics, shared by every layer that records them.
#[derive(Clone, Debug)]
pub struct Telemetry {
    /// Spans of sampled writes; off (and free) when nothing exports them.
    pub tracer: NodeTracer,
    /// The metrics `/metrics` serves.
    pub metrics: Arc<Metrics>,
}

impl Telemetry {
    /// Builds the tracer and the metrics of node `config.id` from
    /// `[telemetry]`.
    ///
    /// # Errors
    /// [`TelemetryError::Exporter`] when the OTLP exporter cannot be built.
    pub fn from_config(config: &Config) -> Result<Telemetry, TelemetryError> {
        Ok(Telemetry {
            tracer: NodeTracer::from_config(config.id, &config.telemetry)?,
            metrics: Arc::new(Metrics::new(config.id)),
        })
    }

    /// Telemetry that records metrics but exports no spans.
    #[must_use]
    pub fn untraced(node_id: u64) -> Telemetry {
        Telemetry {
            tracer: NodeTracer::off(),
            metrics: Arc::new(Metrics::new(node_id)),
        }
    }

    /// The same metrics with `tracer` instead (tests install an in-memory
    /// exporter this way).
    #[must_use]
    pub fn with_tracer(mut self, tracer: NodeTracer) -> Telemetry {
        self.tracer = tracer;
        self
    }

    /// Exports the spans still queued and stops the exporter.
    pub async fn shutdown(&self) {
        self.tracer.shutdown().await;
    }
}
