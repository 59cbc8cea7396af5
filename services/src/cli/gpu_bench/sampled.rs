//! Whether a device samples as the host does: random logits rows of Auto-J's vocabulary
//! width on the device, reduced there to the candidates a sampled row sends back (top ids,
//! whole-row draws, the mass above each), compared with the host's candidates of the same
//! rows and draws.

use autoj_judge::engine::device::sample_candidates;
use autoj_judge::engine::scheduler::sample::{candidates_on_host, Draw, DRAWS};
use candle_core::{Device, Tensor};
use serde_json::{json, Value};

use super::common::tokens;

/// Rows checked, and their width (LLaMA-2's vocabulary).
const ROWS: usize = 16;
const VOCAB: usize = 32_000;

/// How far from its target the running sum may pass at a draw the device and the host land
/// on different ids (the device sums pieces in f32, the host in f64).
const BOUNDARY: f64 = 1e-4;

/// Uniform numbers in `[0, 1)` from `seed` (the same on every machine).
fn uniforms(seed: u64, n: usize) -> Vec<f32> {
    tokens(seed, n, 1 << 24)
        .into_iter()
        .map(|t| t as f32 / (1 << 24) as f32)
        .collect()
}

/// Runs the check on `device`; the report's fields, with `sampling_passed`.
pub fn check(device: &Device, seed: u64) -> anyhow::Result<Value> {
    let logits: Vec<f32> = uniforms(seed, ROWS * VOCAB)
        .into_iter()
        .map(|u| (u - 0.5) * 12.0)
        .collect();
    let u = uniforms(seed ^ 0x5eed, ROWS * (DRAWS + 1));
    let draws: Vec<Draw> = (0..ROWS)
        .map(|r| Draw {
            temperature: [0.6, 1.0, 1.4][r % 3],
            top_p: 1.0,
            u: std::array::from_fn(|i| u[r * (DRAWS + 1) + i]),
        })
        .collect();
    let on_device = Tensor::from_vec(logits.clone(), (ROWS, VOCAB), device)?;
    let got = sample_candidates(&on_device, &draws, VOCAB)?;
    let (mut top_mismatch, mut moved, mut off) = (0, 0, 0);
    for (r, (dev, draw)) in got.iter().zip(&draws).enumerate() {
        let row = &logits[r * VOCAB..(r + 1) * VOCAB];
        let host = candidates_on_host(row, draw);
        let sorted = |v: &[u32]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v
        };
        top_mismatch += usize::from(sorted(&dev.top_ids) != sorted(&host.top_ids));
        let probs = probabilities(row, draw.temperature);
        for ((&a, &b), &u) in dev.drawn.iter().zip(&host.drawn).zip(draw.whole()) {
            if a == b {
                continue;
            }
            moved += 1;
            let at: f64 = probs[..=a.min(b) as usize].iter().sum();
            off += usize::from((at - f64::from(u)).abs() > BOUNDARY || a as usize >= VOCAB);
        }
    }
    Ok(json!({
        "sampling_rows": ROWS,
        "sampling_top_id_mismatches": top_mismatch,
        "sampling_draws_moved": moved,
        "sampling_draws_off": off,
        "sampling_passed": top_mismatch == 0 && off == 0,
    }))
}

/// The row's probabilities at temperature `t`, in f64.
fn probabilities(row: &[f32], t: f32) -> Vec<f64> {
    let z: Vec<f64> = row.iter().map(|&x| f64::from(x / t)).collect();
    let max = z.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x));
    let e: Vec<f64> = z.iter().map(|x| (x - max).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|x| x / total).collect()
}
