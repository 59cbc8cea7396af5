//! Engine events in their wire form: `Accepted`, critique chunks, verdicts with their
//! probabilities, and usage.

use autoj_proto::v1 as pb;

use crate::engine::{
    Admission, EngineEvent, FinishReason, JudgeVerdict, Outcome, TokenProb, UsageStats,
    VerdictSource,
};
use crate::protocol::prompt::Lang;
use crate::protocol::scoring::ChoiceScores;
use crate::protocol::verdict::Winner;

/// Who accepted a judgment and under which id: what `Accepted` says beside the admission.
pub(super) struct Acceptance {
    /// This judgment's id.
    pub request_id: String,
    /// The scenario the client named (empty when none).
    pub scenario: String,
    /// Pairwise or single.
    pub protocol: pb::Protocol,
    /// The model's name.
    pub model: String,
    /// This server's name.
    pub replica: String,
}

/// The `Accepted` event of an admitted judgment.
pub(super) fn accepted_event(a: &Admission, by: Acceptance) -> pb::JudgeEvent {
    let Acceptance {
        request_id,
        scenario,
        protocol,
        model,
        replica,
    } = by;
    let scenario_source = if scenario.is_empty() {
        pb::ScenarioSource::None
    } else {
        pb::ScenarioSource::Client
    };
    pb::JudgeEvent {
        event: Some(pb::judge_event::Event::Accepted(pb::Accepted {
            request_id,
            scenario,
            scenario_source: scenario_source as i32,
            model,
            replica,
            prompt_tokens: a.prompt_tokens as u32,
            truncated: a.truncated_tokens > 0,
            truncated_tokens: a.truncated_tokens as u32,
            protocol: protocol as i32,
            language: match a.language {
                Lang::En => pb::Language::En,
                Lang::Zh => pb::Language::Zh,
            } as i32,
            order: 0,
        })),
    }
}

/// Translates one engine event into its wire form.
pub fn event_to_pb(ev: EngineEvent) -> pb::JudgeEvent {
    use pb::judge_event::Event;
    let event = match ev {
        EngineEvent::Delta(text) => Event::CritiqueDelta(pb::CritiqueDelta { text, order: 0 }),
        EngineEvent::Verdict(v) => Event::Verdict(verdict_to_pb(v)),
        EngineEvent::Usage(u) => Event::Usage(usage_to_pb(&u)),
        EngineEvent::Token(t) => Event::TokenLogprob(pb::TokenLogprob {
            chosen: Some(token_to_pb(t.chosen)),
            top: t.top.into_iter().map(token_to_pb).collect(),
        }),
    };
    pb::JudgeEvent { event: Some(event) }
}

fn token_to_pb(t: TokenProb) -> pb::TopLogprob {
    pb::TopLogprob {
        token: t.text,
        logprob: t.logprob,
        bytes: t.bytes,
    }
}

/// The wire form of a winner.
pub fn winner_to_pb(w: Option<Winner>) -> pb::Winner {
    match w {
        None => pb::Winner::Unspecified,
        Some(Winner::Response1) => pb::Winner::Response1,
        Some(Winner::Response2) => pb::Winner::Response2,
        Some(Winner::Tie) => pb::Winner::Tie,
    }
}

/// The wire form of a verdict, with its probabilities when it has them.
pub fn verdict_to_pb(v: JudgeVerdict) -> pb::Verdict {
    let (mut p1, mut p2, mut tie, mut distribution, mut expected) =
        (None, None, None, Vec::new(), None);
    match v.scores {
        Some(ChoiceScores::Pairwise {
            p_response_1,
            p_response_2,
            p_tie,
        }) => (p1, p2, tie) = (Some(p_response_1), Some(p_response_2), Some(p_tie)),
        Some(ChoiceScores::Single {
            distribution: d,
            expected: e,
        }) => (distribution, expected) = (d, Some(e)),
        None => {}
    }
    let result = match v.outcome {
        Outcome::Pairwise(p) => pb::verdict::Result::Pairwise(pb::PairwiseVerdict {
            winner: winner_to_pb(p.winner) as i32,
            p_response_1: p1,
            p_response_2: p2,
            p_tie: tie,
            key_factors: p.key_factors,
        }),
        Outcome::Single(s) => pb::verdict::Result::Single(pb::SingleVerdict {
            rating: s.rating,
            distribution,
            expected_rating: expected,
        }),
    };
    pb::Verdict {
        result: Some(result),
        source: match v.source {
            VerdictSource::Parsed => pb::VerdictSource::Parsed,
            VerdictSource::Forced => pb::VerdictSource::Forced,
            VerdictSource::Unresolved => pb::VerdictSource::Unresolved,
        } as i32,
        raw_text: v.raw_text,
        order: 0,
    }
}

/// The wire form of a judgment's token counts and timings.
pub fn usage_to_pb(u: &UsageStats) -> pb::Usage {
    pb::Usage {
        prompt_tokens: u.prompt_tokens as u32,
        completion_tokens: u.completion_tokens as u32,
        cached_prompt_tokens: u.cached_prompt_tokens as u32,
        queue_ms: u.queue.as_secs_f64() * 1e3,
        prefill_ms: u.prefill.as_secs_f64() * 1e3,
        decode_ms: u.decode.as_secs_f64() * 1e3,
        finish_reason: match u.finish {
            FinishReason::Eos => pb::FinishReason::Eos,
            FinishReason::Length => pb::FinishReason::Length,
            FinishReason::Stop => pb::FinishReason::Stop,
        } as i32,
        order: 0,
    }
}
