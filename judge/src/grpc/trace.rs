//! The judge's trace spans: one per call, continuing the caller's trace (the router's, or
//! a client's) from the W3C `traceparent` in its metadata, with children for validation,
//! admission and the engine's phases.
//!
//! The engine reports its phases only as durations in its `Usage` event (it knows nothing
//! of tracing), so [`record_phases`] makes the queue, prefill and decode spans afterwards,
//! through the OpenTelemetry API, with explicit start and end times. When traces are not
//! exported the global tracer is the no-op one and these calls cost next to nothing.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{TraceContextExt, Tracer};
use opentelemetry::KeyValue;
use tonic::metadata::MetadataMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::engine::UsageStats;

/// The span of one judging call of `rpc`, parented on the trace context in `metadata`.
pub fn call_span(rpc: &'static str, metadata: &MetadataMap) -> tracing::Span {
    let span = tracing::info_span!(
        "judge",
        otel.name = %format_args!("autoj.v1.Judge/{rpc}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "autoj.v1.Judge",
        rpc.method = rpc,
        otel.status_code = tracing::field::Empty,
    );
    // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
    let _ = span.set_parent(autoj_proto::observe::extract(metadata));
    span
}

/// Adds the engine's `queue`, `prefill` and `decode` spans under `parent`, laid end to end
/// from `queued_at` (when the request entered the engine's queue) with the durations the
/// engine measured.
pub fn record_phases(parent: &opentelemetry::Context, queued_at: SystemTime, usage: &UsageStats) {
    if !parent.span().span_context().is_valid() {
        return; // not traced: skip building spans no one exports
    }
    let tracer = opentelemetry::global::tracer("autoj-judge");
    let mut at = queued_at;
    let phases: [(&'static str, Duration, Vec<KeyValue>); 3] = [
        ("queue", usage.queue, Vec::new()),
        (
            "prefill",
            usage.prefill,
            vec![KeyValue::new(
                "autoj.prompt_tokens",
                usage.prompt_tokens as i64,
            )],
        ),
        (
            "decode",
            usage.decode,
            vec![KeyValue::new(
                "autoj.completion_tokens",
                usage.completion_tokens as i64,
            )],
        ),
    ];
    for (name, took, attributes) in phases {
        let end = at + took;
        let mut span = tracer
            .span_builder(name)
            .with_start_time(at)
            .with_attributes(attributes)
            .start_with_context(&tracer, parent);
        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
        at = end;
    }
}
