//! The engine: one dedicated thread owns the model and serves requests from a bounded
//! queue. Callers get events through a channel; a caller that drops its receiver stops its
//! generation before the next decode step. No gRPC here: the service translates, and the
//! one-process mode and benchmarks call the engine directly.
//!
//! - [`handle`]: [`Engine`], which starts the thread and admits requests.
//! - [`job`]: the request, its events and the engine's counters (shared by both schedulers).
//! - [`scheduler`]: continuous batching, generic over a [`scheduler::Backend`]; knows no
//!   backend.
//! - [`cpu`]: the scheduler's CPU backend: own forward pass, caches, attention, kernels.
//! - [`device`]: the scheduler's backend in candle tensor ops with slotted key/value buffers
//!   (GPUs; the CPU too, for tests).
//! - `oracle` (tests only, feature `testkit`): one request at a time through candle's stock
//!   models, the reference the batched engines are tested against.
//! - [`model`], [`tokenizer`], [`gguf_guard`]: loading a LLaMA-family judge safely.
//! - [`sentencepiece`]: SentencePiece BPE vocabularies (`tokenizer.model`, GGUF `llama`)
//!   built into the tokenizer.
//! - [`checkpoint`]: Hugging Face directories as published (safetensors or PyTorch `.bin`,
//!   sharded or not, GPTQ), read shard by shard by every backend; the quantization mix.
//! - [`generate`]: sampling settings, incremental detokenising, stop strings;
//!   `logprobs`: token log-probabilities for chat requests.

pub mod checkpoint;
pub mod cpu;
pub mod device;
pub mod generate;
pub mod gguf_guard;
pub mod handle;
pub mod job;
mod logprobs;
pub mod model;
#[cfg(any(test, feature = "testkit"))]
pub mod oracle;
pub mod scheduler;
pub mod sentencepiece;
pub mod tokenizer;

pub use crate::protocol::outcome::{verdict_of, JudgeVerdict, Outcome, VerdictSource};
pub use handle::{choose_format, Engine, EngineConfig, PromptFormatChoice, Scheduling};
pub use job::{
    Admission, ChatRequest, EngineEvent, EngineStats, EventReceiver, FinishReason, JudgeRequest,
    Submission, TokenLogprobs, TokenProb, UsageStats, MAX_TOP_LOGPROBS,
};
