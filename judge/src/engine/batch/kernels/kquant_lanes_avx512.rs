//! The AVX-512 VNNI kernel of the rows-in-lanes Q4_K layout ([`super::kquant_lanes`]):
//! sixteen weight rows per 512-bit register, one `dpbusd` per four activation bytes, each
//! sub-block's scale and min applied as floats to all sixteen rows at once.

// `unsafe`: AVX-512 intrinsics on registers of known count, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::kquant::BlockQ8K;
use super::kquant_lanes::{word, PER_BLOCK};

/// One group's sixteen weight rows (`regs`: `PER_BLOCK` per block) against `N` activation
/// rows; activation row `j`'s sixteen outputs go to `out[16j..16j + 16]`.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn group<const N: usize>(regs: &[__m512i], x: [&[BlockQ8K]; N], out: &mut [f32]) {
    assert!(out.len() >= 16 * N);
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); N];
    for (b, regs) in regs.chunks_exact(PER_BLOCK).enumerate() {
        // Each sub-block's `d·scale` and `dmin·min` for the sixteen rows, as floats.
        let (scales, mins) = factors(&regs[32..]);
        let mut block = [_mm512_setzero_ps(); N];
        for c in 0..4 {
            let (mut lo, mut hi) = ([_mm512_setzero_si512(); N], [_mm512_setzero_si512(); N]);
            for q in 0..8 {
                let t = regs[8 * c + q];
                let (wl, wh) = (
                    _mm512_and_si512(t, low),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(t), low),
                );
                for j in 0..N {
                    let qs = &x[j][b].qs;
                    let (a, b2) = (word(qs, 64 * c + 4 * q), word(qs, 64 * c + 32 + 4 * q));
                    lo[j] = _mm512_dpbusd_epi32(lo[j], wl, _mm512_set1_epi32(a));
                    hi[j] = _mm512_dpbusd_epi32(hi[j], wh, _mm512_set1_epi32(b2));
                }
            }
            let (sl, sh) = (scales[2 * c], scales[2 * c + 1]);
            for j in 0..N {
                block[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo[j]), sl, block[j]);
                block[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi[j]), sh, block[j]);
            }
        }
        for j in 0..N {
            let xb = &x[j][b];
            acc[j] = _mm512_fmadd_ps(block[j], _mm512_set1_ps(xb.d), acc[j]);
            for (m, pair) in mins.iter().zip(xb.dsums.chunks_exact(2)) {
                let sum = pair[0] + pair[1];
                acc[j] = _mm512_fnmadd_ps(*m, _mm512_set1_ps(sum), acc[j]);
            }
        }
    }
    for (j, a) in acc.iter().enumerate() {
        // SAFETY: `out` holds at least 16·N floats (checked).
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * j), *a) };
    }
}

/// The eight sub-blocks' `d·scale` and `dmin·min` of sixteen rows from their packed form
/// (`regs`: scales, mins, then `d` and `dmin`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn factors(regs: &[__m512i]) -> ([__m512; 8], [__m512; 8]) {
    let halves = regs[4];
    let d = _mm512_cvtph_ps(_mm512_castsi512_si256(halves));
    let dmin = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(halves));
    let spread = |pair: &[__m512i], s: usize, factor: __m512| {
        let bytes = match s % 4 {
            0 => _mm512_extracti32x4_epi32::<0>(pair[s / 4]),
            1 => _mm512_extracti32x4_epi32::<1>(pair[s / 4]),
            2 => _mm512_extracti32x4_epi32::<2>(pair[s / 4]),
            _ => _mm512_extracti32x4_epi32::<3>(pair[s / 4]),
        };
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)), factor)
    };
    (
        std::array::from_fn(|s| spread(&regs[0..2], s, d)),
        std::array::from_fn(|s| spread(&regs[2..4], s, dmin)),
    )
}
