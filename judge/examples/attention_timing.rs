//! Times prefill attention alone (by hand, not CI): one layer of a LLaMA-2-7B-shaped cache
//! (32 key/value heads of 128 values, half precision) holding `positions` positions, and a
//! chunk of the last `chunk` of them as query rows, as the server prefills a long prompt in
//! chunks. Runs on the kernel this CPU picks (`AUTOJ_Q4_1_KERNEL=avx2` forces AVX2) with the
//! engine's thread pool, and prints the time per chunk and the multiply-adds per second, so
//! two builds or two paths can be compared run against run (alternate them).
//!
//! ```sh
//! cargo run --release -p autoj-judge --example attention_timing -- 3500 512 5
//! ```

use std::time::Instant;

use autoj_judge::engine::cpu::attention::{attend_packed, kernel_name, Geometry};
use autoj_judge::engine::cpu::kv::SeqKv;
use autoj_judge::engine::scheduler::KvType;

/// How to call this example.
const USAGE: &str = "usage: attention_timing POSITIONS CHUNK REPEATS (1 <= CHUNK <= POSITIONS)";

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or(0))
        .collect();
    let [positions, chunk, reps] = args[..] else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    if chunk == 0 || chunk > positions || reps == 0 {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    let geo = Geometry {
        heads: 32,
        kv_heads: 32,
        head_dim: 128,
    };
    let width = geo.kv_heads * geo.head_dim;
    let mut kv = SeqKv::new(1, width, KvType::F16);
    let value = |i: usize| (i * 7919 % 1000) as f32 / 500.0 - 1.0;
    for p in 0..positions {
        let k: Vec<f32> = (0..width).map(|i| value(p * width + i)).collect();
        let v: Vec<f32> = (0..width).map(|i| value(p * width + i + 17)).collect();
        kv.append(0, &k, &v);
    }
    let runs = kv.runs(0);
    let runs = runs.f16().expect("a half-precision cache");
    let first = positions - chunk;
    let rows: Vec<(usize, usize)> = (first..positions).map(|p| (0, p)).collect();
    let q: Vec<f32> = (0..chunk * geo.heads * geo.head_dim)
        .map(|i| value(i + 5) * 0.1)
        .collect();
    attend_packed(geo, &[runs], &rows, &q); // warm-up: caches, the thread pool
    let started = Instant::now();
    let mut check = 0f32;
    for _ in 0..reps {
        check += attend_packed(geo, &[runs], &rows, &q)[0];
    }
    let per = started.elapsed().as_secs_f64() / reps as f64;
    // Scores and weighted values: two multiply-adds per attended position and value.
    let attended: usize = (first..positions).map(|p| p + 1).sum();
    let fma = 2.0 * (attended * geo.heads * geo.head_dim) as f64;
    println!(
        "{} positions {positions} chunk {chunk}: {:.2} ms per chunk, {:.1} GFMA/s (checksum {})",
        kernel_name(1, geo.head_dim),
        per * 1e3,
        fma / per / 1e9,
        check / reps as f32
    );
}
