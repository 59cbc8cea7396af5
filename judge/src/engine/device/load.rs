//! Loading the device backend's model: a Hugging Face directory (any published form, through
//! `engine::checkpoint`) in the working dtype, or a GGUF file dequantized to it at load; then the key/value store
//! sized from the memory budget.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::slots::{KvStore, StoreSize};
use super::{DeviceLayer, DeviceModel, DeviceRope, DeviceShape};
use crate::engine::checkpoint::{rope_inv_freq, Checkpoint};
use crate::engine::model::{
    check_heads, file_name, open_gguf, read_chat_template, LlamaDims, ModelInfo, ModelSpec,
    WeightDType,
};
use crate::engine::scheduler::BatchLimits;
use crate::engine::tokenizer::TextTokenizer;
use crate::error::{load_err, Result};

/// Per-layer tensor names: Q, K, V, output, gate, up, down, attention norm, feed-forward norm.
const HF_NAMES: [&str; 9] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
    "input_layernorm",
    "post_attention_layernorm",
];

/// The same tensors as llama.cpp's converter names them.
const GGUF_NAMES: [&str; 9] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
    "attn_norm",
    "ffn_norm",
];

/// The network without its key/value store.
struct Weights {
    layers: Vec<DeviceLayer>,
    embed: Tensor,
    norm: Tensor,
    lm_head: Tensor,
    inv_freq: Vec<f32>,
    shape: DeviceShape,
}

impl DeviceModel {
    /// Loads a GGUF file or Hugging Face directory onto `spec.device` in `spec.dtype` (f32
    /// on the CPU, whose matrix product has no bf16) and allocates the key/value slots the
    /// budget of `limits` pays for; returns the model, its tokenizer and facts.
    pub fn load(
        spec: &ModelSpec,
        limits: &BatchLimits,
    ) -> Result<(Self, TextTokenizer, ModelInfo)> {
        let dtype = match (&spec.device, spec.dtype) {
            (Device::Cpu, WeightDType::Bf16) => DType::F32,
            (_, d) => d.candle(),
        };
        if let Some(q) = spec.quantize {
            return Err(load_err(
                &spec.path,
                format!("--quantize {q} applies to the CPU engine; the device backend runs the weights dequantized to --dtype"),
            ));
        }
        let (w, tokenizer, mut info) = if spec.path.is_dir() {
            load_hf(&spec.path, &spec.device, dtype)?
        } else {
            load_gguf(&spec.path, &spec.device, dtype)?
        };
        info.context = spec.served_context(info.context)?;
        let size = store_size(&w.shape, info.context, limits);
        if size.slots == 1 && limits.max_seqs > 1 {
            tracing::warn!(
                slot_bytes = size.max_len * w.shape.kv_bytes_per_token(),
                budget_bytes = limits.kv_budget_bytes,
                "the key/value budget pays for one slot: requests run one at a time; raise \
                 the budget (--kv-budget-mib) to batch"
            );
        }
        let store = KvStore::new(size, dtype, &spec.device)?;
        tracing::info!(
            slots = size.slots,
            slot_len = size.max_len,
            dtype = ?dtype,
            "device key/value store allocated"
        );
        let model = Self {
            layers: w.layers,
            embed: w.embed,
            norm: w.norm,
            lm_head: w.lm_head,
            inv_freq: w.inv_freq,
            device: spec.device.clone(),
            store: Arc::new(store),
            gathered_steps: Default::default(),
            shape: w.shape,
        };
        Ok((model, tokenizer, info))
    }
}

/// Slots of the whole context each (or of `slot_tokens`, or of what the budget holds, when
/// less), as many as the budget pays for, at least one and at most `max_seqs`.
fn store_size(shape: &DeviceShape, context: usize, limits: &BatchLimits) -> StoreSize {
    let per_token = shape.kv_bytes_per_token().max(1);
    let wanted = match limits.slot_tokens {
        0 => context,
        n => n.min(context),
    };
    let budget = slot_budget(limits, per_token, wanted);
    let max_len = wanted.min(budget / per_token).max(1);
    let slots = (budget / (max_len * per_token)).clamp(1, limits.max_seqs.max(1));
    StoreSize {
        layers: shape.layers,
        kv_heads: shape.kv_heads,
        head_dim: shape.head_dim,
        slots,
        max_len,
    }
}

/// The part of the key/value budget the slots get: the budget less what the prefix cache's
/// device copies may take (`prefix_cache_tokens` positions), so `--kv-budget-mib` bounds all
/// key/value memory on the device. When that would not leave one slot of `wanted` positions,
/// the slots get the whole budget and the prefix cache comes on top (said in the log).
fn slot_budget(limits: &BatchLimits, per_token: usize, wanted: usize) -> usize {
    let prefix = limits.prefix_cache_tokens.saturating_mul(per_token);
    let one_slot = wanted.saturating_mul(per_token);
    match limits.kv_budget_bytes.checked_sub(prefix) {
        Some(rest) if rest >= one_slot => rest,
        _ => {
            if prefix > 0 {
                tracing::warn!(
                    prefix_cache_bytes = prefix,
                    budget_bytes = limits.kv_budget_bytes,
                    "the prefix cache does not fit beside one slot in the key/value budget: it \
                     comes on top of it; lower --prefix-cache-tokens or raise --kv-budget-mib"
                );
            }
            limits.kv_budget_bytes
        }
    }
}

/// One transformer block, its tensors named `{prefix}.{name}.weight` after `names`, with Q,
/// K, V stacked into one matrix and gate, up into another.
fn layer(
    get: &mut impl FnMut(&str) -> Result<Tensor>,
    prefix: &str,
    names: &[&str; 9],
) -> Result<DeviceLayer> {
    let mut w = |i: usize| get(&format!("{prefix}.{}.weight", names[i]));
    let (q, k, v) = (w(0)?, w(1)?, w(2)?);
    let wo = w(3)?;
    let (gate, up) = (w(4)?, w(5)?);
    Ok(DeviceLayer {
        qkv: Tensor::cat(&[&q, &k, &v], 0)?,
        wo,
        gate_up: Tensor::cat(&[&gate, &up], 0)?,
        down: w(6)?,
        attn_norm: w(7)?,
        ffn_norm: w(8)?,
    })
}

/// Checks the head counts against the width; the shape without the parts read later.
fn checked_shape(path: &Path, dims: [usize; 4], vocab: usize) -> Result<DeviceShape> {
    let [layers, hidden, heads, kv_heads] = dims;
    check_heads(path, hidden, heads, kv_heads)?;
    Ok(DeviceShape {
        layers,
        hidden,
        heads,
        kv_heads,
        head_dim: hidden / heads,
        ffn: 0,
        vocab,
        eps: 1e-5,
        dtype: DType::F32,
        rope: DeviceRope::Halves,
    })
}

/// A Hugging Face directory in any published form, each tensor cast to `dtype` on the
/// device as it is read (GPTQ layers unpacked to it).
fn load_hf(dir: &Path, dev: &Device, dtype: DType) -> Result<(Weights, TextTokenizer, ModelInfo)> {
    let ck = Checkpoint::open(dir)?;
    let cfg = &ck.config;
    let mut tensors = ck.dense(dtype, dev)?;
    let mut take = |name: &str| -> Result<Tensor> {
        tensors
            .remove(name)
            .ok_or_else(|| load_err(dir, format!("tensor `{name}` is missing")))
    };
    let embed = take("model.embed_tokens.weight")?;
    let (vocab, hidden) = embed.dims2()?;
    if hidden != cfg.hidden_size {
        return Err(load_err(dir, "hidden_size does not match the weights"));
    }
    let lm_head = match take("lm_head.weight") {
        Ok(t) if !cfg.tie_word_embeddings.unwrap_or(false) => t,
        _ => embed.clone(),
    };
    let norm = take("model.norm.weight")?;
    let layers = (0..cfg.num_hidden_layers)
        .map(|i| layer(&mut take, &format!("model.layers.{i}"), &HF_NAMES))
        .collect::<Result<Vec<_>>>()?;
    let dims = [
        cfg.num_hidden_layers,
        hidden,
        cfg.num_attention_heads,
        cfg.kv_heads(),
    ];
    let mut shape = checked_shape(dir, dims, vocab)?;
    shape.eps = cfg.rms_norm_eps as f32;
    let tokenizer = TextTokenizer::from_dir(dir, &cfg.eos_ids())?;
    let info = ModelInfo {
        name: file_name(dir),
        context: cfg.max_position_embeddings,
        chat_template: read_chat_template(dir),
    };
    let inv_freq = rope_inv_freq(shape.head_dim, cfg.rope_theta.unwrap_or(10_000.0));
    Ok((
        finish(layers, [embed, norm, lm_head], inv_freq, shape, dtype)?,
        tokenizer,
        info,
    ))
}

/// A GGUF file: every tensor dequantized on the host, cast to `dtype` and moved to the device.
fn load_gguf(
    path: &Path,
    dev: &Device,
    dtype: DType,
) -> Result<(Weights, TextTokenizer, ModelInfo)> {
    let (mut file, content, meta) = open_gguf(path)?;
    let d = LlamaDims::read(path, &content)?;
    let dims = [d.layers, d.hidden, d.heads, d.kv_heads];
    let (eps, base) = (d.eps, d.rope_base);
    let mut get = |name: &str| -> Result<Tensor> {
        let q = content
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|e| load_err(path, format!("tensor `{name}`: {e}")))?;
        Ok(q.dequantize(&Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)?)
    };
    let embed = get("token_embd.weight")?;
    let (vocab, _) = embed.dims2()?;
    let lm_head = match get("output.weight") {
        Ok(t) => t,
        Err(_) => embed.clone(),
    };
    let norm = get("output_norm.weight")?;
    let layers = (0..dims[0])
        .map(|i| layer(&mut get, &format!("blk.{i}"), &GGUF_NAMES))
        .collect::<Result<Vec<_>>>()?;
    let mut shape = checked_shape(path, dims, vocab)?;
    shape.eps = eps;
    shape.rope = DeviceRope::Interleaved;
    let info = ModelInfo {
        name: file_name(path),
        context: meta.context,
        chat_template: meta.chat_template,
    };
    let inv_freq = rope_inv_freq(shape.head_dim, base);
    Ok((
        finish(layers, [embed, norm, lm_head], inv_freq, shape, dtype)?,
        meta.tokenizer,
        info,
    ))
}

/// Completes the shape from the loaded tensors (feed-forward width, dtype) and checks the
/// layers agree with it.
fn finish(
    layers: Vec<DeviceLayer>,
    [embed, norm, lm_head]: [Tensor; 3],
    inv_freq: Vec<f32>,
    mut shape: DeviceShape,
    dtype: DType,
) -> Result<Weights> {
    shape.dtype = dtype;
    shape.ffn = layers.first().map_or(Ok(0), |l| l.down.dim(1))?;
    let qkv_rows = (shape.heads + 2 * shape.kv_heads) * shape.head_dim;
    for l in &layers {
        if l.qkv.dims2()? != (qkv_rows, shape.hidden)
            || l.gate_up.dims2()? != (2 * shape.ffn, shape.hidden)
        {
            return Err(candle_core::Error::Msg(
                "a layer's projections do not match the model's shape".into(),
            )
            .into());
        }
    }
    Ok(Weights {
        layers,
        embed,
        norm,
        lm_head,
        inv_freq,
        shape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> DeviceShape {
        // 2 layers x 2 (K, V) x 2 heads x 16 x 4 bytes = 512 bytes a position.
        DeviceShape {
            layers: 2,
            hidden: 64,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            ffn: 128,
            vocab: 100,
            eps: 1e-5,
            dtype: DType::F32,
            rope: DeviceRope::Halves,
        }
    }

    #[test]
    fn the_prefix_cache_is_paid_from_the_kv_budget() {
        let per_token = shape().kv_bytes_per_token();
        assert_eq!(per_token, 512);
        let limits = |prefix_cache_tokens| BatchLimits {
            // Ten slots of 1,024 positions, plus room for 2,048 cached prefix positions.
            kv_budget_bytes: (10 * 1024 + 2048) * per_token,
            max_seqs: 64,
            slot_tokens: 1024,
            prefix_cache_tokens,
            ..BatchLimits::default()
        };
        assert_eq!(store_size(&shape(), 4096, &limits(2048)).slots, 10);
        assert_eq!(store_size(&shape(), 4096, &limits(0)).slots, 12);
        // A prefix cache larger than the budget leaves the slots the whole budget.
        let size = store_size(&shape(), 4096, &limits(1 << 20));
        assert_eq!((size.slots, size.max_len), (12, 1024));
    }
}
