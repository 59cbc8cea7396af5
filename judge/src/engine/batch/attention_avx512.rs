//! Grouped-query attention in AVX-512 for the batched forward pass.
//!
//! The query heads that share one key/value head run together: each cached key and value
//! row is loaded once for the whole group (SmolLM2 has three query heads per key/value head),
//! scores of sixteen positions are reduced together by one transpose-and-add tree instead of
//! one horizontal sum each, and the softmax exponentials are computed sixteen at a time.
//! A head's result depends only on its own query and its sequence's cache, never on the other
//! heads of the group or on other sequences.

// `unsafe`: AVX-512 intrinsics and pointer loads, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::attention::{HeadKv, KvValue};

/// Whether [`attend_group`] can run `group` query heads of `head_dim` values on this CPU.
pub fn supports(group: usize, head_dim: usize) -> bool {
    super::kernels::uses_avx512()
        && is_x86_feature_detected!("avx512f")
        && matches!((group, head_dim), (1..=4, 64) | (1..=2, 128))
}

/// Causal attention of the query heads in `q` (`group × head_dim` values, heads side by
/// side) over the first `len` positions of their shared key/value head, scores scaled by
/// `scale`; writes `out` (same shape). Only for shapes [`supports`] accepts.
pub fn attend_group<T: KvValue>(
    q: &[f32],
    (kv, len): (&HeadKv<'_, T>, usize),
    (scale, head_dim): (f32, usize),
    out: &mut [f32],
) {
    assert!(is_x86_feature_detected!("avx512f") && q.len() == out.len());
    // SAFETY (every arm): AVX-512F was checked just above.
    unsafe {
        match (q.len() / head_dim, head_dim) {
            (1, 64) => attend::<1, 4, T>(q, kv, len, scale, out),
            (2, 64) => attend::<2, 4, T>(q, kv, len, scale, out),
            (3, 64) => attend::<3, 4, T>(q, kv, len, scale, out),
            (4, 64) => attend::<4, 4, T>(q, kv, len, scale, out),
            (1, 128) => attend::<1, 8, T>(q, kv, len, scale, out),
            (2, 128) => attend::<2, 8, T>(q, kv, len, scale, out),
            other => panic!("unsupported attention group (heads, head size) {other:?}"),
        }
    }
}

/// `G` query heads of `L` sixteen-lane vectors each.
#[target_feature(enable = "avx512f")]
fn attend<const G: usize, const L: usize, T: KvValue>(
    q: &[f32],
    kv: &HeadKv<'_, T>,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    let d = L * 16;
    assert!(q.len() == G * d && out.len() == G * d);
    // SAFETY: `q` holds G·L·16 values.
    let qv: [[__m512; L]; G] = std::array::from_fn(|g| {
        std::array::from_fn(|c| unsafe { _mm512_loadu_ps(q.as_ptr().add(g * d + c * 16)) })
    });
    // Scores, head-major, padded to whole blocks of sixteen positions.
    let padded = len.div_ceil(16) * 16;
    let mut scores = vec![f32::NEG_INFINITY; G * padded];
    let mut partial = [[_mm512_setzero_ps(); 16]; G];
    let mut p = 0;
    let mut left = len;
    for &(k, _, n) in kv.runs {
        for i in 0..n.min(left) {
            let at = i * kv.stride + kv.offset;
            prefetch_row(k, at + AHEAD * kv.stride, d);
            let row = &k[at..at + d];
            // SAFETY: `row` holds L·16 values.
            let kr: [__m512; L] =
                std::array::from_fn(|c| unsafe { T::load16(row.as_ptr().add(c * 16)) });
            for g in 0..G {
                let mut acc = _mm512_mul_ps(qv[g][0], kr[0]);
                for c in 1..L {
                    acc = _mm512_fmadd_ps(qv[g][c], kr[c], acc);
                }
                partial[g][p % 16] = acc;
            }
            p += 1;
            if p % 16 == 0 || p == len {
                let block = (p - 1) / 16 * 16;
                for g in 0..G {
                    for v in partial[g].iter_mut().skip(p - block) {
                        *v = _mm512_setzero_ps();
                    }
                    let sums = _mm512_mul_ps(sum16(&partial[g]), _mm512_set1_ps(scale));
                    let dst = &mut scores[g * padded + block..g * padded + block + 16];
                    // Positions past `len` keep their -inf (weight 0 after the softmax).
                    let filled = (((1u32 << (p - block)) - 1) & 0xFFFF) as __mmask16;
                    // SAFETY: `dst` holds 16 values.
                    unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), filled, sums) };
                }
            }
        }
        left -= n.min(left);
    }
    // Softmax per head; the padding stays at -inf and becomes 0.
    for g in 0..G {
        let s = &mut scores[g * padded..(g + 1) * padded];
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
    let mut acc = [[_mm512_setzero_ps(); L]; G];
    let mut p = 0;
    let mut left = len;
    for &(_, v, n) in kv.runs {
        for i in 0..n.min(left) {
            let at = i * kv.stride + kv.offset;
            prefetch_row(v, at + AHEAD * kv.stride, d);
            let row = &v[at..at + d];
            // SAFETY: `row` holds L·16 values.
            let vr: [__m512; L] =
                std::array::from_fn(|c| unsafe { T::load16(row.as_ptr().add(c * 16)) });
            for g in 0..G {
                let w = _mm512_set1_ps(scores[g * padded + p]);
                for c in 0..L {
                    acc[g][c] = _mm512_fmadd_ps(w, vr[c], acc[g][c]);
                }
            }
            p += 1;
        }
        left -= n.min(left);
    }
    for (g, head) in acc.iter().enumerate() {
        for (c, v) in head.iter().enumerate() {
            // SAFETY: `out` holds G·L·16 values.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(g * d + c * 16), *v) };
        }
    }
}

/// How many positions ahead the key and value rows are prefetched: a head's rows are a
/// fraction of each cached position (the other heads' rows lie between), a stride the
/// hardware prefetchers follow too late, and the loops stall on the loads without this.
const AHEAD: usize = 16;

/// Asks for the cache lines of `row[at..at + len]` (nothing when past the run's end; a
/// prefetch never faults, but the address is kept inside the slice anyway).
#[inline(always)]
fn prefetch_row<T>(row: &[T], at: usize, len: usize) {
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

/// `e^x` for sixteen lanes (x ≤ 0 here): `2^(x·log2 e)` split into a power of two and a
/// degree-6 Taylor polynomial of `2^f` for `|f| ≤ 1/2` (relative error about 1e-7).
#[target_feature(enable = "avx512f")]
pub(crate) fn exp(x: __m512) -> __m512 {
    let t = _mm512_mul_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-126.0)),
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(std::f32::consts::LN_2));
    // Σ f^k / k! for k ≤ 6, by Horner.
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::batch::attention::attend_body;
    use crate::engine::batch::test_values;

    /// Values in [-2, 2): wider than the shared helper's, for sharper softmaxes.
    fn random(n: usize, seed: u32) -> Vec<f32> {
        test_values::random(n, seed)
            .into_iter()
            .map(|x| 2.0 * x)
            .collect()
    }

    /// The grouped kernel against the portable loop, head by head, on caches of type `T`.
    fn check<T: KvValue>(widen: fn(f32) -> T) {
        for (group, d, kvh) in [(3, 64, 3), (1, 64, 2), (4, 64, 1), (2, 128, 2), (1, 128, 1)] {
            let positions = 53;
            let width = kvh * d;
            let k: Vec<T> = random(positions * width, 3 + d as u32)
                .into_iter()
                .map(widen)
                .collect();
            let v: Vec<T> = random(positions * width, 5 + group as u32)
                .into_iter()
                .map(widen)
                .collect();
            let q = random(group * d, 7);
            // Two runs (a shared prefix and the sequence's own positions).
            let runs: Vec<crate::engine::batch::kv::Run<'_, T>> = vec![
                (&k[..20 * width], &v[..20 * width], 20),
                (&k[20 * width..], &v[20 * width..], 33),
            ];
            let head = HeadKv {
                runs: &runs,
                offset: (kvh - 1) * d,
                stride: width,
            };
            for len in [1, 16, 17, 40, 53] {
                let mut fast = vec![0f32; group * d];
                attend_group(&q, (&head, len), (0.125, d), &mut fast);
                for g in 0..group {
                    let mut want = vec![0f32; d];
                    attend_body(&q[g * d..(g + 1) * d], &head, len, 0.125, &mut want);
                    for (a, b) in fast[g * d..(g + 1) * d].iter().zip(&want) {
                        assert!(
                            (a - b).abs() < 1e-5,
                            "group {group} d {d} len {len}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn grouped_heads_match_the_portable_loop() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        check::<f32>(|x| x);
        check::<half::f16>(half::f16::from_f32);
    }

    #[test]
    fn exp_is_accurate() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for start in [-100.0f32, -20.0, -5.0, -1.0, -0.01] {
            let xs: [f32; 16] = std::array::from_fn(|i| start * (1.0 - i as f32 / 17.0));
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F checked above; 16-value arrays.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp(_mm512_loadu_ps(xs.as_ptr()))) };
            for (x, g) in xs.iter().zip(got) {
                let want = x.exp();
                // The rounding of x·log2(e) grows with |x|.
                let tol = want * (1e-6 + x.abs() * 1e-7) + 1e-38;
                assert!((g - want).abs() <= tol, "exp({x}) = {g}, want {want}");
            }
        }
    }
}
