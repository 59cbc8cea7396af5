//! The judge service's one mapping from [`JudgeError`] to a gRPC status, where each error is
//! also logged once.

use tonic::Status;

use crate::error::JudgeError;

/// The one mapping from engine errors to gRPC statuses.
pub fn status_of(e: &JudgeError) -> Status {
    let status = match e {
        JudgeError::InvalidArgument(m) => Status::invalid_argument(m.clone()),
        JudgeError::ContextOverflow(m) => Status::failed_precondition(m.clone()),
        JudgeError::QueueFull { .. } => Status::resource_exhausted(e.to_string()),
        JudgeError::EngineStopped => Status::unavailable(e.to_string()),
        JudgeError::DeadlineExceeded { .. } => Status::deadline_exceeded(e.to_string()),
        JudgeError::Tokenizer(_)
        | JudgeError::Template(_)
        | JudgeError::Compute(_)
        | JudgeError::ModelLoad { .. } => Status::internal(e.to_string()),
    };
    if status.code() == tonic::Code::Internal {
        tracing::error!(error = %e, "request failed");
    } else {
        tracing::debug!(error = %e, code = ?status.code(), "request refused");
    }
    status
}
