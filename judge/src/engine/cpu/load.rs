//! Loading the batched engine's model: GGUF files (weights kept in their stored types; the
//! K-quant matrices read in place from the memory-mapped file, the rest through candle's
//! GGUF reader); Hugging Face directories are read in `load_hf.rs`.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use memmap2::Mmap;

use super::kernels::{KQuant, Stored};
use super::model::{BatchModel, Embedding, GateUp, Group, Layer, Linear, Rope, Shape};
use crate::engine::checkpoint::quantize::QuantType;
use crate::engine::checkpoint::rope_inv_freq;
use crate::engine::model::{file_name, open_gguf, LlamaDims, ModelInfo};
use crate::engine::scheduler::KvType;
use crate::engine::tokenizer::TextTokenizer;
use crate::error::{load_err, Result};

impl BatchModel {
    /// Loads a GGUF file or Hugging Face directory for the CPU; returns the model, its
    /// tokenizer and facts. `quantize` applies to a directory's dense matrices (a GGUF
    /// file keeps its own types).
    pub fn load(
        path: &Path,
        quantize: Option<QuantType>,
    ) -> Result<(Self, TextTokenizer, ModelInfo)> {
        if path.is_dir() {
            Self::load_hf(path, quantize)
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
