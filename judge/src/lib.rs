//! The autoj judge: an Auto-J-family model served with candle. Three halves, one folder
//! each, in the order a request passes through them:
//!
//! - [`grpc`]: the `autoj.v1.Judge` service (the only module that knows tonic or the
//!   proto): request validation, the one error-to-status mapping, swap checks, bulk
//!   Evaluate, metrics and trace spans, and the server with health and reflection.
//! - [`engine`]: the thread that owns the model behind a bounded queue: model and tokenizer
//!   loading, generation, the serial scheduler, [`engine::scheduler`], continuous batching
//!   over a backend, and [`engine::cpu`], its CPU backend with our own forward pass, caches
//!   and kernels.
//! - [`protocol`]: Auto-J itself as pure functions: the exact prompts, truncation to fit the
//!   context, verdict parsing, and the forced-choice arithmetic.
//!
//! [`error`] holds the crate's one error type; [`testkit`] (feature `testkit`) writes tiny
//! random models for tests.

pub mod engine;
pub mod error;
pub mod grpc;
pub mod protocol;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use error::JudgeError;
