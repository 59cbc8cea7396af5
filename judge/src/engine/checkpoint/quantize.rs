//! Which block type each tensor of a checkpoint gets when it is quantized (at load with
//! `--quantize`, or into a GGUF file by `autoj quantize`): llama.cpp's per-tensor mix for
//! the `_m` K-quant types, so a file of ours holds the same types as one of llama-quantize.

use std::fmt;
use std::str::FromStr;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::kquant;
use crate::error::Result;

/// The quantization a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    /// Q4_K with Q6_K for the output and half of the value and down projections.
    Q4KM,
    /// Q5_K with Q6_K for the output and half of the value and down projections.
    Q5KM,
    /// Q8_0 everywhere.
    Q8_0,
    /// Q4_1, with a Q6_K output.
    Q4_1,
}

impl QuantType {
    /// Every type, for help text and errors.
    pub const ALL: [QuantType; 4] = [Self::Q4KM, Self::Q5KM, Self::Q8_0, Self::Q4_1];

    /// The name users type (and llama.cpp's file-name suffix, lower case).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4KM => "q4_k_m",
            Self::Q5KM => "q5_k_m",
            Self::Q8_0 => "q8_0",
            Self::Q4_1 => "q4_1",
        }
    }

    /// llama.cpp's `general.file_type` number for this mix.
    pub fn file_type(self) -> u32 {
        match self {
            Self::Q4_1 => 3,
            Self::Q8_0 => 7,
            Self::Q4KM => 15,
            Self::Q5KM => 17,
        }
    }

    fn base(self) -> GgmlDType {
        match self {
            Self::Q4KM => GgmlDType::Q4K,
            Self::Q5KM => GgmlDType::Q5K,
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_1 => GgmlDType::Q4_1,
        }
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|t| t.name()).collect();
                format!("unknown quantization `{s}` (one of: {})", names.join(", "))
            })
    }
}

/// What a tensor is, for the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The token embedding table.
    Embedding,
    /// The output (vocabulary) projection.
    Output,
    /// Layer `i`'s value projection.
    AttnV(usize),
    /// Layer `i`'s feed-forward down projection.
    FfnDown(usize),
    /// Any other matrix of a layer (Q, K, attention output, gate, up).
    Matrix,
}

impl Role {
    /// The role of a Hugging Face LLaMA tensor by name; `None` for what stays in floats
    /// (norms, biases).
    pub fn of_hf(name: &str) -> Option<Self> {
        if name == "model.embed_tokens.weight" {
            return Some(Self::Embedding);
        }
        if name == "lm_head.weight" {
            return Some(Self::Output);
        }
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        match part {
            "self_attn.v_proj.weight" => Some(Self::AttnV(layer)),
            "mlp.down_proj.weight" => Some(Self::FfnDown(layer)),
            p if p.ends_with("_proj.weight") => Some(Self::Matrix),
            _ => None,
        }
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third
/// layer between, get the larger type.
fn more_bits(layer: usize, layers: usize) -> bool {
    layer < layers / 8 || layer >= 7 * layers / 8 || (layer.wrapping_sub(layers / 8)) % 3 == 2
}

/// The block type for a tensor of `role` with rows of `cols` values, in a model of
/// `layers` layers.
pub fn tensor_type(q: QuantType, role: Role, layers: usize, cols: usize) -> GgmlDType {
    let m = matches!(q, QuantType::Q4KM | QuantType::Q5KM);
    let t = match role {
        Role::Output if q != QuantType::Q8_0 => GgmlDType::Q6K,
        Role::AttnV(i) | Role::FfnDown(i) if m && more_bits(i, layers) => GgmlDType::Q6K,
        _ => q.base(),
    };
    fallback(t, cols)
}

/// A row that is not whole 256-value super-blocks cannot be a K-quant: llama.cpp's
/// replacements, and f16 where even 32-value blocks do not fit.
fn fallback(t: GgmlDType, cols: usize) -> GgmlDType {
    let t = match t {
        GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K if !cols.is_multiple_of(256) => match t {
            GgmlDType::Q4K => GgmlDType::Q5_0,
            GgmlDType::Q5K => GgmlDType::Q5_1,
            _ => GgmlDType::Q8_0,
        },
        t => t,
    };
    if cols.is_multiple_of(t.block_size()) {
        t
    } else {
        GgmlDType::F16
    }
}

/// A matrix `[rows, cols]` quantized to `dtype` with its rows spread over the thread pool.
/// A row's blocks depend on that row alone, so the bytes are those of one pass over the
/// whole matrix, only sooner. Q4_K, Q5_K and Q6_K blocks come from [`kquant`] (ggml's
/// current weighted scale search, as llama-quantize); the other types from candle's
/// quantizer, which for them is already ggml's reference algorithm.
pub fn quantize_matrix(t: &Tensor, dtype: GgmlDType) -> Result<QTensor> {
    let (rows, cols) = t.dims2()?;
    // Candle's quantizer reads a tensor's storage from its start, whatever its layout: each
    // part is handed over as a tensor of its own.
    let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let chunk = (rows / (rayon::current_num_threads() * 8)).clamp(1, 256);
    let parts = data
        .par_chunks(chunk * cols.max(1))
        .map(|part| {
            if let Some(bytes) = kquant::quantize(part, dtype) {
                return Ok(bytes);
            }
            let part = Tensor::from_slice(part, (part.len() / cols.max(1), cols), &Device::Cpu)?;
            Ok(QTensor::quantize(&part, dtype)?.data()?.into_owned())
        })
        .collect::<Result<Vec<Vec<u8>>>>()?;
    Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
        dtype,
        &parts.concat(),
        vec![rows, cols],
        &Device::Cpu,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_follows_llama_cpp_on_a_40_layer_model() {
        let v: Vec<bool> = (0..40)
            .map(|i| tensor_type(QuantType::Q4KM, Role::AttnV(i), 40, 5120) == GgmlDType::Q6K)
            .collect();
        // First 5 and last 5 layers, and layers 7, 10, ... between.
        let want: Vec<bool> = (0..40)
            .map(|i| !(5..35).contains(&i) || (i - 5) % 3 == 2)
            .collect();
        assert_eq!(v, want);
        assert_eq!(v.iter().filter(|&&b| b).count(), 20);
        use GgmlDType::*;
        use QuantType::*;
        // (type, role, columns) -> block type; 128 columns are not whole super-blocks.
        for (q, role, cols, want) in [
            (Q4KM, Role::Output, 5120, Q6K),
            (Q4KM, Role::Matrix, 5120, Q4K),
            (Q4KM, Role::Embedding, 5120, Q4K),
            (QuantType::Q8_0, Role::Output, 5120, GgmlDType::Q8_0),
            (QuantType::Q4_1, Role::Output, 5120, Q6K),
            (Q4KM, Role::Matrix, 128, Q5_0),
            (Q5KM, Role::Matrix, 128, Q5_1),
            (Q4KM, Role::Output, 128, GgmlDType::Q8_0),
            (QuantType::Q8_0, Role::Matrix, 48, F16),
        ] {
            assert_eq!(tensor_type(q, role, 40, cols), want, "{q} {role:?} {cols}");
        }
    }

    #[test]
    fn quantizing_rows_in_parallel_gives_the_bytes_of_one_pass() {
        let data: Vec<f32> = (0..300 * 256)
            .map(|i| ((i * 7919) % 1000) as f32 / 300.0 - 1.5)
            .collect();
        let t = Tensor::from_slice(&data, (300, 256), &Device::Cpu).unwrap();
        for dtype in [
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
            GgmlDType::Q8_0,
            GgmlDType::Q4_1,
        ] {
            let one = kquant::quantize(&data, dtype).unwrap_or_else(|| {
                let q = QTensor::quantize(&t, dtype).unwrap();
                q.data().unwrap().into_owned()
            });
            let rows = quantize_matrix(&t, dtype).unwrap();
            assert_eq!(rows.shape().dims(), &[300, 256]);
            assert_eq!(rows.data().unwrap().into_owned(), one, "{dtype:?}");
        }
    }

    #[test]
    fn names_parse_and_roles_follow_hf_names() {
        assert_eq!("Q4_K_M".parse::<QuantType>(), Ok(QuantType::Q4KM));
        assert!("q3".parse::<QuantType>().unwrap_err().contains("q4_k_m"));
        assert_eq!(
            Role::of_hf("model.layers.3.self_attn.v_proj.weight"),
            Some(Role::AttnV(3))
        );
        assert_eq!(
            Role::of_hf("model.layers.3.mlp.down_proj.weight"),
            Some(Role::FfnDown(3))
        );
        assert_eq!(
            Role::of_hf("model.layers.3.mlp.up_proj.weight"),
            Some(Role::Matrix)
        );
        assert_eq!(Role::of_hf("model.layers.3.input_layernorm.weight"), None);
        assert_eq!(Role::of_hf("lm_head.weight"), Some(Role::Output));
    }
}
