//! The ceiling of the AVX2 K-quant products on this CPU (by hand, not CI): how many
//! `vpmaddubsw` one core issues per second in the shape of the kernels' inner step (a
//! broadcast load of four activation bytes, the multiply-add against a weight register, a
//! 16-bit add into one of eight sums), and 256-bit FMAs for comparison. One thread; run it
//! while nothing else runs. A Q4_K product at `G` GMAC/s on `T` threads runs at
//! `G / 32 / T` G multiply-adds per second per core against the first figure.
//!
//! ```sh
//! cargo run --release -p autoj-judge --example maddubs_rate
//! ```

// `unsafe`: calls into functions compiled for AVX2 and FMA, after the CPU check.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
fn main() {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        eprintln!("this CPU has no AVX2 and FMA");
        std::process::exit(2);
    }
    let bytes: Vec<i8> = (0..4096).map(|i| (i % 251) as i8).collect();
    let steps = 50_000_000;
    // SAFETY (both): AVX2 and FMA were checked above.
    let (rate, check) = timed(|| unsafe { maddubs(&bytes, steps) });
    println!("broadcast + vpmaddubsw + vpaddw: {rate:.2} G per second (check {check})");
    let (rate, check) = timed(|| unsafe { fma(steps) });
    println!("vfmadd231ps (256-bit): {rate:.2} G per second (check {check})");
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("an x86-64 timing");
    std::process::exit(2);
}

/// Runs `f` (which returns how many instructions it issued and a value that depends on all
/// of them) and gives its rate in billions per second.
#[cfg(target_arch = "x86_64")]
fn timed(f: impl FnOnce() -> (u64, i64)) -> (f64, i64) {
    let started = std::time::Instant::now();
    let (count, check) = f();
    (count as f64 / started.elapsed().as_secs_f64() / 1e9, check)
}

/// `steps` rounds of eight independent broadcast / multiply-add / add chains.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn maddubs(bytes: &[i8], steps: u64) -> (u64, i64) {
    use std::arch::x86_64::*;
    let w = _mm256_set1_epi8(3);
    let mut sums = [_mm256_setzero_si256(); 8];
    let mask = bytes.len() - 32;
    for i in 0..steps as usize {
        let at = (i * 32) & mask;
        for (j, s) in sums.iter_mut().enumerate() {
            // SAFETY: `at + 4j + 4 <= at + 32 <= bytes.len()`.
            let a = unsafe {
                bytes
                    .as_ptr()
                    .add(at + 4 * j)
                    .cast::<i32>()
                    .read_unaligned()
            };
            *s = _mm256_add_epi16(*s, _mm256_maddubs_epi16(w, _mm256_set1_epi32(a)));
        }
    }
    let total = sums
        .iter()
        .fold(_mm256_setzero_si256(), |a, s| _mm256_add_epi16(a, *s));
    (8 * steps, i64::from(_mm256_extract_epi16::<0>(total)))
}

/// `steps` rounds of eight independent FMA chains.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma(steps: u64) -> (u64, i64) {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut sums = [_mm256_setzero_ps(); 8];
    for _ in 0..steps {
        for s in sums.iter_mut() {
            *s = _mm256_fmadd_ps(*s, a, b);
        }
    }
    let total = sums
        .iter()
        .fold(_mm256_setzero_ps(), |x, s| _mm256_add_ps(x, *s));
    (8 * steps, (_mm256_cvtss_f32(total) * 1e6) as i64)
}
