//! One tiny random LLaMA written in each published checkpoint layout (safetensors shards,
//! PyTorch `.bin` shards, GPTQ 4-bit), with a LLaMA-style vocabulary ([`super::spm`]) and
//! embedding rows past the tokenizer as Auto-J 13B has them, so tests can check that every
//! layout loads to the same model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use half::f16;

use super::{random_weights, spm::spm_tokenizer, torch_writer, TinySpec};
use crate::error::{JudgeError, Result};

/// How a test checkpoint lies on disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// `model-0000K-of-0000N.safetensors` with `model.safetensors.index.json` (one
    /// `model.safetensors` when `shards` is 1), tensors stored as `dtype`.
    Safetensors {
        /// Files.
        shards: usize,
        /// Stored type.
        dtype: DType,
    },
    /// `pytorch_model-0000K-of-0000N.bin` with `pytorch_model.bin.index.json` (one
    /// `pytorch_model.bin` when `shards` is 1), as `torch.save` writes them.
    PyTorch {
        /// Files.
        shards: usize,
        /// Stored type.
        dtype: DType,
    },
    /// GPTQ 4-bit linear layers packed as AutoGPTQ packs them, in `model.safetensors` with
    /// `quantize_config.json`; everything else f16.
    Gptq {
        /// Inputs per group.
        group_size: usize,
        /// Groups in a permuted input order (as activation order leaves them).
        desc_act: bool,
    },
}

/// Embedding and output rows past the tokenizer's ids (Auto-J 13B: 32,128 rows, 32,000
/// pieces). Their output rows are large, so a loader that let them be sampled would pick
/// them.
pub const PADDING_ROWS: usize = 2;

fn io(path: &Path, e: impl std::fmt::Display) -> JudgeError {
    JudgeError::ModelLoad {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The tiny model's tensors (Hugging Face names, f32) with `padding` rows appended.
pub fn padded_weights(
    spec: &TinySpec,
    tokens: usize,
    padding: usize,
) -> Result<Vec<(String, Tensor)>> {
    let mut w = random_weights(spec, tokens, false)?.tensors;
    if padding == 0 {
        return Ok(w);
    }
    for (name, t) in w.iter_mut() {
        if name == "model.embed_tokens.weight" {
            let pad = Tensor::ones((PADDING_ROWS, spec.hidden), DType::F32, &Device::Cpu)?;
            *t = Tensor::cat(&[&*t, &(pad * 0.01)?], 0)?;
        } else if name == "lm_head.weight" {
            // A row and its negation: whatever the hidden state, one of them scores high.
            let r = t.narrow(0, 3, 1)?.affine(50.0, 0.0)?;
            *t = Tensor::cat(&[&*t, &r, &r.neg()?], 0)?;
        }
    }
    Ok(w)
}

/// Writes the tiny model in `layout` under `dir/name`, with [`PADDING_ROWS`] rows past the
/// tokenizer, and returns the directory.
pub fn write_layout(dir: &Path, name: &str, spec: &TinySpec, layout: Layout) -> Result<PathBuf> {
    write_layout_padded(dir, name, spec, layout, PADDING_ROWS)
}

/// [`write_layout`] with `padding` rows past the tokenizer (0: none); the other weights
/// are the same whatever the padding.
pub fn write_layout_padded(
    dir: &Path,
    name: &str,
    spec: &TinySpec,
    layout: Layout,
    padding: usize,
) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).map_err(|e| io(&path, e))?;
    let tok = spm_tokenizer()?;
    let tokens = tok.get_vocab_size(true);
    tok.save(path.join("tokenizer.json"), false)
        .map_err(|e| JudgeError::Tokenizer(e.to_string()))?;
    let weights = padded_weights(spec, tokens, padding)?;
    let mut config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": spec.hidden, "intermediate_size": spec.hidden * 2,
        "vocab_size": tokens + padding, "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads, "num_key_value_heads": spec.kv_heads,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
        "max_position_embeddings": spec.context, "tie_word_embeddings": false,
    });
    match layout {
        Layout::Safetensors { shards, dtype } => {
            write_shards(&path, &weights, shards, dtype, false)?
        }
        Layout::PyTorch { shards, dtype } => write_shards(&path, &weights, shards, dtype, true)?,
        Layout::Gptq {
            group_size,
            desc_act,
        } => {
            let q = serde_json::json!({
                "bits": 4, "group_size": group_size, "desc_act": desc_act, "sym": false,
                "true_sequential": true, "quant_method": "gptq",
            });
            config["quantization_config"] = q.clone();
            write_json(&path.join("quantize_config.json"), &q)?;
            let packed = gptq_pack(&weights, group_size, desc_act)?;
            candle_core::safetensors::save(&packed, path.join("model.safetensors"))?;
        }
    }
    write_json(&path.join("config.json"), &config)?;
    Ok(path)
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap_or_default())
        .map_err(|e| io(path, e))
}

/// Splits the tensors into `shards` runs in order and writes each file plus the index.
fn write_shards(
    dir: &Path,
    weights: &[(String, Tensor)],
    shards: usize,
    dtype: DType,
    torch: bool,
) -> Result<()> {
    let (stem, ext, index) = if torch {
        ("pytorch_model", "bin", "pytorch_model.bin.index.json")
    } else {
        ("model", "safetensors", "model.safetensors.index.json")
    };
    let per = weights.len().div_ceil(shards.max(1));
    let mut map = serde_json::Map::new();
    for (k, chunk) in weights.chunks(per).enumerate() {
        let file = if shards == 1 {
            format!("{stem}.{ext}")
        } else {
            format!("{stem}-{:05}-of-{shards:05}.{ext}", k + 1)
        };
        let cast: Vec<(String, Tensor)> = chunk
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.to_dtype(dtype)?)))
            .collect::<Result<_>>()?;
        for (n, _) in &cast {
            map.insert(n.clone(), serde_json::Value::String(file.clone()));
        }
        if torch {
            torch_writer::save(&dir.join(&file), &cast)?;
        } else {
            let m: HashMap<String, Tensor> = cast.into_iter().collect();
            candle_core::safetensors::save(&m, dir.join(&file))?;
        }
    }
    if shards > 1 {
        let idx = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": map });
        write_json(&dir.join(index), &idx)?;
    }
    Ok(())
}

/// The group of each input: `i / group_size`, or, in activation order, groups handed out
/// along a permutation of the inputs (every third input first, then the rest).
fn group_index(inputs: usize, group_size: usize, desc_act: bool) -> Vec<u32> {
    let order: Vec<usize> = if desc_act {
        (0..3).flat_map(|r| (r..inputs).step_by(3)).collect()
    } else {
        (0..inputs).collect()
    };
    let mut g = vec![0u32; inputs];
    for (k, &i) in order.iter().enumerate() {
        g[i] = (k / group_size) as u32;
    }
    g
}

/// Every `*_proj.weight` of `weights` quantized to 4 bits per group (asymmetric, zero
/// points 1..=15 so AutoGPTQ's stored `zero - 1` never wraps) and packed as AutoGPTQ packs
/// it; other tensors as f16.
pub fn gptq_pack(
    weights: &[(String, Tensor)],
    group_size: usize,
    desc_act: bool,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, t) in weights {
        let Some(base) = name
            .strip_suffix(".weight")
            .filter(|b| b.ends_with("_proj"))
        else {
            out.insert(name.clone(), t.to_dtype(DType::F16)?);
            continue;
        };
        let (rows, cols) = t.dims2()?;
        let w = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let g_idx = group_index(cols, group_size, desc_act);
        let groups = cols.div_ceil(group_size);
        let mut scales = vec![f16::ZERO; groups * rows];
        let mut zeros = vec![0u8; groups * rows];
        let mut q = vec![0u8; rows * cols];
        for j in 0..rows {
            for g in 0..groups {
                let members = (0..cols).filter(|&i| g_idx[i] as usize == g);
                let (lo, hi) = members.fold((0f32, 0f32), |(lo, hi), i| {
                    (lo.min(w[j * cols + i]), hi.max(w[j * cols + i]))
                });
                let s = f16::from_f32(((hi - lo) / 15.0).max(1e-6));
                let z = (-lo / s.to_f32()).round().clamp(1.0, 15.0) as u8;
                scales[g * rows + j] = s;
                zeros[g * rows + j] = z;
            }
            for i in 0..cols {
                let g = g_idx[i] as usize * rows + j;
                let v = (w[j * cols + i] / scales[g].to_f32()).round() + f32::from(zeros[g]);
                q[j * cols + i] = v.clamp(0.0, 15.0) as u8;
            }
        }
        let mut qweight = vec![0u32; cols / 8 * rows];
        for i in 0..cols {
            for j in 0..rows {
                qweight[(i / 8) * rows + j] |= u32::from(q[j * cols + i]) << (4 * (i % 8));
            }
        }
        let zcols = rows.div_ceil(8);
        let mut qzeros = vec![0u32; groups * zcols];
        for g in 0..groups {
            for j in 0..rows {
                qzeros[g * zcols + j / 8] |= u32::from(zeros[g * rows + j] - 1) << (4 * (j % 8));
            }
        }
        let dev = &Device::Cpu;
        let i32s = |v: Vec<u32>| v.into_iter().map(|x| x as i32).collect::<Vec<i32>>();
        let g32: Vec<i32> = g_idx.iter().map(|&g| g as i32).collect();
        out.insert(
            format!("{base}.qweight"),
            Tensor::from_vec(i32s(qweight), (cols / 8, rows), dev)?,
        );
        out.insert(
            format!("{base}.qzeros"),
            Tensor::from_vec(i32s(qzeros), (groups, zcols), dev)?,
        );
        out.insert(
            format!("{base}.scales"),
            Tensor::from_vec(scales, (groups, rows), dev)?,
        );
        out.insert(format!("{base}.g_idx"), Tensor::from_vec(g32, cols, dev)?);
    }
    Ok(out)
}
