//! The 256-bit and portable kernels over blocks as GGUF stores them: activations quantized
//! to Q8_1 per 32-value block, Q4_1 and Q8_0 dot products in AVX-VNNI, AVX2+FMA+F16C or
//! portable code (chosen once at run time), each sharing a weight block among four rows.

// `unsafe`: AVX2 / AVX-VNNI intrinsics, each with its SAFETY argument.
#![allow(unsafe_code)]

use super::dispatch::uses_avx512;
use super::formats::{BlockQ4_1, BlockQ8_0, BlockQ8_1, BLOCK};

/// Quantizes `m` rows of `k` values to Q8_1 blocks.
pub fn quantize_rows(x: &[f32], m: usize, k: usize) -> Vec<BlockQ8_1> {
    debug_assert_eq!(x.len(), m * k);
    x.chunks_exact(BLOCK)
        .map(|chunk| {
            let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i8; BLOCK];
            let mut sum = 0i32;
            for (q, v) in qs.iter_mut().zip(chunk) {
                *q = (v * inv).round() as i8;
                sum += *q as i32;
            }
            BlockQ8_1 {
                d,
                s: d * sum as f32,
                qs,
            }
        })
        .collect()
}

type DotFn = fn(&[BlockQ4_1], &[BlockQ8_1]) -> f32;
type Dot4Fn = fn(&[BlockQ4_1], [&[BlockQ8_1]; 4]) -> [f32; 4];

/// Four dot products of one weight row with four activation rows.
pub(super) fn dot4(w: &[BlockQ4_1], x: [&[BlockQ8_1]; 4]) -> [f32; 4] {
    use std::sync::OnceLock;
    static CHOSEN: OnceLock<Dot4Fn> = OnceLock::new();
    let f = CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if dot_fn() as *const () == dot_vnni_entry as *const () {
            return dot4_vnni_entry;
        }
        #[cfg(target_arch = "x86_64")]
        if dot_fn() as *const () == dot_avx2_entry as *const () {
            return dot4_avx2_entry;
        }
        |w, x| x.map(|x| dot_scalar(w, x))
    });
    f(w, x)
}

/// The fastest dot product this CPU runs, chosen once.
pub(crate) fn dot_fn() -> DotFn {
    use std::sync::OnceLock;
    static CHOSEN: OnceLock<DotFn> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            if std::arch::is_x86_feature_detected!("avxvnni") && !force_avx2() {
                return dot_vnni_entry;
            }
            return dot_avx2_entry;
        }
        dot_scalar
    })
}

/// Whether the CPU runs the SIMD kernels (AVX2, FMA and F16C at least); attention uses
/// the same check.
pub(crate) fn uses_simd() -> bool {
    dot_fn() as *const () != dot_scalar as *const ()
}

/// The kernel in use, for benchmark reports.
pub fn kernel_name() -> &'static str {
    if uses_avx512() {
        return "avx512-vnni";
    }
    let f = dot_fn() as *const ();
    #[cfg(target_arch = "x86_64")]
    if f == dot_vnni_entry as *const () {
        return "avx-vnni";
    }
    if f == dot_scalar as *const () {
        "scalar"
    } else {
        "avx2"
    }
}

/// `AUTOJ_Q4_1_KERNEL=avx2` skips AVX-VNNI (to compare the two on one machine).
fn force_avx2() -> bool {
    std::env::var("AUTOJ_Q4_1_KERNEL").is_ok_and(|v| v == "avx2")
}

/// Portable Q4_1 · Q8_1 dot product over matching blocks.
pub fn dot_scalar(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (w, x) in w.iter().zip(x) {
        let mut acc = 0i32;
        for j in 0..BLOCK / 2 {
            let lo = (w.qs[j] & 0x0F) as i32;
            let hi = (w.qs[j] >> 4) as i32;
            acc += lo * x.qs[j] as i32 + hi * x.qs[j + BLOCK / 2] as i32;
        }
        sum += w.d.to_f32() * x.d * acc as f32 + w.m.to_f32() * x.s;
    }
    sum
}

/// Sum of the eight lanes of an `__m256` (inside an AVX function).
macro_rules! hsum {
    ($v:expr) => {{
        let v = $v;
        let lanes = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let lanes = _mm_add_ps(lanes, _mm_movehl_ps(lanes, lanes));
        _mm_cvtss_f32(_mm_add_ss(lanes, _mm_movehdup_ps(lanes)))
    }};
}
pub(crate) use hsum;

/// Defines a one-row and a four-row Q4_1 · Q8_1 kernel for one set of CPU features; `$quads`
/// turns 32 unsigned weight bytes and 32 signed activation bytes into eight sums of four
/// products. Both instruction sequences give the same integers, so every variant computes
/// bit-identical results and a row's output never depends on which kernel ran it.
macro_rules! q4_1_kernels {
    ($features:literal, $one:ident, $four:ident, |$wq:ident, $xq:ident| $quads:expr) => {
        /// One row (see the module docs).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $one(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
            // SAFETY (for the caller): compiled for `$features`; called only when present.
            let [r] = $four(w, [x]);
            r
        }

        /// Up to four rows sharing each unpacked weight block.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $four<const N: usize>(w: &[BlockQ4_1], x: [&[BlockQ8_1]; N]) -> [f32; N] {
            use std::arch::x86_64::*;
            let mask = _mm_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); N];
            let mut offsets = [0f32; N];
            for (b, w) in w.iter().enumerate() {
                // SAFETY: `qs` holds 16 bytes; unaligned loads are allowed.
                let packed = unsafe { _mm_loadu_si128(w.qs.as_ptr().cast()) };
                let lo = _mm_and_si128(packed, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
                let $wq = _mm256_set_m128i(hi, lo);
                // Both half-precision factors converted in one instruction: [d, m, 0, 0].
                let bits = (w.d.to_bits() as u32 | (w.m.to_bits() as u32) << 16) as i32;
                let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
                let d = _mm_cvtss_f32(dm);
                let mn = _mm_cvtss_f32(_mm_movehdup_ps(dm));
                for j in 0..N {
                    let xb = &x[j][b];
                    // SAFETY: `qs` holds 32 bytes; unaligned loads are allowed.
                    let $xq = unsafe { _mm256_loadu_si256(xb.qs.as_ptr().cast()) };
                    let quads = $quads;
                    let scale = _mm256_set1_ps(d * xb.d);
                    acc[j] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(quads), acc[j]);
                    offsets[j] += mn * xb.s;
                }
            }
            let mut out = [0f32; N];
            for j in 0..N {
                out[j] = hsum!(acc[j]) + offsets[j];
            }
            out
        }
    };
}

q4_1_kernels!("avx2,fma,f16c", dot_avx2, dot4_avx2, |wq, xq| {
    _mm256_madd_epi16(_mm256_maddubs_epi16(wq, xq), _mm256_set1_epi16(1))
});
q4_1_kernels!("avx2,fma,f16c,avxvnni", dot_vnni, dot4_vnni, |wq, xq| {
    _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), wq, xq)
});

#[cfg(target_arch = "x86_64")]
pub(crate) fn dot_avx2_entry(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    // SAFETY: chosen by `dot_fn` only after the CPU reported AVX2, FMA and F16C.
    unsafe { dot_avx2(w, x) }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn dot4_avx2_entry(w: &[BlockQ4_1], x: [&[BlockQ8_1]; 4]) -> [f32; 4] {
    // SAFETY: chosen by `dot4` only when `dot_fn` found AVX2, FMA and F16C.
    unsafe { dot4_avx2(w, x) }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn dot_vnni_entry(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    // SAFETY: chosen by `dot_fn` only after the CPU reported AVX2, FMA, F16C and AVX-VNNI.
    unsafe { dot_vnni(w, x) }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn dot4_vnni_entry(w: &[BlockQ4_1], x: [&[BlockQ8_1]; 4]) -> [f32; 4] {
    // SAFETY: chosen by `dot4` only when `dot_fn` found AVX-VNNI (with AVX2, FMA, F16C).
    unsafe { dot4_vnni(w, x) }
}

/// Portable Q8_0 · Q8 dot product over matching blocks.
pub fn q8_dot_scalar(w: &[BlockQ8_0], x: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (w, x) in w.iter().zip(x) {
        let acc: i32 =
            w.qs.iter()
                .zip(&x.qs)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
        sum += w.d.to_f32() * x.d * acc as f32;
    }
    sum
}

/// Defines a one-row and an N-row Q8_0 kernel for one set of CPU features. The weights'
/// absolute values (unsigned) meet the activations carrying the weights' signs, the form the
/// unsigned-by-signed byte instructions take.
macro_rules! q8_0_kernels {
    ($features:literal, $one:ident, $four:ident, |$aw:ident, $sx:ident| $quads:expr) => {
        /// One row.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $one(w: &[BlockQ8_0], x: &[BlockQ8_1]) -> f32 {
            let [r] = $four(w, [x]);
            r
        }

        /// Up to four rows sharing each weight block.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $four<const N: usize>(w: &[BlockQ8_0], x: [&[BlockQ8_1]; N]) -> [f32; N] {
            use std::arch::x86_64::*;
            let mut acc = [_mm256_setzero_ps(); N];
            for (b, w) in w.iter().enumerate() {
                // SAFETY: `qs` holds 32 bytes; unaligned loads are allowed.
                let wq = unsafe { _mm256_loadu_si256(w.qs.as_ptr().cast()) };
                let $aw = _mm256_sign_epi8(wq, wq);
                let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(w.d.to_bits() as i32)));
                for j in 0..N {
                    let xb = &x[j][b];
                    // SAFETY: `qs` holds 32 bytes; unaligned loads are allowed.
                    let xq = unsafe { _mm256_loadu_si256(xb.qs.as_ptr().cast()) };
                    let $sx = _mm256_sign_epi8(xq, wq);
                    let quads = $quads;
                    let scale = _mm256_set1_ps(d * xb.d);
                    acc[j] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(quads), acc[j]);
                }
            }
            let mut out = [0f32; N];
            for j in 0..N {
                out[j] = hsum!(acc[j]);
            }
            out
        }
    };
}

q8_0_kernels!("avx2,fma,f16c", q8_dot_avx2, q8_dot4_avx2, |aw, sx| {
    _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
});
q8_0_kernels!(
    "avx2,fma,f16c,avxvnni",
    q8_dot_vnni,
    q8_dot4_vnni,
    |aw, sx| { _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), aw, sx) }
);

type Q8DotFn = fn(&[BlockQ8_0], &[BlockQ8_1]) -> f32;
type Q8Dot4Fn = fn(&[BlockQ8_0], [&[BlockQ8_1]; 4]) -> [f32; 4];

/// The Q8_0 kernels matching the Q4_1 choice (same CPU features).
fn q8_kernels() -> (Q8DotFn, Q8Dot4Fn) {
    use std::sync::OnceLock;
    static CHOSEN: OnceLock<(Q8DotFn, Q8Dot4Fn)> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let chosen = dot_fn() as *const ();
            if chosen == dot_vnni_entry as *const () {
                // SAFETY (both): chosen only after the CPU reported AVX2, FMA, F16C, AVX-VNNI.
                return (
                    |w, x| unsafe { q8_dot_vnni(w, x) },
                    |w, x| unsafe { q8_dot4_vnni(w, x) },
                );
            }
            if chosen == dot_avx2_entry as *const () {
                // SAFETY (both): chosen only after the CPU reported AVX2, FMA and F16C.
                return (
                    |w, x| unsafe { q8_dot_avx2(w, x) },
                    |w, x| unsafe { q8_dot4_avx2(w, x) },
                );
            }
        }
        (q8_dot_scalar, |w, x| x.map(|x| q8_dot_scalar(w, x)))
    })
}

pub(super) fn q8_dot_fn() -> Q8DotFn {
    q8_kernels().0
}

pub(super) fn q8_dot4(w: &[BlockQ8_0], x: [&[BlockQ8_1]; 4]) -> [f32; 4] {
    (q8_kernels().1)(w, x)
}
