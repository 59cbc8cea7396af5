//! The AVX2 kernels of the rows-in-lanes layout ([`super::kquant_lanes`]): eight weight rows
//! per 256-bit register. `maddubs` multiplies four weight bytes of each row with the
//! activation's four broadcast bytes and sums them in pairs to 16 bits; several such
//! products are added in 16 bits (Q4_K: a 32-value sub-block's eight, at most
//! 8 · 2 · 15 · 128 = 30,720; Q5_K: four, 31,744; Q6_K: two, 32,256: no overflow),
//! then one `madd` with the eight rows' scales takes them to 32 bits, so a block stays in
//! exact integers until one conversion to float. Q4_K's and Q5_K's mins are applied as
//! floats, one vector operation per sub-block for all eight rows; Q6_K's offset of 32 as integers.

// `unsafe`: AVX2 intrinsics on registers of known count, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::kquant_lanes::{word, Ahead, Q4K_REGS, Q5K_REGS, Q6K_REGS};
use super::q8k::BlockQ8K;

/// One Q4_K group's eight weight rows (`regs`: [`Q4K_REGS`] per block) against `N`
/// activation rows; activation row `j`'s eight outputs go to `out[8j..8j + 8]`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4k<const N: usize>(regs: &[__m256i], x: [&[BlockQ8K]; N], out: &mut [f32]) {
    // SAFETY: the caller's guarantee.
    unsafe { offset::<N, false>(regs, x, out) }
}

/// [`q4k`] for Q5_K (`regs`: [`Q5K_REGS`] per block): the fifth bits' eight registers sit
/// between the values and the scales.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5k<const N: usize>(regs: &[__m256i], x: [&[BlockQ8K]; N], out: &mut [f32]) {
    // SAFETY: the caller's guarantee.
    unsafe { offset::<N, true>(regs, x, out) }
}

/// The Q4_K / Q5_K loop (`FIFTH`: Q5_K). Q5_K's values reach 31, so its 16-bit sums take
/// four words (4 · 2 · 31 · 128 = 31,744) before each `madd`, Q4_K's all eight.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn offset<const N: usize, const FIFTH: bool>(
    regs: &[__m256i],
    x: [&[BlockQ8K]; N],
    out: &mut [f32],
) {
    assert!(out.len() >= 8 * N);
    let (unit, head_at) = if FIFTH {
        (Q5K_REGS, 40)
    } else {
        (Q4K_REGS, 32)
    };
    let words = if FIFTH { 4 } else { 8 };
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    for (b, regs) in regs.chunks_exact(unit).enumerate() {
        let ahead = Ahead::new(regs, 64);
        // Scales, mins and halves as bytes: 64 + 64 + 32.
        let head = regs[head_at..].as_ptr().cast::<u8>();
        let mut ints = [_mm256_setzero_si256(); N];
        for s in 0..8 {
            let (c, high) = (s / 2, s % 2 == 1);
            // SAFETY: sub-block `s`'s eight scale bytes lie in the block's scale registers.
            let sc = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(head.add(8 * s).cast()) });
            // The scale in both 16-bit halves of each row's lane.
            let sc = _mm256_or_si256(sc, _mm256_slli_epi32::<16>(sc));
            for part in (0..8).step_by(words) {
                let mut sums = [_mm256_setzero_si256(); N];
                for q in part..part + words {
                    if N == 1 {
                        ahead.step(8 * s + q);
                    }
                    let t = regs[8 * c + q];
                    let mut w = if high {
                        _mm256_and_si256(_mm256_srli_epi16::<4>(t), low)
                    } else {
                        _mm256_and_si256(t, low)
                    };
                    if FIFTH {
                        w = _mm256_or_si256(w, fifth_bit(regs[32 + q], s));
                    }
                    for j in 0..N {
                        let a = word(&x[j][b].qs, 32 * s + 4 * q);
                        let pairs = _mm256_maddubs_epi16(w, _mm256_set1_epi32(a));
                        sums[j] = _mm256_add_epi16(sums[j], pairs);
                    }
                }
                for j in 0..N {
                    ints[j] = _mm256_add_epi32(ints[j], _mm256_madd_epi16(sums[j], sc));
                }
            }
        }
        let halves = regs[head_at + 4];
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
                acc[j] = _mm256_fnmadd_ps(m, _mm256_set1_ps(x[j][b].dsums32[s]), acc[j]);
            }
        }
    }
    store(&acc, out);
}

/// Bit `bit` of every byte of `qh`, moved to bit 4 (16-bit shifts: the bits that cross into
/// a byte from its neighbour land elsewhere and are masked off).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fifth_bit(qh: __m256i, bit: usize) -> __m256i {
    let down = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(bit as i32));
    _mm256_and_si256(_mm256_slli_epi16::<4>(down), _mm256_set1_epi8(0x10))
}

/// One Q6_K group's eight weight rows (`regs`: [`Q6K_REGS`] per block) against `N`
/// activation rows; activation row `j`'s eight outputs go to `out[8j..8j + 8]`. The
/// values (0-63) meet the rows' signed scales in integers; the offset, 32 times each scale
/// times the activation's sum over its 16 values, is subtracted before the one conversion.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6k<const N: usize>(regs: &[__m256i], x: [&[BlockQ8K]; N], out: &mut [f32]) {
    assert!(out.len() >= 8 * N);
    let (low4, high2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    // Within each row's lane, the low or the high 16-bit scale of a pair, in both halves.
    let (even, odd) = (
        _mm256_setr_epi8(
            0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13, 0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9,
            12, 13, 12, 13,
        ),
        _mm256_setr_epi8(
            2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15, 2, 3, 2, 3, 6, 7, 6, 7, 10, 11,
            10, 11, 14, 15, 14, 15,
        ),
    );
    let mut acc = [_mm256_setzero_ps(); N];
    for (b, regs) in regs.chunks_exact(Q6K_REGS).enumerate() {
        let ahead = Ahead::new(regs, 64);
        let head = regs[48..].as_ptr().cast::<u8>();
        let mut ints = [_mm256_setzero_si256(); N];
        for h in 0..2 {
            for p in 0..4 {
                // Scale pair `4h + p` (16-value groups 8h + 2p and 8h + 2p + 1) of each row.
                let pair = 4 * h + p;
                // SAFETY: the pair's sixteen bytes lie in the block's scale registers.
                let scales =
                    _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(head.add(16 * pair).cast()) });
                for half in 0..2 {
                    let dup = _mm256_shuffle_epi8(scales, if half == 0 { even } else { odd });
                    for q2 in 0..2 {
                        let mut sums = [_mm256_setzero_si256(); N];
                        for q in 4 * half + 2 * q2..4 * half + 2 * q2 + 2 {
                            if N == 1 {
                                ahead.step(32 * h + 8 * p + 4 * half + q % 4);
                            }
                            let w = q6k_values(
                                regs[16 * h + 8 * (p % 2) + q],
                                regs[32 + 8 * h + q],
                                p,
                                low4,
                                high2,
                            );
                            for j in 0..N {
                                let a = word(&x[j][b].qs, 128 * h + 32 * p + 4 * q);
                                let pairs = _mm256_maddubs_epi16(w, _mm256_set1_epi32(a));
                                sums[j] = _mm256_add_epi16(sums[j], pairs);
                            }
                        }
                        for j in 0..N {
                            ints[j] = _mm256_add_epi32(ints[j], _mm256_madd_epi16(sums[j], dup));
                        }
                    }
                }
                for j in 0..N {
                    let bsums = &x[j][b].bsums[2 * pair..2 * pair + 2];
                    let both = i32::from(bsums[0] as u16) | (i32::from(bsums[1]) << 16);
                    let offset = _mm256_madd_epi16(scales, _mm256_set1_epi32(both));
                    ints[j] = _mm256_sub_epi32(ints[j], _mm256_slli_epi32::<5>(offset));
                }
            }
        }
        let d = _mm256_cvtph_ps(_mm256_castsi256_si128(regs[52]));
        for j in 0..N {
            let factor = _mm256_mul_ps(d, _mm256_set1_ps(x[j][b].d));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints[j]), factor, acc[j]);
        }
    }
    store(&acc, out);
}

/// Four 6-bit values of each of the eight rows from their `ql` and `qh` words, for the
/// 32-value part `p` of a 128-value half (low or high nibbles, bits `2p..2p + 2`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6k_values(ql: __m256i, qh: __m256i, p: usize, low4: __m256i, high2: __m256i) -> __m256i {
    let low = match p {
        0 | 1 => ql,
        _ => _mm256_srli_epi16::<4>(ql),
    };
    let high = match p {
        0 => _mm256_slli_epi16::<4>(qh),
        1 => _mm256_slli_epi16::<2>(qh),
        2 => qh,
        _ => _mm256_srli_epi16::<2>(qh),
    };
    _mm256_or_si256(_mm256_and_si256(low, low4), _mm256_and_si256(high, high2))
}

/// Each activation row's eight sums to `out[8j..8j + 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store<const N: usize>(acc: &[__m256; N], out: &mut [f32]) {
    assert!(out.len() >= 8 * N);
    for (j, a) in acc.iter().enumerate() {
        // SAFETY: `out` holds at least 8·N floats (checked).
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * j), *a) };
    }
}
