//! Attention in AVX2 for the batched forward pass (CPUs without AVX-512, or with
//! `AUTOJ_Q4_1_KERNEL=avx2`), over the same blocks of query heads as the AVX-512 kernel:
//! each cached key and value row is loaded once per block, and every head's result is
//! computed by the same operations whatever else the block holds, so a position's attention
//! never depends on how its sequence's rows were grouped into steps.

// `unsafe`: AVX2 intrinsics and pointer loads, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::attention::{prefetch_row, HeadKv, KvValue, QueryBlock, AHEAD, MAX_BLOCK_HEADS};
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
    macro_rules! table {
        ($(($h:literal, $l:literal)),* $(,)?) => {
            match (block.heads(), block.head_dim) {
                // SAFETY (every arm): AVX2, FMA and F16C were checked just above.
                $(($h, $l) => unsafe { attend::<$h, { $l / 8 }, T>(block, kv, out) },)*
                other => panic!("unsupported attention block (heads, head size) {other:?}"),
            }
        };
    }
    table!(
        (1, 64),
        (2, 64),
        (3, 64),
        (4, 64),
        (5, 64),
        (6, 64),
        (7, 64),
        (8, 64),
        (1, 128),
        (2, 128),
        (3, 128),
        (4, 128),
        (5, 128),
        (6, 128),
        (7, 128),
        (8, 128),
    );
}

/// Most heads whose weighted values one pass accumulates: four heads of two vectors each
/// keep eight accumulators, two value vectors and a broadcast score in the sixteen
/// registers, and load three vectors per eight multiply-adds (eight heads of one vector
/// loaded nine).
const VALUE_HEADS: usize = 4;

/// `H` query heads of `L` eight-lane vectors each.
#[target_feature(enable = "avx2,fma,f16c")]
fn attend<const H: usize, const L: usize, T: KvValue>(
    block: &QueryBlock<'_>,
    kv: &HeadKv<'_, T>,
    out: &mut [f32],
) {
    let d = L * 8;
    assert!(block.q.len() == H * d && out.len() == H * d);
    let (lens, longest) = block.lengths::<H>(kv.cached());
    // Scores, head-major, padded to whole vectors of eight positions.
    let padded = longest.div_ceil(8) * 8;
    let mut scores = vec![f32::NEG_INFINITY; H * padded];
    key_scores::<H, L, T>(block.q, kv, (&lens, longest), block.scale, &mut scores);
    for (h, &len) in lens.iter().enumerate() {
        softmax(&mut scores[h * padded..h * padded + len.div_ceil(8) * 8]);
    }
    weighted_values::<H, L, T>(kv, (&lens, longest), (&scores, padded), out);
}

/// Softmax weights of a group of heads: each head's length and its scores (head-major,
/// `padded` per head).
struct Weights<'a> {
    lens: &'a [usize],
    scores: &'a [f32],
    padded: usize,
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
            prefetch_row(k, at + AHEAD * kv.stride, T::stored_len(d));
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

/// Positions whose value rows [`weighted_values`] gathers into one tile: head rows lie a
/// power-of-two stride apart in the cache (every other head's row of a position between),
/// so few of them share the cache at once; gathered, a tile's rows stay in the first-level
/// cache for every column pass (32 rows of 128 values: 16 KiB).
const TILE: usize = 32;

/// The weighted sums of values of `H` heads over tiles of positions, each tile's rows
/// widened into a buffer once and read by every column pass of every group of heads; the
/// sums are kept in `out` between tiles. Each head sums only over its own positions, in
/// position order, with the same operations whichever group it is in.
#[target_feature(enable = "avx2,fma,f16c")]
fn weighted_values<const H: usize, const L: usize, T: KvValue>(
    kv: &HeadKv<'_, T>,
    (lens, longest): (&[usize; H], usize),
    (scores, padded): (&[f32], usize),
    out: &mut [f32],
) {
    let d = L * 8;
    let stored = T::stored_len(d);
    let mut tile = [[_mm256_setzero_ps(); L]; TILE];
    out.fill(0.0);
    let mut first = 0;
    let mut left = longest;
    for &(_, v, n) in kv.runs {
        for t0 in (0..n.min(left)).step_by(TILE) {
            let t1 = (t0 + TILE).min(n.min(left));
            for (i, widened) in (t0..t1).zip(tile.iter_mut()) {
                // The next tile's row, while this tile's passes run.
                prefetch_row(v, (i + TILE) * kv.stride + kv.offset, stored);
                let row = &v[i * kv.stride + kv.offset..][..stored];
                // SAFETY: `row` is a whole head row; c < L.
                *widened = std::array::from_fn(|c| unsafe { T::load8(row.as_ptr(), c) });
            }
            let positions = Span {
                rows: &tile[..t1 - t0],
                first: first + t0,
            };
            for h0 in (0..H).step_by(VALUE_HEADS) {
                let g = (H - h0).min(VALUE_HEADS);
                let group = Weights {
                    lens: &lens[h0..h0 + g],
                    scores: &scores[h0 * padded..(h0 + g) * padded],
                    padded,
                };
                let out = &mut out[h0 * d..(h0 + g) * d];
                match g {
                    1 => accumulate::<1, L, 8>(&positions, &group, out),
                    2 => accumulate::<2, L, 4>(&positions, &group, out),
                    3 => accumulate::<3, L, 2>(&positions, &group, out),
                    _ => accumulate::<4, L, 2>(&positions, &group, out),
                }
            }
        }
        first += n.min(left);
        left -= n.min(left);
    }
}

/// A tile of widened value rows and the position of its first.
struct Span<'a, const L: usize> {
    rows: &'a [[__m256; L]],
    first: usize,
}

/// Adds one tile's weighted values to `out` for a group of `G` heads, `C` vectors of
/// columns per pass (the group's accumulators in registers through each pass).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn accumulate<const G: usize, const L: usize, const C: usize>(
    span: &Span<'_, L>,
    w: &Weights<'_>,
    out: &mut [f32],
) {
    let d = L * 8;
    assert!(w.lens.len() == G && out.len() == G * d && L.is_multiple_of(C));
    // Every head attends to at least the first head's positions (lengths never decrease);
    // only the last few positions need a per-head check.
    let shared = w.lens[0];
    for pass in 0..L / C {
        let at = |h: usize, c: usize| h * d + (pass * C + c) * 8;
        // SAFETY (loads and stores): `out` holds G·d values and (pass·C + c + 1)·8 ≤ d.
        let mut acc: [[__m256; C]; G] = std::array::from_fn(|h| {
            std::array::from_fn(|c| unsafe { _mm256_loadu_ps(out.as_ptr().add(at(h, c))) })
        });
        for (i, row) in span.rows.iter().enumerate() {
            let p = span.first + i;
            let vr: [__m256; C] = std::array::from_fn(|c| row[pass * C + c]);
            if p < shared {
                for (h, a) in acc.iter_mut().enumerate() {
                    let s = _mm256_set1_ps(w.scores[h * w.padded + p]);
                    for c in 0..C {
                        a[c] = _mm256_fmadd_ps(s, vr[c], a[c]);
                    }
                }
            } else {
                for (h, a) in acc.iter_mut().enumerate().filter(|(h, _)| p < w.lens[*h]) {
                    let s = _mm256_set1_ps(w.scores[h * w.padded + p]);
                    for c in 0..C {
                        a[c] = _mm256_fmadd_ps(s, vr[c], a[c]);
                    }
                }
            }
        }
        for (h, head) in acc.iter().enumerate() {
            for (c, a) in head.iter().enumerate() {
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(at(h, c)), *a) };
            }
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
