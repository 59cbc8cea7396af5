//! What the continuous-batching loop needs from a model and its caches, so one scheduler
//! drives both our CPU forward pass ([`crate::engine::cpu::BatchModel`] over [`crate::engine::cpu::kv::SeqKv`]) and the device backend
//! written in candle tensor ops ([`crate::engine::device::DeviceModel`], for CUDA).
//!
//! The scheduler only ever asks a backend for: a fresh cache per admitted sequence, one step
//! over rows (generating tokens, prompt chunks, a forced verdict's phrase, a verdict's
//! continuation tree) each answered with what it asked for ([`Ask`]: a token, a few
//! log-probabilities, a token sampled from a few candidates, or a whole logits row only when
//! a caller asks for it), and a few shape facts. A cache tells its length, can be frozen and share its prompt with the
//! prefix cache, and can start from a shared prefix.

use super::sample::{sample_on_host, Draw, Pick};
use crate::engine::generate::argmax;
use crate::error::Result;
use crate::protocol::scoring::log_softmax;

/// What one row of a step asks the backend for after its tokens. Everything but
/// [`Ask::Logits`] is a few numbers per row, so a device backend answers a whole step with
/// one small copy to the host.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    /// Nothing: a prompt chunk that does not end its prompt.
    Nothing,
    /// The greedy next token after the last position (first of equal maxima over the ids
    /// the tokenizer can produce).
    Next,
    /// The greedy next token, and the log-probabilities (over the whole vocabulary) of `ids`
    /// after the last position: a verdict point, `ids` the legal continuations' first tokens.
    Scored(&'a [u32]),
    /// A token sampled after the last position with a temperature (and a nucleus cut), the
    /// backend reducing the row to a few candidates the host picks from
    /// ([`super::sample`]); and, at a verdict point, the log-probabilities of `scored`.
    Sample {
        /// The row's settings and uniform numbers.
        draw: Draw,
        /// Ids whose log-probabilities (temperature 1, whole vocabulary) are read too.
        scored: &'a [u32],
    },
    /// The whole logits row after the last position: a chat that asked for
    /// log-probabilities (whose alternatives are read from the row).
    Logits,
    /// The tokens are branches of a tree written from position `base` of the row's cache
    /// (its positions from `base` on are scratch: the sequence ends with its verdict).
    /// `branch[i]` is the index of the first token of token `i`'s branch; token `i` sees the
    /// positions before `base` and its own branch up to itself. Answered: after each token,
    /// the log-probability of `follow[i]` (the continuation's next token).
    Tree {
        /// First position the tree is written at.
        base: usize,
        /// Per token, the index of its branch's first token.
        branch: &'a [usize],
        /// Per token, the token whose log-probability is read after it.
        follow: &'a [u32],
    },
}

/// One row of a step: a sequence's cache, the tokens to run at its next positions (or the
/// tree of [`Ask::Tree`]) and what it needs back.
pub struct Row<'a, K> {
    /// The sequence's cache: the tokens are appended to it (a tree is not).
    pub kv: &'a mut K,
    /// Tokens to run.
    pub tokens: &'a [u32],
    /// What comes back.
    pub ask: Ask<'a>,
}

/// A row's answer: the fields its [`Ask`] asked for, the others empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The next token: greedy ([`Ask::Next`], [`Ask::Scored`]) or sampled ([`Ask::Sample`];
    /// `None` when the row could not be sampled, as NaN logits).
    pub next: Option<u32>,
    /// How a sampled token was picked ([`Ask::Sample`]).
    pub pick: Option<Pick>,
    /// Log-probabilities: of [`Ask::Scored`]'s ids, or after each token of a tree.
    pub scores: Vec<f32>,
    /// The whole logits row ([`Ask::Logits`]).
    pub logits: Vec<f32>,
}

/// What one step gives back: each row's answer and how many bytes crossed from the device
/// to the host for them (0 for a backend that computes on the host).
#[derive(Debug, Default)]
pub struct StepOut {
    /// Per row, in order.
    pub answers: Vec<Answer>,
    /// Bytes copied device to host by this step.
    pub host_bytes: usize,
}

/// Which logits a sequence in a step wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// None (a prompt chunk whose logits nobody reads: the output layer is skipped).
    Nothing,
    /// The last new position's (the next token).
    Last,
    /// Every new position's, `[n, vocab]` (scoring multi-token continuations).
    All,
}

/// One sequence's part of a step: its cache and the tokens to run at the next positions.
/// `K` is the backend's cache type.
pub struct StepInput<'a, K> {
    /// The sequence's cache; the tokens are appended to it.
    pub kv: &'a mut K,
    /// Tokens at positions `kv.len()..`.
    pub tokens: &'a [u32],
    /// Logits wanted.
    pub want: Want,
}

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

    /// Runs one step over every row and answers each as it asked; a greedy pick is made
    /// among the first `producible` ids only (the rest are padding rows of the embedding).
    fn step(&self, rows: &mut [Row<'_, Self::Kv>], producible: usize) -> Result<StepOut>;

    /// Tokens a tree written at `base` of `kv` may hold ([`usize::MAX`] when a cache grows).
    fn tree_room(&self, kv: &Self::Kv, base: usize) -> usize;
}

/// Answers a row from its logits on the host: what a backend that computes on the host
/// does, and what the device backend's reductions must equal. `logits` holds the last
/// position's row, or for a tree one row per token.
pub fn answer_on_host(ask: Ask<'_>, logits: Vec<f32>, vocab: usize, producible: usize) -> Answer {
    let last = || &logits[logits.len().saturating_sub(vocab)..];
    let next = || Some(argmax(&last()[..producible.min(vocab)]));
    match ask {
        Ask::Nothing => Answer::default(),
        Ask::Next => Answer {
            next: next(),
            ..Answer::default()
        },
        Ask::Scored(ids) => Answer {
            next: next(),
            scores: log_probs(last(), ids),
            ..Answer::default()
        },
        Ask::Sample { draw, scored } => {
            let sampled = sample_on_host(&last()[..producible.min(vocab)], &draw).ok();
            Answer {
                next: sampled.map(|(id, _)| id),
                pick: sampled.map(|(_, pick)| pick),
                scores: match scored.is_empty() {
                    true => Vec::new(),
                    false => log_probs(last(), scored),
                },
                logits: Vec::new(),
            }
        }
        Ask::Logits => Answer {
            logits,
            ..Answer::default()
        },
        Ask::Tree { follow, .. } => Answer {
            scores: logits
                .chunks_exact(vocab.max(1))
                .zip(follow)
                .map(|(row, &id)| pick(&log_softmax(row), id))
                .collect(),
            ..Answer::default()
        },
    }
}

/// The log-probabilities of `ids` under one logits row (minus infinity for an id outside
/// it): a verdict point's scores read on the host.
pub fn log_probs(row: &[f32], ids: &[u32]) -> Vec<f32> {
    let log_p = log_softmax(row);
    ids.iter().map(|&id| pick(&log_p, id)).collect()
}

/// `log_p[id]`, or minus infinity for an id outside the row.
fn pick(log_p: &[f32], id: u32) -> f32 {
    log_p.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY)
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

/// The indices where a tree's branches start (`branch[i] == i`).
pub(crate) fn starts(branch: &[usize]) -> impl Iterator<Item = usize> + Clone + '_ {
    branch
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == i)
        .map(|(i, _)| i)
}
