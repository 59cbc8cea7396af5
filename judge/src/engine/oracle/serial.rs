//! The serial engine loop: one request at a time through candle's stock LLaMA models (one
//! attention state inside the model), on any device: the reference the batched engines
//! (CPU kernels and the device backend) are tested against (`Scheduling::Serial`).

use std::sync::atomic::Ordering;
use std::time::Instant;

use candle_core::Tensor;
use tokio::sync::mpsc;

use super::stock::JudgeModel;
use super::verdict_point::{score, VerdictPoint};
use crate::engine::generate::{Detokenizer, StopMatcher};
use crate::engine::job::{emit, EngineEvent, EngineStats, FinishReason, Job, UsageStats};
use crate::engine::logprobs::token_logprobs;
use crate::error::{JudgeError, Result};
use crate::protocol::outcome::{force, verdict_of, VerdictSource};
use crate::protocol::scoring::{at_verdict_position, forced_prefix};

/// The engine thread's loop: one job at a time until every handle is dropped.
pub(crate) fn run(
    mut model: JudgeModel,
    mut rx: mpsc::Receiver<Job>,
    chunk: usize,
    stats: &EngineStats,
) {
    while let Some(job) = rx.blocking_recv() {
        // Every step of the serial engine runs this one sequence.
        stats.batch_size.store(1, Ordering::Relaxed);
        let ended = generate(&mut model, &job, chunk);
        stats.batch_size.store(0, Ordering::Relaxed);
        let counter = match ended {
            Ok(Finished::Done) => &stats.completed,
            Ok(Finished::Cancelled) => &stats.cancelled,
            Err(e) => {
                tracing::warn!(error = %e, "generation failed");
                let _ = job.events.blocking_send(Err(e));
                &stats.failed
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    tracing::info!("judge engine stopped");
}

/// How a job ended without an error.
enum Finished {
    Done,
    Cancelled,
}

/// What decoding left for the verdict: why it stopped, the text, and where the model is.
struct Decoded {
    finish: FinishReason,
    stops: StopMatcher,
    completion: usize,
    /// The next position of the model's attention state.
    pos: usize,
    /// The last verdict position seen while generating.
    point: Option<VerdictPoint>,
    /// A sampled token not yet run through the model when generation stopped.
    pending: Option<u32>,
}

fn generate(model: &mut JudgeModel, job: &Job, chunk: usize) -> Result<Finished> {
    if job.events.is_closed() {
        tracing::debug!("request cancelled while queued");
        return Ok(Finished::Cancelled);
    }
    let queue = job.enqueued.elapsed();
    if job.deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(JudgeError::DeadlineExceeded {
            waited_ms: queue.as_millis() as u64,
        });
    }
    model.reset()?;
    let started = Instant::now();
    let Some(logits) = prefill(model, job, chunk)? else {
        return Ok(Finished::Cancelled);
    };
    let prefill = started.elapsed();
    let decode_start = Instant::now();
    let Some(decoded) = decode(model, job, logits)? else {
        return Ok(Finished::Cancelled);
    };
    let (finish, completion) = (decoded.finish, decoded.completion);
    if !conclude(model, job, decoded)? {
        return Ok(Finished::Cancelled);
    }
    let usage = EngineEvent::Usage(UsageStats {
        prompt_tokens: job.prompt_ids.len(),
        cached_prompt_tokens: 0,
        completion_tokens: completion,
        queue,
        prefill,
        decode: decode_start.elapsed(),
        finish,
    });
    Ok(if emit(job, usage) {
        Finished::Done
    } else {
        Finished::Cancelled
    })
}

/// Runs the prompt through the model `chunk` tokens at a time; the last position's logits,
/// or `None` when the client left.
fn prefill(model: &mut JudgeModel, job: &Job, chunk: usize) -> Result<Option<Tensor>> {
    let mut pos = 0;
    let mut logits = None;
    for piece in job.prompt_ids.chunks(chunk) {
        if job.events.is_closed() {
            return Ok(None);
        }
        logits = Some(model.forward(piece, pos)?);
        pos += piece.len();
    }
    logits
        .map(Some)
        .ok_or_else(|| JudgeError::InvalidArgument("empty prompt".into()))
}

/// Generates the critique a token a step, streaming its text; `None` when the client left.
fn decode(model: &mut JudgeModel, job: &Job, mut logits: Tensor) -> Result<Option<Decoded>> {
    let mut sampler = super::candle_sampler(&job.params);
    let producible = model.tokenizer.producible();
    let mut detok = Detokenizer::default();
    let mut last = job.prompt_ids.last().copied().unwrap_or(0);
    let mut d = Decoded {
        finish: FinishReason::Length,
        stops: StopMatcher::new(&job.params.stop),
        completion: 0,
        pos: job.prompt_ids.len(),
        point: None,
        pending: None,
    };
    d.finish = loop {
        if job.events.is_closed() {
            tracing::debug!(
                completion = d.completion,
                "client went away; generation stopped"
            );
            return Ok(None);
        }
        // Padding rows past the tokenizer's ids are never produced.
        let next = sampler.sample(&logits.narrow(0, 0, logits.dim(0)?.min(producible))?)?;
        if model.tokenizer.eos_ids().contains(&next) {
            break FinishReason::Eos;
        }
        d.completion += 1;
        if let Some(top) = job.logprobs() {
            let row = logits.narrow(0, 0, logits.dim(0)?.min(producible))?;
            let row = row.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
            let t = token_logprobs(&model.tokenizer, &row, (last, next), top)?;
            if !emit(job, EngineEvent::Token(t)) {
                return Ok(None);
            }
        }
        last = next;
        if let Some(text) = detok.push(&model.tokenizer, next)? {
            let (out, stopped) = d.stops.push(&text);
            if !out.is_empty() && !emit(job, EngineEvent::Delta(out)) {
                return Ok(None);
            }
            if stopped {
                d.pending = Some(next);
                break FinishReason::Stop;
            }
        }
        if d.completion >= job.params.max_new_tokens {
            d.pending = Some(next);
            break FinishReason::Length;
        }
        logits = model.forward(&[next], d.pos)?;
        d.pos += 1;
        if job
            .verdict()
            .is_some_and(|pairwise| at_verdict_position(d.stops.text(), pairwise))
        {
            d.point = Some(VerdictPoint::capture(model, &logits, d.pos, d.stops.text()));
        }
    };
    if d.finish != FinishReason::Stop {
        let tail = detok.finish(&model.tokenizer)?;
        let (mut out, _) = d.stops.push(&tail);
        out.push_str(&d.stops.finish());
        if !out.is_empty() && !emit(job, EngineEvent::Delta(out)) {
            return Ok(None);
        }
    }
    Ok(Some(d))
}

/// Finds or forces the verdict, scores it and sends it; false when the client left.
fn conclude(model: &mut JudgeModel, job: &Job, d: Decoded) -> Result<bool> {
    let Some(pairwise) = job.verdict() else {
        return Ok(true); // a chat: no verdict
    };
    let mut verdict = verdict_of(d.stops.text(), pairwise);
    let point = match d.point.filter(|_| verdict.source == VerdictSource::Parsed) {
        Some(p) => p,
        None => {
            // No verdict position in the text (or it held no legal choice): append the
            // template's verdict phrase and read the model's distribution after it.
            let prefix = forced_prefix(pairwise, job.lang);
            let mut ids: Vec<u32> = d.pending.into_iter().collect();
            ids.extend(model.tokenizer.encode(prefix, false)?);
            let logits = model.forward(&ids, d.pos)?;
            VerdictPoint::capture(model, &logits, d.pos + ids.len(), prefix)
        }
    };
    let scores = score(model, &point, pairwise, job.lang)?;
    if verdict.source == VerdictSource::Unresolved {
        force(&mut verdict, &scores, pairwise, job.lang);
    }
    verdict.scores = Some(scores);
    Ok(emit(job, EngineEvent::Verdict(verdict)))
}
