//! AVX-512 VNNI kernels: two 32-value blocks per 512-bit instruction.
//!
//! On CPUs with full-width AVX-512 (AMD Zen 4/5, Intel Ice Lake and later) the 256-bit
//! kernels leave half of each vector unit idle and spend most of their instructions on
//! per-block bookkeeping (converting scales, broadcasting, reducing). Here the weights are
//! repacked at load into pairs of blocks, and activations are quantized into a matching pair
//! layout that carries its scales already broadcast to the lanes they multiply, so the inner
//! loop is one byte dot product, one conversion and two fused multiply-adds per 64 values.
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

use super::{BlockQ4_1, BlockQ8_0, BLOCK};

/// Whether this CPU runs these kernels.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("fma")
}

/// Two Q4_1 blocks repacked for one 512-bit pass.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q4_1Pair {
    /// Half-precision bits of `[d0, d1, m0, m1]`.
    dm: [u16; 4],
    /// Block 0's 16 packed bytes, then block 1's.
    qs: [u8; BLOCK],
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

/// Two activation blocks quantized to 8 bits, with what the kernels multiply them by.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct XPair {
    /// The 64 quantized values in pair byte order.
    qs: [i8; 2 * BLOCK],
    /// Each lane's block scale `d`.
    scale: [f32; 16],
    /// Each lane's `d · Σq / 8` of its block: eight lanes per block, so the lanes together
    /// give a Q4_1 weight offset `m` times the block's sum exactly (dividing by 8 is exact).
    sums: [f32; 16],
    /// `-128 ×` the sum of each lane's four values: undoes the +128 of Q8_0 pair weights.
    unsigned_fix: [i32; 16],
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
pub fn pack_q4_1(blocks: &[BlockQ4_1]) -> Vec<Q4_1Pair> {
    blocks
        .chunks_exact(2)
        .map(|b| {
            let mut qs = [0u8; BLOCK];
            qs[..16].copy_from_slice(&b[0].qs);
            qs[16..].copy_from_slice(&b[1].qs);
            Q4_1Pair {
                dm: [
                    b[0].d.to_bits(),
                    b[1].d.to_bits(),
                    b[0].m.to_bits(),
                    b[1].m.to_bits(),
                ],
                qs,
            }
        })
        .collect()
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
pub fn quantize(x: &[f32], m: usize, k: usize) -> Vec<XPair> {
    assert!(available() && x.len() == m * k && k.is_multiple_of(2 * BLOCK));
    let mut out = Vec::with_capacity(x.len() / (2 * BLOCK));
    for chunk in x.chunks_exact(2 * BLOCK) {
        // SAFETY: `available()` reported every feature `quantize_pair` is compiled for.
        out.push(unsafe { quantize_pair(chunk) });
    }
    out
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn quantize_pair(v: &[f32]) -> XPair {
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
        sums: [0.0; 16],
        unsigned_fix: [0; 16],
    };
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
    let sums = per_block(d0 * s0 as f32 / 8.0, d1 * s1 as f32 / 8.0);
    // SAFETY: `qs` holds 64 bytes.
    let xq = unsafe { _mm512_loadu_si512(pair.qs.as_ptr().cast()) };
    let lane_sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), xq);
    let fix = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(lane_sums, 7));
    // SAFETY: each store writes 16 lanes into a 16-lane array.
    unsafe {
        _mm512_storeu_ps(pair.scale.as_mut_ptr(), scale);
        _mm512_storeu_ps(pair.sums.as_mut_ptr(), sums);
        _mm512_storeu_si512(pair.unsigned_fix.as_mut_ptr().cast(), fix);
    }
    pair
}

/// `out[i] = w · x[rows.start + i]` for one weight row of `kp` pairs against quantized
/// activation rows of `kp` pairs each.
pub fn q4_1_rows(w: &[Q4_1Pair], xq: &[XPair], kp: usize, rows: Range<usize>, out: &mut [f32]) {
    rows_by::<Q4_1Kernel>(w, xq, kp, rows, out);
}

/// As [`q4_1_rows`], for Q8_0 pairs.
pub fn q8_0_rows(w: &[Q8_0Pair], xq: &[XPair], kp: usize, rows: Range<usize>, out: &mut [f32]) {
    rows_by::<Q8_0Kernel>(w, xq, kp, rows, out);
}

/// A pair kernel over `N` activation rows at once.
trait PairKernel {
    type W;
    /// # Safety
    /// Only where [`available`] holds.
    unsafe fn dot<const N: usize>(w: &[Self::W], x: [&[XPair]; N]) -> [f32; N];
}

struct Q4_1Kernel;
impl PairKernel for Q4_1Kernel {
    type W = Q4_1Pair;
    unsafe fn dot<const N: usize>(w: &[Q4_1Pair], x: [&[XPair]; N]) -> [f32; N] {
        // SAFETY: the caller guarantees the CPU features.
        unsafe { q4_1_dot(w, x) }
    }
}

struct Q8_0Kernel;
impl PairKernel for Q8_0Kernel {
    type W = Q8_0Pair;
    unsafe fn dot<const N: usize>(w: &[Q8_0Pair], x: [&[XPair]; N]) -> [f32; N] {
        // SAFETY: the caller guarantees the CPU features.
        unsafe { q8_0_dot(w, x) }
    }
}

/// Eight rows per pass, then four, then one (the same instructions per row in each).
fn rows_by<K: PairKernel>(
    w: &[K::W],
    xq: &[XPair],
    kp: usize,
    rows: Range<usize>,
    out: &mut [f32],
) {
    let x = |i: usize| &xq[i * kp..(i + 1) * kp];
    let mut r = rows.start;
    while r < rows.end {
        let at = r - rows.start;
        // SAFETY (all three): pair layouts are built only where `available()` holds.
        let n = match rows.end - r {
            8.. => {
                let y = unsafe { K::dot::<8>(w, std::array::from_fn(|j| x(r + j))) };
                out[at..at + 8].copy_from_slice(&y);
                8
            }
            4..8 => {
                let y = unsafe { K::dot::<4>(w, std::array::from_fn(|j| x(r + j))) };
                out[at..at + 4].copy_from_slice(&y);
                4
            }
            _ => {
                out[at] = unsafe { K::dot::<1>(w, [x(r)]) }[0];
                1
            }
        };
        r += n;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
fn q4_1_dot<const N: usize>(w: &[Q4_1Pair], x: [&[XPair]; N]) -> [f32; N] {
    assert!(x.iter().all(|x| x.len() == w.len()));
    let mask = _mm256_set1_epi8(0x0F);
    let (d_lanes, m_lanes) = (pattern(0), pattern(2));
    let mut acc = [_mm512_setzero_ps(); N];
    for (p, wp) in w.iter().enumerate() {
        // Weight rows stream from memory once per step; ask for the bytes a few pairs
        // ahead (past the row's end is the next row of the matrix, or harmlessly nothing:
        // a prefetch never faults).
        _mm_prefetch::<_MM_HINT_T0>((wp as *const Q4_1Pair).wrapping_add(PREFETCH).cast());
        // SAFETY: `qs` holds 32 bytes and `dm` 8; unaligned loads are allowed.
        let (packed, dm) = unsafe {
            (
                _mm256_loadu_si256(wp.qs.as_ptr().cast()),
                _mm_loadl_epi64(wp.dm.as_ptr().cast()),
            )
        };
        let lo = _mm256_and_si256(packed, mask);
        let hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
        let wq = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        let dm = _mm512_castps128_ps512(_mm_cvtph_ps(dm));
        let (d, m) = (
            _mm512_permutexvar_ps(d_lanes, dm),
            _mm512_permutexvar_ps(m_lanes, dm),
        );
        for j in 0..N {
            let xp = &x[j][p];
            // SAFETY: `XPair` is 64-byte aligned and each field read is 64 bytes.
            let (xq, scale, sums) = unsafe {
                (
                    _mm512_load_si512(xp.qs.as_ptr().cast()),
                    _mm512_load_ps(xp.scale.as_ptr()),
                    _mm512_load_ps(xp.sums.as_ptr()),
                )
            };
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, xq);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d, scale), acc[j]);
            acc[j] = _mm512_fmadd_ps(m, sums, acc[j]);
        }
    }
    acc.map(|a| _mm512_reduce_add_ps(a))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
fn q8_0_dot<const N: usize>(w: &[Q8_0Pair], x: [&[XPair]; N]) -> [f32; N] {
    assert!(x.iter().all(|x| x.len() == w.len()));
    let d_lanes = pattern(0);
    let mut acc = [_mm512_setzero_ps(); N];
    for (p, wp) in w.iter().enumerate() {
        let bits = wp.d[0] as u32 | (wp.d[1] as u32) << 16;
        // SAFETY: `qs` holds 64 bytes; unaligned loads are allowed.
        let wq = unsafe { _mm512_loadu_si512(wp.qs.as_ptr().cast()) };
        let d = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)));
        let d = _mm512_permutexvar_ps(d_lanes, d);
        for j in 0..N {
            let xp = &x[j][p];
            // SAFETY: `XPair` is 64-byte aligned and each field read is 64 bytes.
            let (xq, scale, fix) = unsafe {
                (
                    _mm512_load_si512(xp.qs.as_ptr().cast()),
                    _mm512_load_ps(xp.scale.as_ptr()),
                    _mm512_load_si512(xp.unsigned_fix.as_ptr().cast()),
                )
            };
            let dot = _mm512_dpbusd_epi32(fix, wq, xq);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d, scale), acc[j]);
        }
    }
    acc.map(|a| _mm512_reduce_add_ps(a))
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
