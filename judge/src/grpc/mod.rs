//! The `autoj.v1.Judge` gRPC service over the engine: the only module of the crate that
//! knows tonic or the proto.
//!
//! - [`service`]: the handlers (Compare, Critique, Score, Evaluate) over the engine.
//! - `chat`: the `Chat` handler (free-form chat, no verdict).
//! - [`validate`]: per-request limits and the checks that make an engine request.
//! - [`convert`]: engine events in their wire form.
//! - [`score`]: Best-of-N over the candidates of one `Score` call.
//! - [`status`]: the one exhaustive mapping from [`crate::JudgeError`] to a gRPC status.
//! - [`swap`]: both orders of a pair and their consistency (bulk `Evaluate` is driven by
//!   `autoj_proto::evaluate`, shared with the router).
//! - [`metrics`] and [`trace`]: what an operator sees of each call.
//! - [`server`]: the tonic server with health, reflection, TLS and drain.

mod chat;
pub mod convert;
pub mod metrics;
pub mod score;
pub mod server;
pub mod service;
pub mod status;
pub mod swap;
pub mod trace;
pub mod validate;
