//! What an operator sets for the batching loop ([`BatchLimits`]), checked at admission, and
//! how a sequence cache stores keys and values ([`KvType`], one of those settings: the CPU
//! backend honours it, the device backend keeps its weights' dtype).

/// Limits of the batched engine, checked at admission.
#[derive(Debug, Clone)]
pub struct BatchLimits {
    /// Sequences that run at once.
    pub max_seqs: usize,
    /// Tokens in one forward pass (decode tokens plus prompt chunks).
    pub max_batch_tokens: usize,
    /// Key/value memory the running sequences may reserve, in bytes (the device backend
    /// preallocates its slots from it).
    pub kv_budget_bytes: usize,
    /// Prompt positions the prefix cache keeps (0 turns it off).
    pub prefix_cache_tokens: usize,
    /// How the CPU engine's sequence caches store keys and values (the device backend keeps
    /// them in the weights' dtype).
    pub kv_type: KvType,
    /// Positions one key/value slot of the device backend holds (0: the model's context). A
    /// shorter slot lets the budget hold more sequences; a longer request is truncated to
    /// fit it, or refused. The CPU engine's caches grow per sequence and ignore it.
    pub slot_tokens: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_seqs: 16,
            max_batch_tokens: 512,
            kv_budget_bytes: 4 << 30,
            prefix_cache_tokens: 16_384,
            kv_type: KvType::default(),
            slot_tokens: 0,
        }
    }
}

/// How a cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// Half precision: half the memory and half the bytes attention reads per step; keys
    /// and values are rounded to 11 significant bits (as GPU servers keep them).
    #[default]
    F16,
    /// Single precision: the same numbers as candle's stock models.
    F32,
    /// 8-bit integers, each block of [`Q8_BLOCK`] values with its own `f32` scale (absolute
    /// maximum / 127): 36 bytes per 32 values, 56% of half precision, for long prompts
    /// and many sequences where attention's reads of the cache outweigh the weights'.
    Q8,
}

/// Values per scale in a [`KvType::Q8`] cache (a head's values must be a whole number of
/// blocks).
pub const Q8_BLOCK: usize = 32;
/// Bytes of one [`KvType::Q8`] block: the values, then the scale's four bytes.
pub const Q8_BLOCK_BYTES: usize = Q8_BLOCK + 4;

impl KvType {
    /// Bytes that `values` cached values take (a whole number of blocks for `Q8`).
    pub fn bytes_for(self, values: usize) -> usize {
        match self {
            Self::F16 => 2 * values,
            Self::F32 => 4 * values,
            Self::Q8 => values.div_ceil(Q8_BLOCK) * Q8_BLOCK_BYTES,
        }
    }

    /// Whether a head of `head_dim` values can be stored this way.
    pub fn fits_head(self, head_dim: usize) -> bool {
        self != Self::Q8 || head_dim.is_multiple_of(Q8_BLOCK)
    }
}
