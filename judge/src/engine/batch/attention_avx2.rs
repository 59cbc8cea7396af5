//! Attention in AVX2 for the batched forward pass (CPUs without AVX-512, or with
//! `AUTOJ_Q4_1_KERNEL=avx2`), over the same blocks of query heads as the AVX-512 kernel:
//! each cached key and value row is loaded once per block, and every head's result is
//! computed by the same operations whatever else the block holds, so a position's attention
//! never depends on how its sequence's rows were grouped into steps.

// `unsafe`: AVX2 intrinsics and pointer loads, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::attention::{HeadKv, KvValue, QueryBlock, MAX_BLOCK_HEADS};
use super::kernels::hsum;

/// Whether [`attend_block`] can run `heads` query heads of `head_dim` values on this CPU.
pub fn supports(heads: usize, head_dim: usize) -> bool {
    super::kernels::uses_simd()
        && (1..=MAX_BLOCK_HEADS).contains(&heads)
        && matches!(head_dim, 64 | 128)
}

/// Causal attention of a block of query heads over their shared key/value head; writes
/// `out` (heads side by side). Only for shapes [`supports`] accepts.
pub fn attend_block<T: KvValue>(block: &QueryBlock<'_>, kv: &HeadKv<'_, T>, out: &mut [f32]) {
    assert!(
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
            && block.q.len() == out.len()
    );
    // `H × C` accumulators and `C` value vectors stay within the sixteen registers.
    macro_rules! table {
        ($(($h:literal, $l:literal, $c:literal)),* $(,)?) => {
            match (block.heads(), block.head_dim) {
                // SAFETY (every arm): AVX2, FMA and F16C were checked just above.
                $(($h, $l) => unsafe { attend::<$h, { $l / 8 }, $c, T>(block, kv, out) },)*
                other => panic!("unsupported attention block (heads, head size) {other:?}"),
            }
        };
    }
    table!(
        (1, 64, 8),
        (2, 64, 4),
        (3, 64, 2),
        (4, 64, 2),
        (5, 64, 1),
        (6, 64, 1),
        (7, 64, 1),
        (8, 64, 1),
        (1, 128, 8),
        (2, 128, 4),
        (3, 128, 2),
        (4, 128, 2),
        (5, 128, 1),
        (6, 128, 1),
        (7, 128, 1),
        (8, 128, 1),
    );
}

/// `H` query heads of `L` eight-lane vectors each; values accumulated `C` vectors at a time.
#[target_feature(enable = "avx2,fma,f16c")]
fn attend<const H: usize, const L: usize, const C: usize, T: KvValue>(
    block: &QueryBlock<'_>,
    kv: &HeadKv<'_, T>,
    out: &mut [f32],
) {
    let d = L * 8;
    assert!(block.q.len() == H * d && out.len() == H * d && L.is_multiple_of(C));
    let (lens, longest) = block.lengths::<H>(kv.cached());
    // Scores, head-major, padded to whole vectors of eight positions.
    let padded = longest.div_ceil(8) * 8;
    let mut scores = vec![f32::NEG_INFINITY; H * padded];
    key_scores::<H, L, T>(block.q, kv, (&lens, longest), block.scale, &mut scores);
    for (h, &len) in lens.iter().enumerate() {
        softmax(&mut scores[h * padded..h * padded + len.div_ceil(8) * 8]);
    }
    for pass in 0..L / C {
        weighted_values::<H, C, T>(kv, (&lens, longest), (&scores, padded), pass, out);
    }
}

/// Every head's scaled dot product with each cached key up to the head's own length, into
/// `scores` (head-major, `scores.len() / H` per head); later positions keep their -inf.
#[target_feature(enable = "avx2,fma,f16c")]
fn key_scores<const H: usize, const L: usize, T: KvValue>(
    q: &[f32],
    kv: &HeadKv<'_, T>,
    (lens, longest): (&[usize; H], usize),
    scale: f32,
    scores: &mut [f32],
) {
    let d = L * 8;
    let padded = scores.len() / H;
    let mut p = 0;
    let mut left = longest;
    for &(k, _, n) in kv.runs {
        for i in 0..n.min(left) {
            let at = i * kv.stride + kv.offset;
            let row = &k[at..at + T::stored_len(d)];
            // One key vector at a time against every head: H accumulators and one key in
            // registers; each head's sum still runs over the columns in order.
            let mut acc = [_mm256_setzero_ps(); H];
            for c in 0..L {
                // SAFETY: `row` is a whole head row and `q` holds H·L·8 values; c < L, h < H.
                let kc = unsafe { T::load8(row.as_ptr(), c) };
                for (h, a) in acc.iter_mut().enumerate() {
                    let qc = unsafe { _mm256_loadu_ps(q.as_ptr().add(h * d + c * 8)) };
                    *a = _mm256_fmadd_ps(qc, kc, *a);
                }
            }
            for (h, a) in acc.into_iter().enumerate() {
                if p < lens[h] {
                    scores[h * padded + p] = hsum!(a) * scale;
                }
            }
            p += 1;
        }
        left -= n.min(left);
    }
}

/// Softmax of one head's scores in place (a whole number of eight-position vectors; the
/// -inf padding becomes exactly 0).
#[target_feature(enable = "avx2,fma,f16c")]
fn softmax(s: &mut [f32]) {
    let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in s.chunks_exact(8) {
        // SAFETY: 8 values.
        max = _mm256_max_ps(max, unsafe { _mm256_loadu_ps(c.as_ptr()) });
    }
    let max = _mm256_set1_ps(hmax(max));
    let mut sum = _mm256_setzero_ps();
    for c in s.chunks_exact_mut(8) {
        // SAFETY: 8 values.
        let e = exp(_mm256_sub_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, max));
        sum = _mm256_add_ps(sum, e);
        // SAFETY: 8 values.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), e) };
    }
    let inv = 1.0 / hsum!(sum);
    for v in s.iter_mut() {
        *v *= inv;
    }
}

/// One column pass of the weighted sum of values: columns `pass·C·8 ..` of every head's
/// output, each head summing only over its own positions, in position order.
#[target_feature(enable = "avx2,fma,f16c")]
fn weighted_values<const H: usize, const C: usize, T: KvValue>(
    kv: &HeadKv<'_, T>,
    (lens, longest): (&[usize; H], usize),
    (scores, padded): (&[f32], usize),
    pass: usize,
    out: &mut [f32],
) {
    let d = out.len() / H;
    let col = pass * C * 8;
    // Every head attends to at least the first head's positions (lengths never decrease).
    let shared = lens[0];
    let mut acc = [[_mm256_setzero_ps(); C]; H];
    let mut p = 0;
    let mut left = longest;
    for &(_, v, n) in kv.runs {
        for i in 0..n.min(left) {
            let at = i * kv.stride + kv.offset;
            let row = &v[at..at + T::stored_len(d)];
            // SAFETY: `row` is a whole head row; pass·C + c < L.
            let vr: [__m256; C] =
                std::array::from_fn(|c| unsafe { T::load8(row.as_ptr(), pass * C + c) });
            for (h, a) in acc.iter_mut().enumerate() {
                if p >= shared && p >= lens[h] {
                    continue;
                }
                let w = _mm256_set1_ps(scores[h * padded + p]);
                for c in 0..C {
                    a[c] = _mm256_fmadd_ps(w, vr[c], a[c]);
                }
            }
            p += 1;
        }
        left -= n.min(left);
    }
    for (h, head) in acc.iter().enumerate() {
        for (c, v) in head.iter().enumerate() {
            // SAFETY: `out` holds H·d values and col + C·8 ≤ d.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(h * d + col + c * 8), *v) };
        }
    }
}

/// The largest of the eight lanes.
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
}

/// `e^x` for eight lanes (x ≤ 0 here): `2^(x·log2 e)` split into a power of two and a
/// degree-6 Taylor polynomial of `2^f` for `|f| ≤ 1/2`; below -87 (where `e^x` leaves the
/// normal range) the result is exactly 0, so -inf padding weighs nothing.
#[target_feature(enable = "avx2,fma,f16c")]
fn exp(x: __m256) -> __m256 {
    let t = _mm256_mul_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let f = _mm256_mul_ps(_mm256_sub_ps(t, n), _mm256_set1_ps(std::f32::consts::LN_2));
    // Σ f^k / k! for k ≤ 6, by Horner.
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c));
    }
    // 2^n built in the exponent field (n ≥ -126 after the clamp, so it stays normal).
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    let scaled = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    let kept = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(-87.0));
    _mm256_and_ps(scaled, kept)
}
