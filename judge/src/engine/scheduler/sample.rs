//! Temperature and nucleus (top-p) sampling split so a device never sends a whole logits
//! row to the host: the backend reduces a sampled row to a few candidates
//! ([`Candidates`]: the most probable ids, and ids drawn over the whole distribution with
//! uniform numbers the host drew), and the host picks among them ([`choose`]).
//!
//! The pick is exact: with no nucleus cut, the first whole-row draw is the sample; with a
//! cut whose nucleus lies among the [`TOP_K`] most probable ids (the usual case), the
//! nucleus is known and sampled on the host; with a wider nucleus, the whole-row draws are
//! accepted or rejected by whether the mass strictly above them is under `top_p` (rejection
//! sampling, exact). Only when all [`DRAWS`] draws fall outside a nucleus wider than
//! [`TOP_K`] ids is the pick made among the top ids alone ([`Pick::Truncated`], counted).
//!
//! A backend computing on the host builds the same candidates from the row
//! ([`candidates_on_host`]), so both backends pick the same token for the same seed.

use rand::Rng;

use crate::engine::generate::GenerationParams;
use crate::error::{JudgeError, Result};

/// Most probable ids a backend returns per sampled row.
pub const TOP_K: usize = 64;

/// Draws over the whole distribution a backend makes per sampled row.
pub const DRAWS: usize = 4;

/// One sampled row's settings and the uniform numbers the sequence's generator drew for it
/// (the same count every step, so a seed gives one stream whichever backend runs it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    /// Divides the logits (> 0).
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 keeps every id.
    pub top_p: f32,
    /// `u[0]` picks inside a nucleus on the host; `u[1..]` are the backend's draws.
    pub u: [f32; DRAWS + 1],
}

impl Draw {
    /// The next draw of a sequence sampled with `params`.
    pub fn new(params: &GenerationParams, rng: &mut impl Rng) -> Self {
        let mut u = [0.0; DRAWS + 1];
        u.iter_mut().for_each(|x| *x = rng.random::<f32>());
        Self {
            temperature: params.temperature as f32,
            top_p: params.top_p as f32,
            u,
        }
    }

    /// The uniform numbers of the backend's whole-row draws, in `[0, 1)`.
    pub fn whole(&self) -> &[f32] {
        &self.u[1..]
    }
}

/// What a backend computes of one sampled row: the distribution is the softmax of the
/// logits divided by the temperature, over the ids the tokenizer can produce.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidates {
    /// The most probable ids ([`TOP_K`], or every id when fewer), most probable first.
    pub top_ids: Vec<u32>,
    /// Their probabilities.
    pub top_probs: Vec<f32>,
    /// Per whole-row draw: the id where the cumulative distribution (in id order) first
    /// reaches `u x total`.
    pub drawn: Vec<u32>,
    /// Per drawn id: the mass of the ids strictly more probable than it.
    pub above: Vec<f32>,
}

/// How a sampled token was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// No nucleus cut: the first whole-row draw.
    Whole,
    /// A nucleus among the top ids, sampled on the host.
    Nucleus,
    /// A wider nucleus: the first whole-row draw inside it.
    Rejection,
    /// A wider nucleus that no draw fell in: picked among the top ids only.
    Truncated,
}

impl Pick {
    /// Every way, in the order of [`crate::engine::EngineStats::sampled`].
    pub const ALL: [Pick; 4] = [Pick::Whole, Pick::Nucleus, Pick::Rejection, Pick::Truncated];

    /// Its name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Pick::Whole => "whole",
            Pick::Nucleus => "nucleus",
            Pick::Rejection => "rejection",
            Pick::Truncated => "truncated",
        }
    }
}

/// The sampled token and how it was picked; an error when the distribution is not one
/// (NaN or infinite logits, as from a corrupt model).
pub fn choose(draw: &Draw, c: &Candidates) -> Result<(u32, Pick)> {
    let sane = |p: &f32| p.is_finite() && *p >= 0.0;
    if c.top_ids.is_empty() || !c.top_probs.iter().all(sane) || c.drawn.is_empty() {
        return Err(unsamplable());
    }
    if draw.top_p >= 1.0 {
        return Ok((c.drawn[0], Pick::Whole));
    }
    let mut mass = 0.0f32;
    for (n, p) in c.top_probs.iter().enumerate() {
        mass += p;
        if mass >= draw.top_p {
            return Ok((
                pick_among(&c.top_ids[..=n], &c.top_probs, draw.u[0]),
                Pick::Nucleus,
            ));
        }
    }
    if let Some((&id, _)) = c
        .drawn
        .iter()
        .zip(&c.above)
        .find(|(_, &above)| above < draw.top_p)
    {
        return Ok((id, Pick::Rejection));
    }
    Ok((
        pick_among(&c.top_ids, &c.top_probs, draw.u[0]),
        Pick::Truncated,
    ))
}

/// The id whose share of `probs` (over `ids`, in order) holds `u`.
fn pick_among(ids: &[u32], probs: &[f32], u: f32) -> u32 {
    let total: f32 = probs[..ids.len()].iter().sum();
    let target = u * total;
    let mut cum = 0.0;
    for (&id, p) in ids.iter().zip(probs) {
        cum += p;
        if cum > target {
            return id;
        }
    }
    ids[ids.len() - 1]
}

/// The error of a row whose distribution cannot be sampled.
pub fn unsamplable() -> JudgeError {
    candle_core::Error::Msg("the logits cannot be sampled (NaN or infinite values)".into()).into()
}

/// The candidates of one logits row (over the ids the tokenizer can produce), computed on
/// the host as a device backend computes them.
pub fn candidates_on_host(row: &[f32], draw: &Draw) -> Candidates {
    let inv_t = 1.0 / draw.temperature;
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x * inv_t));
    let mut probs: Vec<f32> = row.iter().map(|&x| (x * inv_t - max).exp()).collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    let k = TOP_K.min(probs.len());
    let mut order: Vec<u32> = (0..probs.len() as u32).collect();
    let by_prob = |a: &u32, b: &u32| probs[*b as usize].total_cmp(&probs[*a as usize]);
    if k < order.len() && k > 0 {
        order.select_nth_unstable_by(k - 1, by_prob);
    }
    order.truncate(k);
    order.sort_by(by_prob);
    // The normalized row's own sum (1 up to rounding), as the device scales its targets.
    let total: f32 = probs.iter().sum();
    let drawn: Vec<u32> = draw
        .whole()
        .iter()
        .map(|&u| inverse_cdf(&probs, u * total))
        .collect();
    let above = drawn
        .iter()
        .map(|&id| {
            let p = probs[id as usize];
            probs
                .iter()
                .filter(|&&q| q > p)
                .map(|&q| q as f64)
                .sum::<f64>() as f32
        })
        .collect();
    Candidates {
        top_probs: order.iter().map(|&i| probs[i as usize]).collect(),
        top_ids: order,
        drawn,
        above,
    }
}

/// The first id where the running sum of `probs` reaches `target` (the last id when
/// rounding leaves it short), summed in f64.
fn inverse_cdf(probs: &[f32], target: f32) -> u32 {
    let (mut cum, target) = (0.0f64, target as f64);
    for (i, &p) in probs.iter().enumerate() {
        cum += p as f64;
        if cum >= target {
            return i as u32;
        }
    }
    probs.len().saturating_sub(1) as u32
}

/// Samples one row on the host: the candidates, then the pick.
pub fn sample_on_host(row: &[f32], draw: &Draw) -> Result<(u32, Pick)> {
    choose(draw, &candidates_on_host(row, draw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn draw(temperature: f32, top_p: f32, rng: &mut impl Rng) -> Draw {
        let params = GenerationParams {
            temperature: temperature as f64,
            top_p: top_p as f64,
            ..GenerationParams::default()
        };
        Draw::new(&params, rng)
    }

    /// Frequencies of `n` host samples of `row`, per id.
    fn frequencies(row: &[f32], t: f32, top_p: f32, n: usize) -> (Vec<f64>, Vec<Pick>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = vec![0.0; row.len()];
        let mut picks = Vec::new();
        for _ in 0..n {
            let (id, pick) = sample_on_host(row, &draw(t, top_p, &mut rng)).unwrap();
            counts[id as usize] += 1.0 / n as f64;
            picks.push(pick);
        }
        (counts, picks)
    }

    /// The exact nucleus distribution, by sorting the whole row.
    fn nucleus(row: &[f32], t: f32, top_p: f32) -> Vec<f64> {
        let e: Vec<f64> = row.iter().map(|&x| ((x / t) as f64).exp()).collect();
        let z: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|x| x / z).collect();
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let (mut keep, mut mass) = (vec![0.0; p.len()], 0.0);
        for &i in &order {
            keep[i] = p[i];
            mass += p[i];
            if mass >= top_p as f64 {
                break;
            }
        }
        keep.iter().map(|x| x / mass).collect()
    }

    fn max_gap(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn without_a_cut_samples_follow_the_whole_distribution() {
        let row: Vec<f32> = (0..200).map(|i| ((i * 37) % 23) as f32 * 0.2).collect();
        let (freq, picks) = frequencies(&row, 0.7, 1.0, 40_000);
        assert!(picks.iter().all(|&p| p == Pick::Whole));
        let gap = max_gap(&freq, &nucleus(&row, 0.7, 1.0));
        assert!(
            gap < 0.01,
            "frequencies differ from the distribution by {gap}"
        );
    }

    #[test]
    fn a_narrow_nucleus_is_sampled_exactly_among_the_top_ids() {
        let row: Vec<f32> = (0..500).map(|i| ((i * 13) % 41) as f32 * 0.3).collect();
        let (freq, picks) = frequencies(&row, 1.0, 0.5, 40_000);
        assert!(picks.iter().all(|&p| p == Pick::Nucleus));
        let exact = nucleus(&row, 1.0, 0.5);
        assert!(max_gap(&freq, &exact) < 0.012);
        // Nothing outside the nucleus is ever picked.
        assert!(freq.iter().zip(&exact).all(|(f, e)| *e > 0.0 || *f == 0.0));
    }

    #[test]
    fn a_nucleus_wider_than_the_top_ids_is_sampled_by_rejection() {
        // 400 nearly equal (distinct) ids: a 0.9 nucleus holds ~360, far past TOP_K.
        let row: Vec<f32> = (0..400).map(|i| i as f32 * 1e-3).collect();
        let (freq, picks) = frequencies(&row, 1.0, 0.9, 40_000);
        let rejected = picks.iter().filter(|&&p| p == Pick::Rejection).count();
        let truncated = picks.iter().filter(|&&p| p == Pick::Truncated).count();
        assert_eq!(rejected + truncated, picks.len());
        // All four draws miss a 0.9 nucleus with probability 1e-4.
        assert!(truncated < 20, "{truncated} truncated picks");
        let exact = nucleus(&row, 1.0, 0.9);
        let outside: f64 = freq
            .iter()
            .zip(&exact)
            .filter(|(_, e)| **e == 0.0)
            .map(|(f, _)| f)
            .sum();
        assert!(
            outside < 1e-3,
            "{outside} of the picks fell outside the nucleus"
        );
        assert!(max_gap(&freq, &exact) < 0.003);
    }

    #[test]
    fn nan_logits_are_refused() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let row = vec![f32::NAN; 10];
        assert!(sample_on_host(&row, &draw(0.8, 1.0, &mut rng)).is_err());
    }

    #[test]
    fn candidates_list_the_top_ids_in_order_and_the_mass_above_each_draw() {
        let row = [0.0f32, 3.0, 1.0, 2.0];
        let d = Draw {
            temperature: 1.0,
            top_p: 1.0,
            u: [0.5, 0.0, 0.999_999, 0.2, 0.6],
        };
        let c = candidates_on_host(&row, &d);
        assert_eq!(c.top_ids, vec![1, 3, 2, 0]);
        let p = &c.top_probs;
        assert!(p.windows(2).all(|w| w[0] >= w[1]));
        assert_eq!(c.drawn[0], 0, "u = 0 lands on the first id");
        assert_eq!(c.drawn[1], 3, "u near 1 lands on the last id");
        // The mass above id 0 (the least probable) is everything else.
        assert!((c.above[0] - (1.0 - p[3])).abs() < 1e-6);
        assert!((c.above[1] - p[0]).abs() < 1e-6, "above id 3: id 1 alone");
    }
}
