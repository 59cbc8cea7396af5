//! The autoj judge: an Auto-J-family model served with candle.
//!
//! - [`gguf_guard`]: refuses hostile GGUF headers before candle parses them.
//! - [`model`]: loads a LLaMA-family judge from GGUF or a Hugging Face directory.
//! - [`tokenizer`]: text ⇄ ids, including tokenizers rebuilt from GGUF metadata.
//! - [`prompt`]: Auto-J's exact templates and the model's own chat template.
//! - [`fit`]: fits input into the context, truncating from the middle when allowed.
//! - [`generate`]: sampling settings, incremental detokenising, stop strings.
//! - [`verdict`]: extracts the verdict from a critique, as Auto-J does and better.
//! - [`scoring`]: verdict probabilities from the logits, and forced verdicts.
//! - [`batch`]: continuous batching on the CPU: own forward pass, per-sequence caches, prefix cache.
//! - [`engine`]: the thread that owns the model, behind a bounded queue (no gRPC here).
//! - [`metrics`] and [`trace`]: what an operator sees of each call (Prometheus metrics,
//!   OpenTelemetry spans continuing the caller's trace).
//! - [`service`] and [`server`]: the `autoj.v1.Judge` gRPC service over the engine;
//!   [`swap`]: both orders of a pair and their consistency; [`evaluate`]: bulk items
//!   through Compare / Critique, a bounded window at a time.

pub mod batch;
pub mod engine;
pub mod error;
pub mod evaluate;
pub mod fit;
pub mod generate;
pub mod gguf_guard;
pub mod metrics;
pub mod model;
pub mod prompt;
pub mod scoring;
pub(crate) mod serial;
pub mod server;
pub mod service;
pub mod swap;
pub mod testkit;
pub mod tokenizer;
pub mod trace;
pub mod verdict;

pub use error::JudgeError;
