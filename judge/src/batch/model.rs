//! Our own LLaMA forward pass for batches of sequences at different positions.
//!
//! candle's stock LLaMA keeps one key/value cache inside the model and one position counter,
//! so it serves one sequence at a time. Here every sequence brings its own cache ([`SeqKv`])
//! and its own position; the tokens of all sequences in a step are packed into one matrix, so
//! each weight matrix is read once per step however many sequences run (the gain of batching
//! on a memory-bound CPU), while attention runs per sequence over that sequence's cache.
//! Each output row is computed the same way whatever else is in the batch, so a greedy
//! request gives the same tokens alone or batched.

use std::path::Path;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::attention::{attend, HeadKv};
use super::kernels::{par_chunks, Q4_1Matrix, Q8_0Matrix};
use super::kv::SeqKv;
use crate::error::{JudgeError, Result};
use crate::model::{file_name, load_err, open_gguf, read_chat_template, ModelInfo};
use crate::tokenizer::TextTokenizer;

/// How the rotary embedding pairs dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rope {
    /// `(x[2i], x[2i+1])`: GGUF files (llama.cpp's converter permutes the weights).
    Interleaved,
    /// `(x[i], x[i + d/2])`: Hugging Face checkpoints.
    Halves,
}

/// Shapes and constants of the network.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Transformer blocks.
    pub layers: usize,
    /// Residual width.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the output layer).
    pub vocab: usize,
    eps: f32,
    rope: Rope,
}

impl Shape {
    /// Bytes of key/value cache one position takes (f32 keys and values, all layers).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.layers * 2 * self.kv_heads * self.head_dim * 4
    }
}

/// A weight matrix `[out, in]` and the kernel that multiplies by it.
enum Linear {
    /// Our AVX2 / portable Q4_1 kernel.
    Q4_1(Q4_1Matrix),
    /// Our Q8_0 kernel (shares weight blocks across a batch's rows).
    Q8_0(Q8_0Matrix),
    /// candle's quantized or dense kernels (Q8_0, K-quants, f32, ...).
    Candle { w: QMatMul, out: usize },
}

impl Linear {
    fn from_qtensor(t: QTensor) -> Result<Self> {
        let (n, k) = t.shape().dims2()?;
        match t.dtype() {
            GgmlDType::Q4_1 => {
                if let Some(m) = Q4_1Matrix::from_bytes(&t.data()?, n, k) {
                    return Ok(Self::Q4_1(m));
                }
            }
            GgmlDType::Q8_0 => {
                if let Some(m) = Q8_0Matrix::from_bytes(&t.data()?, n, k) {
                    return Ok(Self::Q8_0(m));
                }
            }
            _ => {}
        }
        Ok(Self::Candle {
            w: QMatMul::from_qtensor(t)?,
            out: n,
        })
    }

    fn dense(t: Tensor) -> Result<Self> {
        let (n, _) = t.dims2()?;
        Ok(Self::Candle {
            w: QMatMul::Tensor(t.to_dtype(DType::F32)?),
            out: n,
        })
    }

    /// `x` is `[m, in]`; returns `[m, out]`.
    fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            Self::Q4_1(w) => Ok(w.matmul(x, m)),
            Self::Q8_0(w) => Ok(w.matmul(x, m)),
            Self::Candle { w, out } => {
                let k = x.len() / m.max(1);
                let t = Tensor::from_slice(x, (m, k), &Device::Cpu)?;
                let y = w.forward(&t)?;
                debug_assert_eq!(y.dims2()?, (m, *out));
                Ok(y.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}

/// The token embedding table, kept in its stored form when rows can be read from it.
enum Embedding {
    /// Q8_0 rows of 34-byte blocks (the default model's table): 4x smaller than f32.
    Q8_0 { bytes: Vec<u8>, dim: usize },
    /// Anything else, expanded to f32.
    F32 { table: Vec<f32>, dim: usize },
}

impl Embedding {
    fn from_qtensor(t: &QTensor) -> Result<Self> {
        let (_, dim) = t.shape().dims2()?;
        if t.dtype() == GgmlDType::Q8_0 && dim.is_multiple_of(32) {
            return Ok(Self::Q8_0 {
                bytes: t.data()?.into_owned(),
                dim,
            });
        }
        let table = t
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self::F32 { table, dim })
    }

    fn row(&self, id: usize, out: &mut [f32]) -> Result<()> {
        match self {
            Self::Q8_0 { bytes, dim } => {
                let row_bytes = dim / 32 * 34;
                let row = bytes
                    .get(id * row_bytes..(id + 1) * row_bytes)
                    .ok_or_else(|| token_err(id))?;
                for (block, dst) in row.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
                    let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                    for (o, &q) in dst.iter_mut().zip(&block[2..]) {
                        *o = d * (q as i8) as f32;
                    }
                }
            }
            Self::F32 { table, dim } => out.copy_from_slice(
                table
                    .get(id * dim..(id + 1) * dim)
                    .ok_or_else(|| token_err(id))?,
            ),
        }
        Ok(())
    }
}

fn token_err(id: usize) -> JudgeError {
    JudgeError::InvalidArgument(format!("token id {id} is outside the vocabulary"))
}

/// Matrices applied to the same input (Q, K, V; gate, up): one stacked matrix when our
/// kernel holds them all, so the input is quantized once and the pool is dispatched once.
enum Group {
    /// One matrix whose outputs are the parts' outputs side by side.
    Fused { w: Q4_1Matrix, widths: Vec<usize> },
    /// Applied one by one.
    Separate(Vec<Linear>),
}

impl Group {
    fn new(parts: Vec<Linear>) -> Self {
        if parts.iter().all(|p| matches!(p, Linear::Q4_1(_))) {
            let mats: Vec<Q4_1Matrix> = parts
                .into_iter()
                .filter_map(|p| match p {
                    Linear::Q4_1(m) => Some(m),
                    _ => None,
                })
                .collect();
            let widths = mats.iter().map(|m| m.rows()).collect();
            return match Q4_1Matrix::concat(mats) {
                Ok(w) => Self::Fused { w, widths },
                Err(mats) => Self::Separate(mats.into_iter().map(Linear::Q4_1).collect()),
            };
        }
        Self::Separate(parts)
    }

    /// Each part's `[m, out]` output.
    fn forward(&self, x: &[f32], m: usize) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Separate(parts) => parts.iter().map(|p| p.forward(x, m)).collect(),
            Self::Fused { w, widths } => {
                let y = w.matmul(x, m);
                let total = w.rows();
                let mut outs: Vec<Vec<f32>> =
                    widths.iter().map(|&n| Vec::with_capacity(n * m)).collect();
                for row in y.chunks_exact(total) {
                    let mut at = 0;
                    for (out, &n) in outs.iter_mut().zip(widths) {
                        out.extend_from_slice(&row[at..at + n]);
                        at += n;
                    }
                }
                Ok(outs)
            }
        }
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Q, K, V.
    qkv: Group,
    wo: Linear,
    ffn_norm: Vec<f32>,
    /// Gate, up.
    gate_up: Group,
    down: Linear,
}

/// A loaded model for the batched engine (CPU).
pub struct BatchModel {
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Linear,
    embed: Embedding,
    /// `inv_freq[i]` = base^(-2i / head_dim).
    inv_freq: Vec<f32>,
    /// Network shape.
    pub shape: Shape,
}

/// Which logits a sequence in a step wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The last new position's (the next token).
    Last,
    /// Every new position's, `[n, vocab]` (scoring multi-token continuations).
    All,
}

/// One sequence's part of a step: its cache and the tokens to run at the next positions.
pub struct StepInput<'a> {
    /// The sequence's cache; the tokens are appended to it.
    pub kv: &'a mut SeqKv,
    /// Tokens at positions `kv.len()..`.
    pub tokens: &'a [u32],
    /// Logits wanted.
    pub want: Want,
}

impl BatchModel {
    /// Loads a GGUF file or Hugging Face directory for the CPU; returns the model, its
    /// tokenizer and facts.
    pub fn load(path: &Path) -> Result<(Self, TextTokenizer, ModelInfo)> {
        if path.is_dir() {
            Self::load_hf(path)
        } else {
            Self::load_gguf(path)
        }
    }

    fn load_gguf(path: &Path) -> Result<(Self, TextTokenizer, ModelInfo)> {
        let (mut file, content, meta) = open_gguf(path)?;
        let md = |key: &str| content.metadata.get(key);
        let int = |key: &str| -> Result<usize> {
            md(key)
                .and_then(|v| v.to_u32().ok())
                .map(|v| v as usize)
                .ok_or_else(|| load_err(path, format!("metadata `{key}` is missing")))
        };
        let float =
            |key: &str, default: f32| md(key).and_then(|v| v.to_f32().ok()).unwrap_or(default);
        let hidden = int("llama.embedding_length")?;
        let heads = int("llama.attention.head_count")?;
        let kv_heads = int("llama.attention.head_count_kv").unwrap_or(heads);
        let layers = int("llama.block_count")?;
        if heads == 0
            || kv_heads == 0
            || !heads.is_multiple_of(kv_heads)
            || !hidden.is_multiple_of(heads)
        {
            return Err(load_err(
                path,
                "attention head counts do not divide the width",
            ));
        }
        let mut get = |name: &str| {
            content
                .tensor(&mut file, name, &Device::Cpu)
                .map_err(|e| load_err(path, format!("tensor `{name}`: {e}")))
        };
        let vec = |t: QTensor| -> Result<Vec<f32>> {
            Ok(t.dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        let embd = get("token_embd.weight")?;
        let (vocab, _) = embd.shape().dims2()?;
        let embed = Embedding::from_qtensor(&embd)?;
        let lm_head = match get("output.weight") {
            Ok(t) => Linear::from_qtensor(t)?,
            Err(_) => Linear::from_qtensor(embd)?,
        };
        let norm = vec(get("output_norm.weight")?)?;
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let mut lin = |n: &str| Linear::from_qtensor(get(&format!("blk.{i}.{n}.weight"))?);
            blocks.push(Layer {
                qkv: Group::new(vec![lin("attn_q")?, lin("attn_k")?, lin("attn_v")?]),
                wo: lin("attn_output")?,
                gate_up: Group::new(vec![lin("ffn_gate")?, lin("ffn_up")?]),
                down: lin("ffn_down")?,
                attn_norm: vec(get(&format!("blk.{i}.attn_norm.weight"))?)?,
                ffn_norm: vec(get(&format!("blk.{i}.ffn_norm.weight"))?)?,
            });
        }
        let head_dim = hidden / heads;
        let shape = Shape {
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            vocab,
            eps: float("llama.attention.layer_norm_rms_epsilon", 1e-5),
            rope: Rope::Interleaved,
        };
        let base = float("llama.rope.freq_base", 10_000.0);
        let model = Self::assemble(blocks, norm, lm_head, embed, shape, base);
        let info = ModelInfo {
            name: file_name(path),
            context: meta.context,
            chat_template: meta.chat_template,
        };
        Ok((model, meta.tokenizer, info))
    }

    fn load_hf(dir: &Path) -> Result<(Self, TextTokenizer, ModelInfo)> {
        #[derive(serde::Deserialize)]
        struct Config {
            hidden_size: usize,
            num_hidden_layers: usize,
            num_attention_heads: usize,
            num_key_value_heads: Option<usize>,
            rms_norm_eps: f64,
            rope_theta: Option<f32>,
            max_position_embeddings: usize,
            tie_word_embeddings: Option<bool>,
            eos_token_id: Option<serde_json::Value>,
        }
        let cfg_path = dir.join("config.json");
        let raw = std::fs::read(&cfg_path).map_err(|e| load_err(&cfg_path, e))?;
        let cfg: Config = serde_json::from_slice(&raw).map_err(|e| load_err(&cfg_path, e))?;
        let mut tensors = std::collections::HashMap::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| load_err(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        for f in &files {
            tensors.extend(
                candle_core::safetensors::load(f, &Device::Cpu).map_err(|e| load_err(f, e))?,
            );
        }
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .ok_or_else(|| load_err(dir, format!("tensor `{name}` is missing")))
        };
        let vec = |t: Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let embd = take("model.embed_tokens.weight")?.to_dtype(DType::F32)?;
        let (vocab, hidden) = embd.dims2()?;
        let lm_head = match take("lm_head.weight") {
            Ok(t) if !cfg.tie_word_embeddings.unwrap_or(false) => Linear::dense(t)?,
            _ => Linear::dense(embd.clone())?,
        };
        let embed = Embedding::F32 {
            table: vec(embd)?,
            dim: hidden,
        };
        let norm = vec(take("model.norm.weight")?)?;
        let mut blocks = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut lin = |n: &str| Linear::dense(take(&format!("{p}.{n}.weight"))?);
            blocks.push(Layer {
                qkv: Group::new(vec![
                    lin("self_attn.q_proj")?,
                    lin("self_attn.k_proj")?,
                    lin("self_attn.v_proj")?,
                ]),
                wo: lin("self_attn.o_proj")?,
                gate_up: Group::new(vec![lin("mlp.gate_proj")?, lin("mlp.up_proj")?]),
                down: lin("mlp.down_proj")?,
                attn_norm: vec(take(&format!("{p}.input_layernorm.weight"))?)?,
                ffn_norm: vec(take(&format!("{p}.post_attention_layernorm.weight"))?)?,
            });
        }
        if hidden != cfg.hidden_size || !hidden.is_multiple_of(cfg.num_attention_heads) {
            return Err(load_err(dir, "hidden_size does not match the weights"));
        }
        let heads = cfg.num_attention_heads;
        let shape = Shape {
            layers: cfg.num_hidden_layers,
            hidden,
            heads,
            kv_heads: cfg.num_key_value_heads.unwrap_or(heads),
            head_dim: hidden / heads,
            vocab,
            eps: cfg.rms_norm_eps as f32,
            rope: Rope::Halves,
        };
        let eos: Vec<u32> = match cfg.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|n| n as u32).into_iter().collect()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|n| n as u32)
                .collect(),
            _ => Vec::new(),
        };
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), &eos)?;
        let model = Self::assemble(
            blocks,
            norm,
            lm_head,
            embed,
            shape,
            cfg.rope_theta.unwrap_or(10_000.0),
        );
        let info = ModelInfo {
            name: file_name(dir),
            context: cfg.max_position_embeddings,
            chat_template: read_chat_template(dir),
        };
        Ok((model, tokenizer, info))
    }

    fn assemble(
        layers: Vec<Layer>,
        norm: Vec<f32>,
        lm_head: Linear,
        embed: Embedding,
        shape: Shape,
        base: f32,
    ) -> Self {
        let half = shape.head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| 1.0 / base.powf(2.0 * i as f32 / shape.head_dim as f32))
            .collect();
        Self {
            layers,
            norm,
            lm_head,
            embed,
            inv_freq,
            shape,
        }
    }

    /// Runs one step for several sequences; returns, per input, the logits it asked for.
    pub fn forward(&self, inputs: &mut [StepInput<'_>]) -> Result<Vec<Vec<f32>>> {
        let s = &self.shape;
        let total: usize = inputs.iter().map(|i| i.tokens.len()).sum();
        if total == 0 {
            return Ok(vec![Vec::new(); inputs.len()]);
        }
        // Absolute position of every packed row and the input it belongs to.
        let mut rows = Vec::with_capacity(total);
        for (i, inp) in inputs.iter().enumerate() {
            let start = inp.kv.len();
            rows.extend((0..inp.tokens.len()).map(|j| (i, start + j)));
        }
        let mut x = vec![0f32; total * s.hidden];
        for (row, &id) in x
            .chunks_exact_mut(s.hidden)
            .zip(inputs.iter().flat_map(|i| i.tokens.iter()))
        {
            if id as usize >= s.vocab {
                return Err(token_err(id as usize));
            }
            self.embed.row(id as usize, row)?;
        }
        let q_width = s.heads * s.head_dim;
        let kv_width = s.kv_heads * s.head_dim;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, s.eps);
            let mut qkv = layer.qkv.forward(&h, total)?.into_iter();
            let (Some(mut q), Some(mut k), Some(v)) = (qkv.next(), qkv.next(), qkv.next()) else {
                return Err(JudgeError::InvalidArgument(
                    "attention projections missing".into(),
                ));
            };
            let mut angles = Vec::with_capacity(self.inv_freq.len());
            for (r, &(_, pos)) in rows.iter().enumerate() {
                angles.clear();
                angles.extend(self.inv_freq.iter().map(|f| (pos as f32 * f).sin_cos()));
                self.rope(&mut q[r * q_width..(r + 1) * q_width], &angles);
                self.rope(&mut k[r * kv_width..(r + 1) * kv_width], &angles);
            }
            let mut offset = 0;
            for inp in inputs.iter_mut() {
                let n = inp.tokens.len();
                let span = offset * kv_width..(offset + n) * kv_width;
                inp.kv.append(l, &k[span.clone()], &v[span]);
                offset += n;
            }
            let att = self.attention(inputs, &rows, &q, l);
            let o = layer.wo.forward(&att, total)?;
            add(&mut x, &o);
            let h = rms_norm(&x, &layer.ffn_norm, s.eps);
            let mut gu = layer.gate_up.forward(&h, total)?.into_iter();
            let (Some(mut g), Some(u)) = (gu.next(), gu.next()) else {
                return Err(JudgeError::InvalidArgument(
                    "feed-forward projections missing".into(),
                ));
            };
            for (g, u) in g.iter_mut().zip(&u) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            let d = layer.down.forward(&g, total)?;
            add(&mut x, &d);
        }
        // Only the rows whose logits are wanted go through the (large) output layer.
        let mut picked = Vec::new();
        let mut counts = Vec::with_capacity(inputs.len());
        let mut offset = 0;
        for inp in inputs.iter() {
            let n = inp.tokens.len();
            let rows: Vec<usize> = match (inp.want, n) {
                (_, 0) => Vec::new(),
                (Want::Last, _) => vec![offset + n - 1],
                (Want::All, _) => (offset..offset + n).collect(),
            };
            counts.push(rows.len());
            for r in rows {
                picked.extend_from_slice(&x[r * s.hidden..(r + 1) * s.hidden]);
            }
            offset += n;
        }
        let m = picked.len() / s.hidden;
        let logits = self
            .lm_head
            .forward(&rms_norm(&picked, &self.norm, s.eps), m)?;
        let mut out = Vec::with_capacity(inputs.len());
        let mut at = 0;
        for c in counts {
            out.push(logits[at * s.vocab..(at + c) * s.vocab].to_vec());
            at += c;
        }
        Ok(out)
    }

    /// Rotates every head of one row by that row's `(sin, cos)` per dimension pair.
    fn rope(&self, x: &mut [f32], angles: &[(f32, f32)]) {
        let d = self.shape.head_dim;
        for head in x.chunks_exact_mut(d) {
            for (i, &(sin, cos)) in angles.iter().enumerate() {
                let (a, b) = match self.shape.rope {
                    Rope::Interleaved => (2 * i, 2 * i + 1),
                    Rope::Halves => (i, i + d / 2),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }

    /// Causal attention of every packed row over its own sequence's cache.
    fn attention(
        &self,
        inputs: &[StepInput<'_>],
        rows: &[(usize, usize)],
        q: &[f32],
        layer: usize,
    ) -> Vec<f32> {
        let s = &self.shape;
        let d = s.head_dim;
        let group = s.heads / s.kv_heads;
        let kv_width = s.kv_heads * d;
        let scale = 1.0 / (d as f32).sqrt();
        let runs: Vec<_> = inputs.iter().map(|i| i.kv.runs(layer)).collect();
        let mut out = vec![0f32; rows.len() * s.heads * d];
        par_chunks(&mut out, d, |item, o| {
            let (r, head) = (item / s.heads, item % s.heads);
            let (input, pos) = rows[r];
            let head_kv = HeadKv {
                runs: &runs[input],
                offset: (head / group) * d,
                stride: kv_width,
            };
            attend(&q[item * d..(item + 1) * d], &head_kv, pos + 1, scale, o);
        });
        out
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(w.len()) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(v, w)| v * inv * w));
    }
    out
}

fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}
