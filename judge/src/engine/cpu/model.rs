//! Our own LLaMA forward pass for batches of sequences at different positions.
//!
//! candle's stock LLaMA keeps one key/value cache inside the model and one position counter,
//! so it serves one sequence at a time. Here every sequence brings its own cache ([`SeqKv`])
//! and its own position; the tokens of all sequences in a step are packed into one matrix, so
//! each weight matrix is read once per step however many sequences run (the gain of batching
//! on a memory-bound CPU), while attention runs per sequence over that sequence's cache.
//! Each output row is computed the same way whatever else is in the batch, so a greedy
//! request gives the same tokens alone or batched.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::attention::{attend_packed, Geometry};
use super::attention_inputs::KvValue;
use super::embedding::token_err;
pub(super) use super::embedding::Embedding;
use super::kernels::{quantize_q8k, swiglu, KQuant, Q4_1Matrix, Q8_0Matrix, Stored};
use super::kv::{Run, Runs, SeqKv};
use crate::engine::scheduler::{KvType, StepInput, Want};
use crate::error::{JudgeError, Result};

/// How the rotary embedding pairs dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rope {
    /// `(x[2i], x[2i+1])`: GGUF files (llama.cpp's converter permutes the weights).
    Interleaved,
    /// `(x[i], x[i + d/2])`: Hugging Face checkpoints.
    Halves,
}

/// Shapes and constants of the network.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Transformer blocks.
    pub layers: usize,
    /// Residual width.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the output layer).
    pub vocab: usize,
    /// How caches made by [`BatchModel::new_kv`] store keys and values.
    pub kv: KvType,
    pub(super) eps: f32,
    pub(super) rope: Rope,
}

impl Shape {
    /// Bytes of key/value cache one position takes (keys and values, all layers).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.layers * 2 * self.kv.bytes_for(self.kv_heads * self.head_dim)
    }

    /// Sets how new caches store keys and values; refuses a type the heads cannot use.
    pub fn set_kv(&mut self, kind: KvType) -> Result<()> {
        if !kind.fits_head(self.head_dim) {
            return Err(JudgeError::InvalidArgument(format!(
                "--kv-dtype {kind:?} needs heads of a multiple of 32 values; this model's heads \
                 have {} (use f16 or f32)",
                self.head_dim
            )));
        }
        self.kv = kind;
        Ok(())
    }
}

/// A weight matrix `[out, in]` and the kernel that multiplies by it.
pub(super) enum Linear {
    /// Our AVX2 / portable Q4_1 kernel.
    Q4_1(Q4_1Matrix),
    /// Our Q8_0 kernel (shares weight blocks across a batch's rows).
    Q8_0(Q8_0Matrix),
    /// Our Q4_K / Q5_K / Q6_K kernels, over the mapped file's bytes.
    K(KQuant),
    /// candle's quantized or dense kernels (Q8_0, K-quants, f32, ...).
    Candle { w: QMatMul, out: usize },
}

impl Linear {
    pub(super) fn from_qtensor(t: QTensor) -> Result<Self> {
        let (n, k) = t.shape().dims2()?;
        match t.dtype() {
            GgmlDType::Q4_1 => {
                if let Some(m) = Q4_1Matrix::from_bytes(&t.data()?, n, k) {
                    return Ok(Self::Q4_1(m));
                }
            }
            GgmlDType::Q8_0 => {
                if let Some(m) = Q8_0Matrix::from_bytes(&t.data()?, n, k) {
                    return Ok(Self::Q8_0(m));
                }
            }
            dtype if KQuant::takes(dtype) => {
                let bytes = Stored::Owned(t.data()?.into_owned().into());
                if let Some(m) = KQuant::new(dtype, bytes, n, k) {
                    return Ok(Self::K(m.into_lanes()));
                }
            }
            _ => {}
        }
        Ok(Self::Candle {
            w: QMatMul::from_qtensor(t)?,
            out: n,
        })
    }

    /// The kernel that runs this matrix, for [`BatchModel::kernel_census`].
    fn kernel(&self) -> &'static str {
        match self {
            Self::Q4_1(_) => "q4_1",
            Self::Q8_0(_) => "q8_0",
            Self::K(m) => m.name(),
            Self::Candle { .. } => "candle",
        }
    }

    /// Bytes of weights one product reads.
    fn bytes(&self) -> usize {
        match self {
            Self::Q4_1(m) => m.bytes(),
            Self::Q8_0(m) => m.bytes(),
            Self::K(m) => m.bytes(),
            Self::Candle { w, .. } => match w {
                QMatMul::QTensor(t) => t.storage_size_in_bytes(),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => {
                    t.elem_count() * t.dtype().size_in_bytes()
                }
            },
        }
    }

    pub(super) fn dense(t: Tensor) -> Result<Self> {
        let (n, _) = t.dims2()?;
        Ok(Self::Candle {
            w: QMatMul::Tensor(t.to_dtype(DType::F32)?),
            out: n,
        })
    }

    /// Each of `parts` applied to the same `x` (`[m, in]`), the input quantized once where
    /// they are all K-quant matrices (Q, K and V; gate and up of a Q4_K_M file): a prompt
    /// chunk's quantization is a few percent of its products.
    fn forward_each(parts: &[&Linear], x: &[f32], m: usize) -> Result<Vec<Vec<f32>>> {
        let k = x.len() / m.max(1);
        let kquants: Vec<&KQuant> = parts
            .iter()
            .filter_map(|p| match p {
                Self::K(w) if w.columns() == k => Some(w),
                _ => None,
            })
            .collect();
        if parts.len() > 1 && kquants.len() == parts.len() {
            let xq = quantize_q8k(x, m, k);
            return Ok(kquants.iter().map(|w| w.matmul_q8k(&xq, m)).collect());
        }
        parts.iter().map(|p| p.forward(x, m)).collect()
    }

    /// `x` is `[m, in]`; returns `[m, out]`.
    fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            Self::Q4_1(w) => Ok(w.matmul(x, m)),
            Self::Q8_0(w) => Ok(w.matmul(x, m)),
            Self::K(w) => Ok(w.matmul(x, m)),
            Self::Candle { w, out } => {
                let k = x.len() / m.max(1);
                let t = Tensor::from_slice(x, (m, k), &Device::Cpu)?;
                let y = w.forward(&t)?;
                debug_assert_eq!(y.dims2()?, (m, *out));
                Ok(y.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}

/// An impossible state of the forward pass, reported as an internal error.
fn internal(what: &str) -> JudgeError {
    candle_core::Error::Msg(what.into()).into()
}

/// Matrices applied to the same input (Q, K, V; gate, up): one stacked matrix when our
/// kernel holds them all, so the input is quantized once and the pool is dispatched once.
pub(super) enum Group {
    /// One matrix whose outputs are the parts' outputs side by side.
    Fused { w: Q4_1Matrix, widths: Vec<usize> },
    /// Applied one by one.
    Separate(Vec<Linear>),
}

impl Group {
    pub(super) fn new(parts: Vec<Linear>) -> Self {
        if parts.iter().all(|p| matches!(p, Linear::Q4_1(_))) {
            let mats: Vec<Q4_1Matrix> = parts
                .into_iter()
                .filter_map(|p| match p {
                    Linear::Q4_1(m) => Some(m),
                    _ => None,
                })
                .collect();
            let widths = mats.iter().map(|m| m.rows()).collect();
            return match Q4_1Matrix::concat(mats) {
                Ok(w) => Self::Fused { w, widths },
                Err(mats) => Self::Separate(mats.into_iter().map(Linear::Q4_1).collect()),
            };
        }
        Self::Separate(parts)
    }

    /// Each part's `[m, out]` output.
    fn forward(&self, x: &[f32], m: usize) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Separate(parts) => {
                let parts: Vec<&Linear> = parts.iter().collect();
                Linear::forward_each(&parts, x, m)
            }
            Self::Fused { w, widths } => {
                let y = w.matmul(x, m);
                let total = w.rows();
                let mut outs: Vec<Vec<f32>> =
                    widths.iter().map(|&n| Vec::with_capacity(n * m)).collect();
                for row in y.chunks_exact(total) {
                    let mut at = 0;
                    for (out, &n) in outs.iter_mut().zip(widths) {
                        out.extend_from_slice(&row[at..at + n]);
                        at += n;
                    }
                }
                Ok(outs)
            }
        }
    }
}

/// A feed-forward block's gate and up projections, ending in `silu(gate) ⊙ up`.
pub(super) enum GateUp {
    /// One Q4_1 matrix of interleaved rows; the kernel's workers apply the activation.
    Fused(Q4_1Matrix),
    /// Two products, then the activation.
    Separate(Box<(Linear, Linear)>),
}

impl GateUp {
    pub(super) fn new(gate: Linear, up: Linear) -> Self {
        match (gate, up) {
            (Linear::Q4_1(g), Linear::Q4_1(u)) => match Q4_1Matrix::swiglu_pair(g, u) {
                Ok(w) => Self::Fused(w),
                Err(parts) => {
                    let (g, u) = *parts;
                    Self::Separate(Box::new((Linear::Q4_1(g), Linear::Q4_1(u))))
                }
            },
            (g, u) => Self::Separate(Box::new((g, u))),
        }
    }

    /// `[m, intermediate]` activations.
    fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            Self::Fused(w) => Ok(w.matmul_swiglu(x, m)),
            Self::Separate(parts) => {
                let [g, u]: [Vec<f32>; 2] = Linear::forward_each(&[&parts.0, &parts.1], x, m)?
                    .try_into()
                    .map_err(|_| internal("gate and up gave other than two outputs"))?;
                let mut h = vec![0f32; g.len()];
                swiglu(&g, &u, &mut h);
                Ok(h)
            }
        }
    }
}

pub(super) struct Layer {
    pub(super) attn_norm: Vec<f32>,
    /// Q, K, V.
    pub(super) qkv: Group,
    pub(super) wo: Linear,
    pub(super) ffn_norm: Vec<f32>,
    /// Gate, up and the activation.
    pub(super) gate_up: GateUp,
    pub(super) down: Linear,
}

/// A loaded model for the batched engine (CPU).
pub struct BatchModel {
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Vec<f32>,
    pub(super) lm_head: Linear,
    pub(super) embed: Embedding,
    /// `inv_freq[i]` = base^(-2i / head_dim).
    pub(super) inv_freq: Vec<f32>,
    /// Network shape.
    pub shape: Shape,
}

impl BatchModel {
    /// How many weight matrices each kernel runs ("q4_1", "q8_0", "q4_k", "q5_k", "q6_k" are
    /// ours, "candle" candle's), and the embedding table's form under "embed:<form>": what a
    /// benchmark reports and what tests check a quantization mix against.
    pub fn kernel_census(&self) -> std::collections::BTreeMap<String, usize> {
        let mut count = std::collections::BTreeMap::new();
        let mut add = |k: &str| *count.entry(k.to_string()).or_insert(0) += 1;
        for l in &self.layers {
            match &l.qkv {
                Group::Fused { .. } => (0..3).for_each(|_| add("q4_1")),
                Group::Separate(parts) => parts.iter().for_each(|p| add(p.kernel())),
            }
            match &l.gate_up {
                GateUp::Fused(_) => (0..2).for_each(|_| add("q4_1")),
                GateUp::Separate(p) => [&p.0, &p.1].iter().for_each(|p| add(p.kernel())),
            }
            add(l.wo.kernel());
            add(l.down.kernel());
        }
        add(self.lm_head.kernel());
        add(&format!(
            "embed:{}",
            match &self.embed {
                Embedding::Blocks { dtype, .. } => match dtype {
                    GgmlDType::Q8_0 => "q8_0",
                    _ => "q4_1",
                },
                Embedding::K(m) => m.name(),
                Embedding::F32 { .. } => "f32",
            }
        ));
        count
    }

    /// Bytes of weights one forward step reads whatever its batch: every matrix (one
    /// embedding row aside). A single-stream decode step's floor is this over the machine's
    /// memory bandwidth.
    pub fn streamed_weight_bytes(&self) -> usize {
        let group = |g: &Group| match g {
            Group::Fused { w, .. } => w.bytes(),
            Group::Separate(parts) => parts.iter().map(Linear::bytes).sum(),
        };
        let gate_up = |g: &GateUp| match g {
            GateUp::Fused(w) => w.bytes(),
            GateUp::Separate(p) => p.0.bytes() + p.1.bytes(),
        };
        let layers: usize = self
            .layers
            .iter()
            .map(|l| group(&l.qkv) + gate_up(&l.gate_up) + l.wo.bytes() + l.down.bytes())
            .sum();
        layers + self.lm_head.bytes()
    }

    /// An empty cache for one sequence, of the model's cache type.
    pub fn new_kv(&self) -> SeqKv {
        let s = &self.shape;
        SeqKv::new(s.layers, s.kv_heads * s.head_dim, s.kv)
    }

    /// Runs one step for several sequences; returns, per input, the logits it asked for.
    pub fn forward(&self, inputs: &mut [StepInput<'_, SeqKv>]) -> Result<Vec<Vec<f32>>> {
        let s = &self.shape;
        let total: usize = inputs.iter().map(|i| i.tokens.len()).sum();
        if total == 0 {
            return Ok(vec![Vec::new(); inputs.len()]);
        }
        // Absolute position of every packed row and the input it belongs to.
        let mut rows = Vec::with_capacity(total);
        for (i, inp) in inputs.iter().enumerate() {
            let start = inp.kv.len();
            rows.extend((0..inp.tokens.len()).map(|j| (i, start + j)));
        }
        let mut x = vec![0f32; total * s.hidden];
        for (row, &id) in x
            .chunks_exact_mut(s.hidden)
            .zip(inputs.iter().flat_map(|i| i.tokens.iter()))
        {
            if id as usize >= s.vocab {
                return Err(token_err(id as usize));
            }
            self.embed.row(id as usize, row)?;
        }
        let q_width = s.heads * s.head_dim;
        let kv_width = s.kv_heads * s.head_dim;
        // Every row's rotary angles, computed once for all layers.
        let half = self.inv_freq.len();
        let angles: Vec<(f32, f32)> = rows
            .iter()
            .flat_map(|&(_, pos)| {
                self.inv_freq
                    .iter()
                    .map(move |f| (pos as f32 * f).sin_cos())
            })
            .collect();
        for (l, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, s.eps);
            let mut qkv = layer.qkv.forward(&h, total)?.into_iter();
            let (Some(mut q), Some(mut k), Some(v)) = (qkv.next(), qkv.next(), qkv.next()) else {
                return Err(internal("attention projections missing"));
            };
            for (r, angles) in angles.chunks_exact(half.max(1)).enumerate() {
                self.rope(&mut q[r * q_width..(r + 1) * q_width], angles);
                self.rope(&mut k[r * kv_width..(r + 1) * kv_width], angles);
            }
            let mut offset = 0;
            for inp in inputs.iter_mut() {
                let n = inp.tokens.len();
                let span = offset * kv_width..(offset + n) * kv_width;
                inp.kv.append(l, &k[span.clone()], &v[span]);
                offset += n;
            }
            let att = self.attention(inputs, &rows, &q, l)?;
            let o = layer.wo.forward(&att, total)?;
            add(&mut x, &o);
            let h = rms_norm(&x, &layer.ffn_norm, s.eps);
            let g = layer.gate_up.forward(&h, total)?;
            let d = layer.down.forward(&g, total)?;
            add(&mut x, &d);
        }
        self.logits(&x, inputs)
    }

    /// The logits each input asked for: only the rows whose logits are wanted go through
    /// the (large) output layer.
    fn logits(&self, x: &[f32], inputs: &[StepInput<'_, SeqKv>]) -> Result<Vec<Vec<f32>>> {
        let s = &self.shape;
        let mut picked = Vec::new();
        let mut counts = Vec::with_capacity(inputs.len());
        let mut offset = 0;
        for inp in inputs.iter() {
            let n = inp.tokens.len();
            let rows: Vec<usize> = match (inp.want, n) {
                (_, 0) | (Want::Nothing, _) => Vec::new(),
                (Want::Last, _) => vec![offset + n - 1],
                (Want::All, _) => (offset..offset + n).collect(),
            };
            counts.push(rows.len());
            for r in rows {
                picked.extend_from_slice(&x[r * s.hidden..(r + 1) * s.hidden]);
            }
            offset += n;
        }
        let m = picked.len() / s.hidden;
        if m == 0 {
            return Ok(vec![Vec::new(); inputs.len()]);
        }
        let logits = self
            .lm_head
            .forward(&rms_norm(&picked, &self.norm, s.eps), m)?;
        let mut out = Vec::with_capacity(inputs.len());
        let mut at = 0;
        for c in counts {
            out.push(logits[at * s.vocab..(at + c) * s.vocab].to_vec());
            at += c;
        }
        Ok(out)
    }

    /// Rotates every head of one row by that row's `(sin, cos)` per dimension pair.
    fn rope(&self, x: &mut [f32], angles: &[(f32, f32)]) {
        let d = self.shape.head_dim;
        for head in x.chunks_exact_mut(d) {
            for (i, &(sin, cos)) in angles.iter().enumerate() {
                let (a, b) = match self.shape.rope {
                    Rope::Interleaved => (2 * i, 2 * i + 1),
                    Rope::Halves => (i, i + d / 2),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }

    /// Causal attention of every packed row over its own sequence's cache.
    fn attention(
        &self,
        inputs: &[StepInput<'_, SeqKv>],
        rows: &[(usize, usize)],
        q: &[f32],
        layer: usize,
    ) -> Result<Vec<f32>> {
        let runs: Vec<Runs<'_>> = inputs.iter().map(|i| i.kv.runs(layer)).collect();
        if let Some(half) = runs.iter().map(Runs::f16).collect::<Option<Vec<_>>>() {
            return Ok(self.attend_rows(&half, rows, q));
        }
        if let Some(single) = runs.iter().map(Runs::f32).collect::<Option<Vec<_>>>() {
            return Ok(self.attend_rows(&single, rows, q));
        }
        if let Some(bytes) = runs.iter().map(Runs::q8).collect::<Option<Vec<_>>>() {
            return Ok(self.attend_rows(&bytes, rows, q));
        }
        Err(internal(
            "the batch's key/value caches are not all of one type",
        ))
    }

    fn attend_rows<T: KvValue>(
        &self,
        runs: &[&[Run<'_, T>]],
        rows: &[(usize, usize)],
        q: &[f32],
    ) -> Vec<f32> {
        let s = &self.shape;
        let geo = Geometry {
            heads: s.heads,
            kv_heads: s.kv_heads,
            head_dim: s.head_dim,
        };
        attend_packed(geo, runs, rows, q)
    }
}

/// Each row scaled to unit root-mean-square, times `w`. The sum of squares runs in sixteen
/// independent lanes (one serial chain of additions was 1-2% of a batched decode step, spent
/// on the main thread while the pool's workers wait).
fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    const LANES: usize = 16;
    let mut out = vec![0f32; x.len()];
    for (row, dst) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        let mut lanes = [0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (l, v) in lanes.iter_mut().zip(c) {
                *l += v * v;
            }
        }
        for (l, v) in lanes.iter_mut().zip(chunks.remainder()) {
            *l += v * v;
        }
        let ms = lanes.iter().sum::<f32>() / w.len() as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((d, v), w) in dst.iter_mut().zip(row).zip(w) {
            *d = v * inv * w;
        }
    }
    out
}

fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}
