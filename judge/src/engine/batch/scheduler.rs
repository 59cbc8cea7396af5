//! Continuous batching: the engine thread's loop when the model runs on the CPU.
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

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use tokio::sync::mpsc;

use super::kv::{common_prefix, KvType, PrefixCache, SeqKv};
use super::model::{BatchModel, StepInput, Want};
use crate::engine::{
    emit, force, verdict_of, EngineEvent, EngineStats, FinishReason, Job, UsageStats, VerdictSource,
};
use crate::error::{JudgeError, Result};
use crate::generate::{argmax, Detokenizer, StopMatcher};
use crate::prompt::Lang;
use crate::scoring::{
    at_verdict_position, candidates, choice_scores, forced_prefix, log_softmax, ChoiceScores,
};
use crate::tokenizer::TextTokenizer;

/// Limits of the batched engine, checked at admission.
#[derive(Debug, Clone)]
pub struct BatchLimits {
    /// Sequences that run at once.
    pub max_seqs: usize,
    /// Tokens in one forward pass (decode tokens plus prompt chunks).
    pub max_batch_tokens: usize,
    /// Key/value memory the running sequences may reserve, in bytes.
    pub kv_budget_bytes: usize,
    /// Prompt positions the prefix cache keeps (0 turns it off).
    pub prefix_cache_tokens: usize,
    /// How sequence caches store keys and values.
    pub kv_type: KvType,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_seqs: 16,
            max_batch_tokens: 512,
            kv_budget_bytes: 4 << 30,
            prefix_cache_tokens: 16_384,
            kv_type: KvType::default(),
        }
    }
}

/// Where a sequence's last captured verdict position is.
struct Point {
    pos: usize,
    logits: Vec<f32>,
    trailing_space: bool,
}

struct Seq {
    job: Job,
    kv: SeqKv,
    /// Prompt tokens already in the cache (shared prefix included).
    prompt_done: usize,
    /// Whether the prefix cache was consulted (just before the first prompt chunk).
    looked_up: bool,
    reserved: usize,
    /// The sampled token to run next (generating), `None` while reading the prompt.
    next: Option<u32>,
    sampler: LogitsProcessor,
    detok: Detokenizer,
    stops: StopMatcher,
    completion: usize,
    point: Option<Point>,
    queue: Duration,
    started: Instant,
    prefill: Option<Duration>,
}

/// How one sequence's step ended.
enum Progress {
    Running,
    Finished(FinishReason, Option<u32>),
    Cancelled,
}

/// The loop; returns when every engine handle is gone and the batch has drained.
pub(crate) fn run(
    model: BatchModel,
    tokenizer: TextTokenizer,
    mut rx: mpsc::Receiver<Job>,
    limits: &BatchLimits,
    prefill_chunk: usize,
    stats: &EngineStats,
) {
    let per_token = model.shape.kv_bytes_per_token();
    let mut cache = PrefixCache::new(limits.prefix_cache_tokens);
    let mut seqs: Vec<Seq> = Vec::new();
    let mut waiting: Option<Job> = None;
    let mut reserved = 0usize;
    let mut open = true;
    loop {
        // Admission: take queued requests while a sequence slot and memory are free.
        if seqs.is_empty() && waiting.is_none() {
            match rx.blocking_recv() {
                Some(job) => waiting = Some(job),
                None => break,
            }
        }
        loop {
            let job = match waiting.take() {
                Some(j) => j,
                None if open => match rx.try_recv() {
                    Ok(j) => j,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                },
                None => break,
            };
            if job.events.is_closed() {
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let queued = job.enqueued.elapsed();
            if job.deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = job.events.blocking_send(Err(JudgeError::DeadlineExceeded {
                    waited_ms: queued.as_millis() as u64,
                }));
                stats.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let need = reservation(&job, per_token);
            if !seqs.is_empty()
                && (seqs.len() >= limits.max_seqs || reserved + need > limits.kv_budget_bytes)
            {
                waiting = Some(job);
                break;
            }
            reserved += need;
            seqs.push(Seq {
                kv: model.new_kv(),
                prompt_done: 0,
                looked_up: false,
                reserved: need,
                next: None,
                sampler: job.params.sampler(),
                detok: Detokenizer::default(),
                stops: StopMatcher::new(&job.params.stop),
                completion: 0,
                point: None,
                queue: queued,
                started: Instant::now(),
                prefill: None,
                job,
            });
        }
        // Clients that left are dropped before any more work is spent on them.
        seqs.retain(|s| {
            let gone = s.job.events.is_closed();
            if gone {
                reserved -= s.reserved;
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            !gone
        });
        if seqs.is_empty() {
            continue;
        }
        // This step's tokens: every generating sequence's next token, then prompt chunks.
        let mut budget = limits.max_batch_tokens.max(1);
        let mut plan: Vec<(usize, usize)> = Vec::new(); // (seq index, prompt tokens)
        for (i, s) in seqs.iter().enumerate() {
            if s.next.is_some() {
                plan.push((i, 0));
                budget = budget.saturating_sub(1);
            }
        }
        for i in 0..seqs.len() {
            if seqs[i].next.is_none() && !seqs[i].looked_up {
                if waits_for_prefix(&seqs, i, &cache) {
                    continue;
                }
                let s = &mut seqs[i];
                let (cached, chain) = cache.lookup(&s.job.prompt_ids);
                stats
                    .prefix_hit_tokens
                    .fetch_add(cached as u64, Ordering::Relaxed);
                s.kv = SeqKv::with_prefix(
                    model.shape.layers,
                    model.shape.kv_heads * model.shape.head_dim,
                    model.shape.kv,
                    chain,
                );
                s.prompt_done = cached;
                s.looked_up = true;
            }
            let s = &seqs[i];
            if s.next.is_none() && budget > 0 {
                let n = (s.job.prompt_ids.len() - s.prompt_done)
                    .min(budget)
                    .min(prefill_chunk);
                plan.push((i, n));
                budget -= n;
            }
        }
        stats.steps.fetch_add(1, Ordering::Relaxed);
        let next_tokens: Vec<[u32; 1]> = plan
            .iter()
            .map(|&(i, _)| [seqs[i].next.unwrap_or(0)])
            .collect();
        let result = {
            let mut slots: Vec<Option<&mut Seq>> = seqs.iter_mut().map(Some).collect();
            let mut inputs = Vec::with_capacity(plan.len());
            for (p, &(i, n)) in plan.iter().enumerate() {
                let s = slots[i].take().expect("each sequence is planned once");
                let tokens: &[u32] = if n == 0 {
                    &next_tokens[p]
                } else {
                    &s.job.prompt_ids[s.prompt_done..s.prompt_done + n]
                };
                inputs.push(StepInput {
                    kv: &mut s.kv,
                    tokens,
                    want: Want::Last,
                });
            }
            model.forward(&mut inputs)
        };
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // A failed step fails the sequences in it; the engine keeps serving.
                tracing::warn!(error = %e, "batched step failed");
                let failed: Vec<usize> = plan.iter().map(|&(i, _)| i).collect();
                for &i in failed.iter().rev() {
                    let s = seqs.swap_remove(i);
                    reserved -= s.reserved;
                    let _ = s.job.events.blocking_send(Err(JudgeError::Compute(
                        candle_core::Error::Msg(e.to_string()),
                    )));
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
        };
        let mut done: Vec<(usize, Progress)> = Vec::new();
        for (&(i, n), logits) in plan.iter().zip(logits) {
            let s = &mut seqs[i];
            if n > 0 {
                s.prompt_done += n;
                if s.prompt_done < s.job.prompt_ids.len() {
                    continue;
                }
                // The prompt is read: freeze its cache and offer it to later requests.
                s.kv.freeze();
                cache.insert(s.job.prompt_ids.clone(), s.kv.prefix(s.prompt_done));
                s.prefill = Some(s.started.elapsed());
            } else if at_verdict_position(s.stops.text(), s.job.pairwise) {
                s.point = Some(Point {
                    pos: s.kv.len(),
                    logits: logits.clone(),
                    trailing_space: s.stops.text().ends_with(char::is_whitespace),
                });
            }
            let progress = advance(s, &tokenizer, &logits);
            if !matches!(progress, Progress::Running) {
                done.push((i, progress));
            }
        }
        // Finished sequences leave at once (highest index first so indices stay valid).
        done.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (i, progress) in done {
            let mut s = seqs.swap_remove(i);
            reserved -= s.reserved;
            let counter = match progress {
                Progress::Finished(finish, pending) => {
                    match finalize(&model, &tokenizer, &mut s, finish, pending) {
                        Ok(true) => &stats.completed,
                        Ok(false) => &stats.cancelled,
                        Err(e) => {
                            tracing::warn!(error = %e, "verdict scoring failed");
                            let _ = s.job.events.blocking_send(Err(e));
                            &stats.failed
                        }
                    }
                }
                Progress::Cancelled => &stats.cancelled,
                Progress::Running => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        stats.batch_size.store(seqs.len() as u64, Ordering::Relaxed);
    }
    tracing::info!("judge engine stopped");
}

/// Positions a prompt must share with one still being read before it waits for that one
/// to finish and be cached (below this, computing the prefix again costs less than waiting).
const WAIT_FOR_PREFIX: usize = 16;

/// Whether sequence `i` should wait a step: another sequence is reading a prompt that shares
/// a longer prefix with it than the cache holds (requests of one template arriving together).
fn waits_for_prefix(seqs: &[Seq], i: usize, cache: &PrefixCache) -> bool {
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
    (job.prompt_ids.len() + job.params.max_new_tokens + crate::scoring::VERDICT_RESERVE) * per_token
}

/// Samples the next token from `logits` and moves the sequence on.
fn advance(s: &mut Seq, tok: &TextTokenizer, logits: &[f32]) -> Progress {
    let greedy = s.job.params.temperature <= 0.0;
    let next = match sample(&mut s.sampler, greedy, logits) {
        Ok(n) => n,
        Err(e) => {
            let _ = s.job.events.blocking_send(Err(e));
            return Progress::Cancelled;
        }
    };
    s.next = None;
    if tok.eos_ids().contains(&next) {
        return Progress::Finished(FinishReason::Eos, None);
    }
    s.completion += 1;
    match s.detok.push(tok, next) {
        Ok(Some(text)) => {
            let (out, stopped) = s.stops.push(&text);
            if !out.is_empty() && !emit(&s.job, EngineEvent::Delta(out)) {
                return Progress::Cancelled;
            }
            if stopped {
                return Progress::Finished(FinishReason::Stop, Some(next));
            }
        }
        Ok(None) => {}
        Err(e) => {
            let _ = s.job.events.blocking_send(Err(e));
            return Progress::Cancelled;
        }
    }
    if s.completion >= s.job.params.max_new_tokens {
        return Progress::Finished(FinishReason::Length, Some(next));
    }
    s.next = Some(next);
    Progress::Running
}

/// The next token: greedy straight from the logits (the same choice as candle's sampler
/// makes), else through the request's sampler.
fn sample(sampler: &mut LogitsProcessor, greedy: bool, logits: &[f32]) -> Result<u32> {
    if greedy {
        return Ok(argmax(logits));
    }
    let t = Tensor::from_slice(logits, logits.len(), &Device::Cpu)?;
    Ok(sampler.sample(&t)?)
}

/// Flushes the text, finds or forces the verdict, scores it and sends the last events.
/// `Ok(false)` when the client left before the end.
fn finalize(
    model: &BatchModel,
    tok: &TextTokenizer,
    s: &mut Seq,
    finish: FinishReason,
    pending: Option<u32>,
) -> Result<bool> {
    let decode_start = s.started + s.prefill.unwrap_or_default();
    if finish != FinishReason::Stop {
        let tail = s.detok.finish(tok)?;
        let (mut out, _) = s.stops.push(&tail);
        out.push_str(&s.stops.finish());
        if !out.is_empty() && !emit(&s.job, EngineEvent::Delta(out)) {
            return Ok(false);
        }
    }
    let pairwise = s.job.pairwise;
    let lang = s.job.lang;
    let mut verdict = verdict_of(s.stops.text(), pairwise);
    let point = match s
        .point
        .take()
        .filter(|_| verdict.source == VerdictSource::Parsed)
    {
        Some(p) => p,
        None => {
            // No verdict in the text: append the template's verdict phrase and read the
            // model's distribution after it.
            let prefix = forced_prefix(pairwise, lang);
            let mut ids: Vec<u32> = pending.into_iter().collect();
            ids.extend(tok.encode(prefix, false)?);
            let mut inputs = [StepInput {
                kv: &mut s.kv,
                tokens: &ids,
                want: Want::Last,
            }];
            let logits = model.forward(&mut inputs)?.pop().unwrap_or_default();
            Point {
                pos: s.kv.len(),
                logits,
                trailing_space: prefix.ends_with(char::is_whitespace),
            }
        }
    };
    let scores = score(model, tok, &mut s.kv, &point, pairwise, lang)?;
    if verdict.source == VerdictSource::Unresolved {
        force(&mut verdict, &scores, pairwise, lang);
    }
    verdict.scores = Some(scores);
    if !emit(&s.job, EngineEvent::Verdict(verdict)) {
        return Ok(false);
    }
    let usage = UsageStats {
        prompt_tokens: s.job.prompt_ids.len(),
        completion_tokens: s.completion,
        queue: s.queue,
        prefill: s.prefill.unwrap_or_default(),
        decode: decode_start.elapsed(),
        finish,
    };
    Ok(emit(&s.job, EngineEvent::Usage(usage)))
}

/// Scores every legal continuation at `point`: the first token from the saved logits, the
/// rest in one batched pass over forks of the sequence's cache.
fn score(
    model: &BatchModel,
    tok: &TextTokenizer,
    kv: &mut SeqKv,
    point: &Point,
    pairwise: bool,
    lang: Lang,
) -> Result<ChoiceScores> {
    let first = log_softmax(&point.logits);
    let texts = candidates(pairwise, lang, point.trailing_space);
    let mut ids = Vec::with_capacity(texts.len());
    for t in &texts {
        ids.push(tok.encode(t, false)?);
    }
    let mut forks: Vec<SeqKv> = ids
        .iter()
        .filter(|i| i.len() > 1)
        .map(|_| kv.fork(point.pos))
        .collect();
    let mut log_p: Vec<f32> = ids
        .iter()
        .map(|i| {
            i.first()
                .and_then(|&h| first.get(h as usize).copied())
                .unwrap_or(f32::NEG_INFINITY)
        })
        .collect();
    let multi: Vec<usize> = (0..ids.len()).filter(|&c| ids[c].len() > 1).collect();
    if !multi.is_empty() {
        let mut inputs: Vec<StepInput<'_>> = forks
            .iter_mut()
            .zip(&multi)
            .map(|(kv, &c)| StepInput {
                kv,
                tokens: &ids[c][..ids[c].len() - 1],
                want: Want::All,
            })
            .collect();
        let rows = model.forward(&mut inputs)?;
        let vocab = model.shape.vocab;
        for (&c, logits) in multi.iter().zip(rows) {
            for (j, &id) in ids[c][1..].iter().enumerate() {
                let row = log_softmax(&logits[j * vocab..(j + 1) * vocab]);
                log_p[c] += row.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY);
            }
        }
    }
    Ok(choice_scores(&log_p, pairwise))
}
