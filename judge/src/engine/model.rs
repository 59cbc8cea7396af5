//! What every backend's loader shares about a LLaMA-family judge: where it is and how to
//! load it ([`ModelSpec`], [`WeightDType`]), what it is ([`ModelInfo`]), and the GGUF
//! metadata and head checks both GGUF loaders read. Two sources: a GGUF file (e.g. Auto-J
//! 13B converted by llama.cpp's tools, or SmolLM2) and a Hugging Face directory.

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device};
use candle_transformers::models::quantized_llama;

use crate::engine::checkpoint::quantize::QuantType;
use crate::engine::tokenizer::TextTokenizer;
use crate::error::{load_err, Result};

/// Positions candle's quantized LLaMA precomputes rotary tables for; a GGUF model serves at
/// most this many tokens whatever its metadata claims.
pub(crate) const QUANTIZED_MAX_POSITIONS: usize = quantized_llama::MAX_SEQ_LEN;

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
