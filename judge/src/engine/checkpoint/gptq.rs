//! GPTQ 4-bit linear layers as AutoGPTQ packs them (GAIR/autoj-13b-GPTQ-4bits):
//!
//! - `qweight` int32 `[in / 8, out]`: eight 4-bit weights of consecutive inputs per word,
//!   the first input in the lowest nibble;
//! - `qzeros` int32 `[groups, out / 8]`: eight outputs' zero points per word, stored less
//!   one in the original `gptq` checkpoint format (as is in `gptq_v2`);
//! - `scales` f16 `[groups, out]`; `g_idx` int32 `[in]`: the group of each input (not
//!   `i / group_size` when the layer was quantized in activation order, `desc_act`).
//!
//! The weight of output `j`, input `i` is `scales[g][j] * (q[i][j] - zero[g][j])` with
//! `g = g_idx[i]`. A layer unpacks to floats (the device backend, at load) or, where every
//! run of 32 inputs shares a group, repacks exactly into Q4_1 blocks (`d = scale`,
//! `m = -scale * zero`) that the CPU kernels run.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use half::f16;
use rayon::prelude::*;

use crate::error::{load_err, Result};

/// The quantization of a GPTQ checkpoint (`quantize_config.json`, or `quantization_config`
/// in `config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct GptqConfig {
    /// Bits per weight (4 is the only width read).
    pub bits: u32,
    /// Inputs per group (`-1`: one group per row).
    pub group_size: i64,
    /// Quantized in activation order (groups follow `g_idx`, not the input order).
    pub desc_act: bool,
    /// What is added to a stored zero point: 1 in the `gptq` format, 0 in `gptq_v2`.
    pub zero_offset: u8,
}

#[derive(serde::Deserialize)]
struct RawConfig {
    bits: u32,
    group_size: i64,
    #[serde(default)]
    desc_act: bool,
    #[serde(default)]
    quant_method: Option<String>,
    #[serde(default)]
    checkpoint_format: Option<String>,
}

impl GptqConfig {
    /// The GPTQ settings of `dir`, if it is a GPTQ checkpoint; an error when it declares a
    /// quantization this reader does not take.
    pub(crate) fn read(dir: &Path, in_config: Option<&serde_json::Value>) -> Result<Option<Self>> {
        let file = dir.join("quantize_config.json");
        let raw: RawConfig = if file.is_file() {
            let bytes = std::fs::read(&file).map_err(|e| load_err(&file, e))?;
            serde_json::from_slice(&bytes).map_err(|e| load_err(&file, e))?
        } else if let Some(v) = in_config {
            let path = dir.join("config.json");
            let method = v.get("quant_method").and_then(|m| m.as_str());
            if method != Some("gptq") {
                return Err(load_err(
                    &path,
                    format!(
                        "quantization_config.quant_method {method:?} is not supported (GPTQ 4-bit \
                         and unquantized checkpoints are)"
                    ),
                ));
            }
            serde_json::from_value(v.clone()).map_err(|e| load_err(&path, e))?
        } else {
            return Ok(None);
        };
        if raw.quant_method.as_deref().is_some_and(|m| m != "gptq") {
            return Err(load_err(
                dir,
                "only GPTQ quantized checkpoints are supported",
            ));
        }
        if raw.bits != 4 {
            return Err(load_err(
                dir,
                format!("GPTQ with {} bits is not supported (4 bits is)", raw.bits),
            ));
        }
        if raw.group_size == 0 || raw.group_size < -1 {
            return Err(load_err(dir, format!("GPTQ group_size {}", raw.group_size)));
        }
        let zero_offset = match raw.checkpoint_format.as_deref() {
            None | Some("gptq") => 1,
            Some("gptq_v2") => 0,
            Some(other) => {
                return Err(load_err(dir, format!("GPTQ checkpoint_format `{other}`")));
            }
        };
        Ok(Some(Self {
            bits: raw.bits,
            group_size: raw.group_size,
            desc_act: raw.desc_act,
            zero_offset,
        }))
    }
}

/// One GPTQ linear layer, unpacked for fast reading: weights transposed to one row of
/// packed words per output.
pub struct GptqLinear {
    /// Outputs (rows of the weight).
    pub out: usize,
    /// Inputs (columns of the weight).
    pub inp: usize,
    /// `[out, in / 8]`: output `j`'s inputs, eight to a word.
    words: Vec<u32>,
    /// `[groups, out]`: zero points with the format's offset added.
    zeros: Vec<u8>,
    /// `[groups, out]`.
    scales: Vec<f32>,
    /// `[in]`: the group of each input.
    g_idx: Vec<u32>,
}

/// The parts of a GPTQ layer, by suffix.
pub const PARTS: [&str; 4] = ["qweight", "qzeros", "scales", "g_idx"];

fn vec_u32(t: &Tensor) -> Result<Vec<u32>> {
    // int32 on disk: the bits are what matter (packed nibbles, small indices).
    Ok(t.flatten_all()?
        .to_dtype(DType::I64)?
        .to_vec1::<i64>()?
        .into_iter()
        .map(|v| v as u32)
        .collect())
}

/// Whether `name` is one of the packed parts of a GPTQ layer.
pub fn is_part(name: &str) -> bool {
    PARTS
        .iter()
        .any(|p| name.strip_suffix(p).is_some_and(|b| b.ends_with('.')))
}

/// Every GPTQ layer among `map`'s tensors, taken out with its base name (the layer stands
/// for `{base}.weight`); a packed part left without its `qweight` is an error naming it.
pub fn take_all(
    map: &mut HashMap<String, Tensor>,
    cfg: &GptqConfig,
    file: &Path,
) -> Result<Vec<(String, GptqLinear)>> {
    let bases: Vec<String> = map
        .keys()
        .filter_map(|n| n.strip_suffix(".qweight").map(str::to_string))
        .collect();
    let mut layers = Vec::with_capacity(bases.len());
    for base in bases {
        if let Some(l) = GptqLinear::take(map, &base, cfg, file)? {
            layers.push((base, l));
        }
    }
    if let Some(left) = map.keys().find(|n| is_part(n)) {
        return Err(load_err(
            file,
            format!("GPTQ tensor `{left}` has no qweight"),
        ));
    }
    Ok(layers)
}

impl GptqLinear {
    /// Takes `{base}.qweight`, `.qzeros`, `.scales`, `.g_idx` (and an all-zero `.bias`,
    /// which AutoGPTQ may write) out of `map`; `None` when `base` is not GPTQ-packed.
    pub fn take(
        map: &mut HashMap<String, Tensor>,
        base: &str,
        cfg: &GptqConfig,
        file: &Path,
    ) -> Result<Option<Self>> {
        if !map.contains_key(&format!("{base}.qweight")) {
            return Ok(None);
        }
        let mut part = |p: &str| {
            map.remove(&format!("{base}.{p}"))
                .ok_or_else(|| load_err(file, format!("GPTQ tensor `{base}.{p}` is missing")))
        };
        let [qweight, qzeros, scales] = [part("qweight")?, part("qzeros")?, part("scales")?];
        let g_idx = part("g_idx").ok();
        if let Ok(bias) = part("bias") {
            let nonzero = bias
                .to_dtype(DType::F32)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            if nonzero != 0.0 {
                return Err(load_err(
                    file,
                    format!("`{base}.bias`: linear biases are not supported"),
                ));
            }
        }
        let err = |what: &str| load_err(file, format!("GPTQ layer `{base}`: {what}"));
        let (packed_rows, out) = qweight.dims2()?;
        let inp = packed_rows * 8;
        let groups = scales.dim(0)?;
        if scales.dims2()? != (groups, out) || qzeros.dims2()? != (groups, out.div_ceil(8)) {
            return Err(err("qzeros/scales do not match qweight's shape"));
        }
        let g_idx = match g_idx {
            Some(g) => vec_u32(&g)?,
            None => {
                let size = if cfg.group_size < 0 {
                    inp
                } else {
                    cfg.group_size as usize
                };
                (0..inp).map(|i| (i / size) as u32).collect()
            }
        };
        if g_idx.len() != inp || g_idx.iter().any(|&g| g as usize >= groups) {
            return Err(err("g_idx names groups the layer does not have"));
        }
        let packed = vec_u32(&qweight)?;
        let zw = vec_u32(&qzeros)?;
        let cols = out.div_ceil(8);
        let zeros = (0..groups * out)
            .map(|x| {
                let (g, j) = (x / out, x % out);
                let nib = (zw[g * cols + j / 8] >> (4 * (j % 8))) & 0xf;
                nib as u8 + cfg.zero_offset
            })
            .collect();
        let scales = scales
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Some(Self {
            out,
            inp,
            words: transpose(&packed, packed_rows, out),
            zeros,
            scales,
            g_idx,
        }))
    }

    /// The 4-bit value of output `j`, input `i`.
    fn q(&self, j: usize, i: usize) -> u8 {
        ((self.words[j * (self.inp / 8) + i / 8] >> (4 * (i % 8))) & 0xf) as u8
    }

    /// The weight as floats, `[out, in]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.out * self.inp];
        w.par_chunks_mut(self.inp).enumerate().for_each(|(j, row)| {
            for (i, x) in row.iter_mut().enumerate() {
                let g = self.g_idx[i] as usize * self.out + j;
                *x = self.scales[g] * (f32::from(self.q(j, i)) - f32::from(self.zeros[g]));
            }
        });
        w
    }

    /// The weight as GGML Q4_1 blocks (row by row, 32 inputs a block), exactly the GPTQ
    /// values up to the f16 rounding of each block's scale and offset; `None` when some
    /// block of 32 inputs spans two groups (activation order, or groups not a multiple of
    /// 32), where the caller requantizes the floats instead.
    pub fn to_q4_1(&self) -> Option<Vec<u8>> {
        if !self.inp.is_multiple_of(32) {
            return None;
        }
        let one_group = self
            .g_idx
            .chunks_exact(32)
            .all(|b| b.iter().all(|&g| g == b[0]));
        if !one_group {
            return None;
        }
        const BLOCK: usize = 20;
        let row_bytes = self.inp / 32 * BLOCK;
        let mut out = vec![0u8; self.out * row_bytes];
        out.par_chunks_mut(row_bytes)
            .enumerate()
            .for_each(|(j, row)| {
                for (b, block) in row.chunks_exact_mut(BLOCK).enumerate() {
                    let g = self.g_idx[b * 32] as usize * self.out + j;
                    let (s, z) = (self.scales[g], f32::from(self.zeros[g]));
                    block[0..2].copy_from_slice(&f16::from_f32(s).to_le_bytes());
                    block[2..4].copy_from_slice(&f16::from_f32(-s * z).to_le_bytes());
                    for k in 0..16 {
                        let lo = self.q(j, b * 32 + k);
                        let hi = self.q(j, b * 32 + k + 16);
                        block[4 + k] = lo | (hi << 4);
                    }
                }
            });
        Some(out)
    }
}

/// `[rows, cols]` → `[cols, rows]`, in tiles so both sides are read and written in lines.
fn transpose(m: &[u32], rows: usize, cols: usize) -> Vec<u32> {
    const TILE: usize = 64;
    let mut t = vec![0u32; m.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    t[c * rows + r] = m[r * cols + c];
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Packs `q` (`[in, out]`, values 0..16) and zero points the way AutoGPTQ does.
    fn layer(q: &[Vec<u8>], zeros: &[Vec<u8>], scales: &[Vec<f32>], g_idx: &[u32]) -> GptqLinear {
        let (inp, out, groups) = (q.len(), q[0].len(), zeros.len());
        let mut qweight = vec![0i32; inp / 8 * out];
        for (i, row) in q.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                qweight[(i / 8) * out + j] |= (i32::from(v)) << (4 * (i % 8));
            }
        }
        let mut qzeros = vec![0i32; groups * out.div_ceil(8)];
        for (g, row) in zeros.iter().enumerate() {
            for (j, &z) in row.iter().enumerate() {
                qzeros[g * out.div_ceil(8) + j / 8] |= i32::from(z - 1) << (4 * (j % 8));
            }
        }
        let dev = &Device::Cpu;
        let sc: Vec<f16> = scales.iter().flatten().map(|&s| f16::from_f32(s)).collect();
        let gi: Vec<i32> = g_idx.iter().map(|&g| g as i32).collect();
        let mut map = HashMap::from([
            (
                "l.qweight".to_string(),
                Tensor::from_vec(qweight, (inp / 8, out), dev).unwrap(),
            ),
            (
                "l.qzeros".to_string(),
                Tensor::from_vec(qzeros, (groups, out.div_ceil(8)), dev).unwrap(),
            ),
            (
                "l.scales".to_string(),
                Tensor::from_vec(sc, (groups, out), dev).unwrap(),
            ),
            (
                "l.g_idx".to_string(),
                Tensor::from_vec(gi, inp, dev).unwrap(),
            ),
        ]);
        let cfg = GptqConfig {
            bits: 4,
            group_size: 32,
            desc_act: false,
            zero_offset: 1,
        };
        let l = GptqLinear::take(&mut map, "l", &cfg, Path::new("x"))
            .unwrap()
            .unwrap();
        assert!(map.is_empty(), "every part is taken");
        l
    }

    /// A layer and the values it was packed from: `q`, zero points, scales.
    type Example = (GptqLinear, Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<f32>>);

    fn example(g_idx: Vec<u32>) -> Example {
        let (inp, out, groups) = (64, 16, 2);
        let q: Vec<Vec<u8>> = (0..inp)
            .map(|i| (0..out).map(|j| ((i * 7 + j * 3) % 16) as u8).collect())
            .collect();
        let zeros: Vec<Vec<u8>> = (0..groups)
            .map(|g| (0..out).map(|j| ((g * 5 + j) % 15 + 1) as u8).collect())
            .collect();
        let scales: Vec<Vec<f32>> = (0..groups)
            .map(|g| (0..out).map(|j| 0.01 * (1 + g + j) as f32).collect())
            .collect();
        (layer(&q, &zeros, &scales, &g_idx), q, zeros, scales)
    }

    #[test]
    fn dequantizes_autogptq_packing_with_its_zero_offset() {
        let g_idx: Vec<u32> = (0..64).map(|i| i / 32).collect();
        let (l, q, zeros, scales) = example(g_idx.clone());
        let w = l.dequantize();
        for j in 0..16 {
            for i in 0..64 {
                let g = g_idx[i] as usize;
                let s = f16::from_f32(scales[g][j]).to_f32();
                let want = s * (f32::from(q[i][j]) - f32::from(zeros[g][j]));
                assert_eq!(w[j * 64 + i], want, "output {j} input {i}");
            }
        }
    }

    #[test]
    fn follows_g_idx_in_activation_order_and_then_refuses_q4_1() {
        // Inputs alternate between the two groups, as activation order leaves them.
        let g_idx: Vec<u32> = (0..64).map(|i| i % 2).collect();
        let (l, q, zeros, scales) = example(g_idx);
        let w = l.dequantize();
        let s = f16::from_f32(scales[1][3]).to_f32();
        assert_eq!(
            w[3 * 64 + 5],
            s * (f32::from(q[5][3]) - f32::from(zeros[1][3]))
        );
        assert!(l.to_q4_1().is_none(), "a block spans two groups");
    }

    #[test]
    fn q4_1_blocks_give_the_same_weights() {
        let g_idx: Vec<u32> = (0..64).map(|i| i / 32).collect();
        let (l, ..) = example(g_idx);
        let w = l.dequantize();
        let bytes = l.to_q4_1().unwrap();
        let t = candle_core::quantized::ggml_file::qtensor_from_ggml(
            candle_core::quantized::GgmlDType::Q4_1,
            &bytes,
            vec![16, 64],
            &Device::Cpu,
        )
        .unwrap();
        let back = t
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in w.iter().zip(&back) {
            // The offset -scale * zero is rounded to f16 once per block.
            assert!((a - b).abs() <= 1e-3 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
}
