//! An OTLP/gRPC trace sink for benchmarks: it accepts every export request,
//! counts the spans in it and drops them, so that a node exporting to it
//! pays the full cost of export (serialization, gRPC, the network) without
//! a collector's own work competing for the CPU.
//!
//! `otlp_sink [ADDR]` listens on ADDR (default 127.0.0.1:4317), prints
//! `otlp_sink listening on ADDR` once it accepts connections, and on SIGTERM
//! or ctrl-c prints `spans received: N` (and the number of export requests)
//! and exits 0. `benches/trace_overhead.sh` builds and runs it with
//! `cargo build --release --example otlp_sink`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::signal::unix::{signal, SignalKind};

/// Spans and requests received so far.
#[derive(Default)]
struct Counts {
    spans: AtomicU64,
    requests: AtomicU64,
}

/// The trace service: counts what it receives.
struct Sink {
    counts: Arc<Counts>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.counts.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4317".to_owned());
    let addr: SocketAddr = match arg.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("otlp_sink: '{arg}' is not an address (like 127.0.0.1:4317): {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("otlp_sink: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("otlp_sink: cannot handle signals: {e}");
            return ExitCode::from(1);
        }
    };
    let counts = Arc::new(Counts::default());
    let serve = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Sink {
            counts: Arc::clone(&counts),
        }))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    println!("otlp_sink listening on {addr}");
    tokio::select! {
        result = serve => {
            if let Err(e) = result {
                eprintln!("otlp_sink: server failed: {e}");
                return ExitCode::from(1);
            }
        }
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    println!(
        "spans received: {} (in {} export requests)",
        counts.spans.load(Ordering::Relaxed),
        counts.requests.load(Ordering::Relaxed)
    );
    ExitCode::SUCCESS
}
