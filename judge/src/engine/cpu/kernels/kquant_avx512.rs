//! The AVX-512 VNNI K-quant products. Per 64 values one `dpbusd` (unsigned weight byte ×
//! signed activation byte, four at a time into 32-bit lanes); two such registers are
//! packed to 16-bit lanes (every lane's sum of four fits) and one `madd` applies the
//! sub-block scales to both, so each activation row pays four `dpbusd`, two packs and two
//! `madd`s per 256 values. The integer sums are exact; each row's become floats once per
//! super-block, and the weights' mins (or Q6_K's −32 offset) meet the activation's
//! precomputed `d · bsum` floats in one multiply-add. A row's arithmetic is the same
//! whatever `N` is.

// `unsafe`: AVX-512 intrinsics on byte arrays of known length, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::kquant::{BlockQ4K, BlockQ5K, BlockQ6K};
use super::kquant_avx2::{half, scale_bytes, unpack_q6k, OffsetBlock};
use super::q8k::BlockQ8K;

/// A super-block ready for the products: its 256 unsigned values as four 64-byte
/// registers, the 16-bit scales of the two packed register pairs, the offset weight of
/// each 16-value group as floats (already times `dmin`, or `32·d` for Q6_K), and `d`.
struct Unpacked {
    q: [__m512i; 4],
    scale: [__m512i; 2],
    offs: __m512,
    d: __m512,
}

/// Register `t`'s 32-bit lane `l` (after `dpbusd`) sums values `64t + 4l..64t + 4l + 4`,
/// in 16-value group `4t + l/4`. `packs(D[a], D[b])` puts, in 128-bit lane `L`, four
/// 16-bit lanes of `D[a]` (group `4a + L`) then four of `D[b]` (group `4b + L`); `madd`
/// multiplies each 16-bit lane by the same entry of the scale register. So pair `p`
/// (registers `2p`, `2p + 1`) needs, at 16-bit lane `i` (128-bit lane `L = i / 8`), the
/// scale of group `4(2p + (i % 8) / 4) + L`; entry `group / per` of a scale list.
const fn pair_index(per: usize) -> [[i16; 32]; 2] {
    let mut idx = [[0i16; 32]; 2];
    let mut p = 0;
    while p < 2 {
        let mut i = 0;
        while i < 32 {
            let group = 4 * (2 * p + (i % 8) / 4) + i / 8;
            idx[p][i] = (group / per) as i16;
            i += 1;
        }
        p += 1;
    }
    idx
}

/// Pair lanes' indexes into the eight 32-value sub-block scales of Q4_K / Q5_K.
const SUBBLOCK_PAIRS: [[i16; 32]; 2] = pair_index(2);
/// Pair lanes' indexes into the sixteen 16-value group scales of Q6_K.
const GROUP_PAIRS: [[i16; 32]; 2] = pair_index(1);
/// Entry `8 + g/2` of `[scales 0-7, mins 0-7]`: sub-block `g/2`'s min for 16-value sum `g`.
const MIN_OF_SUM: [i16; 16] = {
    let mut idx = [0i16; 16];
    let mut g = 0;
    while g < 16 {
        idx[g] = (8 + g / 2) as i16;
        g += 1;
    }
    idx
};

/// The two pairs' scale registers, picked by `pairs` from sixteen 16-bit values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn spread(values: __m256i, pairs: &[[i16; 32]; 2]) -> [__m512i; 2] {
    let values = _mm512_castsi256_si512(values);
    std::array::from_fn(|p| {
        // SAFETY: each row of `pairs` is 64 bytes; unaligned loads are allowed.
        let idx = unsafe { _mm512_loadu_si512(pairs[p].as_ptr().cast()) };
        _mm512_permutexvar_epi16(idx, values)
    })
}

/// Sub-blocks `2t` and `2t + 1` (32 values each) joined into register `t`.
#[inline]
#[target_feature(enable = "avx512f")]
fn join(q: [__m256i; 8]) -> [__m512i; 4] {
    std::array::from_fn(|t| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q[2 * t]), q[2 * t + 1]))
}

/// Sixteen 16-bit offset weights as floats times `factor`.
#[inline]
#[target_feature(enable = "avx512f")]
fn offset_floats(offs: __m256i, factor: f32) -> __m512 {
    _mm512_mul_ps(
        _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(offs)),
        _mm512_set1_ps(factor),
    )
}

/// One activation block's integer product with an unpacked weight block: sixteen 32-bit
/// lanes whose sum is `Σ scale·q·x`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn block_dot(u: &Unpacked, xb: &BlockQ8K) -> __m512i {
    let d: [__m512i; 4] = std::array::from_fn(|t| {
        // SAFETY: `qs` holds 256 bytes; this reads 64 of them from `64t`.
        let xv = unsafe { _mm512_loadu_si512(xb.qs.as_ptr().add(64 * t).cast()) };
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), u.q[t], xv)
    });
    let lo = _mm512_madd_epi16(_mm512_packs_epi32(d[0], d[1]), u.scale[0]);
    let hi = _mm512_madd_epi16(_mm512_packs_epi32(d[2], d[3]), u.scale[1]);
    _mm512_add_epi32(lo, hi)
}

/// The shared loop: per block, the weights are unpacked and the scales spread once, then
/// every activation row of the pass runs [`block_dot`] and two float multiply-adds.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn wide_kernel<B, const N: usize>(
    w: &[B],
    x: [&[BlockQ8K]; N],
    unpack: impl Fn(&B) -> Unpacked,
) -> [f32; N] {
    let mut acc = [_mm512_setzero_ps(); N];
    for (b, wb) in w.iter().enumerate() {
        let u = unpack(wb);
        for j in 0..N {
            let xb = &x[j][b];
            let dots = _mm512_mul_ps(_mm512_cvtepi32_ps(block_dot(&u, xb)), _mm512_set1_ps(xb.d));
            acc[j] = _mm512_fmadd_ps(dots, u.d, acc[j]);
            // SAFETY: `dsums` is 16 f32, 64 bytes; unaligned loads are allowed.
            let dsums = unsafe { _mm512_loadu_ps(xb.dsums.as_ptr()) };
            acc[j] = _mm512_fnmadd_ps(u.offs, dsums, acc[j]);
        }
    }
    acc.map(|a| _mm512_reduce_add_ps(a))
}

/// Q4_K / Q5_K: each 32-value sub-block's scale covers its 32 values, its min both of its
/// 16-value activation sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn offset_block<B: OffsetBlock>(b: &B) -> Unpacked {
    let both = _mm256_cvtepu8_epi16(scale_bytes(b.packed()));
    // SAFETY: `MIN_OF_SUM` is 32 bytes; unaligned loads are allowed; AVX2 and F16C are
    // enabled for this function.
    let (idx, q, (d, dmin)) = unsafe {
        let (d, dmin) = b.factors();
        (
            _mm256_loadu_si256(MIN_OF_SUM.as_ptr().cast()),
            b.values(),
            (half(d), half(dmin)),
        )
    };
    Unpacked {
        q: join(q),
        scale: spread(both, &SUBBLOCK_PAIRS),
        offs: offset_floats(_mm256_permutexvar_epi16(idx, both), dmin),
        d: _mm512_set1_ps(d),
    }
}

/// Q4_K rows × `N` activation rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q4k<const N: usize>(w: &[BlockQ4K], x: [&[BlockQ8K]; N]) -> [f32; N] {
    // SAFETY: this function's features include the unpacker's and the loop's.
    unsafe { wide_kernel(w, x, |b| offset_block(b)) }
}

/// Q5_K rows × `N` activation rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q5k<const N: usize>(w: &[BlockQ5K], x: [&[BlockQ8K]; N]) -> [f32; N] {
    // SAFETY: as for `q4k`.
    unsafe { wide_kernel(w, x, |b| offset_block(b)) }
}

/// Q6_K rows × `N` activation rows: a signed scale per 16-value group, which also weighs
/// the −32 offset of its values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q6k<const N: usize>(w: &[BlockQ6K], x: [&[BlockQ8K]; N]) -> [f32; N] {
    let unpack = |b: &BlockQ6K| {
        // SAFETY: the features are this function's; `scales` is 16 bytes.
        let (q, d, scales) = unsafe {
            let raw = _mm_loadu_si128(b.scales.as_ptr().cast());
            (unpack_q6k(b), half(b.d), _mm256_cvtepi8_epi16(raw))
        };
        Unpacked {
            q: join(q),
            scale: spread(scales, &GROUP_PAIRS),
            offs: offset_floats(scales, 32.0 * d),
            d: _mm512_set1_ps(d),
        }
    };
    // SAFETY: as for `q4k`.
    unsafe { wide_kernel(w, x, unpack) }
}
