//! The AVX-512 VNNI K-quant products: the AVX2 kernels' unpacked sub-blocks joined in pairs
//! into 64-byte registers, `maddubs` (unsigned weight byte × signed activation byte, pairs
//! summed to 16 bits) then `dpwssd` (16-bit sums × sub-block scales, added to 32-bit
//! lanes) per 64 values: half the instructions of the AVX2 path, the same exact integers.
//! A row's arithmetic is the same whatever `N` is.

// `unsafe`: AVX-512 intrinsics on byte arrays of known length, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::blocks::hsum;
use super::kquant::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use super::kquant_avx2::{half, unpack_q4k, unpack_q5k, unpack_q6k, weighted_bsums};

/// A super-block ready for the products: its 256 unsigned values as four 64-byte
/// registers, the 16-bit scale of each register lane's pair of values, the sixteen 16-bit
/// weights of the activation's 16-value sums, and the factors of the two integer sums:
/// `d · Σ scale·q·x − off · Σ offs·bsum`.
struct Unpacked {
    q: [__m512i; 4],
    scale: [__m512i; 4],
    offs: __m256i,
    d: f32,
    off: f32,
}

/// `idx[t][i]` = `first + (4t + i/8) / per` for the 32 16-bit lanes of the four 64-value
/// registers: lane `i` of register `t` holds values `64t + 2i` and `64t + 2i + 1`, in the
/// 16-value group `4t + i/8`, whose scale is entry `(4t + i/8) / per` of a scale list.
const fn lane_index(per: usize) -> [[i16; 32]; 4] {
    let mut idx = [[0i16; 32]; 4];
    let mut t = 0;
    while t < 4 {
        let mut i = 0;
        while i < 32 {
            idx[t][i] = ((4 * t + i / 8) / per) as i16;
            i += 1;
        }
        t += 1;
    }
    idx
}

/// Lane indexes into the eight 32-value sub-block scales of Q4_K / Q5_K.
const SUBBLOCK_LANES: [[i16; 32]; 4] = lane_index(2);
/// Lane indexes into the sixteen 16-value group scales of Q6_K.
const GROUP_LANES: [[i16; 32]; 4] = lane_index(1);
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

/// The four registers' lane scales, picked by `lanes` from sixteen 16-bit values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn spread(values: __m256i, lanes: &[[i16; 32]; 4]) -> [__m512i; 4] {
    let values = _mm512_castsi256_si512(values);
    std::array::from_fn(|t| {
        // SAFETY: each row of `lanes` is 64 bytes; unaligned loads are allowed.
        let idx = unsafe { _mm512_loadu_si512(lanes[t].as_ptr().cast()) };
        _mm512_permutexvar_epi16(idx, values)
    })
}

/// Sub-blocks `2t` and `2t + 1` (32 values each) joined into register `t`.
#[inline]
#[target_feature(enable = "avx512f")]
fn join(q: [__m256i; 8]) -> [__m512i; 4] {
    std::array::from_fn(|t| {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q[2 * t]), q[2 * t + 1])
    })
}

/// The shared loop: per block, the weights are unpacked and the scales spread once, then
/// every activation row of the pass runs four `maddubs` + `dpwssd` steps.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn wide_kernel<B, const N: usize>(
    w: &[B],
    x: [&[BlockQ8K]; N],
    unpack: impl Fn(&B) -> Unpacked,
) -> [f32; N] {
    let mut acc = [_mm512_setzero_ps(); N];
    let mut offsets = [_mm256_setzero_ps(); N];
    for (b, wb) in w.iter().enumerate() {
        let u = unpack(wb);
        for j in 0..N {
            let xb = &x[j][b];
            let mut dots = _mm512_setzero_si512();
            for t in 0..4 {
                // SAFETY: `qs` holds 256 bytes; this reads 64 of them from `64t`.
                let xv = unsafe { _mm512_loadu_si512(xb.qs.as_ptr().add(64 * t).cast()) };
                dots = _mm512_dpwssd_epi32(dots, _mm512_maddubs_epi16(u.q[t], xv), u.scale[t]);
            }
            let sums = weighted_bsums(xb, u.offs);
            acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(u.d * xb.d), _mm512_cvtepi32_ps(dots), acc[j]);
            let f = _mm256_set1_ps(u.off * xb.d);
            offsets[j] = _mm256_fmadd_ps(f, _mm256_cvtepi32_ps(sums), offsets[j]);
        }
    }
    let mut out = [0f32; N];
    for j in 0..N {
        out[j] = _mm512_reduce_add_ps(acc[j]) - hsum!(offsets[j]);
    }
    out
}

/// Q4_K / Q5_K: each 32-value sub-block's scale covers its 32 values, its min both of its
/// 16-value activation sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn offset_block((q, d, dmin, sc, mn): ([__m256i; 8], f32, f32, [u8; 8], [u8; 8])) -> Unpacked {
    let bytes = _mm_set_epi64x(i64::from_le_bytes(mn), i64::from_le_bytes(sc));
    let both = _mm256_cvtepu8_epi16(bytes);
    // SAFETY: `MIN_OF_SUM` is 32 bytes; unaligned loads are allowed.
    let idx = unsafe { _mm256_loadu_si256(MIN_OF_SUM.as_ptr().cast()) };
    Unpacked {
        q: join(q),
        scale: spread(both, &SUBBLOCK_LANES),
        offs: _mm256_permutexvar_epi16(idx, both),
        d,
        off: dmin,
    }
}

/// Q4_K rows × `N` activation rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q4k<const N: usize>(w: &[BlockQ4K], x: [&[BlockQ8K]; N]) -> [f32; N] {
    // SAFETY: this function's features include the unpacker's and the loop's.
    unsafe { wide_kernel(w, x, |b| offset_block(unpack_q4k(b))) }
}

/// Q5_K rows × `N` activation rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q5k<const N: usize>(w: &[BlockQ5K], x: [&[BlockQ8K]; N]) -> [f32; N] {
    // SAFETY: as for `q4k`.
    unsafe { wide_kernel(w, x, |b| offset_block(unpack_q5k(b))) }
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
            scale: spread(scales, &GROUP_LANES),
            offs: scales,
            d,
            off: 32.0 * d,
        }
    };
    // SAFETY: as for `q4k`.
    unsafe { wide_kernel(w, x, unpack) }
}
