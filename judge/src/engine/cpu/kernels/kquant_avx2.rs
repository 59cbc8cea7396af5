//! The AVX2 K-quant products: each super-block's values unpacked once to unsigned bytes and
//! shared by every activation row of the pass; `maddubs` (unsigned weight byte × signed
//! activation byte, pairs summed to 16 bits) then `madd` with the sub-block scales (to
//! 32 bits) keep every integer exact, and each row's sums become floats once per
//! super-block. A row's arithmetic is the same whatever `N` is.

// `unsafe`: AVX2 intrinsics on byte arrays of known length, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::blocks::hsum;
use super::kquant::{BlockQ4K, BlockQ5K, BlockQ6K};
use super::q8k::BlockQ8K;

/// Loads 32 bytes from `b[at..at + 32]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load32<T>(b: &[T], at: usize) -> __m256i {
    assert!(std::mem::size_of::<T>() == 1 && at + 32 <= b.len());
    // SAFETY: the 32 bytes are in bounds (checked); unaligned loads are allowed.
    unsafe { _mm256_loadu_si256(b.as_ptr().add(at).cast()) }
}

/// Half-precision bytes as f32 (F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn half(b: [u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(
        _mm_cvtsi32_si128(u16::from_le_bytes(b) as i32),
    ))
}

/// `Σ_s madd(maddubs(q[s], x[32s..]), scale[s])` over the eight 32-value sub-blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn eight_subblocks(q: &[__m256i; 8], scale: &[__m256i; 8], x: &BlockQ8K) -> __m256i {
    let mut sum = _mm256_setzero_si256();
    for s in 0..8 {
        // SAFETY: `qs` holds 256 bytes.
        let xv = unsafe { load32(&x.qs, 32 * s) };
        let pairs = _mm256_maddubs_epi16(q[s], xv);
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, scale[s]));
    }
    sum
}

/// The activation block's sixteen 16-value sums times `weights` (one 16-bit factor per
/// sum), added in pairs: eight 32-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn weighted_bsums(x: &BlockQ8K, weights: __m256i) -> __m256i {
    // SAFETY: `bsums` is 16 i16, 32 bytes; unaligned loads are allowed.
    let sums = unsafe { _mm256_loadu_si256(x.bsums.as_ptr().cast()) };
    _mm256_madd_epi16(sums, weights)
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K / Q5_K block as sixteen bytes
/// (scales 0-7, then mins 0-7), unpacked in a vector register: the 12 packed bytes are
/// words `a, b, c`; scales 0-3 are `a`'s low six bits per byte, mins 0-3 `b`'s, scales 4-7
/// `c`'s low nibbles with `a`'s top two bits above them, mins 4-7 `c`'s high nibbles with
/// `b`'s top two bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn scale_bytes(packed: &[u8; 12]) -> __m128i {
    // Three plain loads (a closure here was not inlined and cost 4% of a prefill).
    let [p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11] = *packed;
    let v = _mm_set_epi32(
        0,
        i32::from_le_bytes([p8, p9, p10, p11]),
        i32::from_le_bytes([p4, p5, p6, p7]),
        i32::from_le_bytes([p0, p1, p2, p3]),
    );
    // Lanes 0, 2: a, b & LOW6.
    let low = _mm_and_si128(_mm_shuffle_epi32::<0b01_01_00_00>(v), _mm_set1_epi8(0x3F));
    // Lanes 1, 3: c, c >> 4 & LOW4, or'ed with (a, b >> 6 & TOP2) << 4.
    let c = _mm_srlv_epi32(
        _mm_shuffle_epi32::<0b10_10_10_10>(v),
        _mm_set_epi32(4, 0, 0, 0),
    );
    let top = _mm_srli_epi32::<6>(_mm_shuffle_epi32::<0b01_01_00_00>(v));
    let high = _mm_or_si128(
        _mm_and_si128(c, _mm_set1_epi8(0x0F)),
        _mm_slli_epi32::<4>(_mm_and_si128(top, _mm_set1_epi8(0x03))),
    );
    _mm_blend_epi32::<0b1010>(low, high)
}

/// What the Q4_K / Q5_K loops need of a block.
pub(super) trait OffsetBlock {
    /// The eight sub-blocks' 32 unsigned values each.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    unsafe fn values(&self) -> [__m256i; 8];
    /// `d` and `dmin` as stored (half precision).
    fn factors(&self) -> ([u8; 2], [u8; 2]);
    /// The packed scales and mins.
    fn packed(&self) -> &[u8; 12];
}

/// Q4_K and Q5_K share the header layout (`d`, `dmin`, 12 scale bytes); only the values
/// differ.
macro_rules! offset_block {
    ($block:ty, $values:ident) => {
        impl OffsetBlock for $block {
            #[inline]
            unsafe fn values(&self) -> [__m256i; 8] {
                // SAFETY: the caller guarantees AVX2.
                unsafe { $values(self) }
            }
            #[inline]
            fn factors(&self) -> ([u8; 2], [u8; 2]) {
                (self.d, self.dmin)
            }
            #[inline]
            fn packed(&self) -> &[u8; 12] {
                &self.scales
            }
        }
    };
}

offset_block!(BlockQ4K, values_q4k);
offset_block!(BlockQ5K, values_q5k);

/// The Q4_K / Q5_K loop.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn offset_kernel<B: OffsetBlock, const N: usize>(w: &[B], x: [&[BlockQ8K]; N]) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    for (b, wb) in w.iter().enumerate() {
        // SAFETY: AVX2 is enabled for this function.
        let q = unsafe { wb.values() };
        let head = scale_bytes(wb.packed());
        let scales = _mm256_cvtepu8_epi16(head);
        let scale: [__m256i; 8] = std::array::from_fn(|s| {
            let lane = _mm256_castsi256_si128(scales);
            _mm256_broadcastw_epi16(match s {
                0 => lane,
                1 => _mm_srli_si128::<2>(lane),
                2 => _mm_srli_si128::<4>(lane),
                3 => _mm_srli_si128::<6>(lane),
                4 => _mm_srli_si128::<8>(lane),
                5 => _mm_srli_si128::<10>(lane),
                6 => _mm_srli_si128::<12>(lane),
                _ => _mm_srli_si128::<14>(lane),
            })
        });
        // Each sub-block's min (times dmin) against both of its 16-value sums, as floats
        // to meet the activation's `d · sum`: the eight bytes doubled and widened.
        let (d, dmin) = wb.factors();
        // SAFETY: F16C is enabled for this function.
        let (d, dmin) = unsafe { (_mm256_set1_ps(half(d)), _mm256_set1_ps(half(dmin))) };
        let mn = _mm_srli_si128::<8>(head);
        let mn = _mm_unpacklo_epi8(mn, mn);
        let widen = |v: __m128i| _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)), dmin);
        let mins = [widen(mn), widen(_mm_srli_si128::<8>(mn))];
        for j in 0..N {
            let xb = &x[j][b];
            // SAFETY: the caller's features (AVX2) are enabled in this inlined body; `dsums`
            // is 16 f32 (two unaligned 8-float loads).
            let (dots, sums) = unsafe {
                let s = xb.dsums.as_ptr();
                (
                    eight_subblocks(&q, &scale, xb),
                    [_mm256_loadu_ps(s), _mm256_loadu_ps(s.add(8))],
                )
            };
            let dots = _mm256_mul_ps(_mm256_cvtepi32_ps(dots), _mm256_set1_ps(xb.d));
            acc[j] = _mm256_fmadd_ps(dots, d, acc[j]);
            acc[j] = _mm256_fnmadd_ps(mins[0], sums[0], acc[j]);
            acc[j] = _mm256_fnmadd_ps(mins[1], sums[1], acc[j]);
        }
    }
    acc.map(|a| hsum!(a))
}

/// A Q4_K block's eight sub-blocks of 32 unsigned values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn values_q4k(b: &BlockQ4K) -> [__m256i; 8] {
    let low = _mm256_set1_epi8(0x0F);
    let mut q = [_mm256_setzero_si256(); 8];
    for j in 0..4 {
        // SAFETY: `qs` holds 128 bytes.
        let packed = unsafe { load32(&b.qs, 32 * j) };
        q[2 * j] = _mm256_and_si256(packed, low);
        q[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
    }
    q
}

/// Q4_K rows × `N` activation rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4k<const N: usize>(w: &[BlockQ4K], x: [&[BlockQ8K]; N]) -> [f32; N] {
    // SAFETY: this function's features are the kernel's.
    unsafe { offset_kernel(w, x) }
}

/// A Q5_K block's eight sub-blocks of 32 unsigned values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn values_q5k(b: &BlockQ5K) -> [__m256i; 8] {
    let (low, one) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(1));
    // SAFETY: `qh` holds 32 bytes.
    let high = unsafe { load32(&b.qh, 0) };
    // Bit `s` of every `qh` byte, moved to bit 4 (16-bit shifts: the bits that cross
    // into a byte from its neighbour are masked off).
    let fifth = |s: i32| {
        let bit = _mm256_and_si256(_mm256_srl_epi16(high, _mm_cvtsi32_si128(s)), one);
        _mm256_slli_epi16(bit, 4)
    };
    let mut q = [_mm256_setzero_si256(); 8];
    for j in 0..4 {
        // SAFETY: `qs` holds 128 bytes.
        let packed = unsafe { load32(&b.qs, 32 * j) };
        let lo = _mm256_and_si256(packed, low);
        let hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
        q[2 * j] = _mm256_or_si256(lo, fifth(2 * j as i32));
        q[2 * j + 1] = _mm256_or_si256(hi, fifth(2 * j as i32 + 1));
    }
    q
}

/// Q5_K rows × `N` activation rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5k<const N: usize>(w: &[BlockQ5K], x: [&[BlockQ8K]; N]) -> [f32; N] {
    // SAFETY: this function's features are the kernel's.
    unsafe { offset_kernel(w, x) }
}

/// A Q6_K block's eight quarters of 32 unsigned values (before the −32 offset).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q6k(b: &BlockQ6K) -> [__m256i; 8] {
    let (low, two) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
    let mut q = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        // SAFETY: `ql` holds 128 bytes, `qh` 64.
        let (ql0, ql1, qh) = unsafe {
            (
                load32(&b.ql, 64 * h),
                load32(&b.ql, 64 * h + 32),
                load32(&b.qh, 32 * h),
            )
        };
        let top = |shift: i32| {
            let bits = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(shift)), two);
            _mm256_slli_epi16(bits, 4)
        };
        let nib_hi = |v| _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
        q[4 * h] = _mm256_or_si256(_mm256_and_si256(ql0, low), top(0));
        q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql1, low), top(2));
        q[4 * h + 2] = _mm256_or_si256(nib_hi(ql0), top(4));
        q[4 * h + 3] = _mm256_or_si256(nib_hi(ql1), top(6));
    }
    q
}

/// Q6_K rows × `N` activation rows: eight 32-value quarters, each spanning two 16-value
/// scale groups (the low 128-bit lane's eight 16-bit pair sums take the first scale).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6k<const N: usize>(w: &[BlockQ6K], x: [&[BlockQ8K]; N]) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let mut offsets = [_mm256_setzero_ps(); N];
    for (b, wb) in w.iter().enumerate() {
        // SAFETY: the features are this function's.
        let q = unsafe { unpack_q6k(wb) };
        let sc = wb.scales;
        let scale: [__m256i; 8] = std::array::from_fn(|t| {
            _mm256_set_m128i(
                _mm_set1_epi16(sc[2 * t + 1] as i16),
                _mm_set1_epi16(sc[2 * t] as i16),
            )
        });
        let d = half(wb.d);
        // The −32 offset of every value, against the 16-value activation sums.
        // SAFETY: `scales` is 16 bytes; unaligned loads are allowed.
        let sc16 = unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(sc.as_ptr().cast())) };
        for j in 0..N {
            let xb = &x[j][b];
            let dots = eight_subblocks(&q, &scale, xb);
            let offs = weighted_bsums(xb, sc16);
            let f = d * xb.d;
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(f), _mm256_cvtepi32_ps(dots), acc[j]);
            let f32x = _mm256_set1_ps(32.0 * f);
            offsets[j] = _mm256_fmadd_ps(f32x, _mm256_cvtepi32_ps(offs), offsets[j]);
        }
    }
    let mut out = [0f32; N];
    for j in 0..N {
        out[j] = hsum!(acc[j]) - hsum!(offsets[j]);
    }
    out
}
