//! Sampled rows reduced on the device to the few candidates the host picks from
//! ([`crate::engine::scheduler::sample`]): the most probable ids, found by sorting
//! [`SORT_WIDTH`]-wide pieces of the row and keeping each piece's best until one sort
//! holds what is left (candle's sort runs one row per thread block, in shared memory, so
//! one piece stays within its default 48 KiB); and whole-row draws by the inverse of the
//! cumulative distribution, found a [`CDF_CHUNK`] of ids at a time.

use candle_core::{DType, Device, Tensor};
use candle_nn::ops::softmax_last_dim;

use crate::engine::scheduler::sample::{Candidates, Draw, DRAWS, TOP_K};
use crate::error::Result;

/// Widest row one sort handles (16 KiB of indices in shared memory).
const SORT_WIDTH: usize = 4096;

/// Ids per piece of the two-level cumulative sum.
const CDF_CHUNK: usize = 128;

/// Values a sampled row sends back: its top ids and their probabilities, then the drawn
/// ids and the mass above each.
pub(super) fn record_len(producible: usize) -> usize {
    2 * TOP_K.min(producible.max(1)) + 2 * DRAWS
}

/// `[rows, record_len]`: each sampled row's candidates, from `logits` (`[rows, vocab]`,
/// f32), one [`Draw`] per row, over the first `producible` ids.
pub(super) fn candidates(logits: &Tensor, draws: &[Draw], producible: usize) -> Result<Tensor> {
    let dev = logits.device();
    let (n, vocab) = logits.dims2()?;
    let width = producible.clamp(1, vocab);
    let inv_t: Vec<f32> = draws.iter().map(|d| 1.0 / d.temperature).collect();
    let inv_t = Tensor::from_vec(inv_t, (n, 1), dev)?;
    let probs = softmax_last_dim(&logits.narrow(1, 0, width)?.broadcast_mul(&inv_t)?)?;
    let (top_probs, top_ids) = top_k(&probs, TOP_K.min(width))?;
    let u: Vec<f32> = draws.iter().flat_map(|d| d.whole().to_vec()).collect();
    let u = Tensor::from_vec(u, (n, DRAWS), dev)?;
    let drawn = inverse_cdf(&probs, &u)?;
    let above = mass_above(&probs, &drawn)?;
    let parts = [
        top_ids.to_dtype(DType::F32)?,
        top_probs,
        drawn.to_dtype(DType::F32)?,
        above,
    ];
    Ok(Tensor::cat(&parts, 1)?)
}

/// Reads one row's record back (the layout of [`candidates`]).
pub(super) fn read(record: &[f32]) -> Candidates {
    let k = (record.len() - 2 * DRAWS) / 2;
    let ids = |v: &[f32]| v.iter().map(|&x| x as u32).collect();
    Candidates {
        top_ids: ids(&record[..k]),
        top_probs: record[k..2 * k].to_vec(),
        drawn: ids(&record[2 * k..2 * k + DRAWS]),
        above: record[2 * k + DRAWS..].to_vec(),
    }
}

/// The `k` largest values of each row and their column indices, largest first.
fn top_k(values: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let dev = values.device();
    let (n, mut width) = values.dims2()?;
    let mut vals = values.clone();
    let mut ids = Tensor::arange(0u32, width as u32, dev)?
        .unsqueeze(0)?
        .broadcast_as((n, width))?
        .contiguous()?;
    while width > SORT_WIDTH {
        let pieces = width.div_ceil(SORT_WIDTH);
        let pad = pieces * SORT_WIDTH - width;
        if pad > 0 {
            // Below every probability, so a pad never outranks a real id.
            let low = Tensor::full(-1f32, (n, pad), dev)?;
            vals = Tensor::cat(&[&vals, &low], 1)?;
            ids = Tensor::cat(&[&ids, &Tensor::zeros((n, pad), DType::U32, dev)?], 1)?;
        }
        let v = vals.reshape((n * pieces, SORT_WIDTH))?;
        let i = ids.reshape((n * pieces, SORT_WIDTH))?;
        let best = v.arg_sort_last_dim(false)?.narrow(1, 0, k)?.contiguous()?;
        vals = v.gather(&best, 1)?.reshape((n, pieces * k))?;
        ids = i.gather(&best, 1)?.reshape((n, pieces * k))?;
        width = pieces * k;
    }
    let best = vals
        .contiguous()?
        .arg_sort_last_dim(false)?
        .narrow(1, 0, k)?
        .contiguous()?;
    Ok((vals.gather(&best, 1)?, ids.gather(&best, 1)?))
}

/// `[rows, draws]`: per uniform number `u`, the first id where the running sum of the
/// row's probabilities reaches `u` times their total. The sums of [`CDF_CHUNK`]-id pieces
/// find the piece, then the running sum inside it the id.
fn inverse_cdf(probs: &Tensor, u: &Tensor) -> Result<Tensor> {
    let dev = probs.device();
    let (n, width) = probs.dims2()?;
    let d = u.dim(1)?;
    let chunks = width.div_ceil(CDF_CHUNK);
    let pad = chunks * CDF_CHUNK - width;
    let padded = match pad {
        0 => probs.clone(),
        _ => Tensor::cat(&[probs, &Tensor::zeros((n, pad), DType::F32, dev)?], 1)?,
    };
    let pieces = padded.reshape((n, chunks, CDF_CHUNK))?;
    let sums = pieces.sum(2)?;
    let cum = sums.cumsum(1)?;
    let target = u.broadcast_mul(&probs.sum_keepdim(1)?)?;
    let chunk =
        count_below(&cum.unsqueeze(1)?, &target.unsqueeze(2)?, 2)?.minimum((chunks - 1) as f64)?;
    let chunk_ids = chunk.to_dtype(DType::U32)?;
    let before = (&cum - &sums)?.gather(&chunk_ids, 1)?;
    let first_piece = flat_rows(n, d, chunks, dev)?;
    let at = (chunk_ids + first_piece)?.flatten_all()?;
    let inside = pieces
        .reshape((n * chunks, CDF_CHUNK))?
        .index_select(&at, 0)?
        .cumsum(1)?
        .broadcast_add(&before.reshape((n * d, 1))?)?;
    let offset =
        count_below(&inside, &target.reshape((n * d, 1))?, 1)?.minimum((CDF_CHUNK - 1) as f64)?;
    let id = (chunk.reshape(n * d)?.affine(CDF_CHUNK as f64, 0.0)? + offset)?
        .minimum((width - 1) as f64)?;
    Ok(id.reshape((n, d))?.to_dtype(DType::U32)?)
}

/// How many of `values` (broadcast against `limits`) are below their limit, summed over
/// `dim`, as f32 (a count of u8 flags would wrap past 255).
fn count_below(values: &Tensor, limits: &Tensor, dim: usize) -> Result<Tensor> {
    Ok(values
        .broadcast_lt(limits)?
        .to_dtype(DType::F32)?
        .sum(dim)?)
}

/// `[rows, draws]`: the flat index of each row's first piece (`row x chunks`).
fn flat_rows(n: usize, d: usize, chunks: usize, dev: &Device) -> Result<Tensor> {
    let v: Vec<u32> = (0..n)
        .flat_map(|r| std::iter::repeat_n((r * chunks) as u32, d))
        .collect();
    Ok(Tensor::from_vec(v, (n, d), dev)?)
}

/// `[rows, draws]`: the mass of the ids strictly more probable than each drawn id.
fn mass_above(probs: &Tensor, drawn: &Tensor) -> Result<Tensor> {
    let p = probs.gather(drawn, 1)?;
    let wide = probs.unsqueeze(1)?;
    let higher = wide.broadcast_gt(&p.unsqueeze(2)?)?.to_dtype(DType::F32)?;
    Ok(higher.broadcast_mul(&wide)?.sum(2)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::scheduler::sample::candidates_on_host;
    use rand::{Rng, SeedableRng};

    /// The device reductions (run here on the CPU device) find the candidates the host
    /// finds from the same rows and draws, for a row narrower than one sort and for rows
    /// that take two levels of sorting and a ragged last piece. A draw may land on another
    /// id only where the running sum passes its target within rounding (the device sums
    /// pieces in f32, the host runs in f64).
    #[test]
    fn device_candidates_equal_the_hosts() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut moved = 0;
        for (vocab, producible) in [(300, 300), (32_000, 32_000), (9_000, 8_950)] {
            let n = 3;
            let logits: Vec<f32> = (0..n * vocab)
                .map(|_| rng.random_range(-4.0f32..4.0))
                .collect();
            let draws: Vec<Draw> = (0..n)
                .map(|i| Draw {
                    temperature: [0.7, 1.0, 1.3][i],
                    top_p: 1.0,
                    u: std::array::from_fn(|_| rng.random::<f32>()),
                })
                .collect();
            let t = Tensor::from_vec(logits.clone(), (n, vocab), &Device::Cpu).unwrap();
            let back = candidates(&t, &draws, producible).unwrap();
            let back = back.to_vec2::<f32>().unwrap();
            for (r, draw) in draws.iter().enumerate() {
                assert_eq!(back[r].len(), record_len(producible));
                let dev = read(&back[r]);
                let row = &logits[r * vocab..r * vocab + producible];
                let host = candidates_on_host(row, draw);
                // The same ids, in the same order up to equal probabilities.
                let sorted = |v: &[u32]| {
                    let mut v = v.to_vec();
                    v.sort();
                    v
                };
                assert_eq!(
                    sorted(&dev.top_ids),
                    sorted(&host.top_ids),
                    "vocab {vocab} row {r}"
                );
                let close =
                    |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
                assert!(close(&dev.top_probs, &host.top_probs));
                let probs = probabilities(row, draw.temperature);
                for ((&a, &b), &u) in dev.drawn.iter().zip(&host.drawn).zip(draw.whole()) {
                    assert!((a as usize) < producible);
                    let same = dev
                        .drawn
                        .iter()
                        .zip(&host.drawn)
                        .zip(dev.above.iter().zip(&host.above));
                    for (_, (x, y)) in same.filter(|((a, b), _)| a == b) {
                        assert!(
                            (x - y).abs() < 1e-4,
                            "mass above: {x} on the device, {y} here"
                        );
                    }
                    if a != b {
                        moved += 1;
                        let between: f64 = probs[a.min(b) as usize..a.max(b) as usize]
                            .iter()
                            .map(|&p| p as f64)
                            .sum();
                        let at: f64 = probs[..=a.min(b) as usize].iter().map(|&p| p as f64).sum();
                        assert!(between < 1e-3, "draw {u} moved from {b} to {a}");
                        assert!(
                            (at - u as f64).abs() < 1e-5,
                            "draw {u} moved from {b} to {a}"
                        );
                    }
                }
            }
        }
        assert!(moved <= 3, "{moved} of 36 draws landed elsewhere");
    }

    /// The row's probabilities at temperature `t`.
    fn probabilities(row: &[f32], t: f32) -> Vec<f32> {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x / t));
        let e: Vec<f32> = row.iter().map(|&x| (x / t - max).exp()).collect();
        let z: f32 = e.iter().sum();
        e.iter().map(|x| x / z).collect()
    }
}
