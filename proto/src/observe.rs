//! What the router and the judge share for observability: W3C trace context
//! (`traceparent`, `tracestate`) carried in gRPC metadata, read and written the same way by
//! both so one request is one trace across them, how a failed call marks its span, the
//! status-code label of metrics, and the timing of critique chunks.
//!
//! Both directions go through the process's global text-map propagator. Telemetry set-up
//! installs the W3C one only when traces are exported; until then the global propagator is
//! the no-op one, so extracting and injecting cost nothing and change nothing.

use std::time::{Duration, Instant};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::Context;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::Code;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Reads propagation headers from request metadata.
struct Reader<'a>(&'a MetadataMap);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes propagation headers into outgoing metadata, replacing what was there.
struct Writer<'a>(&'a mut MetadataMap);

impl Injector for Writer<'_> {
    fn set(&mut self, key: &str, value: String) {
        // A header the propagator writes is always a valid ASCII key and value; anything
        // else is skipped rather than failing the call.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The caller's trace context from `metadata` (an empty context when there is none or
/// tracing is off).
pub fn extract(metadata: &MetadataMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&Reader(metadata)))
}

/// Writes `cx` into `metadata` for the next hop (nothing when tracing is off).
pub fn inject(cx: &Context, metadata: &mut MetadataMap) {
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut Writer(metadata)));
}

/// A status code as gRPC spells it (`OK`, `INVALID_ARGUMENT`, ...): the `code` label of
/// request metrics.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Marks `span` as failed with `status` (an OK end leaves it unset, as OpenTelemetry asks).
/// The span must declare an empty `otel.status_code` field.
pub fn record_status(span: &tracing::Span, status: &tonic::Status) {
    span.record("otel.status_code", "ERROR");
    span.set_attribute("rpc.grpc.status_code", status.code() as i64);
}

/// When a call started and when the last critique chunk of each order (original, swapped)
/// arrived: what both services need for time to first chunk and the gaps between chunks.
#[derive(Debug, Clone)]
pub struct ChunkClock {
    started: Instant,
    last: [Option<Instant>; 2],
}

impl ChunkClock {
    /// A clock for a call that arrived at `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            last: [None, None],
        }
    }

    /// Notes a chunk of `order` (0 original, else swapped) at `now`; returns the time since
    /// the call started when it is the call's first chunk, and the gap since the previous
    /// chunk of the same order.
    pub fn chunk(&mut self, order: u32, now: Instant) -> (Option<Duration>, Option<Duration>) {
        let first = self
            .last
            .iter()
            .all(Option::is_none)
            .then(|| now - self.started);
        let gap = self.last[usize::from(order != 0)]
            .replace(now)
            .map(|prev| now - prev);
        (first, gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_clock_times_the_first_chunk_and_gaps_per_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut clock = ChunkClock::new(t0);
        assert_eq!(
            clock.chunk(0, ms(50)),
            (Some(Duration::from_millis(50)), None)
        );
        assert_eq!(
            clock.chunk(0, ms(60)),
            (None, Some(Duration::from_millis(10)))
        );
        // The swapped order's first chunk starts its own gaps, not a second first chunk.
        assert_eq!(clock.chunk(1, ms(65)), (None, None));
        assert_eq!(
            clock.chunk(1, ms(85)),
            (None, Some(Duration::from_millis(20)))
        );
    }

    #[test]
    fn code_names_follow_grpc_spelling() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }

    #[test]
    fn reader_lists_ascii_keys_and_reads_values() {
        let mut md = MetadataMap::new();
        md.insert("traceparent", "00-abc-def-01".parse().unwrap());
        md.insert_bin("blob-bin", MetadataValue::from_bytes(b"\x00\x01"));
        let reader = Reader(&md);
        assert_eq!(reader.get("traceparent"), Some("00-abc-def-01"));
        assert_eq!(reader.keys(), vec!["traceparent"]);
    }

    #[test]
    fn writer_replaces_and_skips_invalid() {
        let mut md = MetadataMap::new();
        md.insert("traceparent", "old".parse().unwrap());
        let mut writer = Writer(&mut md);
        writer.set("traceparent", "new".into());
        writer.set("bad key", "x".into());
        writer.set("tracestate", "a=\u{1}".into());
        assert_eq!(md.get("traceparent").unwrap(), "new");
        assert_eq!(md.len(), 1);
    }
}
