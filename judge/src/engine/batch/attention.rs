//! Causal attention of one query head over a sequence's cached keys and values, for the
//! batched forward pass: a portable loop, and AVX2 versions chosen at run time (with the
//! same CPU check as the matrix kernels).

// `unsafe`: AVX2 intrinsics and pointer loads, each with its SAFETY argument.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m256, __m512};

use half::f16;

#[cfg(target_arch = "x86_64")]
use super::kernels::hsum;
use super::kernels::uses_simd;

/// A cached key/value element: `f32`, or `f16` widened as it is loaded.
pub trait KvValue: Copy + Send + Sync {
    /// The value as `f32`.
    fn to_f32(self) -> f32;

    /// Eight values from `p` as one 256-bit vector.
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C, and eight values are readable at `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> __m256;

    /// Sixteen values from `p` as one 512-bit vector.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and sixteen values are readable at `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> __m512;
}

impl KvValue for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees eight readable values.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees sixteen readable values.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
}

impl KvValue for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const f16) -> __m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees eight readable values (16 bytes).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f16) -> __m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees sixteen readable values (32 bytes).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
}

/// One attention head's view of a sequence's cache: the cached runs and where the head's
/// keys and values sit in each position's row.
pub struct HeadKv<'a, T> {
    /// `(keys, values, positions)` runs, oldest first.
    pub runs: &'a [super::kv::Run<'a, T>],
    /// Offset of this head in a position's row.
    pub offset: usize,
    /// Row width (kv heads × head size).
    pub stride: usize,
}

/// Causal attention of one query head over the first `len` cached positions, written to
/// `out`. Compiled twice, portable and with AVX2+FMA (chosen at run time), so the
/// loops vectorise 8 wide on CPUs that have it without a CPU-specific build.
pub fn attend<T: KvValue>(q: &[f32], kv: &HeadKv<'_, T>, len: usize, scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if uses_simd() {
        // SAFETY (all three): `dot_fn` chose a SIMD kernel only after the CPU reported AVX2
        // and FMA.
        return unsafe {
            match q.len() {
                64 => attend_simd::<8, T>(q, kv, len, scale, out),
                128 => attend_simd::<16, T>(q, kv, len, scale, out),
                _ => attend_avx2(q, kv, len, scale, out),
            }
        };
    }
    attend_body(q, kv, len, scale, out)
}

/// Attention for a head size known at compile time (`L` vectors of 8), in AVX2 intrinsics:
/// one 8-wide accumulator per score, and the output row held in `L` registers across
/// positions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_simd<const L: usize, T: KvValue>(
    q: &[f32],
    kv: &HeadKv<'_, T>,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let d = L * 8;
    assert!(q.len() == d && out.len() == d);
    let mut scores = Vec::with_capacity(len);
    let mut left = len;
    for &(k, _, n) in kv.runs {
        let take = n.min(left);
        for p in 0..take {
            let row = &k[p * kv.stride + kv.offset..p * kv.stride + kv.offset + d];
            let mut acc = _mm256_setzero_ps();
            for c in 0..L {
                // SAFETY: `q` and `row` hold L * 8 values; c < L.
                let (a, b) = unsafe {
                    (
                        _mm256_loadu_ps(q.as_ptr().add(c * 8)),
                        T::load8(row.as_ptr().add(c * 8)),
                    )
                };
                acc = _mm256_fmadd_ps(a, b, acc);
            }
            scores.push(hsum!(acc) * scale);
        }
        left -= take;
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for sc in scores.iter_mut() {
        *sc = (*sc - max).exp();
        sum += *sc;
    }
    let inv = 1.0 / sum;
    let mut acc = [_mm256_setzero_ps(); L];
    let mut idx = 0;
    let mut left = len;
    for &(_, v, n) in kv.runs {
        let take = n.min(left);
        for p in 0..take {
            let w = _mm256_set1_ps(scores[idx] * inv);
            let row = &v[p * kv.stride + kv.offset..p * kv.stride + kv.offset + d];
            for (c, a) in acc.iter_mut().enumerate() {
                // SAFETY: `row` holds L * 8 values; c < L.
                let x = unsafe { T::load8(row.as_ptr().add(c * 8)) };
                *a = _mm256_fmadd_ps(w, x, *a);
            }
            idx += 1;
        }
        left -= take;
    }
    for (c, a) in acc.iter().enumerate() {
        // SAFETY: `out` holds L * 8 values; c < L.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(c * 8), *a) };
    }
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
    let mut scores = Vec::with_capacity(len);
    let mut left = len;
    for &(k, _, n) in kv.runs {
        for p in 0..n.min(left) {
            let at = p * kv.stride + kv.offset;
            scores.push(dot_f32(q, &k[at..at + d]) * scale);
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
            for (o, v) in out.iter_mut().zip(&v[at..at + d]) {
                *o += w * v.to_f32();
            }
            idx += 1;
        }
        left = left.saturating_sub(n);
    }
}

/// Dot product with eight independent sums (one 8-wide vector) so the compiler can
/// vectorise it; the short final reduction matters because it runs once per position.
#[inline(always)]
fn dot_f32<T: KvValue>(a: &[f32], b: &[T]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i].to_f32();
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * y.to_f32())
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::batch::test_values::random;

    #[test]
    fn attention_paths_agree() {
        let (d, kvh, positions) = (64, 2, 37);
        let k = random(positions * kvh * d, 31);
        let v = random(positions * kvh * d, 37);
        let q = random(d, 41);
        let runs: Vec<crate::engine::batch::kv::Run<'_, f32>> = vec![
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
        let runs16: Vec<crate::engine::batch::kv::Run<'_, f16>> = vec![
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
