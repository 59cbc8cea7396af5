//! `autoj quantize`: a model directory (any layout [`Checkpoint`] reads) written as a GGUF
//! file llama.cpp and our loaders read, quantized with llama.cpp's per-tensor mix, one
//! tensor at a time (read, converted, quantized, written, dropped).
//!
//! Names follow llama.cpp's converter (`blk.N.attn_q.weight`, ...), with the query and key
//! rows reordered from the Hugging Face rotary layout (two halves) to GGUF's (interleaved
//! pairs), and the tokenizer written as a `llama` (SentencePiece) vocabulary.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};

use super::gguf_out::{GgufOut, PlannedTensor};
use super::gptq::{self, GptqLinear, PARTS};
use super::quantize::{quantize_matrix, tensor_type, QuantType, Role};
use super::vocab;
use super::Checkpoint;
use crate::engine::model::read_chat_template;
use crate::engine::sentencepiece::SpmVocab;
use crate::error::{load_err, Result};

/// Tensors read ahead of the quantizer (each at most the embedding table in its stored
/// type).
const READ_AHEAD: usize = 1;

/// What a quantization run did, for the command's report.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of the written file.
    pub bytes: u64,
    /// Tensors per block type.
    pub types: std::collections::BTreeMap<String, usize>,
}

/// A Hugging Face tensor name in llama.cpp's scheme; `None` for tensors a LLaMA GGUF has
/// no place for (rotary caches some checkpoints carry).
pub fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let part = match part {
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{part}"))
}

/// Rows of a query or key matrix reordered from the two-halves rotary layout to
/// interleaved pairs, head by head (what llama.cpp's converter does).
fn interleave_rotary(t: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    let hd = rows / heads;
    Ok(t.reshape((heads, 2, hd / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// The tensors the file will hold: each weight's GGUF name, shape and type (GPTQ layers
/// planned as their dense `.weight`).
fn plan(ck: &Checkpoint, q: QuantType) -> Result<Vec<(String, PlannedTensor)>> {
    let layers = ck.config.num_hidden_layers;
    let mut out = Vec::new();
    for (hf, dims) in ck.shapes()? {
        let (hf, dims) = match hf.strip_suffix(".qweight") {
            // qweight is [in / 8, out]: the layer is [out, in].
            Some(base) => (format!("{base}.weight"), vec![dims[1], dims[0] * 8]),
            None if gptq::is_part(&hf) => continue,
            None => (hf, dims),
        };
        let Some(name) = gguf_name(&hf) else { continue };
        let dtype = match (Role::of_hf(&hf), dims.as_slice()) {
            (Some(role), [_, cols]) => tensor_type(q, role, layers, *cols),
            _ => GgmlDType::F32,
        };
        out.push((hf, PlannedTensor { name, dims, dtype }));
    }
    if !out.iter().any(|(hf, _)| hf == "lm_head.weight") {
        // Tied output: llama.cpp reads the embedding as the output; nothing to add.
        tracing::info!("no lm_head.weight: the output shares the embedding table");
    }
    Ok(out)
}

/// The GGUF metadata of a LLaMA-family checkpoint with its vocabulary.
fn metadata(
    ck: &Checkpoint,
    q: QuantType,
    (vocab, add_bos): (&SpmVocab, bool),
    ffn: usize,
) -> Vec<(String, Value)> {
    let c = &ck.config;
    let u = |x: usize| Value::U32(x as u32);
    let name = ck
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut md = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String(name)),
        ("general.file_type", Value::U32(q.file_type())),
        ("general.quantization_version", Value::U32(2)),
        ("llama.context_length", u(c.max_position_embeddings)),
        ("llama.embedding_length", u(c.hidden_size)),
        ("llama.block_count", u(c.num_hidden_layers)),
        ("llama.feed_forward_length", u(ffn)),
        ("llama.attention.head_count", u(c.num_attention_heads)),
        ("llama.attention.head_count_kv", u(c.kv_heads())),
        (
            "llama.rope.dimension_count",
            u(c.hidden_size / c.num_attention_heads),
        ),
        (
            "llama.rope.freq_base",
            Value::F32(c.rope_theta.unwrap_or(10_000.0)),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(c.rms_norm_eps as f32),
        ),
        ("llama.vocab_size", u(vocab.pieces.len())),
    ];
    md.extend(vocab::metadata(vocab, add_bos));
    let mut md: Vec<(String, Value)> = md.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    if let Some(t) = read_chat_template(&ck.dir) {
        md.push(("tokenizer.chat_template".into(), Value::String(t)));
    }
    md
}

/// Writes `dir` as a GGUF file of type `q` at `out`; `progress(done, total)` after each
/// tensor.
pub fn quantize_to_gguf(
    dir: &Path,
    q: QuantType,
    out: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<ExportReport> {
    let ck = Checkpoint::open(dir)?;
    let planned = plan(&ck, q)?;
    let rows = planned
        .iter()
        .find(|(hf, _)| hf == "model.embed_tokens.weight")
        .map(|(_, p)| p.dims[0])
        .ok_or_else(|| load_err(dir, "tensor `model.embed_tokens.weight` is missing"))?;
    let ffn = planned
        .iter()
        .find(|(hf, _)| hf.ends_with("mlp.down_proj.weight"))
        .map_or(0, |(_, p)| p.dims[1]);
    let (vocab, add_bos) = vocab::read(dir, rows, &ck.config)?;
    let md = metadata(&ck, q, (&vocab, add_bos), ffn);
    let index: HashMap<String, usize> = planned
        .iter()
        .enumerate()
        .map(|(i, (hf, _))| (hf.clone(), i))
        .collect();
    let tensors: Vec<PlannedTensor> = planned.iter().map(|(_, p)| p.clone()).collect();
    let mut file = GgufOut::create(out, &md, &tensors)?;
    let (heads, kv_heads) = (ck.config.num_attention_heads, ck.config.kv_heads());
    let mut gptq_parts: HashMap<String, Tensor> = HashMap::new();
    let mut done = 0;
    let mut put = |hf: &str, t: Tensor, file: &mut GgufOut| -> Result<()> {
        let Some(&i) = index.get(hf) else {
            return Ok(());
        };
        let mut t = t.to_dtype(DType::F32)?;
        if hf.ends_with("q_proj.weight") {
            t = interleave_rotary(&t, heads)?;
        } else if hf.ends_with("k_proj.weight") {
            t = interleave_rotary(&t, kv_heads)?;
        }
        let p = &tensors[i];
        let bytes = match p.dtype {
            GgmlDType::F32 => t
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            dt => quantize_matrix(&t, dt)?.data()?.into_owned(),
        };
        file.write(i, &bytes)?;
        done += 1;
        progress(done, tensors.len());
        Ok(())
    };
    ck.stream_ahead(READ_AHEAD, |name, t| {
        let Some(cfg) = ck.gptq.as_ref().filter(|_| gptq::is_part(&name)) else {
            return put(&name, t, &mut file);
        };
        let base = name
            .rsplit_once('.')
            .map(|(b, _)| b.to_string())
            .unwrap_or_default();
        gptq_parts.insert(name, t);
        if PARTS
            .iter()
            .all(|p| gptq_parts.contains_key(&format!("{base}.{p}")))
        {
            let l = GptqLinear::take(&mut gptq_parts, &base, cfg, dir)?
                .ok_or_else(|| load_err(dir, format!("GPTQ layer `{base}`")))?;
            let w = Tensor::from_vec(l.dequantize(), (l.out, l.inp), &Device::Cpu)?;
            put(&format!("{base}.weight"), w, &mut file)?;
        }
        Ok(())
    })?;
    if let Some(left) = gptq_parts.keys().next() {
        return Err(load_err(
            dir,
            format!("GPTQ tensor `{left}`: its layer is incomplete"),
        ));
    }
    let mut types = std::collections::BTreeMap::new();
    for t in &tensors {
        *types.entry(format!("{:?}", t.dtype)).or_insert(0) += 1;
    }
    file.finish()?;
    let bytes = std::fs::metadata(out).map_err(|e| load_err(out, e))?.len();
    Ok(ExportReport {
        tensors: tensors.len(),
        bytes,
        types,
    })
}
