//! Vector math the kernels and attention share: the SwiGLU activation ([`swiglu`]) and the
//! AVX-512 `exp` it and attention's softmax use. It lives with the kernels so attention
//! imports it from them, never the reverse.

// `unsafe`: AVX-512 intrinsics, each with its SAFETY argument.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::dispatch::uses_avx512;

#[cfg(target_arch = "x86_64")]
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

/// `out[i] = silu(gate[i]) · up[i]`, the feed-forward activation, computed the same way
/// wherever it runs (the fused kernel's epilogue and the separate-matrix path): with the
/// AVX-512 vector `exp` where those kernels run, else libm's.
pub(crate) fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if uses_avx512() {
        // SAFETY: `uses_avx512` holds only where the CPU has AVX-512F.
        unsafe { swiglu_avx512(gate, up, out) };
        return;
    }
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// `out[i] = silu(gate[i]) · up[i]`, sixteen lanes at a time with the vector `exp` (relative
/// error about 1e-7; libm's scalar `expf` was 4% of a batched decode step).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) fn swiglu_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == out.len() && up.len() == out.len());
    let one = _mm512_set1_ps(1.0);
    for at in (0..out.len()).step_by(16) {
        let mask = (((1u32 << (out.len() - at).min(16)) - 1) & 0xFFFF) as __mmask16;
        // SAFETY: the mask keeps every load and store inside the three slices (same length).
        unsafe {
            let g = _mm512_maskz_loadu_ps(mask, gate.as_ptr().add(at));
            let u = _mm512_maskz_loadu_ps(mask, up.as_ptr().add(at));
            let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
            let silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(at), mask, _mm512_mul_ps(silu, u));
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

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
