//! Causal attention of one query head over a sequence's cached keys and values, for the
//! batched forward pass: a portable loop, and AVX2 versions chosen at run time (with the
//! same CPU check as the matrix kernels).

// `unsafe`: AVX2 intrinsics and pointer loads, each with its SAFETY argument.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use super::kernels::hsum;
use super::kernels::uses_simd;

/// One attention head's view of a sequence's cache: the cached runs and where the head's
/// keys and values sit in each position's row.
pub struct HeadKv<'a> {
    /// `(keys, values, positions)` runs, oldest first.
    pub runs: &'a [super::kv::Run<'a>],
    /// Offset of this head in a position's row.
    pub offset: usize,
    /// Row width (kv heads × head size).
    pub stride: usize,
}

/// Causal attention of one query head over the first `len` cached positions, written to
/// `out`. Compiled twice, portable and with AVX2+FMA (chosen at run time), so the
/// loops vectorise 8 wide on CPUs that have it without a CPU-specific build.
pub fn attend(q: &[f32], kv: &HeadKv<'_>, len: usize, scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if uses_simd() {
        // SAFETY (all three): `dot_fn` chose a SIMD kernel only after the CPU reported AVX2
        // and FMA.
        return unsafe {
            match q.len() {
                64 => attend_simd::<8>(q, kv, len, scale, out),
                128 => attend_simd::<16>(q, kv, len, scale, out),
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
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_simd<const L: usize>(
    q: &[f32],
    kv: &HeadKv<'_>,
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
                        _mm256_loadu_ps(row.as_ptr().add(c * 8)),
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
                let x = unsafe { _mm256_loadu_ps(row.as_ptr().add(c * 8)) };
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
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(q: &[f32], kv: &HeadKv<'_>, len: usize, scale: f32, out: &mut [f32]) {
    attend_body(q, kv, len, scale, out)
}

#[inline(always)]
pub(super) fn attend_body(q: &[f32], kv: &HeadKv<'_>, len: usize, scale: f32, out: &mut [f32]) {
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

    fn random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn attention_paths_agree() {
        let (d, kvh, positions) = (64, 2, 37);
        let k = random(positions * kvh * d, 31);
        let v = random(positions * kvh * d, 37);
        let q = random(d, 41);
        let runs: Vec<crate::batch::kv::Run<'_>> = vec![
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
    }
}
