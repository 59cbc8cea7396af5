//! What the loop and the code that finishes sequences share: a running sequence ([`Seq`]),
//! how its step ended ([`Progress`]) and what the loop does not change ([`Ctx`]). Kept apart
//! from the loop ([`super::run`]) and from [`super::finish`] so each imports it and neither
//! imports the other.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::limits::BatchLimits;
use super::sample::Draw;
use super::verdict::{JudgeChoices, Point, Verdicting};
use crate::engine::generate::{Detokenizer, StopMatcher};
use crate::engine::job::{EngineStats, FinishReason, Job};
use crate::engine::tokenizer::TextTokenizer;
use crate::error::JudgeError;
use crate::protocol::outcome::JudgeVerdict;
use crate::protocol::scoring::at_verdict_position;

/// One admitted request in the running batch, with its backend's cache `K`.
pub(super) struct Seq<K> {
    pub(super) job: Job,
    pub(super) kv: K,
    /// Prompt tokens already in the cache (shared prefix included).
    pub(super) prompt_done: usize,
    /// Prompt tokens the prefix cache served instead of the model computing them.
    pub(super) cached: usize,
    /// Whether the prefix cache was consulted (just before the first prompt chunk).
    pub(super) looked_up: bool,
    /// Key/value bytes reserved for it at admission.
    pub(super) reserved: usize,
    /// The sampled token to run next (generating), `None` while reading the prompt.
    pub(super) next: Option<u32>,
    /// The last token of the sequence so far (prompt, then generated): a chat token's
    /// text is read after it.
    pub(super) last: u32,
    /// The request's generator (seeded by it): the uniform numbers of every sampled row.
    pub(super) rng: StdRng,
    /// The draw of the row just run, when it was sampled from a whole logits row on the
    /// host ([`super::backend::Ask::Logits`]).
    pub(super) draw: Option<Draw>,
    pub(super) detok: Detokenizer,
    pub(super) stops: StopMatcher,
    /// Tokens generated so far.
    pub(super) completion: usize,
    /// The last verdict position seen while generating.
    pub(super) point: Option<Point>,
    /// A judgment's legal verdict continuations, tokenized (`None` for a chat).
    pub(super) choices: Option<Arc<JudgeChoices>>,
    /// The verdict being scored once the text has ended.
    pub(super) verdicting: Option<Box<Verdicting>>,
    pub(super) queue: Duration,
    pub(super) started: Instant,
    pub(super) prefill: Option<Duration>,
}

impl<K> Seq<K> {
    pub(super) fn new(
        job: Job,
        kv: K,
        (reserved, queue): (usize, Duration),
        choices: Option<Arc<JudgeChoices>>,
    ) -> Self {
        Self {
            kv,
            prompt_done: 0,
            cached: 0,
            looked_up: false,
            reserved,
            next: None,
            last: job.prompt_ids.last().copied().unwrap_or(0),
            rng: StdRng::seed_from_u64(job.params.seed),
            draw: None,
            detok: Detokenizer::default(),
            stops: StopMatcher::new(&job.params.stop),
            completion: 0,
            point: None,
            choices,
            verdicting: None,
            queue,
            started: Instant::now(),
            prefill: None,
            job,
        }
    }

    /// Whether its rows need whole logits rows: a chat that asked for log-probabilities.
    pub(super) fn wants_logits(&self) -> bool {
        self.job.logprobs().is_some()
    }

    /// Whether its tokens are sampled with a temperature rather than picked greedily.
    pub(super) fn sampled(&self) -> bool {
        self.job.params.temperature > 0.0
    }

    /// Whether its text ends at a verdict position, and if so whether in whitespace.
    pub(super) fn at_point(&self) -> Option<bool> {
        let pairwise = self.job.verdict()?;
        let text = self.stops.text();
        at_verdict_position(text, pairwise).then(|| text.ends_with(char::is_whitespace))
    }
}

/// How one sequence's step ended.
pub(super) enum Progress {
    Running,
    Finished(FinishReason, Option<u32>),
    /// Its verdict is scored: send it (and the usage) and end.
    Judged(JudgeVerdict),
    Cancelled,
    /// Sampling or detokenizing failed: the request fails with this error.
    Failed(JudgeError),
}

/// What the loop does not change: the model, its tokenizer, the limits and the counters.
pub(super) struct Ctx<'a, B> {
    pub(super) model: &'a B,
    pub(super) tok: &'a TextTokenizer,
    pub(super) limits: &'a BatchLimits,
    pub(super) prefill_chunk: usize,
    pub(super) stats: &'a EngineStats,
    /// Key/value bytes per token of the model's cache type.
    pub(super) per_token: usize,
    /// Sequences that run at once: the limit, or fewer when the backend has fewer slots.
    pub(super) max_seqs: usize,
    /// Ids the tokenizer can produce: logits past them (padding rows of the embedding, as
    /// Auto-J 13B's 32,128 rows against 32,000 pieces and its added tokens) are never
    /// sampled.
    pub(super) producible: usize,
    /// The verdict continuations tokenized so far, one per protocol and language (the
    /// engine thread's own: tokenized once, shared by every judgment of their kind).
    pub(super) choices: RefCell<Vec<Arc<JudgeChoices>>>,
}

impl<B> Ctx<'_, B> {
    /// The tokenized verdict continuations of `pairwise` judgments in `lang`.
    pub(super) fn choices(
        &self,
        pairwise: bool,
        lang: crate::protocol::prompt::Lang,
    ) -> crate::error::Result<Arc<JudgeChoices>> {
        let mut known = self.choices.borrow_mut();
        if let Some(c) = known
            .iter()
            .find(|c| c.pairwise == pairwise && c.lang == lang)
        {
            return Ok(c.clone());
        }
        let made = Arc::new(JudgeChoices::new(self.tok, pairwise, lang)?);
        known.push(made.clone());
        Ok(made)
    }
}
