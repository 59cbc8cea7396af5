//! The AVX-512 VNNI kernels of the rows-in-lanes layout ([`super::kquant_lanes`]): sixteen
//! weight rows per 512-bit register, one `dpbusd` per four activation bytes, each sub-block's
//! scale (and Q4_K's and Q5_K's min, Q6_K's offset) applied to all sixteen rows at once.

// `unsafe`: AVX-512 intrinsics on registers of known count, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::kquant_lanes::{word, Ahead, Q4K_REGS, Q5K_REGS, Q6K_REGS};
use super::q8k::BlockQ8K;

/// One Q4_K group's sixteen weight rows (`regs`: [`Q4K_REGS`] per block) against `N`
/// activation rows; activation row `j`'s sixteen outputs go to `out[16j..16j + 16]`.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn q4k<const N: usize>(regs: &[__m512i], x: [&[BlockQ8K]; N], out: &mut [f32]) {
    offset::<N, false>(regs, x, out);
}

/// [`q4k`] for Q5_K (`regs`: [`Q5K_REGS`] per block): the fifth bits' eight registers sit
/// between the values and the scales.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn q5k<const N: usize>(regs: &[__m512i], x: [&[BlockQ8K]; N], out: &mut [f32]) {
    offset::<N, true>(regs, x, out);
}

/// The Q4_K / Q5_K loop (`FIFTH`: Q5_K, whose one-row passes also prefetch: its units are
/// read in two streams, values and fifth bits, and streamed at 18-24 GMAC/s without it
/// against 36-38 with it, 4,096 × 32,768 from memory).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn offset<const N: usize, const FIFTH: bool>(
    regs: &[__m512i],
    x: [&[BlockQ8K]; N],
    out: &mut [f32],
) {
    assert!(out.len() >= 16 * N);
    let (unit, head) = if FIFTH {
        (Q5K_REGS, 40)
    } else {
        (Q4K_REGS, 32)
    };
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); N];
    for (b, regs) in regs.chunks_exact(unit).enumerate() {
        let ahead = Ahead::new(regs, 32);
        // Each sub-block's `d·scale` and `dmin·min` for the sixteen rows, as floats.
        let (scales, mins) = factors(&regs[head..]);
        let mut block = [_mm512_setzero_ps(); N];
        for c in 0..4 {
            let (mut lo, mut hi) = ([_mm512_setzero_si512(); N], [_mm512_setzero_si512(); N]);
            for q in 0..8 {
                if FIFTH && N == 1 {
                    ahead.step(8 * c + q);
                }
                let t = regs[8 * c + q];
                let (mut wl, mut wh) = (
                    _mm512_and_si512(t, low),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(t), low),
                );
                if FIFTH {
                    wl = _mm512_or_si512(wl, fifth_bit(regs[32 + q], 2 * c));
                    wh = _mm512_or_si512(wh, fifth_bit(regs[32 + q], 2 * c + 1));
                }
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
            for (m, sum) in mins.iter().zip(xb.dsums32) {
                acc[j] = _mm512_fnmadd_ps(*m, _mm512_set1_ps(sum), acc[j]);
            }
        }
    }
    store(&acc, out);
}

/// Bit `bit` of every byte of `qh`, moved to bit 4 (16-bit shifts: the bits that cross into
/// a byte from its neighbour land elsewhere and are masked off).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn fifth_bit(qh: __m512i, bit: usize) -> __m512i {
    let down = _mm512_srl_epi16(qh, _mm_cvtsi32_si128(bit as i32));
    _mm512_and_si512(_mm512_slli_epi16::<4>(down), _mm512_set1_epi8(0x10))
}

/// One Q6_K group's sixteen weight rows (`regs`: [`Q6K_REGS`] per block) against `N`
/// activation rows; activation row `j`'s sixteen outputs go to `out[16j..16j + 16]`.
/// Each 16-value group's `dpbusd` sum (values 0-63) less 32 times the activation's sum of
/// those values is exact in 32 bits, then becomes a float times the rows' signed scales.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn q6k<const N: usize>(regs: &[__m512i], x: [&[BlockQ8K]; N], out: &mut [f32]) {
    assert!(out.len() >= 16 * N);
    let (low4, high2) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
    let mut acc = [_mm512_setzero_ps(); N];
    for (b, regs) in regs.chunks_exact(Q6K_REGS).enumerate() {
        let ahead = Ahead::new(regs, 64);
        let mut block = [_mm512_setzero_ps(); N];
        for h in 0..2 {
            for p in 0..4 {
                for half in 0..2 {
                    // Values 128h + 32p + 16·half + (0..16): 16-value group `s`.
                    let s = 8 * h + 2 * p + half;
                    let mut sums = [_mm512_setzero_si512(); N];
                    for q in 4 * half..4 * half + 4 {
                        if N == 1 {
                            ahead.step(32 * h + 8 * p + 4 * half + q % 4);
                        }
                        let (ql, qh) = (regs[16 * h + 8 * (p % 2) + q], regs[32 + 8 * h + q]);
                        let low = match p {
                            0 | 1 => ql,
                            _ => _mm512_srli_epi16::<4>(ql),
                        };
                        let high = match p {
                            0 => _mm512_slli_epi16::<4>(qh),
                            1 => _mm512_slli_epi16::<2>(qh),
                            2 => qh,
                            _ => _mm512_srli_epi16::<2>(qh),
                        };
                        let w = _mm512_or_si512(
                            _mm512_and_si512(low, low4),
                            _mm512_and_si512(high, high2),
                        );
                        for j in 0..N {
                            let a = word(&x[j][b].qs, 128 * h + 32 * p + 4 * q);
                            sums[j] = _mm512_dpbusd_epi32(sums[j], w, _mm512_set1_epi32(a));
                        }
                    }
                    let scale = q6k_scale(&regs[48..52], s);
                    for j in 0..N {
                        let offset = _mm512_set1_epi32(32 * i32::from(x[j][b].bsums[s]));
                        let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums[j], offset));
                        block[j] = _mm512_fmadd_ps(exact, scale, block[j]);
                    }
                }
            }
        }
        let d = _mm512_cvtph_ps(_mm512_castsi512_si256(regs[52]));
        for j in 0..N {
            let factor = _mm512_mul_ps(d, _mm512_set1_ps(x[j][b].d));
            acc[j] = _mm512_fmadd_ps(block[j], factor, acc[j]);
        }
    }
    store(&acc, out);
}

/// Scale `s` of the sixteen rows as floats, from the pairs of `regs` (32 bytes per pair:
/// each row's scales `2p`, `2p + 1` side by side).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn q6k_scale(regs: &[__m512i], s: usize) -> __m512 {
    let pair = s / 2;
    let bytes = match pair % 2 {
        0 => _mm512_castsi512_si256(regs[pair / 2]),
        _ => _mm512_extracti64x4_epi64::<1>(regs[pair / 2]),
    };
    // Each row's lane: scale 2p in the low 16 bits, 2p + 1 in the high.
    let pairs = _mm512_cvtepi8_epi16(bytes);
    let lane = match s % 2 {
        0 => _mm512_srai_epi32::<16>(_mm512_slli_epi32::<16>(pairs)),
        _ => _mm512_srai_epi32::<16>(pairs),
    };
    _mm512_cvtepi32_ps(lane)
}

/// Each activation row's sixteen sums to `out[16j..16j + 16]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn store<const N: usize>(acc: &[__m512; N], out: &mut [f32]) {
    assert!(out.len() >= 16 * N);
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
