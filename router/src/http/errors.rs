//! The one place a failure becomes an HTTP answer: a gRPC status code maps to an HTTP status
//! in [`http_status`] (exhaustive, so a new code cannot slip through), and every error body,
//! whole or as an SSE `error` event, is `{"error": {"code": "INVALID_ARGUMENT", "message":
//! "..."}}` with the gRPC code's name.
//!
//! The services have already logged their own errors where they mapped them
//! (`RouterError::into_status`); what is logged here is only what the HTTP layer refused
//! itself (a body that is not JSON, a body over the limit, an unknown route).

use autoj_proto::observe::code_name;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::{Code, Status};

/// Why an HTTP call failed.
#[derive(Debug)]
pub enum HttpError {
    /// A gRPC status: from the services, the API-key check, or the HTTP layer's own checks
    /// (a bad body or parameter is INVALID_ARGUMENT) — its code picks the HTTP status.
    Status(Status),
    /// The body is larger than the door accepts; 413 with code RESOURCE_EXHAUSTED (what a
    /// gRPC server answers for a message over its size limit).
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The route exists but not for this method; 405.
    MethodNotAllowed,
}

impl From<Status> for HttpError {
    fn from(status: Status) -> Self {
        Self::Status(status)
    }
}

impl HttpError {
    /// A request the HTTP layer refuses itself: INVALID_ARGUMENT with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::debug!(error_type = "http_invalid_argument", "{message}");
        Self::Status(Status::invalid_argument(message))
    }

    /// The HTTP status, the gRPC code named in the body, and the message.
    pub(super) fn parts(&self) -> (StatusCode, Code, String) {
        match self {
            Self::Status(status) => (
                http_status(status.code()),
                status.code(),
                status.message().to_owned(),
            ),
            Self::BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::ResourceExhausted,
                format!(
                    "request body over {limit} bytes, this server's limit (from its \
                     `limits.max_input_bytes`)"
                ),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unimplemented,
                "method not allowed on this route; docs/api.md#http lists the routes".into(),
            ),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        if matches!(self, Self::BodyTooLarge { .. } | Self::MethodNotAllowed) {
            tracing::debug!(error_type = code_name(code), "{message}");
        }
        json_response(status, &ErrorBody::new(code, message))
    }
}

/// The body of every error answer and of the SSE `error` event.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// The error.
    error: ErrorDetail,
}

/// The code and message of an [`ErrorBody`].
#[derive(Debug, Serialize)]
struct ErrorDetail {
    /// The gRPC code's name, e.g. `INVALID_ARGUMENT`.
    code: &'static str,
    /// What went wrong, the same words a gRPC client gets.
    message: String,
}

impl ErrorBody {
    /// The body for `code` and `message`.
    pub fn new(code: Code, message: String) -> Self {
        Self {
            error: ErrorDetail {
                code: code_name(code),
                message,
            },
        }
    }

    /// The body of a gRPC status.
    pub fn of(status: &Status) -> Self {
        Self::new(status.code(), status.message().to_owned())
    }
}

/// The HTTP status a gRPC code answers with. FAILED_PRECONDITION (input too long for the
/// context under `TRUNCATION_REFUSE`, a request larger than the whole key/value budget) is
/// 422: the request is well-formed but cannot be processed as it is. CANCELLED is nginx's 499
/// (client closed request). The rest follow google.rpc's mapping.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::UNPROCESSABLE_ENTITY,
        Code::Cancelled => client_closed_request(),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// 499, which `StatusCode` has no constant for.
fn client_closed_request() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// `value` as a JSON answer with `status`.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write a JSON answer");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_statuses() {
        for (code, status) in [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 422),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Cancelled, 499),
            (Code::Internal, 500),
            (Code::Unknown, 500),
        ] {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
        assert_eq!(code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
    }

    #[test]
    fn error_body_names_the_code() {
        let body = serde_json::to_value(ErrorBody::of(&Status::not_found("gone"))).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "NOT_FOUND", "message": "gone"}})
        );
    }
}
