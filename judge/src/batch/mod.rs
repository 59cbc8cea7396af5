//! The batched CPU engine: our own LLaMA forward over per-sequence caches ([`model`],
//! [`load`], [`kv`]), the Q4_1 and Q8_0 kernels ([`kernels`]), attention over the caches
//! ([`attention`]), and the continuous batching loop ([`scheduler`]).

pub mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_avx512;
pub mod kernels;
pub mod kv;
pub mod load;
pub mod model;
pub mod scheduler;

pub use model::{BatchModel, StepInput, Want};
pub(crate) use scheduler::run;
pub use scheduler::BatchLimits;
