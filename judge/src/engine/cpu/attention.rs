//! Causal attention of one query head over a sequence's cached keys and values, for the
//! batched forward pass: a portable loop, and AVX2 versions chosen at run time (with the
//! same CPU check as the matrix kernels).

// `unsafe`: AVX2 intrinsics and pointer loads, each with its SAFETY argument.
#![allow(unsafe_code)]

pub use super::attention_inputs::{HeadKv, KvValue, QueryBlock, MAX_BLOCK_HEADS};
use super::kernels::{par_chunks, uses_simd};

/// Most query heads per block for the kernel this CPU runs on heads of `head_dim` values.
/// One kernel family serves every block size on a CPU, so a head's result never depends
/// on how many rows shared its block.
pub fn block_heads(head_dim: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if super::attention_avx512::supports(1, head_dim) {
            return MAX_BLOCK_HEADS;
        }
        if super::attention_avx2::supports(1, head_dim) {
            return super::attention_avx2::BLOCK_HEADS;
        }
    }
    let _ = head_dim;
    MAX_BLOCK_HEADS
}

/// Causal attention of a block of query heads over their shared key/value head, written
/// to `out` (heads side by side). The SIMD kernels read each cached row once per block; on
/// other CPUs or head sizes every head runs alone. Which kernel runs depends only on the CPU
/// and the shape, and each head's result only on its own query and cache.
pub fn attend_block<T: KvValue>(block: &QueryBlock<'_>, kv: &HeadKv<'_, T>, out: &mut [f32]) {
    let (heads, d) = (block.heads(), block.head_dim);
    #[cfg(target_arch = "x86_64")]
    {
        if super::attention_avx512::supports(heads, d) {
            return super::attention_avx512::attend_block(block, kv, out);
        }
        if super::attention_avx2::supports(heads, d) {
            return super::attention_avx2::attend_block(block, kv, out);
        }
    }
    for (h, (q, o)) in block
        .q
        .chunks_exact(d)
        .zip(out.chunks_exact_mut(d))
        .enumerate()
    {
        o.fill(0.0);
        attend(q, kv, block.len_of(h), block.scale, o);
    }
}

/// The attention kernel that a model with `group` query heads per key/value head and heads
/// of `head_dim` values runs on this CPU ("avx512", "avx2" or "portable"), for benchmark
/// reports.
pub fn kernel_name(group: usize, head_dim: usize) -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if super::attention_avx512::supports(group, head_dim) {
            return "avx512";
        }
        if super::attention_avx2::supports(group, head_dim) {
            return "avx2";
        }
    }
    let _ = (group, head_dim);
    "portable"
}

/// The attention shape of a model.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (query heads are grouped over them).
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
}

/// Causal attention of every packed row over its own sequence's cache. `rows` gives each
/// row's input and absolute position, `runs` each input's cache, `q` the rows' queries
/// (`heads × head_dim` each); returns the rows' attention outputs in the same layout.
///
/// Consecutive rows of one input form blocks of up to [`block_heads`] query heads per
/// key/value head (eight or 32 prompt positions of an MHA model, two or eight of a model
/// with four query heads per key/value head); one pool item per block and key/value
/// head.
pub fn attend_packed<T: KvValue>(
    geo: Geometry,
    runs: &[&[super::kv::Run<'_, T>]],
    rows: &[(usize, usize)],
    q: &[f32],
) -> Vec<f32> {
    let (d, group) = (geo.head_dim, geo.heads / geo.kv_heads);
    let per_block = (block_heads(d) / group).max(1);
    let mut blocks = Vec::new();
    let mut r = 0;
    while r < rows.len() {
        let (input, pos) = rows[r];
        let mut n = 1;
        while n < per_block && rows.get(r + n) == Some(&(input, pos + n)) {
            n += 1;
        }
        blocks.push((r, n));
        r += n;
    }
    let (q_width, width) = (geo.heads * d, per_block * group * d);
    let scale = 1.0 / (d as f32).sqrt();
    let mut scratch = vec![0f32; blocks.len() * geo.kv_heads * width];
    // Items head by head: a prompt chunk's blocks of one head follow each other and find
    // that head's keys and values still in the cache (in block order they would cycle
    // through every head's, more than the cache holds at long contexts).
    let item_of = |item: usize| (blocks[item % blocks.len()], item / blocks.len());
    par_chunks(&mut scratch, width, |item, o| {
        let ((r0, n), kvh) = item_of(item);
        let (input, pos) = rows[r0];
        // One row's heads lie together in `q`; several rows' are gathered.
        let heads =
            |r: usize| &q[r * q_width + kvh * group * d..r * q_width + (kvh + 1) * group * d];
        let qb: std::borrow::Cow<'_, [f32]> = match n {
            1 => heads(r0).into(),
            _ => (r0..r0 + n).flat_map(heads).copied().collect(),
        };
        let block = QueryBlock {
            q: &qb,
            group,
            first_len: pos + 1,
            head_dim: d,
            scale,
        };
        let kv = HeadKv {
            runs: runs[input],
            offset: kvh * T::stored_len(d),
            stride: geo.kv_heads * T::stored_len(d),
        };
        attend_block(&block, &kv, &mut o[..n * group * d]);
    });
    let mut out = vec![0f32; rows.len() * q_width];
    for (item, o) in scratch.chunks_exact(width).enumerate() {
        let ((r0, n), kvh) = item_of(item);
        for (r, heads) in o[..n * group * d].chunks_exact(group * d).enumerate() {
            let at = (r0 + r) * q_width + kvh * group * d;
            out[at..at + group * d].copy_from_slice(heads);
        }
    }
    out
}

/// Causal attention of one query head over the first `len` cached positions, added to
/// `out`: the portable loop, compiled a second time with AVX2+FMA (chosen at run time) for
/// head sizes the block kernels do not take.
pub fn attend<T: KvValue>(q: &[f32], kv: &HeadKv<'_, T>, len: usize, scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if uses_simd() {
        // SAFETY: `uses_simd` reported AVX2 and FMA.
        return unsafe { attend_avx2(q, kv, len, scale, out) };
    }
    attend_body(q, kv, len, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_avx2<T: KvValue>(
    q: &[f32],
    kv: &HeadKv<'_, T>,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    attend_body(q, kv, len, scale, out)
}

#[inline(always)]
pub(super) fn attend_body<T: KvValue>(
    q: &[f32],
    kv: &HeadKv<'_, T>,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    let d = q.len();
    let stored = T::stored_len(d);
    let mut row = vec![0f32; d];
    let mut scores = Vec::with_capacity(len);
    let mut left = len;
    for &(k, _, n) in kv.runs {
        for p in 0..n.min(left) {
            let at = p * kv.stride + kv.offset;
            T::widen(&k[at..at + stored], &mut row);
            scores.push(dot_f32(q, &row) * scale);
        }
        left = left.saturating_sub(n);
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for sc in scores.iter_mut() {
        *sc = (*sc - max).exp();
        sum += *sc;
    }
    let inv = 1.0 / sum;
    let mut idx = 0;
    let mut left = len;
    for &(_, v, n) in kv.runs {
        for p in 0..n.min(left) {
            let w = scores[idx] * inv;
            let at = p * kv.stride + kv.offset;
            T::widen(&v[at..at + stored], &mut row);
            for (o, v) in out.iter_mut().zip(&row) {
                *o += w * v;
            }
            idx += 1;
        }
        left = left.saturating_sub(n);
    }
}

/// Dot product with eight independent sums (one 8-wide vector) so the compiler can
/// vectorise it; the short final reduction matters because it runs once per position.
#[inline(always)]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;
    use crate::engine::cpu::kernels::test_values::random;

    #[test]
    fn attention_paths_agree() {
        let (d, kvh, positions) = (64, 2, 37);
        let k = random(positions * kvh * d, 31);
        let v = random(positions * kvh * d, 37);
        let q = random(d, 41);
        let runs: Vec<crate::engine::cpu::kv::Run<'_, f32>> = vec![
            (&k[..20 * kvh * d], &v[..20 * kvh * d], 20),
            (&k[20 * kvh * d..], &v[20 * kvh * d..], 17),
        ];
        let head = HeadKv {
            runs: &runs,
            offset: d,
            stride: kvh * d,
        };
        let mut fast = vec![0f32; d];
        let mut portable = vec![0f32; d];
        attend(&q, &head, 30, 0.125, &mut fast);
        attend_body(&q, &head, 30, 0.125, &mut portable);
        for (a, b) in fast.iter().zip(&portable) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Positions past `len` are not attended to.
        let mut shorter = vec![0f32; d];
        attend(&q, &head, 29, 0.125, &mut shorter);
        assert_ne!(shorter, fast);
        // Half-precision caches: the SIMD loads widen exactly as the portable path does.
        let (k16, v16): (Vec<f16>, Vec<f16>) = (
            k.iter().map(|&x| f16::from_f32(x)).collect(),
            v.iter().map(|&x| f16::from_f32(x)).collect(),
        );
        let runs16: Vec<crate::engine::cpu::kv::Run<'_, f16>> = vec![
            (&k16[..20 * kvh * d], &v16[..20 * kvh * d], 20),
            (&k16[20 * kvh * d..], &v16[20 * kvh * d..], 17),
        ];
        let head16 = HeadKv {
            runs: &runs16,
            offset: d,
            stride: kvh * d,
        };
        let mut fast16 = vec![0f32; d];
        let mut portable16 = vec![0f32; d];
        attend(&q, &head16, 30, 0.125, &mut fast16);
        attend_body(&q, &head16, 30, 0.125, &mut portable16);
        for ((a, b), full) in fast16.iter().zip(&portable16).zip(&fast) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            assert!((a - full).abs() < 1e-2, "f16 cache {a} vs f32 cache {full}");
        }
    }
}
