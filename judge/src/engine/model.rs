//! Loading a LLaMA-family judge with candle and running its forward pass.
//!
//! Two sources: a GGUF file (quantized weights, e.g. Auto-J 13B converted by llama.cpp's
//! tools, or SmolLM2) read by `candle_transformers::models::quantized_llama`, and a Hugging
//! Face directory (`config.json`, `*.safetensors`, `tokenizer.json`) read by
//! `candle_transformers::models::llama` in f32, f16 or bf16.

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, quantized_llama};

use crate::engine::checkpoint::quantize::QuantType;
use crate::engine::checkpoint::Checkpoint;
use crate::engine::tokenizer::TextTokenizer;
use crate::error::{load_err, Result};

/// Positions candle's quantized LLaMA precomputes rotary tables for; a GGUF model serves at
/// most this many tokens whatever its metadata claims.
const QUANTIZED_MAX_POSITIONS: usize = quantized_llama::MAX_SEQ_LEN;

/// Floating-point type for Hugging Face weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDType {
    /// 32-bit floats (the CPU default).
    F32,
    /// 16-bit floats (GPU default).
    F16,
    /// bfloat16.
    Bf16,
}

impl WeightDType {
    /// The candle element type.
    pub(crate) fn candle(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

/// What the loader needs to know.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// A `.gguf` file or a Hugging Face model directory.
    pub path: PathBuf,
    /// Weight type for Hugging Face directories (GGUF files keep their own).
    pub dtype: WeightDType,
    /// Where to run.
    pub device: Device,
    /// Quantize a directory's dense matrices at load (CPU engine only), with llama.cpp's
    /// per-tensor mix for the type.
    pub quantize: Option<QuantType>,
    /// Serve at most this many positions (prompt and completion), below what the model
    /// declares; `None` serves the declared context.
    pub context: Option<usize>,
}

impl ModelSpec {
    /// A spec with the defaults: `path` on `device` in `dtype`, not quantized, the
    /// model's own context.
    pub fn new(path: impl Into<PathBuf>, dtype: WeightDType, device: Device) -> Self {
        Self {
            path: path.into(),
            dtype,
            device,
            quantize: None,
            context: None,
        }
    }

    /// The context to serve for a model that declares `declared` positions: `--context`
    /// may lower it, never raise it.
    pub fn served_context(&self, declared: usize) -> Result<usize> {
        match self.context {
            None => Ok(declared),
            Some(c) if c <= declared => Ok(c),
            Some(c) => Err(load_err(
                &self.path,
                format!("--context {c} is more than the {declared} positions the model declares"),
            )),
        }
    }
}

/// Facts about the loaded model that prompts, fitting and the service need.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// A short name for `Accepted.model` (file or directory name).
    pub name: String,
    /// Context window in tokens (prompt + generated).
    pub context: usize,
    /// The model's own chat template, if it has one (Jinja source).
    pub chat_template: Option<String>,
}

enum Weights {
    Quantized(quantized_llama::ModelWeights),
    Full {
        model: llama::Llama,
        config: llama::Config,
        dtype: DType,
        cache: llama::Cache,
    },
}

/// The model's attention state at one moment, to return to later (scoring several verdict
/// continuations from the same point). Cheap: tensors are shared, not copied.
#[derive(Clone)]
pub struct Snapshot(SnapshotInner);

#[derive(Clone)]
enum SnapshotInner {
    Quantized(Box<quantized_llama::ModelWeights>),
    Full(Box<llama::Cache>),
}

/// A loaded judge model: weights, tokenizer and facts, owned by the engine thread.
pub struct JudgeModel {
    weights: Weights,
    device: Device,
    /// Tokenizer matching the weights.
    pub tokenizer: TextTokenizer,
    /// Model facts.
    pub info: ModelInfo,
}

/// Refuses head counts that do not divide the width (or each other): both engines' loaders
/// split the width into heads and the query heads into groups per key/value head.
pub(crate) fn check_heads(path: &Path, hidden: usize, heads: usize, kv_heads: usize) -> Result<()> {
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
    Ok(())
}

/// The LLaMA hyper-parameters both engines read from a GGUF file's metadata, head counts
/// checked against the width.
pub(crate) struct LlamaDims {
    /// Transformer blocks.
    pub(crate) layers: usize,
    /// Residual width.
    pub(crate) hidden: usize,
    /// Query heads.
    pub(crate) heads: usize,
    /// Key/value heads (the query heads when the file does not say).
    pub(crate) kv_heads: usize,
    /// RMS norm epsilon (1e-5 when the file does not say).
    pub(crate) eps: f32,
    /// Rotary base frequency (10,000 when the file does not say).
    pub(crate) rope_base: f32,
}

impl LlamaDims {
    /// Reads and checks the dimensions of the GGUF file at `path`.
    pub(crate) fn read(path: &Path, content: &gguf_file::Content) -> Result<Self> {
        let md = |key: &str| content.metadata.get(key);
        let int = |key: &str| -> Result<usize> {
            md(key)
                .and_then(|v| v.to_u32().ok())
                .map(|v| v as usize)
                .ok_or_else(|| load_err(path, format!("metadata `{key}` is missing")))
        };
        let float =
            |key: &str, default: f32| md(key).and_then(|v| v.to_f32().ok()).unwrap_or(default);
        let heads = int("llama.attention.head_count")?;
        let dims = Self {
            layers: int("llama.block_count")?,
            hidden: int("llama.embedding_length")?,
            heads,
            kv_heads: int("llama.attention.head_count_kv").unwrap_or(heads),
            eps: float("llama.attention.layer_norm_rms_epsilon", 1e-5),
            rope_base: float("llama.rope.freq_base", 10_000.0),
        };
        check_heads(path, dims.hidden, dims.heads, dims.kv_heads)?;
        Ok(dims)
    }
}

impl JudgeModel {
    /// Loads a GGUF file or a Hugging Face directory, whichever `spec.path` is.
    pub fn load(spec: &ModelSpec) -> Result<Self> {
        if spec.path.is_dir() {
            Self::load_hf(spec)
        } else if spec.path.is_file() {
            Self::load_gguf(spec)
        } else {
            Err(load_err(
                &spec.path,
                "no such file or directory (give a .gguf file or a Hugging Face model directory)",
            ))
        }
    }

    fn load_gguf(spec: &ModelSpec) -> Result<Self> {
        let path = &spec.path;
        let (mut file, content, meta) = open_gguf(path)?;
        let context = meta.context.min(QUANTIZED_MAX_POSITIONS);
        let (chat_template, tokenizer) = (meta.chat_template, meta.tokenizer);
        let weights = quantized_llama::ModelWeights::from_gguf(content, &mut file, &spec.device)
            .map_err(|e| load_err(path, e))?;
        Ok(Self {
            weights: Weights::Quantized(weights),
            device: spec.device.clone(),
            tokenizer,
            info: ModelInfo {
                name: file_name(path),
                context,
                chat_template,
            },
        })
    }

    fn load_hf(spec: &ModelSpec) -> Result<Self> {
        let dir = &spec.path;
        let ck = Checkpoint::open(dir)?;
        let config_path = dir.join("config.json");
        let raw = std::fs::read(&config_path).map_err(|e| load_err(&config_path, e))?;
        let hf: llama::LlamaConfig =
            serde_json::from_slice(&raw).map_err(|e| load_err(&config_path, e))?;
        let config = hf.into_config(false);
        let dtype = spec.dtype.candle();
        let tensors = ck.dense(dtype, &spec.device)?;
        let vb = VarBuilder::from_tensors(tensors, dtype, &spec.device);
        // candle's loader unwraps on a missing layer tensor; contain that as a load error.
        let model = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            llama::Llama::load(vb, &config)
        }))
        .map_err(|_| load_err(dir, "a layer tensor is missing or has the wrong shape"))?
        .map_err(|e| load_err(dir, e))?;
        let tokenizer = TextTokenizer::from_dir(dir, &ck.config.eos_ids())?;
        let chat_template = read_chat_template(dir);
        let cache = llama::Cache::new(true, dtype, &config, &spec.device)?;
        Ok(Self {
            info: ModelInfo {
                name: file_name(dir),
                context: config.max_position_embeddings,
                chat_template,
            },
            weights: Weights::Full {
                model,
                config,
                dtype,
                cache,
            },
            device: spec.device.clone(),
            tokenizer,
        })
    }

    /// Forgets all cached keys and values, before a new sequence.
    pub fn reset(&mut self) -> Result<()> {
        match &mut self.weights {
            Weights::Quantized(w) => w.clear_kv_cache(),
            Weights::Full {
                config,
                dtype,
                cache,
                ..
            } => *cache = llama::Cache::new(true, *dtype, config, &self.device)?,
        }
        Ok(())
    }

    /// Captures the current attention state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(match &self.weights {
            Weights::Quantized(w) => SnapshotInner::Quantized(Box::new(w.clone())),
            Weights::Full { cache, .. } => SnapshotInner::Full(Box::new(cache.clone())),
        })
    }

    /// Returns to a state captured by [`JudgeModel::snapshot`] of this model.
    pub fn restore(&mut self, snapshot: &Snapshot) {
        match (&mut self.weights, &snapshot.0) {
            (Weights::Quantized(w), SnapshotInner::Quantized(s)) => *w = (**s).clone(),
            (Weights::Full { cache, .. }, SnapshotInner::Full(s)) => *cache = (**s).clone(),
            // A snapshot of another kind of model cannot come from this one.
            _ => {}
        }
    }

    /// Runs `tokens` at positions `pos..pos + tokens.len()` (appending to the cache) and
    /// returns the logits of the last position as a 1-D f32 tensor.
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor> {
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let logits = match &mut self.weights {
            Weights::Quantized(w) => w.forward(&input, pos)?,
            Weights::Full { model, cache, .. } => model.forward(&input, pos, cache)?,
        };
        Ok(logits.squeeze(0)?.to_dtype(DType::F32)?)
    }
}

/// What a GGUF file says besides its tensors.
pub(crate) struct GgufMeta {
    /// `llama.context_length` (4096 when absent).
    pub context: usize,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// The tokenizer rebuilt from the metadata.
    pub tokenizer: TextTokenizer,
}

/// Opens a GGUF file, checks it is a LLaMA-family model and reads its metadata; the file and
/// parsed header are returned for reading tensors.
pub(crate) fn open_gguf(path: &Path) -> Result<(File, gguf_file::Content, GgufMeta)> {
    let mut file = File::open(path).map_err(|e| load_err(path, e))?;
    // Hostile headers (huge counts, overflowing shapes) are refused before candle reads them.
    crate::engine::gguf_guard::check(&mut file)
        .map_err(|e| load_err(path, format!("refused: {e}")))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| load_err(path, format!("not a readable GGUF file: {e}")))?;
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if arch != "llama" {
        return Err(load_err(
            path,
            format!("architecture `{arch}` is not a LLaMA-family model"),
        ));
    }
    let context = content
        .metadata
        .get("llama.context_length")
        .and_then(|v| v.to_u32().ok())
        .map_or(QUANTIZED_MAX_POSITIONS, |c| c as usize);
    let chat_template = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
    let tokenizer = TextTokenizer::from_gguf(&content)?;
    Ok((
        file,
        content,
        GgufMeta {
            context,
            chat_template,
            tokenizer,
        },
    ))
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Reads `chat_template` from `tokenizer_config.json` when the directory has one.
pub(crate) fn read_chat_template(dir: &Path) -> Option<String> {
    let raw = std::fs::read(dir.join("tokenizer_config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    v.get("chat_template")?.as_str().map(str::to_string)
}
