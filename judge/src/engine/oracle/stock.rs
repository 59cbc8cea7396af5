//! candle's stock LLaMA models behind one type ([`JudgeModel`]): a GGUF file through
//! `quantized_llama`, a Hugging Face directory through `llama`, one attention state inside
//! the model. The reference the batched engines' logits and texts are tested against.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, quantized_llama};

use crate::engine::checkpoint::Checkpoint;
use crate::engine::model::{
    file_name, open_gguf, read_chat_template, ModelInfo, ModelSpec, QUANTIZED_MAX_POSITIONS,
};
use crate::engine::tokenizer::TextTokenizer;
use crate::error::{load_err, Result};

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
