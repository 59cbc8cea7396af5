//! The one error type of the judge crate.

use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in the judge engine and its service. The service maps each
/// variant to a gRPC status in exactly one place (`grpc::status::status_of`). It is `Clone`
/// so that one failed batched step reaches every sequence in it as the same typed error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JudgeError {
    /// The model file or directory could not be read or understood.
    #[error("cannot load model from {path}: {reason}")]
    ModelLoad {
        /// What was being loaded.
        path: PathBuf,
        /// Why it failed, in words.
        reason: String,
    },
    /// The tokenizer could not be built or failed on a text.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template could not be parsed or rendered.
    #[error("chat template: {0}")]
    Template(String),
    /// A tensor operation failed during generation (shared: a batched step's one error
    /// fails every sequence in it).
    #[error("model computation failed: {0}")]
    Compute(Arc<candle_core::Error>),
    /// A request field or option is invalid; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The input cannot fit the context and the request refused truncation (or nothing can
    /// be cut far enough).
    #[error("{0}")]
    ContextOverflow(String),
    /// The engine queue is full; the client should retry later.
    #[error("the judge queue is full ({capacity} requests waiting); retry later")]
    QueueFull {
        /// Configured queue capacity.
        capacity: usize,
    },
    /// The request's deadline passed before it could start (it waited in the queue too long).
    #[error("the request's deadline passed after {waited_ms} ms in the queue; it was not started")]
    DeadlineExceeded {
        /// How long it waited.
        waited_ms: u64,
    },
    /// The engine thread has stopped (shutdown or a fatal error).
    #[error("the judge engine is not running")]
    EngineStopped,
}

impl From<candle_core::Error> for JudgeError {
    fn from(e: candle_core::Error) -> Self {
        Self::Compute(Arc::new(e))
    }
}

/// A [`JudgeError::ModelLoad`] for `path`: every loader (checkpoints, GGUF files, both
/// backends) reports a file it cannot use this way, and lives below the engine's modules so
/// none of them imports another for it.
pub(crate) fn load_err(path: &std::path::Path, reason: impl std::fmt::Display) -> JudgeError {
    JudgeError::ModelLoad {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = JudgeError> = std::result::Result<T, E>;
