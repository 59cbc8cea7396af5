//! What the router and the judge share for observability: W3C trace context
//! (`traceparent`, `tracestate`) carried in gRPC metadata, read and written the same way by
//! both so one request is one trace across them, and the status-code label of metrics.
//!
//! Both directions go through the process's global text-map propagator. Telemetry set-up
//! installs the W3C one only when traces are exported; until then the global propagator is
//! the no-op one, so extracting and injecting cost nothing and change nothing.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::Context;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::Code;

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

#[cfg(test)]
mod tests {
    use super::*;

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
