//! The AVX2 kernel of the rows-in-lanes Q4_K layout ([`super::kquant_lanes`]): eight weight
//! rows per 256-bit register. `maddubs` multiplies four weight bytes of each row with the
//! activation's four broadcast bytes and sums them in pairs to 16 bits; a sub-block's eight
//! such products are added in 16 bits (at most 8 · 2 · 15 · 128 = 30,720: no overflow),
//! then one `madd` with the eight rows' scales takes them to 32 bits, so the whole block
//! stays in exact integers until one conversion to float. The mins are applied as floats,
//! one vector operation per sub-block for all eight rows.

// `unsafe`: AVX2 intrinsics on registers of known count, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::kquant::BlockQ8K;
use super::kquant_lanes::{word, PER_BLOCK};

/// One group's eight weight rows (`regs`: `PER_BLOCK` per block) against `N` activation
/// rows; activation row `j`'s eight outputs go to `out[8j..8j + 8]`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn group<const N: usize>(regs: &[__m256i], x: [&[BlockQ8K]; N], out: &mut [f32]) {
    assert!(out.len() >= 8 * N);
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    for (b, regs) in regs.chunks_exact(PER_BLOCK).enumerate() {
        // Scales, mins and halves as bytes: 64 + 64 + 32.
        let head = regs[32..].as_ptr().cast::<u8>();
        let mut ints = [_mm256_setzero_si256(); N];
        for s in 0..8 {
            let (c, high) = (s / 2, s % 2 == 1);
            let mut sums = [_mm256_setzero_si256(); N];
            for q in 0..8 {
                let t = regs[8 * c + q];
                let w = if high {
                    _mm256_and_si256(_mm256_srli_epi16::<4>(t), low)
                } else {
                    _mm256_and_si256(t, low)
                };
                for j in 0..N {
                    let a = word(&x[j][b].qs, 32 * s + 4 * q);
                    let pairs = _mm256_maddubs_epi16(w, _mm256_set1_epi32(a));
                    sums[j] = _mm256_add_epi16(sums[j], pairs);
                }
            }
            // SAFETY: sub-block `s`'s eight scale bytes lie in the block's scale registers.
            let sc = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(head.add(8 * s).cast()) });
            // The scale in both 16-bit halves of each row's lane.
            let sc = _mm256_or_si256(sc, _mm256_slli_epi32::<16>(sc));
            for j in 0..N {
                ints[j] = _mm256_add_epi32(ints[j], _mm256_madd_epi16(sums[j], sc));
            }
        }
        let halves = regs[36];
        let d = _mm256_cvtph_ps(_mm256_castsi256_si128(halves));
        let dmin = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(halves));
        for j in 0..N {
            let factor = _mm256_mul_ps(d, _mm256_set1_ps(x[j][b].d));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints[j]), factor, acc[j]);
        }
        for s in 0..8 {
            // SAFETY: sub-block `s`'s eight min bytes lie in the block's min registers.
            let m = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(head.add(64 + 8 * s).cast()) });
            let m = _mm256_mul_ps(_mm256_cvtepi32_ps(m), dmin);
            for j in 0..N {
                let pair = &x[j][b].dsums[2 * s..2 * s + 2];
                acc[j] = _mm256_fnmadd_ps(m, _mm256_set1_ps(pair[0] + pair[1]), acc[j]);
            }
        }
    }
    for (j, a) in acc.iter().enumerate() {
        // SAFETY: `out` holds at least 8·N floats (checked).
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * j), *a) };
    }
}
