//! The CPU backend of the batching scheduler: our own LLaMA forward over per-sequence f16,
//! f32 or q8 caches ([`model`], [`load`], [`kv`]), the Q4_1, Q8_0 and K-quant kernels
//! ([`kernels`]: AVX-512 VNNI, AVX-VNNI, AVX2 or portable, picked at run time), attention
//! over the caches ([`attention`]: blocks of query heads sharing each cached row, in AVX-512
//! or AVX2), and [`BatchModel`] as a [`crate::engine::scheduler::Backend`] (`backend`).
//!
//! It imports the scheduler's contract ([`crate::engine::scheduler::backend`]), never the
//! reverse; the kernels import nothing from attention.

pub mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_avx2;
#[cfg(target_arch = "x86_64")]
mod attention_avx512;
mod attention_inputs;
#[cfg(test)]
mod attention_tests;
mod backend;
mod embedding;
pub mod kernels;
pub mod kv;
pub mod load;
mod load_hf;
pub mod model;

pub use model::BatchModel;
