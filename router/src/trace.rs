//! The router's trace spans: one per call, continuing the client's trace when it sent a
//! W3C `traceparent`, with children for validation, classification, routing and the call
//! to the judge, whose context goes out in the judge call's metadata.

use tonic::metadata::MetadataMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The span of one call of `rpc`, parented on the trace context in `metadata`.
pub fn call_span(rpc: &'static str, metadata: &MetadataMap) -> tracing::Span {
    let span = tracing::info_span!(
        "router",
        otel.name = %format_args!("autoj.v1.Judge/{rpc}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "autoj.v1.Judge",
        rpc.method = rpc,
        autoj.scenario = tracing::field::Empty,
        autoj.pool = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
    let _ = span.set_parent(autoj_proto::observe::extract(metadata));
    span
}

/// Puts the current span's context into the metadata of a call to a judge, so the judge's
/// spans join this trace (for remote and in-process judges alike).
pub fn inject_current(metadata: &mut MetadataMap) {
    autoj_proto::observe::inject(&tracing::Span::current().context(), metadata);
}
