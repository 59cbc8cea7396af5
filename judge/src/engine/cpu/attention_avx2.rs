//! Attention in AVX2 for the batched forward pass (CPUs without AVX-512, or with
//! `AUTOJ_Q4_1_KERNEL=avx2`), over blocks of up to [`BLOCK_HEADS`] query heads that share
//! one key/value head.
//!
//! A head's cached rows lie a power-of-two stride apart (every other head's row of the same
//! position between), so the caches hold few of them at once and a pass that came back to
//! them found them gone. The kernel therefore walks the cache in tiles of [`TILE`]
//! positions, widening each tile's rows into one buffer that stays in the first-level cache
//! while every head of the block uses it: scores two heads against four positions at a
//! time, weighted values four heads of two column vectors at a time. Every head's result is
//! computed by the same operations whatever else the block holds, so a position's attention
//! never depends on how its sequence's rows were grouped into steps.

// `unsafe`: AVX2 intrinsics and pointer loads, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::attention_inputs::{prefetch_row, HeadKv, KvValue, QueryBlock};
use super::kernels::hsum;

/// Most query heads one block holds (32 prompt positions of an MHA model): each widened
/// tile of keys and values is read by every head of the block, so larger blocks read (and
/// widen) the cache fewer times. With 128-value heads the queries and a tile take 16 + 16
/// KiB; 32 heads measured 5-10% faster than sixteen and 48 no better than 32
/// (`attention_timing 3500 512`).
pub const BLOCK_HEADS: usize = 32;

/// Whether [`attend_block`] can run `heads` query heads of `head_dim` values on this CPU.
pub fn supports(heads: usize, head_dim: usize) -> bool {
    super::kernels::uses_simd()
        && (1..=BLOCK_HEADS).contains(&heads)
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
            && (1..=BLOCK_HEADS).contains(&block.heads())
    );
    match block.head_dim {
        // SAFETY (both arms): AVX2, FMA and F16C were checked just above.
        64 => unsafe { attend::<8, T>(block, kv, out) },
        128 => unsafe { attend::<16, T>(block, kv, out) },
        other => panic!("unsupported attention head size {other}"),
    }
}

/// Most heads whose weighted values one pass accumulates: four heads of two vectors each
/// keep eight accumulators, two value vectors and a broadcast score in the sixteen
/// registers, and load three vectors per eight multiply-adds (eight heads of one vector
/// loaded nine).
const VALUE_HEADS: usize = 4;

/// A block's heads of `L` eight-lane vectors each.
#[target_feature(enable = "avx2,fma,f16c")]
fn attend<const L: usize, T: KvValue>(block: &QueryBlock<'_>, kv: &HeadKv<'_, T>, out: &mut [f32]) {
    let (heads, d) = (block.heads(), L * 8);
    assert!(block.q.len() == heads * d && out.len() == heads * d);
    let longest = block.longest(kv.cached());
    let lens: Vec<usize> = (0..heads).map(|h| block.len_of(h)).collect();
    // Scores, head-major, padded to whole vectors of eight positions.
    let padded = longest.div_ceil(8) * 8;
    let mut scores = vec![f32::NEG_INFINITY; heads * padded];
    key_scores::<L, T>(block.q, kv, &lens, block.scale, &mut scores);
    for (h, &len) in lens.iter().enumerate() {
        softmax(&mut scores[h * padded..h * padded + len.div_ceil(8) * 8]);
    }
    weighted_values::<L, T>(kv, &lens, (&scores, padded), out);
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
/// Heads in pairs against four positions at a time (eight sums in registers, six vectors
/// loaded per eight multiply-adds), each position's eight lanes summed by one fixed tree.
#[target_feature(enable = "avx2,fma,f16c")]
fn key_scores<const L: usize, T: KvValue>(
    q: &[f32],
    kv: &HeadKv<'_, T>,
    lens: &[usize],
    scale: f32,
    scores: &mut [f32],
) {
    let (heads, d) = (lens.len(), L * 8);
    let (padded, longest) = (scores.len() / heads, lens[heads - 1]);
    tiles::<L, T>(kv, Side::Keys, longest, |span| {
        for h0 in (0..heads).step_by(2) {
            let g = (heads - h0).min(2);
            let group = Scores {
                q: &q[h0 * d..(h0 + g) * d],
                lens: &lens[h0..h0 + g],
                scale,
                padded,
            };
            let out = &mut scores[h0 * padded..(h0 + g) * padded];
            match g {
                1 => dots::<1, L>(span, &group, out),
                _ => dots::<2, L>(span, &group, out),
            }
        }
    });
}

/// The queries of a group of heads, their lengths, the score scale and the stride of
/// their scores.
struct Scores<'a> {
    q: &'a [f32],
    lens: &'a [usize],
    scale: f32,
    padded: usize,
}

/// One tile's scores for a group of `G` heads, four positions at a time.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dots<const G: usize, const L: usize>(span: &Span<'_, L>, w: &Scores<'_>, out: &mut [f32]) {
    let d = L * 8;
    assert!(w.q.len() == G * d && w.lens.len() == G && span.rows.len() == TILE);
    for p0 in (0..span.len).step_by(4) {
        let mut acc = [[_mm256_setzero_ps(); 4]; G];
        for c in 0..L {
            // Rows past the tile's length hold stale values; their sums are never stored.
            let k: [__m256; 4] = std::array::from_fn(|j| span.rows[p0 + j][c]);
            for (h, a) in acc.iter_mut().enumerate() {
                // SAFETY: `q` holds G·L·8 values; h < G, c < L.
                let qc = unsafe { _mm256_loadu_ps(w.q.as_ptr().add(h * d + c * 8)) };
                for j in 0..4 {
                    a[j] = _mm256_fmadd_ps(qc, k[j], a[j]);
                }
            }
        }
        for (h, a) in acc.iter().enumerate() {
            let sums = _mm_mul_ps(sum4(a), _mm_set1_ps(w.scale));
            let at = span.first + p0;
            let valid = (span.len - p0).min(w.lens[h].saturating_sub(at)).min(4);
            let dst = &mut out[h * w.padded + at..][..valid];
            let mut lanes = [0f32; 4];
            // SAFETY: four values.
            unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), sums) };
            dst.copy_from_slice(&lanes[..valid]);
        }
    }
}

/// The lane sums of four vectors (lane `j` = the sum of `v[j]`'s eight lanes, always by the
/// same tree: pairs, then pairs of pairs, then the two halves).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum4(v: &[__m256; 4]) -> __m128 {
    let h = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h))
}

/// Which of a run's two arrays [`tiles`] walks.
#[derive(Clone, Copy)]
enum Side {
    Keys,
    Values,
}

/// Walks a head's first `longest` cached keys or values in tiles of up to [`TILE`]
/// positions, each widened into one buffer (while the next tile's rows are asked for), and
/// hands each tile to `f`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tiles<const L: usize, T: KvValue>(
    kv: &HeadKv<'_, T>,
    side: Side,
    longest: usize,
    mut f: impl FnMut(&Span<'_, L>),
) {
    let stored = T::stored_len(L * 8);
    let mut tile = [[_mm256_setzero_ps(); L]; TILE];
    let (mut first, mut left) = (0, longest);
    for &(k, v, n) in kv.runs {
        let (src, n) = (if matches!(side, Side::Keys) { k } else { v }, n.min(left));
        for t0 in (0..n).step_by(TILE) {
            let t1 = (t0 + TILE).min(n);
            for (i, widened) in (t0..t1).zip(tile.iter_mut()) {
                // The next tile's row, while this tile's work runs.
                prefetch_row(src, (i + TILE) * kv.stride + kv.offset, stored);
                let row = &src[i * kv.stride + kv.offset..][..stored];
                for (c, w) in widened.iter_mut().enumerate() {
                    // SAFETY: `row` is a whole head row; c < L.
                    *w = unsafe { T::load8(row.as_ptr(), c) };
                }
            }
            f(&Span {
                rows: &tile,
                len: t1 - t0,
                first: first + t0,
            });
        }
        first += n;
        left -= n;
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

/// Positions whose key or value rows are widened into one tile: head rows lie a
/// power-of-two stride apart in the cache (every other head's row of a position between),
/// so few of them share the cache at once; gathered, a tile's rows stay in the first-level
/// cache for every head and column pass (32 rows of 128 values: 16 KiB). A multiple of
/// four (the positions [`dots`] takes at a time).
const TILE: usize = 32;
const _: () = assert!(TILE.is_multiple_of(4));

/// The weighted sums of values of every head, tile by tile, each tile read by every column
/// pass of every group of heads; the sums are kept in `out` between tiles. Each head sums
/// only over its own positions, in position order, with the same operations whichever
/// group it is in.
#[target_feature(enable = "avx2,fma,f16c")]
fn weighted_values<const L: usize, T: KvValue>(
    kv: &HeadKv<'_, T>,
    lens: &[usize],
    (scores, padded): (&[f32], usize),
    out: &mut [f32],
) {
    let (heads, d) = (lens.len(), L * 8);
    let longest = lens[heads - 1];
    out.fill(0.0);
    tiles::<L, T>(kv, Side::Values, longest, |span| {
        for h0 in (0..heads).step_by(VALUE_HEADS) {
            let g = (heads - h0).min(VALUE_HEADS);
            let group = Weights {
                lens: &lens[h0..h0 + g],
                scores: &scores[h0 * padded..(h0 + g) * padded],
                padded,
            };
            let out = &mut out[h0 * d..(h0 + g) * d];
            match g {
                1 => accumulate::<1, L, 8>(span, &group, out),
                2 => accumulate::<2, L, 4>(span, &group, out),
                3 => accumulate::<3, L, 2>(span, &group, out),
                _ => accumulate::<4, L, 2>(span, &group, out),
            }
        }
    });
}

/// A tile of widened rows: [`TILE`] of them, the first `len` cached positions from
/// `first` on (the rest stale).
struct Span<'a, const L: usize> {
    rows: &'a [[__m256; L]],
    len: usize,
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
        for (i, row) in span.rows[..span.len].iter().enumerate() {
            let p = span.first + i;
            let vr: [__m256; C] = std::array::from_fn(|c| row[pass * C + c]);
            let live = |&(h, _): &(usize, _)| p < shared || p < w.lens[h];
            for (h, a) in acc.iter_mut().enumerate().filter(live) {
                let s = _mm256_set1_ps(w.scores[h * w.padded + p]);
                for c in 0..C {
                    a[c] = _mm256_fmadd_ps(s, vr[c], a[c]);
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
