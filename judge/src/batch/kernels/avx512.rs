//! AVX-512 VNNI kernels: two 32-value blocks per 512-bit instruction.
//!
//! On CPUs with full-width AVX-512 (AMD Zen 4/5, Intel Ice Lake and later) the 256-bit
//! kernels leave half of each vector unit idle and spend most of their instructions on
//! per-block bookkeeping (converting scales, broadcasting, reducing). Here the weights are
//! repacked at load into pairs of blocks, and activations are quantized into a matching pair
//! layout that carries its scales already broadcast to the lanes they multiply, so the inner
//! loop is one byte dot product, one conversion, one multiply and one fused multiply-add per
//! 64 values and row. The Q4_1 offset term (`m` times a block's activation sum) is not in
//! that loop: it is a dot product of a row's offsets with the activation rows' block sums,
//! sixteen blocks per instruction, before the loop starts. With several rows per pass the
//! multiply-capable pipes are the limit, so each instruction taken out of the per-row loop
//! shows directly (the offset's there cost a quarter of the kernel's time at eight rows).
//!
//! Byte order inside a pair (weights and activations alike): block 0 values 0..16, block 1
//! values 0..16, block 0 values 16..32, block 1 values 16..32. That is the order in which a
//! Q4_1 pair unpacks (low nibbles, then high nibbles), so unpacking needs no shuffle; the
//! 32-bit lanes of a product then hold block 0 in lanes 0..4 and 8..12 and block 1 in lanes
//! 4..8 and 12..16, the pattern every scale vector below follows.
//!
//! Every row's result is computed by the same instruction sequence whatever the number of
//! rows in a pass, so a row's output never depends on what else is in the batch.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{BlockQ4_1, BlockQ8_0, Packed, BLOCK};

/// Whether this CPU runs these kernels.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("fma")
}

/// Two Q4_1 blocks repacked for one 512-bit pass (their offsets `m` are kept apart, in
/// [`Q4_1Pairs`]).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q4_1Pair {
    /// Half-precision bits of `[d0, d1]`.
    d: [u16; 2],
    /// Block 0's 16 packed bytes, then block 1's.
    qs: [u8; BLOCK],
}

/// A Q4_1 matrix repacked: rows of pairs, and every block's offset `m` in rows of their own
/// (read once per weight row and activation row, not once per pair).
pub struct Q4_1Pairs {
    pairs: Vec<Q4_1Pair>,
    /// Half-precision bits of each block's `m`, row-major.
    mins: Vec<u16>,
}

impl Q4_1Pairs {
    /// Weight row `col`'s pairs and offsets, for rows of `kb` blocks.
    pub fn row(&self, col: usize, kb: usize) -> (&[Q4_1Pair], &[u16]) {
        (
            &self.pairs[col * kb / 2..(col + 1) * kb / 2],
            &self.mins[col * kb..(col + 1) * kb],
        )
    }
}

impl Packed for Q4_1Pairs {
    fn concat(parts: Vec<Self>) -> Self {
        let (pairs, mins): (Vec<_>, Vec<_>) = parts.into_iter().map(|p| (p.pairs, p.mins)).unzip();
        Self {
            pairs: pairs.concat(),
            mins: mins.concat(),
        }
    }

    fn interleave4(a: &Self, b: &Self, kb: usize) -> Self {
        Self {
            pairs: super::interleave4(&a.pairs, &b.pairs, kb / 2),
            mins: super::interleave4(&a.mins, &b.mins, kb),
        }
    }

    fn bytes(&self) -> usize {
        std::mem::size_of_val(self.pairs.as_slice()) + std::mem::size_of_val(self.mins.as_slice())
    }
}

/// Two Q8_0 blocks repacked: each weight offset by 128 (so it is unsigned, the form the
/// unsigned-by-signed byte instruction takes) and in the pair byte order.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q8_0Pair {
    /// Half-precision bits of `[d0, d1]`.
    d: [u16; 2],
    qs: [u8; 2 * BLOCK],
}

/// Two activation blocks quantized to 8 bits, with each lane's block scale: what the
/// inner loops read per pair and row (128 bytes, so eight rows of a 1,536-wide input stay
/// in L1).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct XPair {
    /// The 64 quantized values in pair byte order.
    qs: [i8; 2 * BLOCK],
    /// Each lane's block scale `d`.
    scale: [f32; 16],
}

/// `-128 ×` the sum of each lane's four values of a pair: undoes the +128 of Q8_0 pair
/// weights.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct UnsignedFix([i32; 16]);

/// Sixteen blocks' `d · Σq` (zero past a row's last block).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct Sums16([f32; 16]);

/// Activation rows quantized for these kernels.
pub struct XRows {
    pairs: Vec<XPair>,
    /// Each block's `d · Σq`, what a Q4_1 weight offset `m` multiplies: rows of
    /// `⌈kb / 16⌉` aligned, zero-padded groups, so they load whole.
    sums: Vec<Sums16>,
    fix: Vec<UnsignedFix>,
    /// Pairs per row.
    kp: usize,
}

impl XRows {
    /// Rows `r..r + n`: their pairs, block sums and corrections, each row's after the last.
    #[inline]
    fn rows(&self, r: usize, n: usize) -> (&[XPair], &[Sums16], &[UnsignedFix]) {
        let (kp, ks) = (self.kp, sum_groups(self.kp));
        (
            &self.pairs[r * kp..(r + n) * kp],
            &self.sums[r * ks..(r + n) * ks],
            &self.fix[r * kp..(r + n) * kp],
        )
    }

    /// Every row's values as the kernels see them, row after row.
    #[cfg(test)]
    pub fn values(&self) -> Vec<f32> {
        self.pairs.iter().flat_map(|p| p.values()).collect()
    }
}

/// How many pairs ahead the Q4_1 kernel prefetches weights.
const PREFETCH: usize = 32;

/// Lane → block index pattern `[0 ×4, 1 ×4, 0 ×4, 1 ×4]`, offset by `base`.
#[target_feature(enable = "avx512f")]
fn pattern(base: i32) -> __m512i {
    let (a, b) = (base, base + 1);
    _mm512_setr_epi32(a, a, a, a, b, b, b, b, a, a, a, a, b, b, b, b)
}

/// Repacks a row-major Q4_1 matrix (rows of `kb` blocks, `kb` even) into pairs.
pub fn pack_q4_1(blocks: &[BlockQ4_1]) -> Q4_1Pairs {
    let pairs = blocks
        .chunks_exact(2)
        .map(|b| {
            let mut qs = [0u8; BLOCK];
            qs[..16].copy_from_slice(&b[0].qs);
            qs[16..].copy_from_slice(&b[1].qs);
            Q4_1Pair {
                d: [b[0].d.to_bits(), b[1].d.to_bits()],
                qs,
            }
        })
        .collect();
    let mins = blocks.iter().map(|b| b.m.to_bits()).collect();
    Q4_1Pairs { pairs, mins }
}

/// Repacks a row-major Q8_0 matrix (rows of `kb` blocks, `kb` even) into pairs.
pub fn pack_q8_0(blocks: &[BlockQ8_0]) -> Vec<Q8_0Pair> {
    blocks
        .chunks_exact(2)
        .map(|b| {
            let mut qs = [0u8; 2 * BLOCK];
            let offset = |v: i8| (v as u8) ^ 0x80;
            for i in 0..16 {
                qs[i] = offset(b[0].qs[i]);
                qs[16 + i] = offset(b[1].qs[i]);
                qs[32 + i] = offset(b[0].qs[16 + i]);
                qs[48 + i] = offset(b[1].qs[16 + i]);
            }
            Q8_0Pair {
                d: [b[0].d.to_bits(), b[1].d.to_bits()],
                qs,
            }
        })
        .collect()
}

/// Quantizes `m` rows of `k` values (`k` a multiple of 64) into pairs.
pub fn quantize(x: &[f32], m: usize, k: usize) -> XRows {
    assert!(available() && x.len() == m * k && k.is_multiple_of(2 * BLOCK));
    let (n, kp) = (x.len() / (2 * BLOCK), k / (2 * BLOCK));
    let mut out = XRows {
        pairs: Vec::with_capacity(n),
        sums: vec![Sums16([0.0; 16]); m * sum_groups(kp)],
        fix: Vec::with_capacity(n),
        kp,
    };
    for (r, row) in x.chunks_exact(k).enumerate() {
        let sums = &mut out.sums[r * sum_groups(kp)..];
        for (p, chunk) in row.chunks_exact(2 * BLOCK).enumerate() {
            // SAFETY: `available()` reported every feature `quantize_pair` is compiled for.
            let (pair, s, fix) = unsafe { quantize_pair(chunk) };
            out.pairs.push(pair);
            for (i, v) in s.into_iter().enumerate() {
                let b = 2 * p + i;
                sums[b / 16].0[b % 16] = v;
            }
            out.fix.push(fix);
        }
    }
    out
}

/// Groups of sixteen block sums per row of `kp` pairs.
fn sum_groups(kp: usize) -> usize {
    (2 * kp).div_ceil(16)
}

/// One pair of blocks, their two `d · Σq` and the Q8_0 correction.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn quantize_pair(v: &[f32]) -> (XPair, [f32; 2], UnsignedFix) {
    assert_eq!(v.len(), 2 * BLOCK);
    // SAFETY: `v` holds 64 values; the four loads read 16 each at offsets 0, 16, 32, 48.
    let [a0, a1, b0, b1] = [0, 16, 32, 48].map(|o| unsafe { _mm512_loadu_ps(v.as_ptr().add(o)) });
    let amax = |p: __m512, q: __m512| {
        _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(p), _mm512_abs_ps(q)))
    };
    let (d0, d1) = (amax(a0, a1) / 127.0, amax(b0, b1) / 127.0);
    let inv = |d: f32| if d > 0.0 { 1.0 / d } else { 0.0 };
    let (i0, i1) = (_mm512_set1_ps(inv(d0)), _mm512_set1_ps(inv(d1)));
    // Rounded to nearest (ties to even), the CPU's default rounding mode.
    let [q00, q01, q10, q11] = [(a0, i0), (a1, i0), (b0, i1), (b1, i1)]
        .map(|(x, i)| _mm512_cvtps_epi32(_mm512_mul_ps(x, i)));
    let s0 = _mm512_reduce_add_epi32(_mm512_add_epi32(q00, q01));
    let s1 = _mm512_reduce_add_epi32(_mm512_add_epi32(q10, q11));
    let mut pair = XPair {
        qs: [0; 2 * BLOCK],
        scale: [0.0; 16],
    };
    let mut fix = UnsignedFix([0; 16]);
    // Pair byte order: block 0 values 0..16, block 1 values 0..16, then the upper halves.
    for (i, q) in [q00, q10, q01, q11].into_iter().enumerate() {
        // SAFETY: each store writes 16 bytes at offset 16·i < 64 of `qs`.
        unsafe {
            _mm_storeu_si128(
                pair.qs.as_mut_ptr().add(16 * i).cast(),
                _mm512_cvtepi32_epi8(q),
            )
        };
    }
    let lanes = pattern(0);
    let per_block = |a: f32, b: f32| {
        _mm512_permutexvar_ps(
            lanes,
            _mm512_setr_ps(
                a, b, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            ),
        )
    };
    let scale = per_block(d0, d1);
    // SAFETY: `qs` holds 64 bytes.
    let xq = unsafe { _mm512_loadu_si512(pair.qs.as_ptr().cast()) };
    let lane_sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), xq);
    let lane_fix = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(lane_sums, 7));
    // SAFETY: each store writes 16 lanes into a 16-lane array.
    unsafe {
        _mm512_storeu_ps(pair.scale.as_mut_ptr(), scale);
        _mm512_storeu_si512(fix.0.as_mut_ptr().cast(), lane_fix);
    }
    (pair, [d0 * s0 as f32, d1 * s1 as f32], fix)
}

/// `out[i] = w · x[rows.start + i]` for one weight row (its pairs and its blocks' offsets)
/// against quantized activation rows.
pub fn q4_1_rows(w: &[Q4_1Pair], mins: &[u16], xq: &XRows, rows: Range<usize>, out: &mut [f32]) {
    rows_by::<Q4_1Kernel>((w, mins), xq, rows, out);
}

/// As [`q4_1_rows`], for Q8_0 pairs.
pub fn q8_0_rows(w: &[Q8_0Pair], xq: &XRows, rows: Range<usize>, out: &mut [f32]) {
    rows_by::<Q8_0Kernel>(w, xq, rows, out);
}

/// A pair kernel over `N` activation rows at once.
trait PairKernel {
    /// One weight row as the kernel reads it.
    type W<'a>: Copy;
    /// # Safety
    /// Only where [`available`] holds.
    unsafe fn dot<const N: usize>(w: Self::W<'_>, x: &XRows, r: usize) -> [f32; N];
}

struct Q4_1Kernel;
impl PairKernel for Q4_1Kernel {
    type W<'a> = (&'a [Q4_1Pair], &'a [u16]);
    unsafe fn dot<const N: usize>(w: Self::W<'_>, x: &XRows, r: usize) -> [f32; N] {
        // SAFETY: the caller guarantees the CPU features.
        unsafe { q4_1_dot(w.0, w.1, x, r) }
    }
}

struct Q8_0Kernel;
impl PairKernel for Q8_0Kernel {
    type W<'a> = &'a [Q8_0Pair];
    unsafe fn dot<const N: usize>(w: Self::W<'_>, x: &XRows, r: usize) -> [f32; N] {
        // SAFETY: the caller guarantees the CPU features.
        unsafe { q8_0_dot(w, x, r) }
    }
}

/// Eight rows per pass, then four, then one (the same instructions per row in each).
fn rows_by<K: PairKernel>(w: K::W<'_>, xq: &XRows, rows: Range<usize>, out: &mut [f32]) {
    let mut r = rows.start;
    while r < rows.end {
        let at = r - rows.start;
        // SAFETY (all three): pair layouts are built only where `available()` holds.
        let n = match rows.end - r {
            8.. => {
                let y = unsafe { K::dot::<8>(w, xq, r) };
                out[at..at + 8].copy_from_slice(&y);
                8
            }
            4..8 => {
                let y = unsafe { K::dot::<4>(w, xq, r) };
                out[at..at + 4].copy_from_slice(&y);
                4
            }
            _ => {
                out[at] = unsafe { K::dot::<1>(w, xq, r) }[0];
                1
            }
        };
        r += n;
    }
}

/// Each row's `Σ m_b · sums_b` over the weight row's blocks, sixteen blocks at a time: the
/// Q4_1 offset term, as the rows' starting accumulators.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn offsets<const N: usize>(mins: &[u16], sums: &[Sums16]) -> [__m512; N] {
    let groups = mins.len().div_ceil(16);
    assert_eq!(sums.len(), N * groups);
    let mut acc = [_mm512_setzero_ps(); N];
    for g in 0..groups {
        let b = 16 * g;
        let mask = (((1u32 << (mins.len() - b).min(16)) - 1) & 0xFFFF) as __mmask16;
        // SAFETY: the mask reads only `mins[b..]` up to its end; masked-off lanes are not
        // touched (and read as zero, as do the sums past the row's last block).
        let m = unsafe { _mm256_maskz_loadu_epi16(mask, mins.as_ptr().add(b).cast()) };
        let m = _mm512_cvtph_ps(m);
        for j in 0..N {
            // SAFETY: `Sums16` is 64-byte aligned and 64 bytes long.
            let s = unsafe { _mm512_load_ps(sums[j * groups + g].0.as_ptr()) };
            acc[j] = _mm512_fmadd_ps(m, s, acc[j]);
        }
    }
    acc
}

/// Each accumulator's lane sum. Eight at once share a transpose-and-add tree (23
/// instructions instead of 56 for eight separate reductions, per weight row); a lone one
/// takes the same tree shape with shuffles, so a row's sum is bit for bit the same in a
/// pass of any size (a row's lanes are only ever added to its own lanes; padding rows are
/// zeros in lanes of their own).
#[target_feature(enable = "avx512f")]
fn reduce_rows<const N: usize>(acc: [__m512; N]) -> [f32; N] {
    let mut out = [0f32; N];
    if N == 1 {
        // Within each 128-bit lane: (a0 + a2) + (a1 + a3); then (c0 + c1) + (c2 + c3).
        let v = acc[0];
        let v = _mm512_add_ps(v, _mm512_permute_ps::<0b01_00_11_10>(v));
        let v = _mm512_add_ps(v, _mm512_permute_ps::<0b10_11_00_01>(v));
        let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b10_11_00_01>(v, v));
        let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b01_00_11_10>(v, v));
        out[0] = _mm512_cvtss_f32(v);
        return out;
    }
    for (chunk, dst) in acc.chunks(8).zip(out.chunks_mut(8)) {
        let a: [__m512; 8] =
            std::array::from_fn(|i| chunk.get(i).copied().unwrap_or(_mm512_setzero_ps()));
        // Per 128-bit lane: [x0 + x2, y0 + y2, x1 + x3, y1 + y3].
        let t: [__m512; 4] = std::array::from_fn(|i| {
            let (x, y) = (a[2 * i], a[2 * i + 1]);
            _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y))
        });
        // Per 128-bit lane: one partial sum of each of four rows.
        let u: [__m512; 2] = std::array::from_fn(|i| {
            let (x, y) = (_mm512_castps_pd(t[2 * i]), _mm512_castps_pd(t[2 * i + 1]));
            _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
            )
        });
        // [rows 0-3: c0 + c1, c2 + c3; rows 4-7: c0 + c1, c2 + c3], then the two halves.
        let v = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(u[0], u[1]),
            _mm512_shuffle_f32x4::<0xDD>(u[0], u[1]),
        );
        let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b10_11_00_01>(v, v));
        let mut lanes = [0f32; 16];
        // SAFETY: 16 lanes into a 16-lane array.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
        for (i, d) in dst.iter_mut().enumerate() {
            *d = lanes[(i / 4) * 8 + i % 4];
        }
    }
    out
}

/// The pair's two half-precision scales, each in the lanes its block's products occupy.
#[target_feature(enable = "avx512f,f16c")]
fn pair_scales(d: [u16; 2]) -> __m512 {
    let bits = d[0] as u32 | (d[1] as u32) << 16;
    let d = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)));
    _mm512_permutexvar_ps(pattern(0), d)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
fn q4_1_dot<const N: usize>(w: &[Q4_1Pair], mins: &[u16], xq: &XRows, r: usize) -> [f32; N] {
    let kp = w.len();
    assert!(xq.kp == kp && mins.len() == 2 * kp);
    let (x, sums, _) = xq.rows(r, N);
    let mask = _mm256_set1_epi8(0x0F);
    // The next weight row's offsets are read first thing in its call.
    _mm_prefetch::<_MM_HINT_T0>(mins.as_ptr().wrapping_add(mins.len()).cast());
    let mut acc = offsets(mins, sums);
    for (p, wp) in w.iter().enumerate() {
        // Weight rows stream from memory once per step; ask for the bytes a few pairs
        // ahead (past the row's end is the next row of the matrix, or harmlessly nothing:
        // a prefetch never faults).
        _mm_prefetch::<_MM_HINT_T0>((wp as *const Q4_1Pair).wrapping_add(PREFETCH).cast());
        // SAFETY: `qs` holds 32 bytes; unaligned loads are allowed.
        let packed = unsafe { _mm256_loadu_si256(wp.qs.as_ptr().cast()) };
        let lo = _mm256_and_si256(packed, mask);
        let hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
        let wq = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        let d = pair_scales(wp.d);
        for j in 0..N {
            let xp = &x[j * kp + p];
            // SAFETY: `XPair` is 64-byte aligned and each field read is 64 bytes.
            let (xq, scale) = unsafe {
                (
                    _mm512_load_si512(xp.qs.as_ptr().cast()),
                    _mm512_load_ps(xp.scale.as_ptr()),
                )
            };
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, xq);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d, scale), acc[j]);
        }
    }
    reduce_rows(acc)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
fn q8_0_dot<const N: usize>(w: &[Q8_0Pair], xq: &XRows, r: usize) -> [f32; N] {
    let kp = w.len();
    assert_eq!(xq.kp, kp);
    let (x, _, fix) = xq.rows(r, N);
    let mut acc = [_mm512_setzero_ps(); N];
    for (p, wp) in w.iter().enumerate() {
        // SAFETY: `qs` holds 64 bytes; unaligned loads are allowed.
        let wq = unsafe { _mm512_loadu_si512(wp.qs.as_ptr().cast()) };
        let d = pair_scales(wp.d);
        for j in 0..N {
            let xp = &x[j * kp + p];
            // SAFETY: `XPair` and `UnsignedFix` are 64-byte aligned; each read is 64 bytes.
            let (xq, scale, fix) = unsafe {
                (
                    _mm512_load_si512(xp.qs.as_ptr().cast()),
                    _mm512_load_ps(xp.scale.as_ptr()),
                    _mm512_load_si512(fix[j * kp + p].0.as_ptr().cast()),
                )
            };
            let dot = _mm512_dpbusd_epi32(fix, wq, xq);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d, scale), acc[j]);
        }
    }
    reduce_rows(acc)
}

#[cfg(test)]
impl XPair {
    /// The 64 values this pair stands for, block 0's then block 1's.
    pub fn values(&self) -> [f32; 2 * BLOCK] {
        let mut out = [0f32; 2 * BLOCK];
        for (i, &q) in self.qs.iter().enumerate() {
            let (block, half, j) = ((i / 16) % 2, i / 32, i % 16);
            out[block * BLOCK + half * 16 + j] = self.scale[i / 4] * q as f32;
        }
        out
    }
}
