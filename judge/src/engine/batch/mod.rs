//! The batched CPU engine: our own LLaMA forward over per-sequence f16 or f32 caches
//! ([`model`], [`load`], [`kv`]), the Q4_1 and Q8_0 kernels ([`kernels`]: AVX-512 VNNI,
//! AVX-VNNI, AVX2 or portable, picked at run time), attention over the caches
//! ([`attention`]: blocks of query heads sharing each cached row, in AVX-512 or AVX2), and the continuous batching loop
//! ([`scheduler`]).

pub mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_avx2;
#[cfg(target_arch = "x86_64")]
mod attention_avx512;
#[cfg(test)]
mod attention_tests;
pub mod backend;
mod cpu_backend;
mod embedding;
mod finish;
pub mod kernels;
pub mod kv;
pub mod load;
mod load_hf;
pub mod model;
pub mod scheduler;
#[cfg(test)]
mod test_values;
mod verdict;

pub use backend::{answer_on_host, Answer, Ask, Backend, Row, SeqCache, SharedPrefix, StepOut};
pub use backend::{StepInput, Want};
pub use model::BatchModel;
pub(crate) use scheduler::run;
pub use scheduler::BatchLimits;
