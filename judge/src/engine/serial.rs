//! The serial engine loop: one request at a time through candle's stock LLaMA models (one
//! attention state inside the model). It serves non-CPU devices and `--scheduler serial`,
//! and is the baseline the batched engine is tested against.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::engine::{
    emit, force, verdict_of, EngineEvent, EngineStats, FinishReason, Job, UsageStats, VerdictSource,
};
use crate::error::{JudgeError, Result};
use crate::generate::{Detokenizer, StopMatcher};
use crate::model::JudgeModel;
use crate::scoring::{at_verdict_position, forced_prefix, score, VerdictPoint};

/// The engine thread's loop: one job at a time until every handle is dropped.
pub(crate) fn run(
    mut model: JudgeModel,
    mut rx: mpsc::Receiver<Job>,
    chunk: usize,
    stats: &EngineStats,
) {
    while let Some(job) = rx.blocking_recv() {
        let counter = match generate(&mut model, &job, chunk) {
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
    let mut pos = 0;
    let mut logits = None;
    for piece in job.prompt_ids.chunks(chunk) {
        if job.events.is_closed() {
            return Ok(Finished::Cancelled);
        }
        logits = Some(model.forward(piece, pos)?);
        pos += piece.len();
    }
    let mut logits = logits.ok_or_else(|| JudgeError::InvalidArgument("empty prompt".into()))?;
    let prefill = started.elapsed();
    let decode_start = Instant::now();
    let mut sampler = job.params.sampler();
    let mut detok = Detokenizer::default();
    let mut stops = StopMatcher::new(&job.params.stop);
    let mut completion = 0;
    // The last verdict position seen while generating, and a sampled token not yet run
    // through the model when generation stopped.
    let mut point: Option<VerdictPoint> = None;
    let mut pending: Option<u32> = None;
    let finish = loop {
        if job.events.is_closed() {
            tracing::debug!(completion, "client went away; generation stopped");
            return Ok(Finished::Cancelled);
        }
        let next = sampler.sample(&logits)?;
        if model.tokenizer.eos_ids().contains(&next) {
            break FinishReason::Eos;
        }
        completion += 1;
        if let Some(text) = detok.push(&model.tokenizer, next)? {
            let (out, stopped) = stops.push(&text);
            if !out.is_empty() && !emit(job, EngineEvent::Delta(out)) {
                return Ok(Finished::Cancelled);
            }
            if stopped {
                pending = Some(next);
                break FinishReason::Stop;
            }
        }
        if completion >= job.params.max_new_tokens {
            pending = Some(next);
            break FinishReason::Length;
        }
        logits = model.forward(&[next], pos)?;
        pos += 1;
        if at_verdict_position(stops.text(), job.pairwise) {
            point = Some(VerdictPoint::capture(model, &logits, pos, stops.text()));
        }
    };
    if finish != FinishReason::Stop {
        let tail = detok.finish(&model.tokenizer)?;
        let (mut out, _) = stops.push(&tail);
        out.push_str(&stops.finish());
        if !out.is_empty() && !emit(job, EngineEvent::Delta(out)) {
            return Ok(Finished::Cancelled);
        }
    }
    let mut verdict = verdict_of(stops.text(), job.pairwise);
    let point = match point.filter(|_| verdict.source == VerdictSource::Parsed) {
        Some(p) => p,
        None => {
            // No verdict position in the text (or it held no legal choice): append the
            // template's verdict phrase and read the model's distribution after it.
            let prefix = forced_prefix(job.pairwise, job.lang);
            let mut ids: Vec<u32> = pending.into_iter().collect();
            ids.extend(model.tokenizer.encode(prefix, false)?);
            let logits = model.forward(&ids, pos)?;
            VerdictPoint::capture(model, &logits, pos + ids.len(), prefix)
        }
    };
    let scores = score(model, &point, job.pairwise, job.lang)?;
    if verdict.source == VerdictSource::Unresolved {
        force(&mut verdict, &scores, job.pairwise, job.lang);
    }
    verdict.scores = Some(scores);
    let decode = decode_start.elapsed();
    if !emit(job, EngineEvent::Verdict(verdict)) {
        return Ok(Finished::Cancelled);
    }
    let usage = EngineEvent::Usage(UsageStats {
        prompt_tokens: job.prompt_ids.len(),
        completion_tokens: completion,
        queue,
        prefill,
        decode,
        finish,
    });
    Ok(if emit(job, usage) {
        Finished::Done
    } else {
        Finished::Cancelled
    })
}
