//! The CPU forward pass as a [`Backend`]: [`BatchModel`] over per-sequence [`SeqKv`] caches,
//! whose prompts the prefix cache shares as chains of [`Link`]s. A step is one batched pass;
//! every answer is computed on the host ([`answer_on_host`]).

use super::kv::{take_prefix, Link, SeqKv};
use super::model::BatchModel;
use crate::engine::scheduler::backend::{answer_on_host, starts, Ask, Backend, Row, SeqCache};
use crate::engine::scheduler::backend::{SharedPrefix, StepInput, StepOut, Want};
use crate::error::Result;

impl SharedPrefix for Vec<Link> {
    fn take(&self, n: usize) -> Self {
        take_prefix(self, n)
    }
}

impl SeqCache for SeqKv {
    type Prefix = Vec<Link>;

    fn len(&self) -> usize {
        SeqKv::len(self)
    }

    fn freeze(&mut self) {
        SeqKv::freeze(self);
    }

    fn prefix(&self, upto: usize) -> Result<Vec<Link>> {
        Ok(SeqKv::prefix(self, upto))
    }

    fn seed(&mut self, prefix: Vec<Link>) -> Result<()> {
        self.reseed(prefix);
        Ok(())
    }
}

impl Backend for BatchModel {
    type Kv = SeqKv;
    type Prefix = Vec<Link>;

    fn vocab(&self) -> usize {
        self.shape.vocab
    }

    fn kv_bytes_per_token(&self) -> usize {
        self.shape.kv_bytes_per_token()
    }

    fn max_seqs(&self) -> Option<usize> {
        None
    }

    fn caches_in_use(&self) -> Option<usize> {
        None
    }

    fn new_kv(&self) -> Result<SeqKv> {
        Ok(BatchModel::new_kv(self))
    }

    /// Rows run in one batched pass of the CPU forward; a tree's branches each over their
    /// own fork of the cache (the shared positions are not copied).
    fn step(&self, rows: &mut [Row<'_, SeqKv>], producible: usize) -> Result<StepOut> {
        let mut forks: Vec<Vec<SeqKv>> = rows
            .iter_mut()
            .map(|r| match r.ask {
                Ask::Tree { base, branch, .. } => {
                    let n = starts(branch).count();
                    (0..n).map(|_| r.kv.fork(base)).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        let mut inputs: Vec<StepInput<'_, SeqKv>> = Vec::with_capacity(rows.len());
        for (r, forks) in rows.iter_mut().zip(forks.iter_mut()) {
            if let Ask::Tree { branch, .. } = r.ask {
                let spans = starts(branch).zip(starts(branch).skip(1).chain([branch.len()]));
                for ((from, to), kv) in spans.zip(forks.iter_mut()) {
                    inputs.push(StepInput {
                        kv,
                        tokens: &r.tokens[from..to],
                        want: Want::All,
                    });
                }
                continue;
            }
            let want = match r.ask {
                Ask::Nothing => Want::Nothing,
                _ => Want::Last,
            };
            inputs.push(StepInput {
                kv: &mut *r.kv,
                tokens: r.tokens,
                want,
            });
        }
        let mut logits = BatchModel::forward(self, &mut inputs)?.into_iter();
        drop(inputs);
        let vocab = self.shape.vocab;
        let mut answers = Vec::with_capacity(rows.len());
        for (r, forks) in rows.iter().zip(&forks) {
            let rows_logits = match r.ask {
                Ask::Tree { .. } => forks.iter().flat_map(|_| logits.next()).flatten().collect(),
                _ => logits.next().unwrap_or_default(),
            };
            answers.push(answer_on_host(r.ask, rows_logits, vocab, producible));
        }
        Ok(StepOut {
            answers,
            host_bytes: 0,
        })
    }

    fn tree_room(&self, _kv: &SeqKv, _base: usize) -> usize {
        usize::MAX
    }
}
