//! The batched CPU engine: our own LLaMA forward over per-sequence caches
//! ([`model`], [`kv`]), the Q4_1 kernel candle lacks ([`kernels`]), and the continuous
//! batching loop ([`scheduler`]).

pub mod kernels;
pub mod kv;
pub mod model;
pub mod scheduler;

pub use model::{BatchModel, StepInput, Want};
pub(crate) use scheduler::run;
pub use scheduler::BatchLimits;
