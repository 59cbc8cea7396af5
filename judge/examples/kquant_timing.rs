//! Times the K-quant product alone (by hand, not CI): a random Q4_K matrix of `n` rows and
//! `k` columns against `m` activation rows, on the kernel path this CPU picks
//! (`AUTOJ_Q4_1_KERNEL=avx2` forces AVX2; `AUTOJ_KQUANT_LANES=0` keeps the standard layout instead of rows
//! in the lanes), with the engine's thread pool. Prints the time per
//! product and multiply-accumulates per second, so two builds or two paths can be compared
//! run against run (alternate them; one run on a shared host is noise).
//!
//! ```sh
//! cargo run --release -p autoj-judge --example kquant_timing -- 4096 4096 64 10
//! ```

use std::sync::Arc;
use std::time::Instant;

use autoj_judge::engine::batch::kernels::{KQuant, Stored};
use candle_core::quantized::GgmlDType;

/// Bytes of one Q4_K super-block (256 values).
const Q4K_BLOCK_BYTES: usize = 144;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or(0))
        .collect();
    let [n, k, m, reps] = args[..] else {
        eprintln!("usage: kquant_timing N K M REPEATS (K a multiple of 256, all at least 1)");
        std::process::exit(2);
    };
    if n == 0 || m == 0 || reps == 0 || k == 0 || k % 256 != 0 {
        eprintln!("usage: kquant_timing N K M REPEATS (K a multiple of 256, all at least 1)");
        std::process::exit(2);
    }
    let w = KQuant::new(GgmlDType::Q4K, Stored::Owned(random_q4k(n * k / 256)), n, k)
        .expect("a Q4_K matrix of whole super-blocks")
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
        "n {n} k {k} m {m}: {:.3} ms per product, {gmac:.1} GMAC/s (checksum {})",
        per * 1e3,
        check / reps as f32
    );
}

/// `blocks` Q4_K super-blocks of pseudo-random bytes with small, finite `d` and `dmin`.
fn random_q4k(blocks: usize) -> Arc<[u8]> {
    let mut state = 12345u32;
    let mut bytes = vec![0u8; blocks * Q4K_BLOCK_BYTES];
    for (i, b) in bytes.iter_mut().enumerate() {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        // `d` and `dmin` are the first two f16 values: high bytes 0x20 keep them near 0.01.
        *b = match i % Q4K_BLOCK_BYTES {
            1 | 3 => 0x20,
            _ => (state >> 24) as u8,
        };
    }
    bytes.into()
}
