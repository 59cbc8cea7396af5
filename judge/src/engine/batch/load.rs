//! Loading the batched engine's model: GGUF files (candle's GGUF reader, weights kept in
//! their stored types) and Hugging Face directories (safetensors, dense weights).

use std::path::Path;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use super::kv::KvType;
use super::model::{BatchModel, Embedding, GateUp, Group, Layer, Linear, Rope, Shape};
use crate::error::Result;
use crate::model::{file_name, load_err, open_gguf, read_chat_template, ModelInfo};
use crate::tokenizer::TextTokenizer;

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
                gate_up: GateUp::new(lin("ffn_gate")?, lin("ffn_up")?),
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
            kv: KvType::default(),
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
                gate_up: GateUp::new(lin("mlp.gate_proj")?, lin("mlp.up_proj")?),
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
            kv: KvType::default(),
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
}
