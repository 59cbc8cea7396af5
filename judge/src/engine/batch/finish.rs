//! How a sequence of the batch moves on after a step and how it ends: sampling the next
//! token, streaming its text, and at the end the verdict found or forced and scored over
//! forks of the sequence's cache in one batched pass.

use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;

use super::backend::{Backend, SeqCache};
use super::model::{StepInput, Want};
use super::scheduler::{Ctx, Point, Progress, Seq};
use crate::engine::generate::argmax;
use crate::engine::job::{emit, EngineEvent, FinishReason, UsageStats};
use crate::engine::logprobs::token_logprobs;
use crate::engine::tokenizer::TextTokenizer;
use crate::error::Result;
use crate::protocol::outcome::{force, verdict_of, VerdictSource};
use crate::protocol::prompt::Lang;
use crate::protocol::scoring::{
    candidates, choice_scores, forced_prefix, log_softmax, ChoiceScores,
};

/// Samples the next token from `logits` and moves the sequence on.
pub(super) fn advance<K>(s: &mut Seq<K>, tok: &TextTokenizer, logits: &[f32]) -> Progress {
    let greedy = s.job.params.temperature <= 0.0;
    let next = match sample(&mut s.sampler, greedy, logits) {
        Ok(n) => n,
        Err(e) => return Progress::Failed(e),
    };
    s.next = None;
    if tok.eos_ids().contains(&next) {
        return Progress::Finished(FinishReason::Eos, None);
    }
    s.completion += 1;
    if let Some(top) = s.job.logprobs() {
        let event = match token_logprobs(tok, logits, (s.last, next), top) {
            Ok(t) => EngineEvent::Token(t),
            Err(e) => return Progress::Failed(e),
        };
        if !emit(&s.job, event) {
            return Progress::Cancelled;
        }
    }
    s.last = next;
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
        Err(e) => return Progress::Failed(e),
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
pub(super) fn finalize<B: Backend>(
    cx: &Ctx<'_, B>,
    s: &mut Seq<B::Kv>,
    finish: FinishReason,
    pending: Option<u32>,
) -> Result<bool> {
    let (model, tok) = (cx.model, cx.tok);
    let decode_start = s.started + s.prefill.unwrap_or_default();
    if finish != FinishReason::Stop {
        let tail = s.detok.finish(tok)?;
        let (mut out, _) = s.stops.push(&tail);
        out.push_str(&s.stops.finish());
        if !out.is_empty() && !emit(&s.job, EngineEvent::Delta(out)) {
            return Ok(false);
        }
    }
    let usage = UsageStats {
        prompt_tokens: s.job.prompt_ids.len(),
        cached_prompt_tokens: s.cached,
        completion_tokens: s.completion,
        queue: s.queue,
        prefill: s.prefill.unwrap_or_default(),
        decode: decode_start.elapsed(),
        finish,
    };
    let Some(pairwise) = s.job.verdict() else {
        // A chat: text only.
        return Ok(emit(&s.job, EngineEvent::Usage(usage)));
    };
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
    let scores = score(cx, &mut s.kv, &point, (pairwise, lang))?;
    if verdict.source == VerdictSource::Unresolved {
        force(&mut verdict, &scores, pairwise, lang);
    }
    verdict.scores = Some(scores);
    if !emit(&s.job, EngineEvent::Verdict(verdict)) {
        return Ok(false);
    }
    Ok(emit(&s.job, EngineEvent::Usage(usage)))
}

/// Scores every legal continuation at `point`: the first token from the saved logits, the
/// rest read by the backend from the sequence's cache at that point in one batched pass.
fn score<B: Backend>(
    cx: &Ctx<'_, B>,
    kv: &mut B::Kv,
    point: &Point,
    (pairwise, lang): (bool, Lang),
) -> Result<ChoiceScores> {
    let (model, tok) = (cx.model, cx.tok);
    let first = log_softmax(&point.logits);
    let texts = candidates(pairwise, lang, point.trailing_space);
    let mut ids = Vec::with_capacity(texts.len());
    for t in &texts {
        ids.push(tok.encode(t, false)?);
    }
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
        let conts: Vec<&[u32]> = multi.iter().map(|&c| &ids[c][..ids[c].len() - 1]).collect();
        let rows = model.continuations(kv, point.pos, &conts)?;
        let vocab = model.vocab();
        for (&c, logits) in multi.iter().zip(rows) {
            for (j, &id) in ids[c][1..].iter().enumerate() {
                let row = log_softmax(&logits[j * vocab..(j + 1) * vocab]);
                log_p[c] += row.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY);
            }
        }
    }
    Ok(choice_scores(&log_p, pairwise))
}
