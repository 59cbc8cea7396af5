//! Activations quantized for the K-quant products (Q8_K): one f32 factor per 256 values,
//! 8-bit values, and the sums the weights' offsets multiply. Every path produces the same
//! integers, so a row's products never depend on which path or thread quantized it.

// `unsafe`: the AVX2 rounding, after the CPU check, with its SAFETY arguments.
#![allow(unsafe_code)]

use bytemuck::{Pod, Zeroable};

use super::blocks::uses_simd;
use super::kquant::QK_K;

/// One activation super-block: `value ≈ d * q`; `bsums[i]` is the sum of `qs[16i..16i+16]`
/// and `dsums[i]` is `d * bsums[i]` (what the AVX-512 kernels weigh the offsets with).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    pub(super) d: f32,
    pub(super) qs: [i8; QK_K],
    pub(super) bsums: [i16; QK_K / 16],
    pub(super) dsums: [f32; QK_K / 16],
    /// `dsums` added in pairs (each 32-value sub-block's), for the kernels that apply
    /// Q4_K / Q5_K mins per sub-block (the same sums they would form, made once per block).
    pub(super) dsums32: [f32; QK_K / 32],
}

/// Quantizes `m` rows of `k` values (`k` a multiple of 256) to Q8_K blocks.
pub fn quantize_q8k(x: &[f32], m: usize, k: usize) -> Vec<BlockQ8K> {
    debug_assert_eq!(x.len(), m * k);
    let blocks = x.len() / QK_K;
    let mut out = vec![BlockQ8K::zeroed(); blocks];
    let fill = |first: usize, out: &mut [BlockQ8K]| {
        let x = &x[first * QK_K..];
        for (b, chunk) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
            *b = BlockQ8K::quantize(chunk.try_into().expect("a whole super-block"));
        }
    };
    // A prompt chunk's activations (512 rows of 4,096 values: 8,192 blocks) took as long
    // as a few percent of the products when one thread quantized them while the others
    // waited; a decode step's few blocks are not worth a dispatch.
    if blocks < PARALLEL_BLOCKS {
        fill(0, &mut out);
    } else {
        let per = blocks
            .div_ceil(4 * candle_core::utils::get_num_threads())
            .max(1);
        super::tiling::par_chunks(&mut out, per, |i, piece| fill(i * per, piece));
    }
    out
}

/// Fewest activation blocks [`quantize_q8k`] spreads over the pool.
const PARALLEL_BLOCKS: usize = 256;

impl BlockQ8K {
    /// One super-block of activations: `d = max |x| / 127`, `q = round(x / d)` (halves
    /// away from zero), and the sums the kernels weigh offsets with. The AVX2 path computes
    /// the same integers as the portable one (tested), so a row's products never depend on
    /// which path quantized it.
    pub fn quantize(x: &[f32; QK_K]) -> Self {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK_K];
        #[cfg(target_arch = "x86_64")]
        if uses_simd() {
            // SAFETY: `uses_simd` reported AVX2, FMA and F16C.
            unsafe { round_avx2(x, inv, &mut qs) };
            return Self::with_values(d, qs);
        }
        for (q, v) in qs.iter_mut().zip(x) {
            *q = (v * inv).round() as i8;
        }
        Self::with_values(d, qs)
    }

    /// The block of values `qs` with scale `d`, its sums filled in.
    fn with_values(d: f32, qs: [i8; QK_K]) -> Self {
        let mut bsums = [0i16; QK_K / 16];
        for (s, group) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
            *s = group.iter().map(|&q| q as i16).sum();
        }
        let dsums = bsums.map(|b| d * b as f32);
        let dsums32 = std::array::from_fn(|s| dsums[2 * s] + dsums[2 * s + 1]);
        Self {
            d,
            qs,
            bsums,
            dsums,
            dsums32,
        }
    }

    /// The block's values as the kernels see them (tests compare products against these).
    pub fn values(&self) -> [f32; QK_K] {
        self.qs.map(|q| self.d * q as f32)
    }
}

/// `qs[i] = round(x[i] · inv)` eight values at a time, rounding halves away from zero as
/// `f32::round` does (truncate, then step away from zero where the dropped part is at
/// least one half; both steps exact) and NaN to 0 as `as i8` does, so the integers equal
/// the portable loop's.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_avx2(x: &[f32; QK_K], inv: f32, qs: &mut [i8; QK_K]) {
    use std::arch::x86_64::*;
    let (inv, half, one) = (
        _mm256_set1_ps(inv),
        _mm256_set1_ps(0.5),
        _mm256_set1_ps(1.0),
    );
    let sign = _mm256_set1_ps(-0.0);
    // Undoes the lane interleaving of the two packs below.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let round = |at: usize| {
        // SAFETY: `at + 8 <= QK_K` (callers step through whole groups of 32).
        let y = _mm256_mul_ps(unsafe { _mm256_loadu_ps(x.as_ptr().add(at)) }, inv);
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
        let dropped = _mm256_andnot_ps(sign, _mm256_sub_ps(y, t));
        let step = _mm256_or_ps(_mm256_and_ps(y, sign), one);
        let up = _mm256_cmp_ps::<_CMP_GE_OQ>(dropped, half);
        let rounded = _mm256_add_ps(t, _mm256_and_ps(up, step));
        // NaN (an infinite input times a zero `inv`) would convert to -2^31, then -128.
        let number = _mm256_cmp_ps::<_CMP_ORD_Q>(y, y);
        _mm256_cvttps_epi32(_mm256_and_ps(rounded, number))
    };
    for at in (0..QK_K).step_by(32) {
        let low = _mm256_packs_epi32(round(at), round(at + 8));
        let high = _mm256_packs_epi32(round(at + 16), round(at + 24));
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(low, high), order);
        // SAFETY: 32 bytes at `at` lie inside `qs`.
        unsafe { _mm256_storeu_si256(qs.as_mut_ptr().add(at).cast(), bytes) };
    }
}
