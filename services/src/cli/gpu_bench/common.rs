//! What the model steps of `gpu-bench` share: seeded token streams, one forward pass over
//! sequences of the device backend, and percentiles.

use autoj_judge::engine::device::{DeviceKv, DeviceModel};
use autoj_judge::engine::scheduler::{Ask, Backend, Row, StepInput, Want};

/// `n` token ids below `vocab` drawn from `seed` (splitmix64), the same on every machine.
pub fn tokens(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % vocab as u64) as u32
        })
        .collect()
}

/// One forward pass over `(cache, tokens)` pairs; the next-token logits of each pair (whole
/// rows copied to the host: for comparing logits, not what the scheduler does).
pub fn step(
    model: &DeviceModel,
    batch: &mut [(&mut DeviceKv, &[u32])],
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut inputs: Vec<StepInput<'_, DeviceKv>> = batch
        .iter_mut()
        .map(|(kv, tokens)| StepInput {
            kv: &mut **kv,
            tokens,
            want: Want::Last,
        })
        .collect();
    Ok(model.forward(&mut inputs)?)
}

/// One step over `(cache, tokens)` pairs as the scheduler runs it for greedy sequences:
/// each pair's next token picked on the device ([`Ask::Next`]), a few bytes per row read
/// back.
pub fn pick(
    model: &DeviceModel,
    batch: &mut [(&mut DeviceKv, &[u32])],
) -> anyhow::Result<Vec<u32>> {
    let mut rows: Vec<Row<'_, DeviceKv>> = batch
        .iter_mut()
        .map(|(kv, tokens)| Row {
            kv: &mut **kv,
            tokens,
            ask: Ask::Next,
        })
        .collect();
    let vocab = model.vocab();
    let out = model.step(&mut rows, vocab)?;
    Ok(out.answers.iter().map(|a| a.next.unwrap_or(0)).collect())
}

/// The `q` quantile (0..=1) of `values` by nearest rank; 0 when there are none.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n => v[((q * (n - 1) as f64).round() as usize).min(n - 1)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_seeded_and_within_the_vocabulary() {
        let a = tokens(5, 100, 37);
        assert_eq!(a, tokens(5, 100, 37));
        assert_ne!(a, tokens(6, 100, 37));
        assert!(a.iter().all(|&t| t < 37));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 1.0), 5.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
