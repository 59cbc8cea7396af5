//! The device backend of the continuous-batching scheduler: a LLaMA forward pass written in
//! candle tensor ops only, so the same code runs on the CPU (f32, in tests) and on CUDA
//! (bf16/f16, in production) under the scheduler the CPU engine uses
//! ([`crate::engine::batch::scheduler`], through [`crate::engine::batch::Backend`]).
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
//!   slots they occupy, narrowed to the longest of them, with a length mask. A prompt chunk
//!   is written with `slice_set` and attends alone with a causal mask. Rotary positions are
//!   per token (cos/sin rows per token), so sequences at any positions share the step.
//! - Verdict scoring reads every continuation in one pass as a token tree in the sequence's
//!   own slot (each branch sees the shared positions and its own earlier tokens), so scoring
//!   needs no extra slots and copies nothing.
//!
//! Fixed-length slots waste the memory a short request leaves unused (a paged cache would
//! not), but keep decode attention to a few large kernels per layer.

pub mod load;
pub mod random;
pub mod slots;
mod step;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::engine::batch::{Backend, SeqCache, StepInput, Want};
use crate::error::{JudgeError, Result};
pub use random::SlotLayout;
pub use slots::{DeviceKv, DevicePrefix, KvStore};
use step::Item;

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

    fn forward(&self, inputs: &mut [StepInput<'_, DeviceKv>]) -> Result<Vec<Vec<f32>>> {
        let items: Vec<Item<'_>> = inputs
            .iter()
            .map(|i| Item {
                slot: i.kv.slot(),
                base: i.kv.len(),
                tokens: i.tokens,
                branch: None,
                want: i.want,
            })
            .collect();
        let out = self.run_items(&items)?;
        for i in inputs.iter_mut() {
            i.kv.advance(i.tokens.len());
        }
        Ok(out)
    }

    /// The continuations are packed as a token tree written at `pos..` of the sequence's own
    /// slot, as many per pass as the slot has room for.
    fn continuations(
        &self,
        kv: &mut DeviceKv,
        pos: usize,
        conts: &[&[u32]],
    ) -> Result<Vec<Vec<f32>>> {
        let room = kv.capacity().saturating_sub(pos);
        let mut out = Vec::with_capacity(conts.len());
        let mut at = 0;
        while at < conts.len() {
            let mut end = at;
            let mut total = 0;
            while end < conts.len() && total + conts[end].len() <= room {
                total += conts[end].len();
                end += 1;
            }
            if end == at {
                return Err(JudgeError::ContextOverflow(format!(
                    "the verdict's continuations need {} positions after position {pos} but \
                     the key/value slot holds {}",
                    conts[at].len(),
                    kv.capacity()
                )));
            }
            out.extend(self.tree(kv.slot(), pos, &conts[at..end])?);
            at = end;
        }
        kv.truncate(pos);
        Ok(out)
    }
}

impl DeviceModel {
    /// One pass over continuations packed as a tree at `pos` of `slot`; each one's logits.
    fn tree(&self, slot: usize, pos: usize, conts: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let tokens: Vec<u32> = conts.iter().flat_map(|c| c.iter().copied()).collect();
        let mut branch = Vec::with_capacity(tokens.len());
        for c in conts {
            let first = branch.len();
            branch.extend(std::iter::repeat_n(first, c.len()));
        }
        let item = Item {
            slot,
            base: pos,
            tokens: &tokens,
            branch: Some(branch),
            want: Want::All,
        };
        let rows = self.run_items(std::slice::from_ref(&item))?.pop();
        let rows = rows.unwrap_or_default();
        let vocab = self.shape.vocab;
        let mut out = Vec::with_capacity(conts.len());
        let mut at = 0;
        for c in conts {
            out.push(rows[at * vocab..(at + c.len()) * vocab].to_vec());
            at += c.len();
        }
        Ok(out)
    }
}
