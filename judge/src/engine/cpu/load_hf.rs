//! Loading a Hugging Face directory for the CPU engine, in any published form (safetensors
//! or PyTorch `.bin`, single or sharded; GPTQ 4-bit), tensor by tensor: each matrix becomes
//! what the kernels run as it is read (dense f32, or quantized with `--quantize`), so the
//! checkpoint is never held twice.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};

use super::kernels::{KQuant, Stored};
use super::model::{BatchModel, Embedding, GateUp, Group, Layer, Linear, Rope, Shape};
use crate::engine::checkpoint::gptq;
use crate::engine::checkpoint::quantize::{quantize_matrix, tensor_type, QuantType, Role};
use crate::engine::checkpoint::{rope_inv_freq, Checkpoint};
use crate::engine::model::{check_heads, file_name, read_chat_template, ModelInfo};
use crate::engine::scheduler::KvType;
use crate::engine::tokenizer::TextTokenizer;
use crate::error::{load_err, Result};

/// What the loader keeps of a checkpoint as it reads it.
#[derive(Default)]
struct Kept {
    /// Matrices in the form the kernels run, by tensor name.
    linear: HashMap<String, Linear>,
    /// Everything else (norms, the embedding, GPTQ parts), by tensor name.
    raw: HashMap<String, Tensor>,
}

impl BatchModel {
    /// Loads a Hugging Face directory; `quantize` turns every matrix into llama.cpp's mix
    /// for that type as it is read (GPTQ layers keep their own 4 bits).
    pub(super) fn load_hf(
        dir: &Path,
        quantize: Option<QuantType>,
    ) -> Result<(Self, TextTokenizer, ModelInfo)> {
        let ck = Checkpoint::open(dir)?;
        let cfg = &ck.config;
        let layers = cfg.num_hidden_layers;
        let mut kept = Kept::default();
        // Reading the next tensor overlaps converting (or quantizing) this one.
        ck.stream_ahead(1, |name, t| {
            match Role::of_hf(&name) {
                Some(Role::Embedding) | None => {
                    kept.raw.insert(name, t);
                }
                Some(role) => {
                    let l = matrix(t, role, quantize, layers)?;
                    kept.linear.insert(name, l);
                }
            }
            Ok(())
        })?;
        gptq_linears(&ck, &mut kept)?;
        let dims = (cfg.hidden_size, cfg.num_attention_heads, cfg.kv_heads());
        check_heads(dir, dims.0, dims.1, dims.2)?;
        let embd = kept
            .raw
            .remove("model.embed_tokens.weight")
            .ok_or_else(|| load_err(dir, "tensor `model.embed_tokens.weight` is missing"))?
            .to_dtype(DType::F32)?;
        let (vocab, hidden) = embd.dims2()?;
        if hidden != cfg.hidden_size {
            return Err(load_err(dir, "hidden_size does not match the weights"));
        }
        let tied = cfg.tie_word_embeddings.unwrap_or(false);
        let lm_head = match kept.linear.remove("lm_head.weight") {
            Some(l) if !tied => l,
            _ => matrix(embd.clone(), Role::Output, quantize, layers)?,
        };
        let embed = embedding(embd, quantize, layers)?;
        let norm = kept.vector(dir, "model.norm.weight")?;
        let blocks = (0..layers)
            .map(|i| hf_layer(dir, &mut kept, &format!("model.layers.{i}")))
            .collect::<Result<Vec<_>>>()?;
        let shape = Shape {
            layers,
            hidden,
            heads: dims.1,
            kv_heads: dims.2,
            head_dim: hidden / dims.1,
            vocab,
            eps: cfg.rms_norm_eps as f32,
            kv: KvType::default(),
            rope: Rope::Halves,
        };
        let tokenizer = TextTokenizer::from_dir(dir, &cfg.eos_ids())?;
        let model = Self {
            inv_freq: rope_inv_freq(shape.head_dim, cfg.rope_theta.unwrap_or(10_000.0)),
            layers: blocks,
            norm,
            lm_head,
            embed,
            shape,
        };
        let info = ModelInfo {
            name: file_name(dir),
            context: cfg.max_position_embeddings,
            chat_template: read_chat_template(dir),
        };
        Ok((model, tokenizer, info))
    }
}

/// A matrix in the form the kernels run: dense f32, or quantized to `role`'s type of the
/// mix.
fn matrix(t: Tensor, role: Role, quantize: Option<QuantType>, layers: usize) -> Result<Linear> {
    let Some(q) = quantize else {
        return Linear::dense(t);
    };
    let (_, cols) = t.dims2()?;
    let dtype = tensor_type(q, role, layers, cols);
    Linear::from_qtensor(quantize_matrix(&t, dtype)?)
}

/// The token table: f32, or quantized to the mix's embedding type (rows looked up in
/// their blocks).
fn embedding(t: Tensor, quantize: Option<QuantType>, layers: usize) -> Result<Embedding> {
    let (_, dim) = t.dims2()?;
    let Some(q) = quantize else {
        return Ok(Embedding::F32 {
            table: f32s(t)?,
            dim,
        });
    };
    let dtype = tensor_type(q, Role::Embedding, layers, dim);
    let qt = quantize_matrix(&t, dtype)?;
    if KQuant::takes(dtype) {
        let (n, k) = qt.shape().dims2()?;
        let bytes = Stored::Owned(qt.data()?.into_owned().into());
        if let Some(m) = KQuant::new(dtype, bytes, n, k) {
            return Ok(Embedding::K(m));
        }
    }
    Embedding::from_qtensor(&qt)
}

/// Every GPTQ-packed matrix: Q4_1 blocks holding the same weights where each run of 32
/// inputs is one group, else Q8_0 from the unpacked floats (activation-order layers).
fn gptq_linears(ck: &Checkpoint, kept: &mut Kept) -> Result<()> {
    let Some(cfg) = &ck.gptq else { return Ok(()) };
    for (base, l) in gptq::take_all(&mut kept.raw, cfg, &ck.dir)? {
        let q = match l.to_q4_1() {
            Some(bytes) => candle_core::quantized::ggml_file::qtensor_from_ggml(
                GgmlDType::Q4_1,
                &bytes,
                vec![l.out, l.inp],
                &Device::Cpu,
            )?,
            None => {
                let w = Tensor::from_vec(l.dequantize(), (l.out, l.inp), &Device::Cpu)?;
                quantize_matrix(&w, GgmlDType::Q8_0)?
            }
        };
        kept.linear
            .insert(format!("{base}.weight"), Linear::from_qtensor(q)?);
    }
    Ok(())
}

impl Kept {
    /// Matrix `name`, taken out.
    fn linear(&mut self, dir: &Path, name: &str) -> Result<Linear> {
        let l = self.linear.remove(name);
        l.ok_or_else(|| load_err(dir, format!("tensor `{name}` is missing")))
    }

    /// Vector `name` (a norm's weights) as f32, taken out.
    fn vector(&mut self, dir: &Path, name: &str) -> Result<Vec<f32>> {
        let t = self.raw.remove(name);
        f32s(t.ok_or_else(|| load_err(dir, format!("tensor `{name}` is missing")))?)
    }
}

/// One transformer block of a Hugging Face checkpoint, its tensors named under `p`.
fn hf_layer(dir: &Path, kept: &mut Kept, p: &str) -> Result<Layer> {
    let mut lin = |n: &str| kept.linear(dir, &format!("{p}.{n}.weight"));
    let qkv = Group::new(vec![
        lin("self_attn.q_proj")?,
        lin("self_attn.k_proj")?,
        lin("self_attn.v_proj")?,
    ]);
    let wo = lin("self_attn.o_proj")?;
    let gate_up = GateUp::new(lin("mlp.gate_proj")?, lin("mlp.up_proj")?);
    let down = lin("mlp.down_proj")?;
    let mut norm = |n: &str| kept.vector(dir, &format!("{p}.{n}.weight"));
    Ok(Layer {
        qkv,
        wo,
        gate_up,
        down,
        attn_norm: norm("input_layernorm")?,
        ffn_norm: norm("post_attention_layernorm")?,
    })
}

/// A tensor's values as f32, flattened.
fn f32s(t: Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}
