//! What a device step sends back: the rows its items' asks read go through the output
//! layer, are reduced on the device to what each asked for (greedy picks, gathered
//! log-probabilities, sampled rows' candidates, whole rows only where asked) and come back
//! in one copy.

use candle_core::{DType, Tensor};
use candle_nn::ops::{log_softmax, rms_norm};

use super::sample::{candidates, read, record_len};
use super::step::Item;
use super::DeviceModel;
use crate::engine::scheduler::sample::{choose, Draw};
use crate::engine::scheduler::{Answer, Ask, StepOut};
use crate::error::Result;

impl DeviceModel {
    /// What each item asked for, reduced on the device and read back in one copy: the rows
    /// the asks read go through the output layer; greedy picks are an argmax there, scores a
    /// log-softmax gathered at the ids asked for, sampled rows a few candidates
    /// ([`super::sample`]), and only [`Ask::Logits`] rows come back whole.
    pub(super) fn answers(
        &self,
        x: &Tensor,
        items: &[Item<'_>],
        offsets: &[usize],
        producible: usize,
    ) -> Result<StepOut> {
        let vocab = self.shape.vocab;
        let reads = Reads::new(items, offsets, (vocab, producible));
        let mut answers = vec![Answer::default(); items.len()];
        if reads.rows.is_empty() {
            return Ok(StepOut {
                answers,
                host_bytes: 0,
            });
        }
        let dev = &self.device;
        let idx = Tensor::from_vec(reads.rows.clone(), reads.rows.len(), dev)?;
        let h = rms_norm(&x.index_select(&idx, 0)?, &self.norm, self.shape.eps)?;
        let logits = h.matmul(&self.lm_head.t()?)?.to_dtype(DType::F32)?;
        let mut parts = Vec::with_capacity(4);
        if !reads.next.is_empty() {
            let at = Tensor::from_vec(reads.next.clone(), reads.next.len(), dev)?;
            let picks = logits
                .index_select(&at, 0)?
                .narrow(1, 0, producible.clamp(1, vocab))?
                .argmax(1)?
                .to_dtype(DType::F32)?;
            parts.push(picks);
        }
        if !reads.scored.is_empty() {
            let flat = log_softmax(&logits, 1)?.flatten_all()?;
            let at = Tensor::from_vec(reads.scored.clone(), reads.scored.len(), dev)?;
            parts.push(flat.index_select(&at, 0)?);
        }
        if !reads.sampled.is_empty() {
            let at = Tensor::from_vec(reads.sampled.clone(), reads.sampled.len(), dev)?;
            let rows = logits.index_select(&at, 0)?;
            parts.push(candidates(&rows, &reads.draws, producible)?.flatten_all()?);
        }
        if !reads.whole.is_empty() {
            let at = Tensor::from_vec(reads.whole.clone(), reads.whole.len(), dev)?;
            parts.push(logits.index_select(&at, 0)?.flatten_all()?);
        }
        let back = Tensor::cat(&parts, 0)?.to_vec1::<f32>()?;
        reads.fill(&back, items, &mut answers);
        Ok(StepOut {
            answers,
            host_bytes: back.len() * std::mem::size_of::<f32>(),
        })
    }
}

/// Which output rows a step reads and what it reduces them to, in the order they come back:
/// greedy picks, then gathered log-probabilities, then sampled rows' candidates, then whole
/// rows.
struct Reads {
    vocab: usize,
    /// Values of one sampled row's candidates.
    record: usize,
    /// Packed rows that go through the output layer.
    rows: Vec<u32>,
    /// Of those (by index into `rows`), the ones argmaxed.
    next: Vec<u32>,
    /// Flat indices `row * vocab + id` into the log-softmax of the output rows.
    scored: Vec<u32>,
    /// Output rows sampled, and their draws.
    sampled: Vec<u32>,
    draws: Vec<Draw>,
    /// Output rows copied whole.
    whole: Vec<u32>,
}

impl Reads {
    fn new(items: &[Item<'_>], offsets: &[usize], (vocab, producible): (usize, usize)) -> Self {
        let mut r = Self {
            vocab,
            record: record_len(producible.clamp(1, vocab)),
            sampled: Vec::new(),
            draws: Vec::new(),
            rows: Vec::new(),
            next: Vec::new(),
            scored: Vec::new(),
            whole: Vec::new(),
        };
        for (item, &off) in items.iter().zip(offsets) {
            let first = r.rows.len();
            r.rows.extend(item.out_rows().map(|j| (off + j) as u32));
            if item.out_rows().is_empty() {
                continue;
            }
            let mut score = |row: usize, id: u32| {
                if (id as usize) < vocab {
                    r.scored.push((row * vocab) as u32 + id);
                }
            };
            match item.ask {
                Ask::Nothing => {}
                Ask::Next => r.next.push(first as u32),
                Ask::Scored(ids) => {
                    ids.iter().for_each(|&id| score(first, id));
                    r.next.push(first as u32);
                }
                Ask::Sample { draw, scored } => {
                    scored.iter().for_each(|&id| score(first, id));
                    r.sampled.push(first as u32);
                    r.draws.push(draw);
                }
                Ask::Logits => r.whole.push(first as u32),
                Ask::Tree { follow, .. } => {
                    let n = item.tokens.len();
                    follow
                        .iter()
                        .take(n)
                        .enumerate()
                        .for_each(|(j, &id)| score(first + j, id));
                }
            }
        }
        r
    }

    /// Hands the values read back (`back`, in [`Reads`] order) to each item's answer; an id
    /// outside the vocabulary scores minus infinity.
    fn fill(&self, back: &[f32], items: &[Item<'_>], answers: &mut [Answer]) {
        let (picks, rest) = back.split_at(self.next.len());
        let (scores, rest) = rest.split_at(self.scored.len());
        let (records, whole) = rest.split_at(self.sampled.len() * self.record);
        let (mut picks, mut scores) = (picks.iter(), scores.iter());
        let mut records = records.chunks_exact(self.record.max(1));
        let mut whole = whole.chunks_exact(self.vocab.max(1));
        for (item, answer) in items.iter().zip(answers.iter_mut()) {
            if item.out_rows().is_empty() {
                continue;
            }
            let mut gather = |ids: &[u32]| -> Vec<f32> {
                let known = |id: u32| (id as usize) < self.vocab;
                ids.iter()
                    .map(|&id| match known(id) {
                        true => scores.next().copied().unwrap_or(f32::NAN),
                        false => f32::NEG_INFINITY,
                    })
                    .collect()
            };
            match item.ask {
                Ask::Nothing => {}
                Ask::Next => answer.next = picks.next().map(|&v| v as u32),
                Ask::Scored(ids) => {
                    answer.scores = gather(ids);
                    answer.next = picks.next().map(|&v| v as u32);
                }
                Ask::Sample { draw, scored } => {
                    answer.scores = gather(scored);
                    let picked = records.next().and_then(|c| choose(&draw, &read(c)).ok());
                    answer.next = picked.map(|(id, _)| id);
                    answer.pick = picked.map(|(_, pick)| pick);
                }
                Ask::Logits => answer.logits = whole.next().unwrap_or_default().to_vec(),
                Ask::Tree { follow, .. } => {
                    answer.scores = gather(&follow[..follow.len().min(item.tokens.len())]);
                }
            }
        }
    }
}
