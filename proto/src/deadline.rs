//! The client's deadline as gRPC carries it: the `grpc-timeout` request header, read the
//! same way by the router and the judge.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::Request;

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// When the client stops waiting, from the request's `grpc-timeout` header (measured from
/// now, when the request is read); `None` without a valid header.
pub fn deadline_of(metadata: &MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(value).map(|d| Instant::now() + d)
}

/// `request` with `grpc-timeout` set to what is left until `deadline` (at least 1 ms, so
/// a call made after the deadline fails at once instead of waiting without one).
pub fn with_remaining<M>(mut request: Request<M>, deadline: Option<Instant>) -> Request<M> {
    if let Some(at) = deadline {
        let left = at.saturating_duration_since(Instant::now());
        request.set_timeout(left.max(Duration::from_millis(1)));
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeout() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        let mut md = MetadataMap::new();
        assert!(deadline_of(&md).is_none());
        md.insert("grpc-timeout", "10S".parse().unwrap());
        let at = deadline_of(&md).unwrap();
        assert!(at > Instant::now());
    }
}
