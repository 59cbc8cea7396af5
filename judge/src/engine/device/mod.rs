//! The device backend of the continuous-batching scheduler: a LLaMA forward pass written in
//! candle tensor ops only, so the same code runs on the CPU (f32, in tests) and on CUDA
//! (bf16/f16, in production) under the scheduler the CPU engine uses
//! ([`crate::engine::scheduler`], through [`crate::engine::scheduler::Backend`]).
//!
//! Design:
//! - Weights ([`load`]) from a Hugging Face directory in the working dtype, or a GGUF file
//!   dequantized to it at load. Q, K and V are one matrix per layer, gate and up another, so
//!   each step's packed `[tokens, hidden]` matrix meets every weight once.
//! - Keys and values ([`slots`]): per layer one preallocated buffer
//!   `[slots, kv_heads, max_len, head_dim]`, sized from the memory budget. A sequence holds a
//!   slot from admission until it is dropped (finished, cancelled or failed), so slots are
//!   reused without any bookkeeping in the scheduler. A prefix-cache entry is a device copy
//!   of a prompt's positions (`Arc`-shared); a hit copies it into the new sequence's slot.
//! - A step ([`step`]): generating sequences (one token each) write their keys and values
//!   with one `scatter_set` per layer and attend in one batched matmul over the range of
//!   slots they occupy, narrowed to the longest of them, with a length mask; when that range
//!   holds more than [`step::GATHER_SPAN`] times as many slots as there are generating
//!   sequences, over their slots alone, gathered. A prompt chunk
//!   is written with `slice_set` and attends alone with a causal mask. Rotary positions are
//!   per token (cos/sin rows per token), so sequences at any positions share the step.
//! - Verdict scoring reads every continuation as a token tree in the sequence's own slot
//!   (each branch sees the shared positions and its own earlier tokens), a row of an
//!   ordinary step, so scoring needs no extra slots, copies nothing and stops no one.
//! - Answers ([`crate::engine::scheduler::Ask`]): greedy picks, verdict log-probabilities and the
//!   tree's scores are reduced on the device and read back in one copy of a few values per
//!   row; a sampled row sends a few candidates ([`sample`]); only rows that ask for whole
//!   logits (a chat's log-probabilities) copy them.
//!
//! Fixed-length slots waste the memory a short request leaves unused (a paged cache would
//! not), but keep decode attention to a few large kernels per layer.

mod answers;
pub mod load;
pub mod random;
mod sample;
pub mod slots;
mod step;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::engine::scheduler::sample::{Candidates, Draw};
use crate::engine::scheduler::{Ask, Backend, Row, SeqCache, StepInput, StepOut, Want};
use crate::error::{JudgeError, Result};
pub use random::SlotLayout;
pub use slots::{DeviceKv, DevicePrefix, KvStore};
use step::Item;

/// Each row of `logits` (`[rows, vocab]`, f32, on any device) reduced there to the
/// candidates a sampled row sends back, one [`Draw`] per row, over its first `producible`
/// ids: what a step computes for [`Ask::Sample`] rows, for checking a device's reductions
/// against [`crate::engine::scheduler::sample::candidates_on_host`].
pub fn sample_candidates(
    logits: &Tensor,
    draws: &[Draw],
    producible: usize,
) -> Result<Vec<Candidates>> {
    let back = sample::candidates(logits, draws, producible)?.to_vec2::<f32>()?;
    Ok(back.iter().map(|r| sample::read(r)).collect())
}

/// How the rotary embedding pairs dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRope {
    /// `(x[2i], x[2i+1])`: GGUF files (llama.cpp's converter permutes the weights).
    Interleaved,
    /// `(x[i], x[i + d/2])`: Hugging Face checkpoints.
    Halves,
}

/// Shapes and constants of the network and its key/value store.
#[derive(Debug, Clone)]
pub struct DeviceShape {
    /// Transformer blocks.
    pub layers: usize,
    /// Residual width.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// RMS norm epsilon.
    pub eps: f32,
    /// Weights, activations and keys/values are held in this type.
    pub dtype: DType,
    /// Rotary pairing.
    pub rope: DeviceRope,
}

impl DeviceShape {
    /// Bytes of key/value cache one position takes (keys and values, all layers).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.layers * 2 * self.kv_heads * self.head_dim * self.dtype.size_in_bytes()
    }
}

/// One transformer block's weights, `[out, in]` each.
pub(crate) struct DeviceLayer {
    /// RMS norm weights before attention, `[hidden]`.
    pub(crate) attn_norm: Tensor,
    /// Q, K and V stacked: `[(heads + 2 kv_heads) head_dim, hidden]`.
    pub(crate) qkv: Tensor,
    /// Attention output projection, `[hidden, heads head_dim]`.
    pub(crate) wo: Tensor,
    /// RMS norm weights before the feed-forward block, `[hidden]`.
    pub(crate) ffn_norm: Tensor,
    /// Gate and up stacked: `[2 ffn, hidden]`.
    pub(crate) gate_up: Tensor,
    /// Feed-forward output projection, `[hidden, ffn]`.
    pub(crate) down: Tensor,
}

/// A LLaMA model on a candle device with its slotted key/value store: the batching
/// scheduler's backend for GPUs (and, for tests, the CPU).
pub struct DeviceModel {
    pub(crate) layers: Vec<DeviceLayer>,
    /// `[vocab, hidden]`.
    pub(crate) embed: Tensor,
    pub(crate) norm: Tensor,
    /// `[vocab, hidden]`.
    pub(crate) lm_head: Tensor,
    /// `inv_freq[i]` = base^(-2i / head_dim).
    pub(crate) inv_freq: Vec<f32>,
    pub(crate) device: Device,
    pub(crate) store: Arc<KvStore>,
    /// Steps whose decode attention gathered the generating slots (see [`step`]).
    pub(crate) gathered_steps: std::sync::atomic::AtomicU64,
    /// Network shape.
    pub shape: DeviceShape,
}

impl DeviceModel {
    /// Key/value slots (sequences that can run at once).
    pub fn slots(&self) -> usize {
        self.store.slots()
    }

    /// Positions one slot holds.
    pub fn slot_len(&self) -> usize {
        self.store.max_len
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Steps so far whose decode attention read only the generating slots, gathered, rather
    /// than the range of slots they span.
    pub fn gathered_steps(&self) -> u64 {
        self.gathered_steps
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Backend for DeviceModel {
    type Kv = DeviceKv;
    type Prefix = DevicePrefix;

    fn vocab(&self) -> usize {
        self.shape.vocab
    }

    fn kv_bytes_per_token(&self) -> usize {
        self.shape.kv_bytes_per_token()
    }

    fn max_seqs(&self) -> Option<usize> {
        Some(self.store.slots())
    }

    fn caches_in_use(&self) -> Option<usize> {
        Some(self.store.in_use())
    }

    fn new_kv(&self) -> Result<DeviceKv> {
        DeviceKv::lease(&self.store)
    }

    /// A tree is written at its base in the sequence's own slot (scratch: the sequence ends
    /// with its verdict), so scoring needs no extra slot and copies nothing.
    fn step(&self, rows: &mut [Row<'_, DeviceKv>], producible: usize) -> Result<StepOut> {
        let items: Vec<Item<'_>> = rows
            .iter()
            .map(|r| Item {
                slot: r.kv.slot(),
                base: match r.ask {
                    Ask::Tree { base, .. } => base,
                    _ => r.kv.len(),
                },
                tokens: r.tokens,
                ask: r.ask,
            })
            .collect();
        let out = self.run_items(&items, producible)?;
        for r in rows.iter_mut() {
            match r.ask {
                Ask::Tree { base, .. } => r.kv.truncate(base),
                _ => r.kv.advance(r.tokens.len()),
            }
        }
        Ok(out)
    }

    fn tree_room(&self, kv: &DeviceKv, base: usize) -> usize {
        kv.capacity().saturating_sub(base)
    }
}

impl DeviceModel {
    /// One forward pass returning whole logits rows ([`Want::Last`]; [`Want::Nothing`]
    /// gives an empty row): for tests and benchmarks that compare logits, outside the
    /// scheduler's step contract.
    pub fn forward(&self, inputs: &mut [StepInput<'_, DeviceKv>]) -> Result<Vec<Vec<f32>>> {
        let mut rows = Vec::with_capacity(inputs.len());
        for i in inputs.iter_mut() {
            let ask = match i.want {
                Want::Nothing => Ask::Nothing,
                Want::Last => Ask::Logits,
                Want::All => {
                    return Err(JudgeError::InvalidArgument(
                        "the device backend reads whole rows of the last position only".into(),
                    ))
                }
            };
            rows.push(Row {
                kv: &mut *i.kv,
                tokens: i.tokens,
                ask,
            });
        }
        let vocab = self.shape.vocab;
        let out = self.step(&mut rows, vocab)?;
        Ok(out.answers.into_iter().map(|a| a.logits).collect())
    }
}
