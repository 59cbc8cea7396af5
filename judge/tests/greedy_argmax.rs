//! The batched engine's greedy pick, read straight from the logits, chooses exactly the
//! token candle's greedy sampler chooses: ties, NaN, infinities and signed zeros included.

use autoj_judge::engine::generate::{argmax, GenerationParams};
use autoj_judge::engine::oracle::candle_sampler;
use candle_core::{Device, Tensor};

/// candle's choice, through the sampler the request would otherwise use.
fn candle_pick(logits: &[f32]) -> u32 {
    let mut sampler = candle_sampler(&GenerationParams::default());
    let t = Tensor::from_slice(logits, logits.len(), &Device::Cpu).unwrap();
    sampler.sample(&t).unwrap()
}

#[test]
fn greedy_pick_matches_candles_sampler() {
    // A vocabulary-sized row of pseudo-random logits (two full 16-lane chunks are far too
    // few; 49,155 leaves a remainder), then the same with edits that stress the rules.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 40.0 - 20.0
    };
    let base: Vec<f32> = (0..49_155).map(|_| next()).collect();
    let mut cases: Vec<Vec<f32>> = vec![base.clone()];
    for at in [0, 15, 16, 31, 49_150, 49_154] {
        let mut v = base.clone();
        v[at] = 99.0;
        cases.push(v.clone());
        // An equal value later, and one earlier: the first of equals wins.
        let n = v.len();
        v[(at + 7) % n] = 99.0;
        cases.push(v);
    }
    let mut nan_first = base.clone();
    nan_first[0] = f32::NAN;
    cases.push(nan_first);
    let mut nan_late = base.clone();
    nan_late[100] = f32::NAN;
    nan_late[200] = 50.0;
    cases.push(nan_late);
    let mut inf = base.clone();
    inf[300] = f32::INFINITY;
    cases.push(inf);
    cases.push(vec![f32::NEG_INFINITY; 40]);
    cases.push(vec![-0.0, 0.0, -0.0]);
    cases.push(vec![0.0, -0.0]);
    cases.push(vec![-3.0]);
    for (i, logits) in cases.iter().enumerate() {
        assert_eq!(argmax(logits), candle_pick(logits), "case {i}");
    }
}
