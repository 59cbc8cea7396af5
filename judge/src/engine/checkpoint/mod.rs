//! Hugging Face model directories as they are published, read the same way by every
//! backend: `config.json`, the weights in any of their published forms, and the rotary
//! tables. The CPU engine, the device backend and the serial engine all load through here.
//!
//! - [`pickle`]: the restricted reader for PyTorch's `data.pkl` (tensors only).
//! - `pytorch.rs`: `pytorch_model*.bin` zip checkpoints, tensor by tensor.
//! - [`gptq`]: GPTQ 4-bit linear layers (AutoGPTQ's packing), unpacked to floats or
//!   repacked to Q4_1 blocks.
//! - [`quantize`]: which block type each tensor gets under `--quantize` / `autoj quantize`;
//!   [`kquant`]: the Q4_K, Q5_K and Q6_K block quantizers (llama-quantize's algorithm).
//! - [`export`], [`gguf_out`], [`vocab`]: `autoj quantize`, a directory written as a GGUF
//!   file tensor by tensor, its tokenizer as a `llama` vocabulary.
//!
//! Weights are read shard by shard ([`Checkpoint::stream`]): each shard is opened, every
//! tensor in it handed to the caller (who converts it to what it keeps), and the shard
//! closed before the next, so loading needs the largest shard plus what is kept, never the
//! whole checkpoint twice.

pub mod export;
pub mod gguf_out;
pub mod gptq;
pub mod kquant;
pub mod pickle;
mod pytorch;
pub mod quantize;
pub mod vocab;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{load_err, Result};
use gptq::GptqConfig;

/// The fields of a Hugging Face `config.json` the loaders read.
#[derive(Debug, serde::Deserialize)]
pub struct HfConfig {
    /// Residual width.
    pub hidden_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (the query heads when absent).
    pub num_key_value_heads: Option<usize>,
    /// RMS norm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary base (10,000 when absent).
    pub rope_theta: Option<f32>,
    /// The context the config declares (Auto-J 13B says 8,192; trained from a 4,096 base).
    pub max_position_embeddings: usize,
    /// Output matrix shared with the embedding.
    pub tie_word_embeddings: Option<bool>,
    /// One id or a list.
    eos_token_id: Option<serde_json::Value>,
    /// GPTQ settings, where transformers or AutoGPTQ recorded them here.
    quantization_config: Option<serde_json::Value>,
}

impl HfConfig {
    /// Reads `config.json` of a model directory.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let raw = std::fs::read(&path).map_err(|e| load_err(&path, e))?;
        serde_json::from_slice(&raw).map_err(|e| load_err(&path, e))
    }

    /// End-of-sequence ids: one number or a list of them.
    pub fn eos_ids(&self) -> Vec<u32> {
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

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
}

/// Rotary inverse frequencies: `inv_freq[i]` = base^(-2i / head_dim).
pub fn rope_inv_freq(head_dim: usize, base: f32) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0 / base.powf(2.0 * i as f32 / head_dim as f32))
        .collect()
}

/// How the weights of a directory are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// `*.safetensors`, one file or shards (with `model.safetensors.index.json`).
    Safetensors,
    /// `pytorch_model*.bin`, one file or shards (with `pytorch_model.bin.index.json`).
    PyTorch,
}

/// A model directory: its config, its weight files and, for GPTQ, the quantization.
#[derive(Debug)]
pub struct Checkpoint {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: HfConfig,
    /// How the weights are stored.
    pub format: WeightFormat,
    /// Weight files, in the order they are read.
    pub files: Vec<PathBuf>,
    /// GPTQ settings when the linear layers are GPTQ-packed.
    pub gptq: Option<GptqConfig>,
}

impl Checkpoint {
    /// Reads the config and finds the weights: safetensors first (an index, else every
    /// `*.safetensors`), then PyTorch (an index, else `pytorch_model*.bin`).
    pub fn open(dir: &Path) -> Result<Self> {
        let config = HfConfig::read(dir)?;
        let (format, files) = weight_files(dir)?;
        let gptq = GptqConfig::read(dir, config.quantization_config.as_ref())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            format,
            files,
            gptq,
        })
    }

    /// Hands every tensor to `each` on the CPU in its stored type, one shard at a time
    /// (the shard is closed before the next is opened).
    pub fn stream(&self, mut each: impl FnMut(String, Tensor) -> Result<()>) -> Result<()> {
        for file in &self.files {
            match self.format {
                WeightFormat::Safetensors => stream_safetensors(file, &mut each)?,
                WeightFormat::PyTorch => {
                    let mut pth = pytorch::PthFile::open(file)?;
                    for (name, rec) in std::mem::take(&mut pth.tensors) {
                        let t = pth.read(&name, &rec)?;
                        each(name, t)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// [`Checkpoint::stream`] with the reading on a thread of its own, up to `ahead`
    /// tensors ahead of `each`: reading and unpacking the next tensor overlaps whatever
    /// `each` does with this one (quantizing, on the rayon pool). Memory grows by at most
    /// `ahead + 1` tensors in their stored type.
    pub fn stream_ahead(
        &self,
        ahead: usize,
        mut each: impl FnMut(String, Tensor) -> Result<()>,
    ) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(String, Tensor)>(ahead);
        std::thread::scope(|s| {
            let reader = s.spawn(move || {
                self.stream(|name, t| {
                    tx.send((name, t))
                        .map_err(|_| load_err(&self.dir, "reading stopped: the consumer failed"))
                })
            });
            // Consuming ends when the reader is done (or failed) and the channel closes;
            // a consumer error drops the receiver, which stops the reader at its next send.
            let consumed = rx.into_iter().try_for_each(|(name, t)| each(name, t));
            let read = reader
                .join()
                .unwrap_or_else(|_| Err(load_err(&self.dir, "the checkpoint reader panicked")));
            // The consumer's error first: the reader's is then only that it was stopped.
            consumed.and(read)
        })
    }

    /// Every tensor's name and dimensions, in the order [`Checkpoint::stream`] yields them,
    /// read from the headers (safetensors) or pickles (PyTorch) without their data.
    pub fn shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let mut out = Vec::new();
        for file in &self.files {
            match self.format {
                WeightFormat::Safetensors => {
                    #[allow(unsafe_code)]
                    // SAFETY: as in `stream_safetensors`; only the header is read here.
                    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }
                        .map_err(|e| load_err(file, e))?;
                    let mut v: Vec<(String, Vec<usize>)> = st
                        .tensors()
                        .into_iter()
                        .map(|(n, view)| (n, view.shape().to_vec()))
                        .collect();
                    v.sort();
                    out.extend(v);
                }
                WeightFormat::PyTorch => {
                    let pth = pytorch::PthFile::open(file)?;
                    out.extend(pth.tensors.into_iter().map(|(n, r)| (n, r.shape)));
                }
            }
        }
        Ok(out)
    }

    /// Every weight as `dtype` on `device`, GPTQ layers unpacked to their `.weight` (the
    /// device backend and the serial engine run dense weights).
    pub fn dense(&self, dtype: DType, device: &Device) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        let mut packed = HashMap::new();
        let gptq = self.gptq.is_some();
        self.stream(|name, t| {
            if gptq && (gptq::is_part(&name) || name.ends_with(".bias")) {
                packed.insert(name, t);
            } else {
                out.insert(name, t.to_dtype(dtype)?.to_device(device)?);
            }
            Ok(())
        })?;
        if let Some(cfg) = &self.gptq {
            for (base, l) in gptq::take_all(&mut packed, cfg, &self.dir)? {
                let w = Tensor::from_vec(l.dequantize(), (l.out, l.inp), &Device::Cpu)?;
                out.insert(
                    format!("{base}.weight"),
                    w.to_dtype(dtype)?.to_device(device)?,
                );
            }
            if let Some(left) = packed.keys().next() {
                return Err(load_err(
                    &self.dir,
                    format!("`{left}`: linear biases are not supported"),
                ));
            }
        }
        Ok(out)
    }
}

/// The tensors of one safetensors file, read through a memory map that is dropped before
/// the next file.
fn stream_safetensors(
    file: &Path,
    each: &mut impl FnMut(String, Tensor) -> Result<()>,
) -> Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: the map is read-only and lives only while this file's tensors are copied out;
    // model files are replaced by renaming, never rewritten in place (docs/operations.md).
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }
        .map_err(|e| load_err(file, e))?;
    let mut names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    names.sort();
    for name in names {
        let t = st
            .load(&name, &Device::Cpu)
            .map_err(|e| load_err(file, format!("tensor `{name}`: {e}")))?;
        each(name, t)?;
    }
    Ok(())
}

/// Index file names and the weight files each format looks for.
const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
const PYTORCH_INDEX: &str = "pytorch_model.bin.index.json";

fn weight_files(dir: &Path) -> Result<(WeightFormat, Vec<PathBuf>)> {
    if dir.join(SAFETENSORS_INDEX).is_file() {
        return Ok((WeightFormat::Safetensors, indexed(dir, SAFETENSORS_INDEX)?));
    }
    let st = listed(dir, |n| n.ends_with(".safetensors"))?;
    if !st.is_empty() {
        return Ok((WeightFormat::Safetensors, st));
    }
    if dir.join(PYTORCH_INDEX).is_file() {
        return Ok((WeightFormat::PyTorch, indexed(dir, PYTORCH_INDEX)?));
    }
    // Only the model's own files: other `.bin` pickles (training_args.bin, optimizer
    // states) are not weights.
    let bin = listed(dir, |n| {
        n.starts_with("pytorch_model") && n.ends_with(".bin")
    })?;
    if !bin.is_empty() {
        return Ok((WeightFormat::PyTorch, bin));
    }
    Err(load_err(
        dir,
        "no weights: expected model.safetensors (or shards with model.safetensors.index.json) \
         or pytorch_model.bin (or shards with pytorch_model.bin.index.json)",
    ))
}

/// Files of `dir` whose names pass `keep`, sorted.
fn listed(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| load_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    files.sort();
    Ok(files)
}

/// The shards an index's `weight_map` names, each once, checked to be plain file names
/// present in `dir`.
fn indexed(dir: &Path, index: &str) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let path = dir.join(index);
    let raw = std::fs::read(&path).map_err(|e| load_err(&path, e))?;
    let idx: Index = serde_json::from_slice(&raw).map_err(|e| load_err(&path, e))?;
    let mut names: Vec<&String> = idx.weight_map.values().collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(load_err(&path, "the index's weight_map is empty"));
    }
    names
        .into_iter()
        .map(|n| {
            let plain = !n.contains(['/', '\\']) && n != ".." && n != ".";
            let file = dir.join(n);
            if !plain {
                return Err(load_err(
                    &path,
                    format!("shard `{n}` is not a plain file name"),
                ));
            }
            if !file.is_file() {
                return Err(load_err(
                    &path,
                    format!("shard `{n}` is missing from {}", dir.display()),
                ));
            }
            Ok(file)
        })
        .collect()
}
