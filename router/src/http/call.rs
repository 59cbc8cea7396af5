//! From an HTTP request to the in-process gRPC request: the body decoded in the proto3 JSON
//! mapping, and the metadata a gRPC client would have sent (API key, deadline, trace
//! context), checked by the gRPC server's own API-key interceptor.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::Query;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::Request;

use super::errors::HttpError;
use super::HttpDoor;

/// Headers passed on as gRPC metadata: the API key and the W3C trace context.
const FORWARDED: [&str; 3] = ["authorization", "traceparent", "tracestate"];

/// The deadline header, in milliseconds (the same as the `timeout_ms` parameter).
const TIMEOUT_HEADER: &str = "x-timeout-ms";

/// The query parameters every call may carry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallParams {
    /// Answer a judging call as Server-Sent Events (as `Accept: text/event-stream` does).
    #[serde(default)]
    stream: bool,
    /// The call's deadline in milliseconds (as the `X-Timeout-Ms` header does).
    timeout_ms: Option<u64>,
}

/// What the HTTP request says about the call besides its message.
#[derive(Debug)]
pub struct CallHead {
    /// The gRPC metadata, already through the API-key check.
    metadata: MetadataMap,
    /// Whether the client asked for Server-Sent Events.
    pub stream: bool,
}

impl HttpDoor {
    /// The call's metadata from `headers` and `params`, checked by the API-key interceptor
    /// (before the body is decoded, as gRPC checks keys before reading the message).
    pub(super) fn head(
        &self,
        headers: &HeaderMap,
        params: Result<Query<CallParams>, QueryRejection>,
    ) -> Result<CallHead, HttpError> {
        let Query(params) =
            params.map_err(|e| HttpError::invalid(format!("query string: {}", e.body_text())))?;
        let mut request = Request::from_parts(metadata(headers), Default::default(), ());
        if let Some(timeout) = timeout(headers, &params)? {
            request.set_timeout(timeout);
        }
        let request = self.auth.clone().call(request)?;
        Ok(CallHead {
            metadata: request.into_parts().0,
            stream: params.stream || accepts_event_stream(headers),
        })
    }
}

impl CallHead {
    /// The in-process gRPC request carrying `message`.
    pub fn request<M>(self, message: M) -> Request<M> {
        Request::from_parts(self.metadata, Default::default(), message)
    }
}

/// The forwarded headers as metadata.
fn metadata(headers: &HeaderMap) -> MetadataMap {
    let mut kept = HeaderMap::new();
    for name in FORWARDED {
        for value in headers.get_all(name) {
            kept.append(name, value.clone());
        }
    }
    MetadataMap::from_headers(kept)
}

/// The deadline the client gave: `timeout_ms`, else `X-Timeout-Ms`, else a gRPC-style
/// `grpc-timeout` header; a value that does not parse is INVALID_ARGUMENT naming it.
fn timeout(headers: &HeaderMap, params: &CallParams) -> Result<Option<Duration>, HttpError> {
    if let Some(ms) = params.timeout_ms {
        return Ok(Some(Duration::from_millis(ms)));
    }
    if let Some(value) = headers.get(TIMEOUT_HEADER) {
        let ms = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                HttpError::invalid("X-Timeout-Ms: expected a whole number of milliseconds")
            })?;
        return Ok(Some(Duration::from_millis(ms)));
    }
    match headers.get("grpc-timeout") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(autoj_proto::deadline::parse_grpc_timeout)
            .map(Some)
            .ok_or_else(|| {
                HttpError::invalid("grpc-timeout: expected up to 8 digits and a unit (e.g. 30S)")
            }),
    }
}

/// Whether the `Accept` header asks for Server-Sent Events.
fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The request body as the message `M` (named `what` in errors), read in the proto3 JSON
/// mapping: INVALID_ARGUMENT naming the problem when it is not such JSON, 413 when it is
/// over the size limit. The body is read as JSON whatever its `Content-Type` says.
pub fn decode<M: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    what: &str,
) -> Result<M, HttpError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::BodyTooLarge { limit }
        } else {
            HttpError::invalid(format!("request body: {}", rejection.body_text()))
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(HttpError::invalid(format!(
            "empty request body; expected a JSON {what}"
        )));
    }
    let invalid = |e: &dyn std::fmt::Display, path: String| {
        // serde_path_to_error writes `.` for the root and `?` where it lost the place.
        let path = path.trim_end_matches(['.', '?']);
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        HttpError::invalid(format!("request body is not a valid JSON {what}{at}: {e}"))
    };
    let mut json = serde_json::Deserializer::from_slice(&body);
    let message = serde_path_to_error::deserialize(&mut json)
        .map_err(|e| invalid(e.inner(), e.path().to_string()))?;
    json.end().map_err(|e| invalid(&e, String::new()))?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Two {
        count: u32,
        inner: Option<Box<Two>>,
    }

    fn refusal(body: &str) -> String {
        let bytes = Bytes::from(body.to_owned());
        let err = decode::<Two>(Ok(bytes), 1024, "pair").unwrap_err();
        err.parts().2
    }

    #[test]
    fn bad_bodies_name_where_they_fail() {
        let typed = refusal(r#"{"count": 1, "inner": {"count": "many"}}"#);
        assert!(typed.contains("at `inner.count`"), "{typed}");
        assert!(typed.contains("expected u32"), "{typed}");
        let broken = refusal(r#"{"count": 1"#);
        assert!(
            broken.starts_with("request body is not a valid JSON pair: "),
            "{broken}"
        );
        assert!(!broken.contains(" at `"), "{broken}");
        let trailing = refusal(r#"{"count": 1} {"#);
        assert!(trailing.contains("trailing characters"), "{trailing}");
        let body = Bytes::from_static(br#"{"count": 2, "inner": {"count": 3}}"#);
        let two = decode::<Two>(Ok(body), 1024, "pair").unwrap();
        assert_eq!((two.count, two.inner.map(|i| i.count)), (2, Some(3)));
    }

    #[test]
    fn reads_accept_and_timeouts() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_event_stream(&headers));
        headers.insert(
            header::ACCEPT,
            "application/json, text/event-stream;q=0.9".parse().unwrap(),
        );
        assert!(accepts_event_stream(&headers));
        let params = CallParams::default();
        assert_eq!(timeout(&headers, &params).unwrap(), None);
        headers.insert(TIMEOUT_HEADER, "1500".parse().unwrap());
        assert_eq!(
            timeout(&headers, &params).unwrap(),
            Some(Duration::from_millis(1500))
        );
        headers.insert(TIMEOUT_HEADER, "soon".parse().unwrap());
        assert!(timeout(&headers, &params).is_err());
        headers.remove(TIMEOUT_HEADER);
        headers.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(
            timeout(&headers, &params).unwrap(),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn decodes_both_field_spellings_and_names_errors() {
        use autoj_proto::v1::CompareRequest;
        let ok = |text: &'static str| {
            decode::<CompareRequest>(Ok(Bytes::from(text)), 100, "CompareRequest").unwrap()
        };
        let a = ok(
            r#"{"query":"q","response_1":"a","response2":"b","options":{"language":"LANGUAGE_ZH","generation":{"max_new_tokens":8,"seed":"3"}}}"#,
        );
        assert_eq!((a.response_1.as_str(), a.response_2.as_str()), ("a", "b"));
        let options = a.options.unwrap();
        assert_eq!(options.language, 2);
        assert_eq!(options.generation.unwrap().seed, Some(3));
        for (text, needle) in [
            ("", "empty request body"),
            ("{", "EOF"),
            (r#"{"qurey":"q"}"#, "unknown field `qurey`"),
        ] {
            let err =
                decode::<CompareRequest>(Ok(Bytes::from(text)), 100, "CompareRequest").unwrap_err();
            let HttpError::Status(status) = err else {
                panic!("{text}: not a status")
            };
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(needle), "{}", status.message());
        }
    }
}
