//! Times the K-quant product alone (by hand, not CI): a random Q4_K (or, with a fifth
//! argument, Q5_K or Q6_K) matrix of `n` rows and `k` columns against `m` activation rows, on the kernel path this CPU picks
//! (`AUTOJ_Q4_1_KERNEL=avx2` forces AVX2; `AUTOJ_KQUANT_LANES=0` keeps the standard layout instead of rows
//! in the lanes), with the engine's thread pool. Prints the time per
//! product and multiply-accumulates per second, so two builds or two paths can be compared
//! run against run (alternate them; one run on a shared host is noise).
//!
//! ```sh
//! cargo run --release -p autoj-judge --example kquant_timing -- 4096 4096 64 10
//! cargo run --release -p autoj-judge --example kquant_timing -- 4096 4096 1 100 q6k
//! ```

use std::sync::Arc;
use std::time::Instant;

use autoj_judge::engine::cpu::kernels::{KQuant, Stored};
use candle_core::quantized::GgmlDType;

/// How to call this example.
const USAGE: &str =
    "usage: kquant_timing N K M REPEATS [q4k|q5k|q6k] (K a multiple of 256, all at least 1)";

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<usize> = raw.iter().take(4).map(|a| a.parse().unwrap_or(0)).collect();
    let [n, k, m, reps] = args[..] else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    // The block size and the byte offsets of its half-float factors (kept small).
    let (dtype, block, halves): (_, usize, &[usize]) = match raw.get(4).map(String::as_str) {
        None | Some("q4k") => (GgmlDType::Q4K, 144, &[0, 2]),
        Some("q5k") => (GgmlDType::Q5K, 176, &[0, 2]),
        Some("q6k") => (GgmlDType::Q6K, 210, &[208]),
        Some(_) => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if n == 0 || m == 0 || reps == 0 || k == 0 || k % 256 != 0 {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    let bytes = random_blocks(n * k / 256, block, halves);
    let w = KQuant::new(dtype, Stored::Owned(bytes), n, k)
        .expect("a K-quant matrix of whole super-blocks")
        .into_lanes();
    let x: Vec<f32> = (0..m * k)
        .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
        .collect();
    w.matmul(&x, m); // warm-up: pages, caches, the thread pool
    let started = Instant::now();
    let mut check = 0f32;
    for _ in 0..reps {
        check += w.matmul(&x, m)[0];
    }
    let per = started.elapsed().as_secs_f64() / reps as f64;
    let gmac = (n * k * m) as f64 / per / 1e9;
    // The checksum keeps the products from being optimised away and shows that two builds
    // computed the same numbers.
    println!(
        "{} n {n} k {k} m {m}: {:.3} ms per product, {gmac:.1} GMAC/s (checksum {})",
        w.name(),
        per * 1e3,
        check / reps as f32
    );
}

/// `blocks` super-blocks of `size` pseudo-random bytes whose half floats at `halves` are
/// small and finite.
fn random_blocks(blocks: usize, size: usize, halves: &[usize]) -> Arc<[u8]> {
    let mut state = 12345u32;
    let mut bytes = vec![0u8; blocks * size];
    for (i, b) in bytes.iter_mut().enumerate() {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        // A half float's high byte 0x20 keeps it near 0.01.
        *b = if halves.contains(&(i % size).wrapping_sub(1)) {
            0x20
        } else {
            (state >> 24) as u8
        };
    }
    bytes.into()
}
