//! Loading the batched engine's model: GGUF files (weights kept in their stored types; the
//! K-quant matrices read in place from the memory-mapped file, the rest through candle's
//! GGUF reader) and Hugging Face directories (safetensors, dense weights).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;

use super::kernels::{KQuant, Stored};
use super::kv::KvType;
use super::model::{BatchModel, Embedding, GateUp, Group, Layer, Linear, Rope, Shape};
use crate::engine::model::{
    file_name, load_err, open_gguf, read_chat_template, LlamaDims, ModelInfo,
};
use crate::engine::tokenizer::TextTokenizer;
use crate::error::Result;

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
        let (file, content, meta) = open_gguf(path)?;
        let LlamaDims {
            layers,
            hidden,
            heads,
            kv_heads,
            eps,
            rope_base,
        } = LlamaDims::read(path, &content)?;
        let mut src = GgufTensors::new(path, file, content)?;
        let (embed, vocab) = src.embedding("token_embd.weight")?;
        // Without its own output matrix the model's output is tied to the embedding.
        let tied = !src.has("output.weight");
        let lm_head = src.linear(if tied {
            "token_embd.weight"
        } else {
            "output.weight"
        })?;
        let norm = dequantized(src.qtensor("output_norm.weight")?)?;
        let blocks = (0..layers)
            .map(|i| gguf_layer(&mut src, &format!("blk.{i}")))
            .collect::<Result<Vec<_>>>()?;
        let head_dim = hidden / heads;
        let shape = Shape {
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            vocab,
            eps,
            kv: KvType::default(),
            rope: Rope::Interleaved,
        };
        let model = Self {
            inv_freq: rope_inv_freq(head_dim, rope_base),
            layers: blocks,
            norm,
            lm_head,
            embed,
            shape,
        };
        let info = ModelInfo {
            name: file_name(path),
            context: meta.context,
            chat_template: meta.chat_template,
        };
        Ok((model, meta.tokenizer, info))
    }

    fn load_hf(dir: &Path) -> Result<(Self, TextTokenizer, ModelInfo)> {
        let cfg = HfConfig::read(dir)?;
        let mut tensors = read_safetensors(dir, &Device::Cpu)?;
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .ok_or_else(|| load_err(dir, format!("tensor `{name}` is missing")))
        };
        let embd = take("model.embed_tokens.weight")?.to_dtype(DType::F32)?;
        let (vocab, hidden) = embd.dims2()?;
        let lm_head = match take("lm_head.weight") {
            Ok(t) if !cfg.tie_word_embeddings.unwrap_or(false) => Linear::dense(t)?,
            _ => Linear::dense(embd.clone())?,
        };
        let embed = Embedding::F32 {
            table: f32s(embd)?,
            dim: hidden,
        };
        let norm = f32s(take("model.norm.weight")?)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| hf_layer(&mut take, &format!("model.layers.{i}")))
            .collect::<Result<Vec<_>>>()?;
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
            kv: KvType::default(),
            rope: Rope::Halves,
        };
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), &cfg.eos_ids())?;
        let model = Self {
            inv_freq: rope_inv_freq(shape.head_dim, cfg.rope_theta.unwrap_or(10_000.0)),
            layers,
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

/// A GGUF file's tensors: K-quant matrices used where they lie in the memory-mapped file
/// (never copied), everything else read through candle's reader.
struct GgufTensors<'a> {
    path: &'a Path,
    file: File,
    content: Content,
    map: Arc<Mmap>,
}

impl<'a> GgufTensors<'a> {
    fn new(path: &'a Path, file: File, content: Content) -> Result<Self> {
        // The map is read-only and private to this process. If another process truncates
        // or rewrites the file while it is mapped, reads of the changed pages see the new
        // bytes (or fault): model files are replaced by renaming a new file into place,
        // never rewritten where they lie (docs/operations.md).
        #[allow(unsafe_code)]
        // SAFETY: see above; nothing here writes through the map.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| load_err(path, format!("mmap: {e}")))?;
        Ok(Self {
            path,
            file,
            content,
            map: Arc::new(map),
        })
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// `name` read into memory by candle.
    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        self.content
            .tensor(&mut self.file, name, &Device::Cpu)
            .map_err(|e| load_err(self.path, format!("tensor `{name}`: {e}")))
    }

    /// Matrix `name`'s type, its bytes in the map, and its shape `(n, k)`, where `wanted`
    /// takes its type; `None` otherwise (and for a short file, which candle's reader then
    /// reports).
    fn in_map(
        &self,
        name: &str,
        wanted: impl Fn(GgmlDType, usize) -> bool,
    ) -> Option<(GgmlDType, Stored, usize, usize)> {
        let info = self.content.tensor_infos.get(name)?;
        let dt = info.ggml_dtype;
        let (n, k) = info.shape.dims2().ok()?;
        if !wanted(dt, k) {
            return None;
        }
        let size = (n * k).checked_div(dt.block_size())? * dt.type_size();
        let start = usize::try_from(self.content.tensor_data_offset + info.offset).ok()?;
        let range = start..start.checked_add(size)?;
        if range.end > self.map.len() {
            return None;
        }
        let map = self.map.clone();
        Some((dt, Stored::Mapped { map, range }, n, k))
    }

    /// `name` as a K-quant matrix over the mapped bytes, where it is one our kernels take.
    fn mapped(&self, name: &str) -> Option<KQuant> {
        let (dt, bytes, n, k) = self.in_map(name, |dt, _| KQuant::takes(dt))?;
        KQuant::new(dt, bytes, n, k)
    }

    fn linear(&mut self, name: &str) -> Result<Linear> {
        match self.mapped(name) {
            Some(m) => Ok(Linear::K(m.into_lanes())),
            None => Linear::from_qtensor(self.qtensor(name)?),
        }
    }

    /// The token embedding table and the vocabulary size.
    fn embedding(&mut self, name: &str) -> Result<(Embedding, usize)> {
        if let Some(m) = self.mapped(name) {
            let vocab = m.rows();
            return Ok((Embedding::K(m), vocab));
        }
        if let Some((dtype, bytes, vocab, dim)) = self.in_map(name, Embedding::reads_blocks) {
            return Ok((Embedding::Blocks { bytes, dtype, dim }, vocab));
        }
        let t = self.qtensor(name)?;
        let (vocab, _) = t.shape().dims2()?;
        Ok((Embedding::from_qtensor(&t)?, vocab))
    }
}

/// One transformer block of a GGUF file, its tensors named under `p`, in their stored types.
fn gguf_layer(src: &mut GgufTensors<'_>, p: &str) -> Result<Layer> {
    let mut lin = |n: &str| src.linear(&format!("{p}.{n}.weight"));
    Ok(Layer {
        qkv: Group::new(vec![lin("attn_q")?, lin("attn_k")?, lin("attn_v")?]),
        wo: lin("attn_output")?,
        gate_up: GateUp::new(lin("ffn_gate")?, lin("ffn_up")?),
        down: lin("ffn_down")?,
        attn_norm: dequantized(src.qtensor(&format!("{p}.attn_norm.weight"))?)?,
        ffn_norm: dequantized(src.qtensor(&format!("{p}.ffn_norm.weight"))?)?,
    })
}

/// A (norm) tensor's values as f32, flattened.
fn dequantized(t: QTensor) -> Result<Vec<f32>> {
    Ok(t.dequantize(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// The fields of a Hugging Face `config.json` the batched engines (CPU and device) read.
#[derive(serde::Deserialize)]
pub(crate) struct HfConfig {
    pub(crate) hidden_size: usize,
    pub(crate) num_hidden_layers: usize,
    pub(crate) num_attention_heads: usize,
    pub(crate) num_key_value_heads: Option<usize>,
    pub(crate) rms_norm_eps: f64,
    pub(crate) rope_theta: Option<f32>,
    pub(crate) max_position_embeddings: usize,
    pub(crate) tie_word_embeddings: Option<bool>,
    eos_token_id: Option<serde_json::Value>,
}

impl HfConfig {
    /// Reads `config.json` of a model directory.
    pub(crate) fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let raw = std::fs::read(&path).map_err(|e| load_err(&path, e))?;
        serde_json::from_slice(&raw).map_err(|e| load_err(&path, e))
    }

    /// End-of-sequence ids: one number or a list of them.
    pub(crate) fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|n| n as u32).into_iter().collect()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|n| n as u32)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Every tensor of the directory's `*.safetensors` files, read in name order onto `device`.
pub(crate) fn read_safetensors(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| load_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    let mut tensors = HashMap::new();
    for f in &files {
        tensors.extend(candle_core::safetensors::load(f, device).map_err(|e| load_err(f, e))?);
    }
    Ok(tensors)
}

/// One transformer block of a Hugging Face checkpoint, its tensors named under `p`.
fn hf_layer(take: &mut impl FnMut(&str) -> Result<Tensor>, p: &str) -> Result<Layer> {
    let mut lin = |n: &str| Linear::dense(take(&format!("{p}.{n}.weight"))?);
    Ok(Layer {
        qkv: Group::new(vec![
            lin("self_attn.q_proj")?,
            lin("self_attn.k_proj")?,
            lin("self_attn.v_proj")?,
        ]),
        wo: lin("self_attn.o_proj")?,
        gate_up: GateUp::new(lin("mlp.gate_proj")?, lin("mlp.up_proj")?),
        down: lin("mlp.down_proj")?,
        attn_norm: f32s(take(&format!("{p}.input_layernorm.weight"))?)?,
        ffn_norm: f32s(take(&format!("{p}.post_attention_layernorm.weight"))?)?,
    })
}

/// A tensor's values as f32, flattened.
fn f32s(t: Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Rotary inverse frequencies: `inv_freq[i]` = base^(-2i / head_dim).
pub(crate) fn rope_inv_freq(head_dim: usize, base: f32) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0 / base.powf(2.0 * i as f32 / head_dim as f32))
        .collect()
}
