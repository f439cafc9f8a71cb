//! The span exporters' health, logged once per change.
//!
//! The SDK's batch processor hands each batch of finished spans to an
//! exporter (OTLP or stdout) on its own thread. When the collector is down
//! every batch fails, and the SDK would log an error per batch; wrapped in a
//! [`ReportedExporter`], the first failure logs one warning (spans are being
//! dropped), and the first success after it one info line, as the node logs
//! every other state change. Spans of a failed batch are dropped either way:
//! tracing must never hold up or fail a write.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

/// An exporter whose failures are logged once per outage.
pub struct ReportedExporter<E> {
    inner: E,
    /// Where spans go, for the log lines (`OTLP to http://...`, `stdout`).
    target: String,
    failing: AtomicBool,
}

impl<E> ReportedExporter<E> {
    /// Wraps `inner`, which exports to `target`.
    pub fn new(inner: E, target: impl Into<String>) -> ReportedExporter<E> {
        ReportedExporter {
            inner,
            target: target.into(),
            failing: AtomicBool::new(false),
        }
    }

    /// Notes the outcome of one export; logs when it differs from the last.
    fn note(&self, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(target = %self.target, "trace export recovered");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target = %self.target, error = %e,
                        "trace export failing; spans are dropped until it recovers"
                    );
                }
            }
        }
    }
}

impl<E> fmt::Debug for ReportedExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportedExporter")
            .field("target", &self.target)
            .field("failing", &self.failing.load(Ordering::Relaxed))
            .finish()
    }
}

impl<E: SpanExporter> SpanExporter for ReportedExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.note(&result);
        // Reported here, once; the SDK would log every failed batch.
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkError;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// Fails while `down` is set; counts exports.
    #[derive(Debug, Clone, Default)]
    struct Flaky {
        down: Arc<AtomicBool>,
        calls: Arc<AtomicUsize>,
    }

    impl SpanExporter for Flaky {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.down.load(Ordering::Relaxed) {
                Err(OTelSdkError::InternalFailure("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn failures_are_swallowed_and_tracked_per_outage() {
        let flaky = Flaky::default();
        let exporter = ReportedExporter::new(flaky.clone(), "test");
        assert!(exporter.export(Vec::new()).await.is_ok());
        assert!(!exporter.failing.load(Ordering::Relaxed));
        flaky.down.store(true, Ordering::Relaxed);
        for _ in 0..3 {
            assert!(exporter.export(Vec::new()).await.is_ok());
            assert!(exporter.failing.load(Ordering::Relaxed));
        }
        flaky.down.store(false, Ordering::Relaxed);
        assert!(exporter.export(Vec::new()).await.is_ok());
        assert!(!exporter.failing.load(Ordering::Relaxed));
        assert_eq!(flaky.calls.load(Ordering::Relaxed), 5);
    }
}
