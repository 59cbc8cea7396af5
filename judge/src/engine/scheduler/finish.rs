//! How a sequence of the batch moves on after a step and how its text ends: the next token
//! (picked by the backend, or sampled here from the row it sent back), its text streamed,
//! and at the end the text flushed and the verdict begun ([`super::verdict`]).

use super::backend::{Answer, Backend};
use super::sample::{sample_on_host, unsamplable};
use super::seq::{Ctx, Progress, Seq};
use super::verdict::{begin, Begun};
use crate::engine::generate::argmax;
use crate::engine::job::{emit, EngineEvent, FinishReason, UsageStats};
use crate::engine::logprobs::token_logprobs;
use crate::engine::tokenizer::TextTokenizer;
use crate::error::Result;

/// Takes the next token (the backend's pick, or picked here from the whole row it sent
/// back, of which only the first `producible` ids count: noted in the answer's `pick` when
/// sampled) and moves the sequence on.
pub(super) fn advance<K>(
    s: &mut Seq<K>,
    tok: &TextTokenizer,
    answer: &mut Answer,
    producible: usize,
) -> Progress {
    let Answer {
        next, pick, logits, ..
    } = answer;
    let logits = &logits[..logits.len().min(producible)];
    let next = match (*next, s.draw.take()) {
        (Some(n), _) => n,
        (None, _) if logits.is_empty() => return Progress::Failed(unsamplable()),
        (None, None) => argmax(logits),
        (None, Some(draw)) => match sample_on_host(logits, &draw) {
            Ok((n, how)) => {
                *pick = Some(how);
                n
            }
            Err(e) => return Progress::Failed(e),
        },
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

/// How a finished text's sequence goes on.
pub(super) enum Ended {
    /// It is done: `true` when every event reached the client.
    Done(bool),
    /// Its verdict is scored by rows of the next steps; it stays in the batch.
    Scoring,
}

/// Flushes the text, measures the usage and, for a judgment, begins its verdict: a parsed
/// verdict whose continuations are one token each is sent at once, any other is scored in
/// the next steps.
pub(super) fn conclude<B: Backend>(
    cx: &Ctx<'_, B>,
    s: &mut Seq<B::Kv>,
    finish: FinishReason,
    pending: Option<u32>,
) -> Result<Ended> {
    let tok = cx.tok;
    let decode_start = s.started + s.prefill.unwrap_or_default();
    if finish != FinishReason::Stop {
        let tail = s.detok.finish(tok)?;
        let (mut out, _) = s.stops.push(&tail);
        out.push_str(&s.stops.finish());
        if !out.is_empty() && !emit(&s.job, EngineEvent::Delta(out)) {
            return Ok(Ended::Done(false));
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
    let Some(choices) = s.choices.as_deref() else {
        // A chat: text only.
        return Ok(Ended::Done(emit(&s.job, EngineEvent::Usage(usage))));
    };
    let room = |base| cx.model.tree_room(&s.kv, base);
    let point = s.point.take();
    match begin(choices, tok, s.stops.text(), (point, pending), usage, room)? {
        Begun::Ready(verdict, usage) => Ok(Ended::Done(deliver(s, verdict, Some(usage)))),
        Begun::Scoring(v) => {
            s.verdicting = Some(v);
            Ok(Ended::Scoring)
        }
    }
}

/// Sends the verdict and then the usage (the one measured when the text ended); false when
/// the client left.
pub(super) fn deliver<K>(
    s: &mut Seq<K>,
    verdict: crate::protocol::outcome::JudgeVerdict,
    usage: Option<UsageStats>,
) -> bool {
    let usage = match usage.or_else(|| s.verdicting.take().map(|v| v.usage)) {
        Some(u) => u,
        None => return false,
    };
    emit(&s.job, EngineEvent::Verdict(verdict)) && emit(&s.job, EngineEvent::Usage(usage))
}
