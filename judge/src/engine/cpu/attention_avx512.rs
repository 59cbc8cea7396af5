//! Attention in AVX-512 for the batched forward pass, over blocks of query heads that share
//! one key/value head.
//!
//! A block is the query heads of one key/value head (SmolLM2 has three per key/value head,
//! LLaMA-2 one) for one position, or for several consecutive positions of one sequence in
//! prefill. Each cached key and value row is loaded once for the whole block, so a prompt
//! chunk reads its cache once per eight heads instead of once per head; scores of sixteen
//! positions are reduced together by one transpose-and-add tree instead of one horizontal
//! sum each, and the softmax exponentials are computed sixteen at a time.
//!
//! Every head's result is computed by the same sequence of operations whatever the block
//! holds: positions past a head's own length are masked out, never added as zeros. So a
//! position's attention is bit-identical whether its sequence decodes alone, among others,
//! or in a prompt chunk of any length (chunks depend on what else is in the step).

// `unsafe`: AVX-512 intrinsics and pointer loads, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::attention_inputs::{prefetch_row, HeadKv, KvValue, QueryBlock, MAX_BLOCK_HEADS};
use super::kernels::exp;

/// Whether [`attend_block`] can run `heads` query heads of `head_dim` values on this CPU.
pub fn supports(heads: usize, head_dim: usize) -> bool {
    super::kernels::uses_avx512()
        && is_x86_feature_detected!("avx512f")
        && (1..=MAX_BLOCK_HEADS).contains(&heads)
        && matches!(head_dim, 64 | 128)
}

/// Causal attention of a block of query heads over their shared key/value head; writes
/// `out` (heads side by side, as in the block's queries). Only for shapes [`supports`]
/// accepts.
pub fn attend_block<T: KvValue>(block: &QueryBlock<'_>, kv: &HeadKv<'_, T>, out: &mut [f32]) {
    assert!(is_x86_feature_detected!("avx512f") && block.q.len() == out.len());
    // The column pass width `C` keeps `H × C` accumulators and `C` value vectors within the
    // 32 registers.
    macro_rules! table {
        ($(($h:literal, $l:literal, $c:literal)),* $(,)?) => {
            match (block.heads(), block.head_dim) {
                // SAFETY (every arm): AVX-512F was checked just above.
                $(($h, $l) => unsafe { attend::<$h, { $l / 16 }, $c, T>(block, kv, out) },)*
                other => panic!("unsupported attention block (heads, head size) {other:?}"),
            }
        };
    }
    table!(
        (1, 64, 4),
        (2, 64, 4),
        (3, 64, 4),
        (4, 64, 4),
        (5, 64, 2),
        (6, 64, 2),
        (7, 64, 2),
        (8, 64, 2),
        (1, 128, 8),
        (2, 128, 8),
        (3, 128, 4),
        (4, 128, 4),
        (5, 128, 2),
        (6, 128, 2),
        (7, 128, 2),
        (8, 128, 2),
    );
}

/// `H` query heads of `L` sixteen-lane vectors each; values accumulated `C` vectors at a time.
#[target_feature(enable = "avx512f")]
fn attend<const H: usize, const L: usize, const C: usize, T: KvValue>(
    block: &QueryBlock<'_>,
    kv: &HeadKv<'_, T>,
    out: &mut [f32],
) {
    let d = L * 16;
    assert!(block.q.len() == H * d && out.len() == H * d && L.is_multiple_of(C));
    let (lens, longest) = block.lengths::<H>(kv.cached());
    // Scores, head-major, padded to whole blocks of sixteen positions.
    let padded = longest.div_ceil(16) * 16;
    let mut scores = vec![f32::NEG_INFINITY; H * padded];
    key_scores::<H, L, T>(block.q, kv, (&lens, longest), block.scale, &mut scores);
    for (h, &len) in lens.iter().enumerate() {
        softmax(&mut scores[h * padded..h * padded + len.div_ceil(16) * 16]);
    }
    for pass in 0..L / C {
        weighted_values::<H, C, T>(kv, (&lens, longest), (&scores, padded), pass, out);
    }
}

/// Every head's scaled dot product with each cached key up to the head's own length, into
/// `scores` (head-major, `scores.len() / H` per head); later positions keep their -inf.
#[target_feature(enable = "avx512f")]
fn key_scores<const H: usize, const L: usize, T: KvValue>(
    q: &[f32],
    kv: &HeadKv<'_, T>,
    (lens, longest): (&[usize; H], usize),
    scale: f32,
    scores: &mut [f32],
) {
    let d = L * 16;
    let padded = scores.len() / H;
    let mut partial = [[_mm512_setzero_ps(); 16]; H];
    let mut p = 0;
    let mut left = longest;
    for &(k, _, n) in kv.runs {
        for i in 0..n.min(left) {
            let at = i * kv.stride + kv.offset;
            prefetch_row(k, at + AHEAD * kv.stride, T::stored_len(d));
            let row = &k[at..at + T::stored_len(d)];
            // One key vector at a time against every head: H accumulators and one key in
            // registers; each head's sum still runs over the columns in order.
            let mut acc = [_mm512_setzero_ps(); H];
            for c in 0..L {
                // SAFETY: `row` is a whole head row and `q` holds H·L·16 values; c < L, h < H.
                let kc = unsafe { T::load16(row.as_ptr(), c) };
                for (h, a) in acc.iter_mut().enumerate() {
                    let qc = unsafe { _mm512_loadu_ps(q.as_ptr().add(h * d + c * 16)) };
                    *a = if c == 0 {
                        _mm512_mul_ps(qc, kc)
                    } else {
                        _mm512_fmadd_ps(qc, kc, *a)
                    };
                }
            }
            for (h, a) in acc.into_iter().enumerate() {
                partial[h][p % 16] = a;
            }
            p += 1;
            if p % 16 == 0 || p == longest {
                let block = (p - 1) / 16 * 16;
                for (h, &len) in lens.iter().enumerate() {
                    // Lanes of `sum16` are independent, so positions past a head's length
                    // (or stale from the previous block) never touch its stored scores.
                    let filled = len.min(p).saturating_sub(block);
                    if filled == 0 {
                        continue;
                    }
                    let sums = _mm512_mul_ps(sum16(&partial[h]), _mm512_set1_ps(scale));
                    let dst = &mut scores[h * padded + block..h * padded + block + 16];
                    let mask = (((1u32 << filled) - 1) & 0xFFFF) as __mmask16;
                    // SAFETY: `dst` holds 16 values.
                    unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, sums) };
                }
            }
        }
        left -= n.min(left);
    }
}

/// Softmax of one head's scores in place (a whole number of sixteen-position blocks; the
/// -inf padding becomes exactly 0).
#[target_feature(enable = "avx512f")]
fn softmax(s: &mut [f32]) {
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for c in s.chunks_exact(16) {
        // SAFETY: 16 values.
        max = _mm512_max_ps(max, unsafe { _mm512_loadu_ps(c.as_ptr()) });
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
    let mut sum = _mm512_setzero_ps();
    for c in s.chunks_exact_mut(16) {
        // SAFETY: 16 values.
        let e = exp(_mm512_sub_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) }, max));
        sum = _mm512_add_ps(sum, e);
        // SAFETY: 16 values.
        unsafe { _mm512_storeu_ps(c.as_mut_ptr(), e) };
    }
    let inv = 1.0 / _mm512_reduce_add_ps(sum);
    for v in s.iter_mut() {
        *v *= inv;
    }
}

/// One column pass of the weighted sum of values: columns `pass·C·16 ..` of every head's
/// output, each head summing only over its own positions, in position order.
#[target_feature(enable = "avx512f")]
fn weighted_values<const H: usize, const C: usize, T: KvValue>(
    kv: &HeadKv<'_, T>,
    (lens, longest): (&[usize; H], usize),
    (scores, padded): (&[f32], usize),
    pass: usize,
    out: &mut [f32],
) {
    let d = out.len() / H;
    let col = pass * C * 16;
    // The stored span of this pass's columns (whole 8-bit blocks with their scales).
    let (lo, hi) = (T::stored_len(col / 32 * 32), T::stored_len(col + C * 16));
    // Every head attends to at least the first head's positions (lengths never decrease).
    let shared = lens[0];
    let mut acc = [[_mm512_setzero_ps(); C]; H];
    let mut p = 0;
    let mut left = longest;
    for &(_, v, n) in kv.runs {
        for i in 0..n.min(left) {
            let at = i * kv.stride + kv.offset;
            prefetch_row(v, at + AHEAD * kv.stride + lo, hi - lo);
            let row = &v[at..at + T::stored_len(d)];
            // SAFETY: `row` is a whole head row; pass·C + c < L.
            let vr: [__m512; C] =
                std::array::from_fn(|c| unsafe { T::load16(row.as_ptr(), pass * C + c) });
            for (h, a) in acc.iter_mut().enumerate() {
                if p >= shared && p >= lens[h] {
                    continue;
                }
                let w = _mm512_set1_ps(scores[h * padded + p]);
                for c in 0..C {
                    a[c] = _mm512_fmadd_ps(w, vr[c], a[c]);
                }
            }
            p += 1;
        }
        left -= n.min(left);
    }
    for (h, head) in acc.iter().enumerate() {
        for (c, v) in head.iter().enumerate() {
            // SAFETY: `out` holds H·d values and col + C·16 ≤ d.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(h * d + col + c * 16), *v) };
        }
    }
}

/// How many positions ahead the key and value rows are prefetched.
const AHEAD: usize = 16;

/// The sixteen lane sums of sixteen vectors, as one vector (lane `i` = sum of `v[i]`).
#[target_feature(enable = "avx512f")]
fn sum16(v: &[__m512; 16]) -> __m512 {
    // Pairs: within each 128-bit lane, [a0+a2, b0+b2, a1+a3, b1+b3].
    let a: [__m512; 8] = std::array::from_fn(|i| {
        let (x, y) = (v[2 * i], v[2 * i + 1]);
        _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y))
    });
    // Quads: within each 128-bit lane, one partial sum of each of four vectors.
    let b: [__m512; 4] = std::array::from_fn(|i| {
        let (x, y) = (_mm512_castps_pd(a[2 * i]), _mm512_castps_pd(a[2 * i + 1]));
        _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
        )
    });
    // Across 128-bit lanes: [b0 lanes 0+1, b0 lanes 2+3, b1 lanes 0+1, b1 lanes 2+3].
    let fold = |x: __m512, y: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(x, y),
            _mm512_shuffle_f32x4::<0xDD>(x, y),
        )
    };
    fold(fold(b[0], b[1]), fold(b[2], b[3]))
}
