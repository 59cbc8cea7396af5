//! What the continuous-batching loop needs from a model and its caches, so one scheduler
//! drives both our CPU forward pass ([`BatchModel`] over [`SeqKv`]) and the device backend
//! written in candle tensor ops ([`crate::engine::device::DeviceModel`], for CUDA).
//!
//! The scheduler only ever asks a backend for: a fresh cache per admitted sequence, one
//! forward pass over the step's inputs, the logits of the verdict's continuations read from a
//! point of a sequence, and a few shape facts. A cache tells its length, can be frozen and
//! share its prompt with the prefix cache, and can start from a shared prefix.

use super::kv::{Link, SeqKv};
use super::model::{BatchModel, StepInput, Want};
use crate::error::Result;

/// A model the batching loop can drive.
pub trait Backend {
    /// One sequence's key/value cache.
    type Kv: SeqCache<Prefix = Self::Prefix>;
    /// What the prefix cache keeps of a prompt's cache.
    type Prefix: SharedPrefix;

    /// Rows of the output layer (the length of one logits row).
    fn vocab(&self) -> usize;

    /// Key/value bytes one position takes, to reserve memory at admission.
    fn kv_bytes_per_token(&self) -> usize;

    /// Sequences that can hold a cache at once (a device's preallocated slots); `None`
    /// when only the memory budget bounds them.
    fn max_seqs(&self) -> Option<usize>;

    /// Caches currently held (slots in use); `None` when the backend does not count them.
    fn caches_in_use(&self) -> Option<usize>;

    /// An empty cache for a newly admitted sequence (the scheduler never asks for more than
    /// [`Backend::max_seqs`] at once).
    fn new_kv(&self) -> Result<Self::Kv>;

    /// Runs one step for several sequences; returns, per input, the logits it asked for.
    fn forward(&self, inputs: &mut [StepInput<'_, Self::Kv>]) -> Result<Vec<Vec<f32>>>;

    /// For each continuation, the logits after each of its tokens (`[len, vocab]` row-major)
    /// as though it alone followed the first `pos` positions of `kv`. The cache must not be
    /// extended afterwards: the sequence ends with its verdict.
    fn continuations(
        &self,
        kv: &mut Self::Kv,
        pos: usize,
        conts: &[&[u32]],
    ) -> Result<Vec<Vec<f32>>>;
}

/// One sequence's cache as the scheduler sees it.
pub trait SeqCache: Sized {
    /// What [`SeqCache::prefix`] hands to the prefix cache.
    type Prefix;

    /// Positions cached.
    fn len(&self) -> usize;

    /// True before anything is cached.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the positions cached so far as final (a prompt that was read), before
    /// [`SeqCache::prefix`] shares them.
    fn freeze(&mut self);

    /// The first `upto` positions, in a form the prefix cache can keep and later seed other
    /// caches with.
    fn prefix(&self, upto: usize) -> Result<Self::Prefix>;

    /// Starts this (empty) cache with a shared prefix.
    fn seed(&mut self, prefix: Self::Prefix) -> Result<()>;
}

/// A prompt's shared cache positions as the prefix cache keeps them.
pub trait SharedPrefix: Clone + Default {
    /// The first `n` positions (no copy: the positions stay shared).
    fn take(&self, n: usize) -> Self;
}

impl SharedPrefix for Vec<Link> {
    fn take(&self, n: usize) -> Self {
        super::kv::take_prefix(self, n)
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

    fn forward(&self, inputs: &mut [StepInput<'_, SeqKv>]) -> Result<Vec<Vec<f32>>> {
        BatchModel::forward(self, inputs)
    }

    /// Each continuation runs over its own fork of the cache (the shared positions are not
    /// copied), all of them in one batched pass.
    fn continuations(&self, kv: &mut SeqKv, pos: usize, conts: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let mut forks: Vec<SeqKv> = conts.iter().map(|_| kv.fork(pos)).collect();
        let mut inputs: Vec<StepInput<'_>> = forks
            .iter_mut()
            .zip(conts)
            .map(|(kv, tokens)| StepInput {
                kv,
                tokens,
                want: Want::All,
            })
            .collect();
        BatchModel::forward(self, &mut inputs)
    }
}
