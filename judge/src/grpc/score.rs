//! `Judge.Score` (Best-of-N): every candidate judged with the single protocol, all queued at
//! once so the batched engine runs them in one batch and computes the prompt they share
//! (template and query) once; ranked by expected rating, which ties far less often than
//! integer ratings.

use std::time::{Instant, SystemTime};

use autoj_proto::v1 as pb;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::convert::verdict_to_pb;
use super::service::JudgeService;
use crate::engine::{EngineEvent, JudgeRequest, Submission};
use crate::error::JudgeError;
use crate::protocol::prompt::Task;

impl JudgeService {
    /// Judges every candidate of `r` and ranks them.
    pub(super) async fn score_candidates(
        &self,
        r: pb::ScoreRequest,
        deadline: Option<Instant>,
    ) -> Result<pb::ScoreResponse, JudgeError> {
        let options = r.options.clone().unwrap_or_default();
        let requests = self.candidate_requests(&r, &options, deadline)?;
        let engine = self.engine.clone();
        let subs = tokio::task::spawn_blocking(move || {
            requests
                .into_iter()
                .map(|req| engine.submit(req))
                .collect::<Result<Vec<_>, JudgeError>>()
        })
        .instrument(tracing::info_span!("admit"))
        .await
        .map_err(|_| JudgeError::EngineStopped)??;
        let (queued_at, trace) = (SystemTime::now(), tracing::Span::current().context());
        let mut scores = Vec::with_capacity(subs.len());
        for (index, sub) in subs.into_iter().enumerate() {
            let verdict = verdict_of(sub, |u| {
                super::metrics::record_usage(u);
                super::trace::record_phases(&trace, queued_at, u);
            })
            .await?;
            let single = match verdict.result {
                Some(pb::verdict::Result::Single(s)) => s,
                _ => pb::SingleVerdict::default(),
            };
            scores.push(pb::CandidateScore {
                index: index as u32,
                verdict: Some(single),
                source: verdict.source,
            });
        }
        Ok(pb::ScoreResponse {
            best_index: best_index(&scores) as u32,
            scenario: options.scenario,
            scores,
        })
    }

    /// One engine request per candidate, each validated like a Critique.
    fn candidate_requests(
        &self,
        r: &pb::ScoreRequest,
        options: &pb::JudgeOptions,
        deadline: Option<Instant>,
    ) -> Result<Vec<JudgeRequest>, JudgeError> {
        let max = self.limits.max_score_candidates;
        if r.responses.is_empty() || r.responses.len() > max {
            return Err(JudgeError::InvalidArgument(format!(
                "`responses` has {} entries; it must have between 1 and {max}",
                r.responses.len(),
            )));
        }
        if options.swap_check {
            return Err(JudgeError::InvalidArgument(
                "`options.swap_check` does not apply to Score".into(),
            ));
        }
        let mut requests = Vec::with_capacity(r.responses.len());
        for (i, response) in r.responses.iter().enumerate() {
            if response.trim().is_empty() {
                return Err(JudgeError::InvalidArgument(format!(
                    "`responses[{i}]` is empty; it must hold the text to judge"
                )));
            }
            let task = Task::Single {
                query: r.query.clone(),
                response: response.clone(),
            };
            let mut req =
                tracing::info_span!("validate").in_scope(|| self.validate(task, options))?;
            req.deadline = deadline;
            requests.push(req);
        }
        Ok(requests)
    }
}

/// Reads a candidate's judgment to its end: its verdict, with `usage` called on its usage.
async fn verdict_of(
    mut sub: Submission,
    usage: impl Fn(&crate::engine::UsageStats),
) -> Result<pb::Verdict, JudgeError> {
    let mut verdict = None;
    while let Some(ev) = sub.events.recv().await {
        match ev? {
            EngineEvent::Verdict(v) => verdict = Some(verdict_to_pb(v)),
            EngineEvent::Usage(u) => usage(&u),
            // Only chats carry token log-probabilities.
            EngineEvent::Delta(_) | EngineEvent::Token(_) => {}
        }
    }
    verdict.ok_or(JudgeError::EngineStopped)
}

/// The best candidate by expected rating (else rating); the first of equally good ones wins,
/// so results are stable.
fn best_index(scores: &[pb::CandidateScore]) -> usize {
    let key = |c: &pb::CandidateScore| {
        c.verdict
            .as_ref()
            .and_then(|v| v.expected_rating.or(v.rating))
            .unwrap_or(f32::NEG_INFINITY)
    };
    scores.iter().enumerate().fold(
        0,
        |best, (i, c)| if key(c) > key(&scores[best]) { i } else { best },
    )
}
