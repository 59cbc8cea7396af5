//! Continuous batching: the engine thread's loop, the same for every [`Backend`].
//!
//! Between two forward passes, waiting requests join the running batch (up to the sequence
//! limit and the key/value memory budget, reserved at admission for the request's whole
//! length), sequences that finished or whose client left are removed, and every running
//! sequence contributes its next tokens: one token for a sequence that is generating, a chunk
//! of prompt for one that is still reading its prompt. The chunk is bounded by the step's
//! token budget so a long prompt never stalls the streams already flowing. A prompt's cache
//! is kept in the prefix cache after prefill; a later prompt that starts with the same tokens
//! (the template text, the query of a Best-of-N, the other order of a pair) computes only
//! what differs.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::mpsc;

use super::backend::{log_probs, Answer, Ask, Backend, Row, SeqCache, SharedPrefix, StepOut};
use super::finish::{advance, conclude, deliver, Ended};
use super::limits::BatchLimits;
use super::prefix::{common_prefix, PrefixCache};
use super::sample::Draw;
use super::seq::{Ctx, Progress, Seq};
use super::verdict::Point;
use crate::engine::job::{EngineStats, Job};
use crate::engine::tokenizer::TextTokenizer;
use crate::error::{JudgeError, Result};

/// The loop's state: the running batch, the request waiting for room, what the batch has
/// reserved, the prefix cache, and whether the queue is still open.
struct Batch<B: Backend> {
    seqs: Vec<Seq<B::Kv>>,
    waiting: Option<Job>,
    reserved: usize,
    cache: PrefixCache<B::Prefix>,
    open: bool,
}

/// What one sequence runs in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Its next token.
    Decode,
    /// This many more tokens of its prompt.
    Prompt(usize),
    /// Its verdict's row (the forced phrase or a continuation tree).
    Verdict,
}

/// The rows of one step: each sequence in it and what it runs.
type Plan = Vec<(usize, Work)>;

/// The loop; returns when every engine handle is gone and the batch has drained.
pub(crate) fn run<B: Backend>(
    model: B,
    tokenizer: TextTokenizer,
    mut rx: mpsc::Receiver<Job>,
    limits: &BatchLimits,
    prefill_chunk: usize,
    stats: &EngineStats,
) {
    let cx = Ctx {
        model: &model,
        tok: &tokenizer,
        limits,
        prefill_chunk,
        stats,
        per_token: model.kv_bytes_per_token(),
        max_seqs: model
            .max_seqs()
            .map_or(limits.max_seqs, |n| n.min(limits.max_seqs)),
        producible: tokenizer.producible(),
        choices: RefCell::default(),
    };
    stats
        .kv_slots
        .store(model.max_seqs().unwrap_or(0) as u64, Ordering::Relaxed);
    let mut batch = Batch::<B> {
        seqs: Vec::new(),
        waiting: None,
        reserved: 0,
        cache: PrefixCache::new(limits.prefix_cache_tokens),
        open: true,
    };
    while batch.wait_for_work(&cx, &mut rx) {
        batch.admit(&cx, &mut rx);
        batch.drop_gone(stats);
        cx.count_caches();
        if batch.seqs.is_empty() {
            continue;
        }
        let plan = batch.plan(&cx);
        stats.steps.fetch_add(1, Ordering::Relaxed);
        stats.batch_size.store(plan.len() as u64, Ordering::Relaxed);
        match batch.step(&cx, &plan) {
            Ok(out) => {
                count_step(stats, &plan, &out);
                let done = batch.absorb(&cx, &plan, out.answers);
                batch.retire(&cx, done);
            }
            Err(e) => batch.fail_step(&plan, e, stats),
        }
    }
    tracing::info!("judge engine stopped");
}

impl<B: Backend> Ctx<'_, B> {
    /// Publishes how many caches (device slots) the backend holds now.
    fn count_caches(&self) {
        if let Some(n) = self.model.caches_in_use() {
            self.stats
                .kv_slots_in_use
                .store(n as u64, Ordering::Relaxed);
        }
    }
}

impl<B: Backend> Batch<B> {
    /// Blocks for a request when nothing runs; false when the queue is closed and the batch
    /// has drained. An idle engine shows a batch of 0 (and the caches it still holds: none).
    fn wait_for_work(&mut self, cx: &Ctx<'_, B>, rx: &mut mpsc::Receiver<Job>) -> bool {
        if !self.seqs.is_empty() || self.waiting.is_some() {
            return true;
        }
        cx.stats.batch_size.store(0, Ordering::Relaxed);
        cx.count_caches();
        match rx.blocking_recv() {
            Some(job) => {
                self.waiting = Some(job);
                true
            }
            None => false,
        }
    }

    /// The next queued request, the one waiting for room first.
    fn next_job(&mut self, rx: &mut mpsc::Receiver<Job>) -> Option<Job> {
        if let Some(job) = self.waiting.take() {
            return Some(job);
        }
        if !self.open {
            return None;
        }
        match rx.try_recv() {
            Ok(job) => Some(job),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                self.open = false;
                None
            }
        }
    }

    /// Takes queued requests while a sequence slot and key/value memory are free; requests
    /// whose client left or whose deadline passed in the queue never start.
    fn admit(&mut self, cx: &Ctx<'_, B>, rx: &mut mpsc::Receiver<Job>) {
        while let Some(job) = self.next_job(rx) {
            if job.events.is_closed() {
                cx.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let queued = job.enqueued.elapsed();
            if job.deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = job.events.blocking_send(Err(JudgeError::DeadlineExceeded {
                    waited_ms: queued.as_millis() as u64,
                }));
                cx.stats.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let need = reservation(&job, cx.per_token);
            let full =
                self.seqs.len() >= cx.max_seqs || self.reserved + need > cx.limits.kv_budget_bytes;
            if full && !self.seqs.is_empty() {
                self.waiting = Some(job);
                return;
            }
            let choices = match job.verdict() {
                Some(pairwise) => cx.choices(pairwise, job.lang).map(Some),
                None => Ok(None),
            };
            match choices.and_then(|c| Ok((c, cx.model.new_kv()?))) {
                Ok((choices, kv)) => {
                    self.reserved += need;
                    self.seqs.push(Seq::new(job, kv, (need, queued), choices));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no cache for a new sequence");
                    let _ = job.events.blocking_send(Err(e));
                    cx.stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Removes sequences whose client left before any more work is spent on them.
    fn drop_gone(&mut self, stats: &EngineStats) {
        let reserved = &mut self.reserved;
        self.seqs.retain(|s| {
            let gone = s.job.events.is_closed();
            if gone {
                *reserved -= s.reserved;
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            !gone
        });
    }

    /// This step's rows: every verdict being scored and every generating sequence's next
    /// token, then prompt chunks within the step's token budget (a prompt's first chunk
    /// starts from the prefix cache).
    fn plan(&mut self, cx: &Ctx<'_, B>) -> Plan {
        let mut budget = cx.limits.max_batch_tokens.max(1);
        let mut plan: Plan = Vec::new();
        for (i, s) in self.seqs.iter().enumerate() {
            if let (Some(v), Some(choices)) = (&s.verdicting, &s.choices) {
                plan.push((i, Work::Verdict));
                budget = budget.saturating_sub(v.row(choices).0.len());
            } else if s.next.is_some() {
                plan.push((i, Work::Decode));
                budget = budget.saturating_sub(1);
            }
        }
        for i in 0..self.seqs.len() {
            if self.seqs[i].verdicting.is_some() {
                continue;
            }
            if self.seqs[i].next.is_none() && !self.seqs[i].looked_up {
                if waits_for_prefix(&self.seqs, i, &self.cache) {
                    continue;
                }
                self.start_prompt(cx, i);
            }
            let s = &self.seqs[i];
            if s.next.is_none() && budget > 0 {
                let n = (s.job.prompt_ids.len() - s.prompt_done)
                    .min(budget)
                    .min(cx.prefill_chunk);
                plan.push((i, Work::Prompt(n)));
                budget -= n;
            }
        }
        plan
    }

    /// Seeds sequence `i`'s cache with the longest cached prefix of its prompt (a seed that
    /// fails, e.g. a device copy, leaves the prompt to be computed in full).
    fn start_prompt(&mut self, cx: &Ctx<'_, B>, i: usize) {
        let s = &mut self.seqs[i];
        let (mut cached, chain) = self.cache.lookup(&s.job.prompt_ids);
        if cached > 0 {
            if let Err(e) = s.kv.seed(chain) {
                tracing::warn!(error = %e, "prefix cache seed failed; computing the prompt");
                cached = 0;
            }
        }
        cx.stats
            .prefix_hit_tokens
            .fetch_add(cached as u64, Ordering::Relaxed);
        s.prompt_done = cached;
        s.cached = cached;
        s.looked_up = true;
    }

    /// One step over the plan; each row's answer.
    fn step(&mut self, cx: &Ctx<'_, B>, plan: &Plan) -> Result<StepOut> {
        let next_tokens: Vec<[u32; 1]> = plan
            .iter()
            .map(|&(i, _)| [self.seqs[i].next.unwrap_or(0)])
            .collect();
        let mut slots: Vec<Option<&mut Seq<B::Kv>>> = self.seqs.iter_mut().map(Some).collect();
        let mut rows = Vec::with_capacity(plan.len());
        for (p, &(i, work)) in plan.iter().enumerate() {
            let s = slots[i].take().expect("each sequence is planned once");
            let logits = s.wants_logits();
            let point = s.at_point();
            let reads_next = match work {
                Work::Decode => true,
                Work::Prompt(n) => s.prompt_done + n == s.job.prompt_ids.len(),
                Work::Verdict => false,
            };
            s.draw = (reads_next && s.sampled()).then(|| Draw::new(&s.job.params, &mut s.rng));
            let Seq {
                kv,
                job,
                prompt_done,
                choices,
                verdicting,
                draw,
                ..
            } = s;
            let heads = match (point, choices.as_deref()) {
                (Some(spaced), Some(c)) => Some(c.after(spaced).heads()),
                _ => None,
            };
            let ask = match (logits, *draw, heads) {
                (true, _, _) => Ask::Logits,
                (false, Some(draw), heads) => Ask::Sample {
                    draw,
                    scored: heads.unwrap_or_default(),
                },
                (false, None, Some(ids)) => Ask::Scored(ids),
                (false, None, None) => Ask::Next,
            };
            let (tokens, ask): (&[u32], Ask<'_>) = match work {
                Work::Decode => (&next_tokens[p], ask),
                Work::Prompt(n) => {
                    let ask = if reads_next { ask } else { Ask::Nothing };
                    (&job.prompt_ids[*prompt_done..*prompt_done + n], ask)
                }
                Work::Verdict => {
                    let (Some(v), Some(c)) = (verdicting.as_deref(), choices.as_deref()) else {
                        return Err(no_verdict());
                    };
                    v.row(c)
                }
            };
            rows.push(Row { kv, tokens, ask });
        }
        cx.model.step(&mut rows, cx.producible)
    }

    /// Moves every planned sequence on with its answer: a prompt that is now read is cached
    /// and starts generating; a generating sequence takes its next token (noting a verdict
    /// point); a verdict row adds its scores. Returns the sequences that stopped running.
    fn absorb(
        &mut self,
        cx: &Ctx<'_, B>,
        plan: &Plan,
        answers: Vec<Answer>,
    ) -> Vec<(usize, Progress)> {
        let mut done = Vec::new();
        for (&(i, work), mut answer) in plan.iter().zip(answers) {
            let s = &mut self.seqs[i];
            match work {
                Work::Prompt(n) => {
                    s.prompt_done += n;
                    if s.prompt_done < s.job.prompt_ids.len() {
                        continue;
                    }
                    self.cache_prompt(i);
                }
                Work::Decode => {
                    if let Some(point) = note_point(s, &answer) {
                        s.point = Some(point);
                    }
                }
                Work::Verdict => {
                    if let Some(progress) = score_verdict(cx, s, &answer) {
                        done.push((i, progress));
                    }
                    continue;
                }
            }
            let s = &mut self.seqs[i];
            let progress = advance(s, cx.tok, &mut answer, cx.producible);
            if let Some(pick) = answer.pick {
                cx.stats.sampled[pick as usize].fetch_add(1, Ordering::Relaxed);
            }
            if !matches!(progress, Progress::Running) {
                done.push((i, progress));
            }
        }
        done
    }

    /// Sequence `i`'s prompt is read: freezes its cache, offers it to later requests, and
    /// notes the prefill time.
    fn cache_prompt(&mut self, i: usize) {
        let s = &mut self.seqs[i];
        s.kv.freeze();
        if self.cache.accepts(&s.job.prompt_ids) {
            match s.kv.prefix(s.prompt_done) {
                Ok(p) => self.cache.insert(s.job.prompt_ids.clone(), p),
                Err(e) => tracing::warn!(error = %e, "prompt not cached"),
            }
        }
        s.prefill = Some(s.started.elapsed());
    }

    /// Sequences whose text finished begin their verdict (one still being scored stays in
    /// the batch); the others leave at once (highest index first so indices stay valid),
    /// each counted by how it ended.
    fn retire(&mut self, cx: &Ctx<'_, B>, mut done: Vec<(usize, Progress)>) {
        done.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (i, progress) in done {
            let ended = match progress {
                Progress::Finished(finish, pending) => {
                    match conclude(cx, &mut self.seqs[i], finish, pending) {
                        Ok(Ended::Scoring) => continue,
                        Ok(Ended::Done(delivered)) => Ok(delivered),
                        Err(e) => Err(e),
                    }
                }
                Progress::Judged(verdict) => Ok(deliver(&mut self.seqs[i], verdict, None)),
                Progress::Cancelled => Ok(false),
                Progress::Failed(e) => Err(e),
                Progress::Running => continue,
            };
            let s = self.seqs.swap_remove(i);
            self.reserved -= s.reserved;
            let counter = match ended {
                Ok(true) => &cx.stats.completed,
                Ok(false) => &cx.stats.cancelled,
                Err(e) => {
                    tracing::warn!(error = %e, "judgment failed");
                    let _ = s.job.events.blocking_send(Err(e));
                    &cx.stats.failed
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A failed step fails the sequences in it, each with the step's own error; the engine
    /// keeps serving the rest.
    fn fail_step(&mut self, plan: &Plan, error: JudgeError, stats: &EngineStats) {
        tracing::warn!(error = %error, "batched step failed");
        let mut failed: Vec<usize> = plan.iter().map(|&(i, _)| i).collect();
        failed.sort_unstable_by(|a, b| b.cmp(a));
        let jobs: Vec<Job> = failed
            .into_iter()
            .map(|i| {
                let s = self.seqs.swap_remove(i);
                self.reserved -= s.reserved;
                s.job
            })
            .collect();
        stats.failed.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        fail_jobs(&jobs, error);
    }
}

/// Sends `error` to every job, typed: a compute error reaches each as the same shared candle
/// error (not its text), so the service maps it like any other.
pub(super) fn fail_jobs(jobs: &[Job], error: JudgeError) {
    for job in jobs {
        let _ = job.events.blocking_send(Err(error.clone()));
    }
}

/// The verdict point a decode row just answered for, if its text was at one: the first
/// tokens' log-probabilities from the backend, or from the whole row when it sent that.
fn note_point<K: SeqCache>(s: &Seq<K>, answer: &Answer) -> Option<Point> {
    let spaced = s.at_point()?;
    let heads = s.choices.as_deref()?.after(spaced).heads();
    let log_p = if answer.logits.is_empty() {
        answer.scores.clone()
    } else {
        log_probs(&answer.logits, heads)
    };
    Some(Point {
        pos: s.kv.len(),
        spaced,
        log_p,
    })
}

/// Adds a verdict row's answer to its sequence's verdict: the finished verdict, a failure,
/// or `None` while more rows are needed.
fn score_verdict<B: Backend>(
    cx: &Ctx<'_, B>,
    s: &mut Seq<B::Kv>,
    answer: &Answer,
) -> Option<Progress> {
    let (Some(v), Some(choices)) = (s.verdicting.as_deref_mut(), s.choices.as_deref()) else {
        return Some(Progress::Failed(no_verdict()));
    };
    let kv = &s.kv;
    let room = |base| cx.model.tree_room(kv, base);
    match v.absorb(choices, &answer.scores, kv.len(), room) {
        Ok(Some(verdict)) => Some(Progress::Judged(verdict)),
        Ok(None) => None,
        Err(e) => Some(Progress::Failed(e)),
    }
}

/// A verdict row planned for a sequence with no verdict to score (a scheduler bug).
fn no_verdict() -> JudgeError {
    candle_core::Error::Msg("a verdict row without its verdict".into()).into()
}

/// Counts a step's traffic: bytes read back from the device, and verdict rows (those that
/// shared the step with another sequence's rows separately).
fn count_step(stats: &EngineStats, plan: &Plan, out: &StepOut) {
    stats
        .host_bytes
        .fetch_add(out.host_bytes as u64, Ordering::Relaxed);
    let verdicts = plan.iter().filter(|(_, w)| *w == Work::Verdict).count() as u64;
    stats.verdict_rows.fetch_add(verdicts, Ordering::Relaxed);
    if verdicts > 0 && (plan.len() as u64) > verdicts {
        stats
            .verdict_rows_shared
            .fetch_add(verdicts, Ordering::Relaxed);
    }
}

/// Positions a prompt must share with one still being read before it waits for that one
/// to finish and be cached (below this, computing the prefix again costs less than waiting).
const WAIT_FOR_PREFIX: usize = 16;

/// Whether sequence `i` should wait a step: another sequence is reading a prompt that shares
/// a longer prefix with it than the cache holds (requests of one template arriving together).
fn waits_for_prefix<K, P: SharedPrefix>(seqs: &[Seq<K>], i: usize, cache: &PrefixCache<P>) -> bool {
    let prompt = &seqs[i].job.prompt_ids;
    let cached = cache.peek(prompt);
    seqs.iter().enumerate().any(|(j, other)| {
        j != i
            && other.looked_up
            && other.next.is_none()
            && other.prompt_done < other.job.prompt_ids.len()
            && common_prefix(&other.job.prompt_ids, prompt).min(prompt.len() - 1)
                >= cached + WAIT_FOR_PREFIX
    })
}

/// Key/value bytes a request may need: its whole prompt, its longest answer and the verdict
/// scoring reserve (shared prefix positions are counted too: they may be evicted while it runs).
fn reservation(job: &Job, per_token: usize) -> usize {
    (job.prompt_ids.len() + job.params.max_new_tokens + crate::protocol::scoring::VERDICT_RESERVE)
        * per_token
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::generate::GenerationParams;
    use crate::protocol::prompt::Lang;

    fn job() -> (Job, mpsc::Receiver<Result<crate::engine::EngineEvent>>) {
        let (events, rx) = mpsc::channel(4);
        let job = Job {
            prompt_ids: vec![1, 2, 3],
            kind: crate::engine::job::JobKind::Judge { pairwise: false },
            lang: Lang::En,
            params: GenerationParams::default(),
            enqueued: Instant::now(),
            deadline: None,
            events,
        };
        (job, rx)
    }

    #[test]
    fn a_failed_step_reaches_every_sequence_as_the_same_typed_error() {
        let (jobs, mut receivers): (Vec<Job>, Vec<_>) = (0..3).map(|_| job()).unzip();
        let error: JudgeError = candle_core::Error::UnexpectedNumberOfDims {
            expected: 2,
            got: 3,
            shape: candle_core::Shape::from((1, 2, 3)),
        }
        .into();
        let JudgeError::Compute(original) = &error else {
            unreachable!()
        };
        let original = original.clone();
        fail_jobs(&jobs, error);
        for rx in &mut receivers {
            match rx.try_recv().expect("an event") {
                Err(JudgeError::Compute(e)) => {
                    assert!(Arc::ptr_eq(&e, &original), "the step's own error, shared");
                    assert!(matches!(
                        *e,
                        candle_core::Error::UnexpectedNumberOfDims { got: 3, .. }
                    ));
                }
                other => panic!("expected the compute error, got {other:?}"),
            }
        }
    }
}
