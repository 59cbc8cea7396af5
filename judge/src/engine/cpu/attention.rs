//! Causal attention of one query head over a sequence's cached keys and values, for the
//! batched forward pass: a portable loop, and AVX2 versions chosen at run time (with the
//! same CPU check as the matrix kernels).

// `unsafe`: AVX2 intrinsics and pointer loads, each with its SAFETY argument.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m256, __m512, _mm_prefetch, _MM_HINT_T0};

use half::f16;

use super::kernels::{par_chunks, uses_simd};
use crate::engine::scheduler::limits::{Q8_BLOCK, Q8_BLOCK_BYTES};

/// A cached key/value element: `f32`, `f16` widened as it is loaded, or `i8` in blocks of
/// 32 values followed by their scale (see [`super::kv::KvType::Q8`]).
pub trait KvValue: Copy + Send + Sync {
    /// Stored elements that a head row of `n` values takes.
    fn stored_len(n: usize) -> usize {
        n
    }

    /// The `out.len()` values of the head row stored in `row`.
    fn widen(row: &[Self], out: &mut [f32]);

    /// Values `8c .. 8c + 8` of the head row stored at `p`, as one 256-bit vector.
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C, and the head row at `p` holds those values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self, c: usize) -> __m256;

    /// Values `16c .. 16c + 16` of the head row stored at `p`, as one 512-bit vector.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and the head row at `p` holds those values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self, c: usize) -> __m512;
}

impl KvValue for f32 {
    fn widen(row: &[f32], out: &mut [f32]) {
        out.copy_from_slice(&row[..out.len()]);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const f32, c: usize) -> __m256 {
        // SAFETY: the caller guarantees the row holds values 8c..8c + 8.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p.add(8 * c)) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f32, c: usize) -> __m512 {
        // SAFETY: the caller guarantees the row holds values 16c..16c + 16.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p.add(16 * c)) }
    }
}

impl KvValue for f16 {
    fn widen(row: &[f16], out: &mut [f32]) {
        for (o, v) in out.iter_mut().zip(row) {
            *o = v.to_f32();
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const f16, c: usize) -> __m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees the row holds values 8c..8c + 8 (16 bytes).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.add(8 * c).cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f16, c: usize) -> __m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees the row holds values 16c..16c + 16 (32 bytes).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.add(16 * c).cast())) }
    }
}

impl KvValue for i8 {
    fn stored_len(n: usize) -> usize {
        n.div_ceil(Q8_BLOCK) * Q8_BLOCK_BYTES
    }

    fn widen(row: &[i8], out: &mut [f32]) {
        for (o, block) in out
            .chunks_mut(Q8_BLOCK)
            .zip(row.chunks_exact(Q8_BLOCK_BYTES))
        {
            let scale = q8_scale(block);
            for (o, &q) in o.iter_mut().zip(block) {
                *o = f32::from(q) * scale;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const i8, c: usize) -> __m256 {
        use std::arch::x86_64::*;
        let block = (8 * c / Q8_BLOCK) * Q8_BLOCK_BYTES;
        // SAFETY: the caller guarantees the row holds values 8c..8c + 8: their eight bytes
        // and their block's scale (the block's last four bytes).
        unsafe {
            let q = _mm_loadl_epi64(p.add(block + 8 * c % Q8_BLOCK).cast());
            let scale = p.add(block + Q8_BLOCK).cast::<f32>().read_unaligned();
            _mm256_mul_ps(
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)),
                _mm256_set1_ps(scale),
            )
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const i8, c: usize) -> __m512 {
        use std::arch::x86_64::*;
        let block = (16 * c / Q8_BLOCK) * Q8_BLOCK_BYTES;
        // SAFETY: as for `load8`, sixteen bytes and the block's scale.
        unsafe {
            let q = _mm_loadu_si128(p.add(block + 16 * c % Q8_BLOCK).cast());
            let scale = p.add(block + Q8_BLOCK).cast::<f32>().read_unaligned();
            _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)),
                _mm512_set1_ps(scale),
            )
        }
    }
}

/// Asks for the cache lines of `row[at..at + len]` (nothing when past the run's end; a
/// prefetch never faults, but the address is kept inside the slice anyway). A head's rows
/// are a fraction of each cached position (the other heads' rows lie between), a stride
/// the hardware prefetchers follow too late, and the SIMD kernels stall on the loads
/// without asking ahead.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn prefetch_row<T>(row: &[T], at: usize, len: usize) {
    if at + len <= row.len() {
        let p = row[at..].as_ptr().cast::<i8>();
        let bytes = len * std::mem::size_of::<T>();
        let mut off = 0;
        while off < bytes {
            // SAFETY: `p + off` lies inside `row` (checked above); prefetching reads nothing.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
            off += 64;
        }
        // SAFETY: as above, the row's last byte.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(bytes - 1)) };
    }
}

/// The scale of one stored [`Q8_BLOCK_BYTES`]-byte block (its last four bytes).
fn q8_scale(block: &[i8]) -> f32 {
    let b = |i: usize| block[Q8_BLOCK + i] as u8;
    f32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

/// One attention head's view of a sequence's cache: the cached runs and where the head's
/// keys and values sit in each position's row.
pub struct HeadKv<'a, T> {
    /// `(keys, values, positions)` runs, oldest first.
    pub runs: &'a [super::kv::Run<'a, T>],
    /// Offset of this head in a position's row, in stored elements.
    pub offset: usize,
    /// Stored elements per position (of kv heads × head size values).
    pub stride: usize,
}

impl<T> HeadKv<'_, T> {
    /// Positions the runs hold.
    pub fn cached(&self) -> usize {
        self.runs.iter().map(|r| r.2).sum()
    }
}

/// Most query heads one attention block holds on the AVX-512 kernel (which keeps a block's
/// per-head accumulators in registers) and in the per-head loop; the AVX2 kernel takes
/// more (see [`block_heads`]).
pub const MAX_BLOCK_HEADS: usize = 8;

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

/// Query heads that share one key/value head: `rows` consecutive positions of one sequence,
/// `group` query heads each, so cached keys and values are read once for all of them.
pub struct QueryBlock<'q> {
    /// Queries, `head_dim` values per head, heads of the first position first.
    pub q: &'q [f32],
    /// Query heads per key/value head.
    pub group: usize,
    /// Positions the first row attends to (its own included); row `r` attends to
    /// `first_len + r`.
    pub first_len: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Score scale, `1 / sqrt(head_dim)`.
    pub scale: f32,
}

impl QueryBlock<'_> {
    /// Query heads in the block.
    pub fn heads(&self) -> usize {
        self.q.len() / self.head_dim
    }

    /// Positions head `h` attends to.
    pub fn len_of(&self, h: usize) -> usize {
        self.first_len + h / self.group
    }

    /// Every one of the `H` heads' lengths and the longest, checked against the `cached`
    /// positions.
    pub fn lengths<const H: usize>(&self, cached: usize) -> ([usize; H], usize) {
        (
            std::array::from_fn(|h| self.len_of(h)),
            self.longest(cached),
        )
    }

    /// The last head's length, the longest (lengths never decrease), checked against the
    /// `cached` positions.
    pub fn longest(&self, cached: usize) -> usize {
        let longest = self.len_of(self.heads().saturating_sub(1));
        assert!(cached >= longest, "attention past the cached positions");
        longest
    }
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
    use super::*;
    use crate::engine::cpu::test_values::random;

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
