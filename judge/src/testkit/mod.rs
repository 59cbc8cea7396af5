//! Tiny LLaMA models with random weights, written as a Hugging Face directory and as a GGUF
//! file, so tests (here and in other crates) exercise the real loaders, tokenizers and
//! generation without downloading anything. Weights come from a fixed seed.
//!
//! - [`layouts`]: the same model in every published checkpoint layout (safetensors and
//!   PyTorch shards, GPTQ), with padding rows past the tokenizer.
//! - [`spm`]: a tiny LLaMA-style (SentencePiece BPE) `tokenizer.json`.
//! - [`torch_writer`]: state dicts written as `torch.save` writes them.

pub mod layouts;
pub mod spm;
pub mod torch_writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{JudgeError, Result};

/// Special tokens of the tiny vocabulary, at ids 0, 1, 2.
pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// A ChatML template like SmolLM2's, stored in the tiny GGUF.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Merges on top of the 256 byte symbols, so the BPE has real work to do.
const MERGES: &[(&str, &str)] = &[
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "s"),
    ("r", "e"),
    ("Ġ", "R"),
    ("e", "s"),
];

/// Shape of a tiny model.
#[derive(Debug, Clone)]
pub struct TinySpec {
    /// Hidden size.
    pub hidden: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Context window.
    pub context: usize,
    /// Weight seed.
    pub seed: u64,
    /// Multiplies the output matrix: 1 for a working model; NaN makes every logit NaN (a
    /// corrupt model, for tests of what happens when sampling cannot work).
    pub output_scale: f32,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            context: 4096,
            seed: 7,
            output_scale: 1.0,
        }
    }
}

/// GPT-2's byte-to-symbol map: printable bytes stand for themselves, the rest are shifted
/// past 255, so every byte has a visible symbol.
fn byte_symbols() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256u32;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                let c = char::from_u32(next).unwrap_or('?');
                next += 1;
                c
            }
        })
        .collect()
}

/// The tiny vocabulary: specials, 256 byte symbols, then merge results.
pub fn tiny_tokens() -> Vec<String> {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    tokens.extend(byte_symbols().into_iter().map(String::from));
    tokens.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    tokens
}

/// The tiny tokenizer as a `tokenizers::Tokenizer` (what `tokenizer.json` holds).
pub fn tiny_tokenizer() -> Result<Tokenizer> {
    let vocab: Vocab = tiny_tokens()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let merges = MERGES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| JudgeError::Tokenizer(e.to_string()))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    tok.add_special_tokens(
        SPECIALS
            .iter()
            .map(|s| AddedToken::from(*s, true))
            .collect::<Vec<_>>(),
    )
    .map_err(|e| JudgeError::Tokenizer(e.to_string()))?;
    Ok(tok)
}

struct Weights {
    tensors: Vec<(String, Tensor)>,
}

fn random_weights(spec: &TinySpec, vocab: usize, gguf_names: bool) -> Result<Weights> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let head_dim = spec.hidden / spec.heads;
    let ffn = spec.hidden * 2;
    let mut mat = |rows: usize, cols: usize| -> Result<Tensor> {
        let scale = 1.0 / (cols as f32).sqrt();
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0f32..1.0) * scale * 1.7)
            .collect();
        Ok(Tensor::from_vec(data, (rows, cols), &Device::Cpu)?)
    };
    let ones = |n: usize| -> Result<Tensor> {
        Ok(Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?)
    };
    let name = |hf: &str, gg: &str| {
        if gguf_names {
            gg.to_string()
        } else {
            hf.to_string()
        }
    };
    let mut t = Vec::new();
    t.push((
        name("model.embed_tokens.weight", "token_embd.weight"),
        mat(vocab, spec.hidden)?,
    ));
    for i in 0..spec.layers {
        let l =
            |hf: &str, gg: &str| name(&format!("model.layers.{i}.{hf}"), &format!("blk.{i}.{gg}"));
        t.push((
            l("self_attn.q_proj.weight", "attn_q.weight"),
            mat(spec.heads * head_dim, spec.hidden)?,
        ));
        t.push((
            l("self_attn.k_proj.weight", "attn_k.weight"),
            mat(spec.kv_heads * head_dim, spec.hidden)?,
        ));
        t.push((
            l("self_attn.v_proj.weight", "attn_v.weight"),
            mat(spec.kv_heads * head_dim, spec.hidden)?,
        ));
        t.push((
            l("self_attn.o_proj.weight", "attn_output.weight"),
            mat(spec.hidden, spec.heads * head_dim)?,
        ));
        t.push((
            l("mlp.gate_proj.weight", "ffn_gate.weight"),
            mat(ffn, spec.hidden)?,
        ));
        t.push((
            l("mlp.up_proj.weight", "ffn_up.weight"),
            mat(ffn, spec.hidden)?,
        ));
        t.push((
            l("mlp.down_proj.weight", "ffn_down.weight"),
            mat(spec.hidden, ffn)?,
        ));
        t.push((
            l("input_layernorm.weight", "attn_norm.weight"),
            ones(spec.hidden)?,
        ));
        t.push((
            l("post_attention_layernorm.weight", "ffn_norm.weight"),
            ones(spec.hidden)?,
        ));
    }
    t.push((
        name("model.norm.weight", "output_norm.weight"),
        ones(spec.hidden)?,
    ));
    // Output rows of the special tokens are zero: their logit is 0 while some of the ~300
    // random logits is positive, so greedy decoding never ends a sequence by itself and tests
    // control length with max_new_tokens.
    let mut out = mat(vocab, spec.hidden)?;
    let zero = Tensor::zeros(
        (SPECIALS.len(), spec.hidden),
        candle_core::DType::F32,
        &Device::Cpu,
    )?;
    out = Tensor::cat(
        &[
            &zero,
            &out.narrow(0, SPECIALS.len(), vocab - SPECIALS.len())?,
        ],
        0,
    )?;
    if spec.output_scale != 1.0 {
        out = out.affine(f64::from(spec.output_scale), 0.0)?;
    }
    t.push((name("lm_head.weight", "output.weight"), out));
    Ok(Weights { tensors: t })
}

/// Writes a Hugging Face model directory (`config.json`, `model.safetensors`,
/// `tokenizer.json`) under `dir` and returns its path.
pub fn write_hf_dir(dir: &Path, spec: &TinySpec) -> Result<PathBuf> {
    let io = |e: std::io::Error| JudgeError::ModelLoad {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let path = dir.join("tiny-hf");
    std::fs::create_dir_all(&path).map_err(io)?;
    let tok = tiny_tokenizer()?;
    let vocab = tok.get_vocab_size(true);
    tok.save(path.join("tokenizer.json"), false)
        .map_err(|e| JudgeError::Tokenizer(e.to_string()))?;
    let config = serde_json::json!({
        "hidden_size": spec.hidden, "intermediate_size": spec.hidden * 2, "vocab_size": vocab,
        "num_hidden_layers": spec.layers, "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "bos_token_id": 0, "eos_token_id": 0, "max_position_embeddings": spec.context,
        "tie_word_embeddings": false,
    });
    std::fs::write(path.join("config.json"), config.to_string()).map_err(io)?;
    let w = random_weights(spec, vocab, false)?;
    let map: HashMap<String, Tensor> = w.tensors.into_iter().collect();
    candle_core::safetensors::save(&map, path.join("model.safetensors"))?;
    Ok(path)
}

/// Writes a GGUF file (f32 tensors, `gpt2` tokenizer metadata with the `smollm`
/// pre-tokenizer, a ChatML chat template) under `dir` and returns its path.
pub fn write_gguf(dir: &Path, spec: &TinySpec) -> Result<PathBuf> {
    write_gguf_as(dir, spec, GgmlDType::F32)
}

/// Like [`write_gguf`], with the projection matrices quantized to `dtype` and, when that is
/// not f32, the embedding table in Q8_0 (the layout of the default model file).
pub fn write_gguf_as(dir: &Path, spec: &TinySpec, dtype: GgmlDType) -> Result<PathBuf> {
    write_gguf_mix(dir, spec, |name| {
        if dtype == GgmlDType::F32 {
            GgmlDType::F32
        } else if name == "token_embd.weight" {
            GgmlDType::Q8_0
        } else {
            dtype
        }
    })
}

/// llama.cpp's Q4_K_M mix for a model whose width is a multiple of 256: Q6_K for the
/// output matrix and for `attn_v` / `ffn_down` in the first layer (llama.cpp picks about
/// half of the layers), Q4_K for everything else, the embedding included.
pub fn q4_k_m(name: &str) -> GgmlDType {
    let six = name == "output.weight"
        || (name.starts_with("blk.0.") && (name.contains("attn_v") || name.contains("ffn_down")));
    if six {
        GgmlDType::Q6K
    } else {
        GgmlDType::Q4K
    }
}

/// Like [`write_gguf`], each matrix (and the embedding table) stored as `type_of(name)`
/// says; vectors stay f32.
pub fn write_gguf_mix(
    dir: &Path,
    spec: &TinySpec,
    type_of: impl Fn(&str) -> GgmlDType,
) -> Result<PathBuf> {
    let path = dir.join("tiny.gguf");
    let tokens = tiny_tokens();
    let vocab = tokens.len();
    let w = random_weights(spec, vocab, true)?;
    let qtensors = w
        .tensors
        .iter()
        .map(|(n, t)| {
            let ty = if t.rank() != 2 {
                GgmlDType::F32
            } else {
                type_of(n)
            };
            Ok((n.clone(), QTensor::quantize(t, ty)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let types: Vec<Value> = (0..vocab)
        .map(|i| Value::I32(if i < SPECIALS.len() { 3 } else { 1 }))
        .collect();
    let strs = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let u32v = |x: usize| Value::U32(x as u32);
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("tiny".into())),
        ("llama.context_length", u32v(spec.context)),
        ("llama.embedding_length", u32v(spec.hidden)),
        ("llama.block_count", u32v(spec.layers)),
        ("llama.feed_forward_length", u32v(spec.hidden * 2)),
        ("llama.attention.head_count", u32v(spec.heads)),
        ("llama.attention.head_count_kv", u32v(spec.kv_heads)),
        ("llama.rope.dimension_count", u32v(spec.hidden / spec.heads)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strs(tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        (
            "tokenizer.ggml.merges",
            strs(MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(0)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        (
            "tokenizer.chat_template",
            Value::String(CHATML_TEMPLATE.into()),
        ),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut f = std::fs::File::create(&path).map_err(|e| JudgeError::ModelLoad {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    gguf_file::write(&mut f, &md_refs, &t_refs)?;
    Ok(path)
}
