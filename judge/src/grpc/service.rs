//! The `autoj.v1.Judge` gRPC service over the engine: validates requests, submits them and
//! translates engine events into `JudgeEvent`s. Every error becomes a status in exactly one
//! place, [`status_of`].

use std::pin::Pin;
use std::time::Instant;

use autoj_proto::deadline::deadline_of;

use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_server::Judge;
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::engine::{
    Admission, Engine, EngineEvent, FinishReason, JudgeRequest, JudgeVerdict, Outcome, UsageStats,
    VerdictSource,
};
use crate::error::JudgeError;
use crate::fit::TruncationPolicy;
use crate::generate::GenerationParams;
use crate::prompt::{Lang, Task};
use crate::scoring::ChoiceScores;
use crate::verdict::Winner;

/// Per-request limits enforced before anything reaches the engine.
#[derive(Debug, Clone)]
pub struct ServiceLimits {
    /// Largest accepted query or response, in bytes.
    pub max_field_bytes: usize,
    /// Largest `max_new_tokens` a client may ask for.
    pub max_new_tokens_limit: usize,
    /// `max_new_tokens` when the client leaves it unset.
    pub default_max_new_tokens: usize,
    /// Most stop strings per request.
    pub max_stop_strings: usize,
    /// Most candidates in one Score request.
    pub max_score_candidates: usize,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self {
            max_field_bytes: 256 * 1024,
            max_new_tokens_limit: 4096,
            default_max_new_tokens: crate::generate::DEFAULT_MAX_NEW_TOKENS,
            max_stop_strings: 8,
            max_score_candidates: 64,
        }
    }
}

/// The judge service: one engine behind the `Judge` RPCs.
#[derive(Debug, Clone)]
pub struct JudgeService {
    engine: Engine,
    limits: ServiceLimits,
    replica: String,
}

/// The stream type of the judging RPCs.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JudgeEvent, Status>> + Send + 'static>>;

impl JudgeService {
    /// A service over `engine`; `replica` names this server in `Accepted.replica`.
    pub fn new(engine: Engine, limits: ServiceLimits, replica: impl Into<String>) -> Self {
        Self {
            engine,
            limits,
            replica: replica.into(),
        }
    }

    async fn judge(
        &self,
        task: Task,
        options: Option<pb::JudgeOptions>,
        deadline: Option<Instant>,
    ) -> Result<EventStream, JudgeError> {
        let options = options.unwrap_or_default();
        if !options.swap_check {
            return self.start(task, &options, false, deadline).await;
        }
        let Task::Pairwise {
            query,
            response_1,
            response_2,
        } = task
        else {
            return Err(invalid(
                "`options.swap_check` applies to Compare only".into(),
            ));
        };
        let swapped = Task::Pairwise {
            query: query.clone(),
            response_1: response_2.clone(),
            response_2: response_1.clone(),
        };
        let original = Task::Pairwise {
            query,
            response_1,
            response_2,
        };
        // Both are queued at once: the batched engine runs them in the same batch, and the
        // second reuses the first's cached template prefix.
        let first = self.start(original, &options, false, deadline).await?;
        let second = self.start(swapped, &options, true, deadline).await?;
        Ok(crate::swap::combine(first, second))
    }

    /// Validates and submits one judgment; its events, `Accepted` first. `swapped` marks the
    /// second order of a swap check; a request still queued at `deadline` never starts.
    async fn start(
        &self,
        task: Task,
        options: &pb::JudgeOptions,
        swapped: bool,
        deadline: Option<Instant>,
    ) -> Result<EventStream, JudgeError> {
        let mut req = tracing::info_span!("validate").in_scope(|| self.validate(task, options))?;
        req.deadline = deadline;
        let protocol = if req.task.is_pairwise() {
            pb::Protocol::Pairwise
        } else {
            pb::Protocol::Single
        };
        let engine = self.engine.clone();
        // Tokenizing and fitting a long input takes milliseconds: keep it off the reactor.
        let sub = tokio::task::spawn_blocking(move || engine.submit(req))
            .instrument(tracing::info_span!("admit"))
            .await
            .map_err(|_| JudgeError::EngineStopped)??;
        let (queued_at, trace) = (
            std::time::SystemTime::now(),
            tracing::Span::current().context(),
        );
        let request_id = uuid::Uuid::new_v4().to_string();
        tracing::info!(%request_id, prompt_tokens = sub.admission.prompt_tokens, truncated = sub.admission.truncated_tokens, swapped, "request admitted");
        let accepted = accepted_event(
            &sub.admission,
            request_id,
            options.scenario.clone(),
            protocol,
            self.engine.info().name.clone(),
            self.replica.clone(),
        );
        let events = ReceiverStream::new(sub.events).map(move |ev| match ev {
            Ok(ev) => {
                if let EngineEvent::Usage(u) = &ev {
                    crate::metrics::record_usage(u);
                    crate::trace::record_phases(&trace, queued_at, u);
                }
                Ok(event_to_pb(ev))
            }
            Err(e) => Err(status_of(&e)),
        });
        let stream = futures::stream::once(async move { Ok(accepted) }).chain(events);
        Ok(if swapped {
            Box::pin(stream.map(|ev| ev.map(crate::swap::mark_swapped)))
        } else {
            Box::pin(stream)
        })
    }

    /// Best-of-N: every candidate judged with the single protocol in one batch, ranked by
    /// expected rating, which ties far less often than integer ratings.
    async fn score_candidates(
        &self,
        r: pb::ScoreRequest,
        deadline: Option<Instant>,
    ) -> Result<pb::ScoreResponse, JudgeError> {
        if r.responses.is_empty() || r.responses.len() > self.limits.max_score_candidates {
            return Err(invalid(format!(
                "`responses` has {} entries; it must have between 1 and {}",
                r.responses.len(),
                self.limits.max_score_candidates
            )));
        }
        let options = r.options.unwrap_or_default();
        if options.swap_check {
            return Err(invalid(
                "`options.swap_check` does not apply to Score".into(),
            ));
        }
        let mut requests = Vec::with_capacity(r.responses.len());
        for (i, response) in r.responses.iter().enumerate() {
            if response.trim().is_empty() {
                return Err(invalid(format!(
                    "`responses[{i}]` is empty; it must hold the text to judge"
                )));
            }
            let task = Task::Single {
                query: r.query.clone(),
                response: response.clone(),
            };
            let mut req =
                tracing::info_span!("validate").in_scope(|| self.validate(task, &options))?;
            req.deadline = deadline;
            requests.push(req);
        }
        // All candidates are queued at once, so the batched engine runs them in one batch and
        // the prompt they share (template and query) is computed once, by the first.
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
        let (queued_at, trace) = (
            std::time::SystemTime::now(),
            tracing::Span::current().context(),
        );
        let mut scores = Vec::with_capacity(subs.len());
        for (index, mut sub) in subs.into_iter().enumerate() {
            let mut verdict = None;
            while let Some(ev) = sub.events.recv().await {
                match ev? {
                    EngineEvent::Verdict(v) => verdict = Some(verdict_to_pb(v)),
                    EngineEvent::Usage(u) => {
                        crate::metrics::record_usage(&u);
                        crate::trace::record_phases(&trace, queued_at, &u);
                    }
                    EngineEvent::Delta(_) => {}
                }
            }
            let v = verdict.ok_or(JudgeError::EngineStopped)?;
            let single = match v.result {
                Some(pb::verdict::Result::Single(s)) => s,
                _ => pb::SingleVerdict::default(),
            };
            scores.push(pb::CandidateScore {
                index: index as u32,
                verdict: Some(single),
                source: v.source,
            });
        }
        let key = |c: &pb::CandidateScore| {
            c.verdict
                .as_ref()
                .and_then(|v| v.expected_rating.or(v.rating))
                .unwrap_or(f32::NEG_INFINITY)
        };
        // The first of equally good candidates wins, so results are stable.
        let best =
            scores.iter().enumerate().fold(
                0,
                |best, (i, c)| if key(c) > key(&scores[best]) { i } else { best },
            );
        Ok(pb::ScoreResponse {
            best_index: best as u32,
            scenario: options.scenario,
            scores,
        })
    }

    fn validate(&self, task: Task, o: &pb::JudgeOptions) -> Result<JudgeRequest, JudgeError> {
        validate_request(&self.limits, task, o)
    }
}

/// Builds the engine request for `task` with options `o`, refusing (INVALID_ARGUMENT) empty
/// or oversize fields and out-of-range options; public so the fuzz targets reach it.
pub fn validate_request(
    limits: &ServiceLimits,
    task: Task,
    o: &pb::JudgeOptions,
) -> Result<JudgeRequest, JudgeError> {
    let names: &[&str] = if task.is_pairwise() {
        &["query", "response_1", "response_2"]
    } else {
        &["query", "response"]
    };
    for (name, value) in names.iter().zip(task.fields()) {
        if value.trim().is_empty() {
            return Err(invalid(format!(
                "`{name}` is empty; it must hold the text to judge"
            )));
        }
        if value.len() > limits.max_field_bytes {
            return Err(invalid(format!(
                "`{name}` is {} bytes, over this server's limit of {} bytes",
                value.len(),
                limits.max_field_bytes
            )));
        }
    }
    let language = match pb::Language::try_from(o.language) {
        Ok(pb::Language::Auto) => None,
        Ok(pb::Language::En) => Some(Lang::En),
        Ok(pb::Language::Zh) => Some(Lang::Zh),
        Err(_) => {
            return Err(invalid(format!(
                "`options.language` {} is not a known language",
                o.language
            )))
        }
    };
    let truncation = match pb::Truncation::try_from(o.truncation) {
        Ok(pb::Truncation::Auto) => TruncationPolicy::Auto,
        Ok(pb::Truncation::Refuse) => TruncationPolicy::Refuse,
        Err(_) => {
            return Err(invalid(format!(
                "`options.truncation` {} is not a known policy",
                o.truncation
            )))
        }
    };
    let g = o.generation.clone().unwrap_or_default();
    let mut params = GenerationParams {
        max_new_tokens: limits.default_max_new_tokens,
        ..GenerationParams::default()
    };
    if let Some(n) = g.max_new_tokens {
        if n == 0 || n as usize > limits.max_new_tokens_limit {
            return Err(invalid(format!(
                "`options.generation.max_new_tokens` is {n}; it must be between 1 and {}",
                limits.max_new_tokens_limit
            )));
        }
        params.max_new_tokens = n as usize;
    }
    if let Some(t) = g.temperature {
        if !t.is_finite() || !(0.0..=10.0).contains(&t) {
            return Err(invalid(format!(
                "`options.generation.temperature` is {t}; it must be in [0, 10]"
            )));
        }
        params.temperature = f64::from(t);
    }
    if let Some(p) = g.top_p {
        if !p.is_finite() || p <= 0.0 || p > 1.0 {
            return Err(invalid(format!(
                "`options.generation.top_p` is {p}; it must be in (0, 1]"
            )));
        }
        params.top_p = f64::from(p);
    }
    if let Some(seed) = g.seed {
        params.seed = seed;
    }
    if g.stop.len() > limits.max_stop_strings
        || g.stop.iter().any(|s| s.is_empty() || s.len() > 256)
    {
        return Err(invalid(format!(
            "`options.generation.stop` must hold at most {} non-empty strings of at most 256 bytes",
            limits.max_stop_strings
        )));
    }
    params.stop = g.stop;
    Ok(JudgeRequest {
        task,
        language,
        params,
        truncation,
        deadline: None,
    })
}

fn invalid(msg: String) -> JudgeError {
    JudgeError::InvalidArgument(msg)
}

/// The one mapping from engine errors to gRPC statuses.
pub fn status_of(e: &JudgeError) -> Status {
    let status = match e {
        JudgeError::InvalidArgument(m) => Status::invalid_argument(m.clone()),
        JudgeError::ContextOverflow(m) => Status::failed_precondition(m.clone()),
        JudgeError::QueueFull { .. } => Status::resource_exhausted(e.to_string()),
        JudgeError::EngineStopped => Status::unavailable(e.to_string()),
        JudgeError::DeadlineExceeded { .. } => Status::deadline_exceeded(e.to_string()),
        JudgeError::Tokenizer(_)
        | JudgeError::Template(_)
        | JudgeError::Compute(_)
        | JudgeError::ModelLoad { .. } => Status::internal(e.to_string()),
    };
    if status.code() == tonic::Code::Internal {
        tracing::error!(error = %e, "request failed");
    } else {
        tracing::debug!(error = %e, code = ?status.code(), "request refused");
    }
    status
}

fn accepted_event(
    a: &Admission,
    request_id: String,
    scenario: String,
    protocol: pb::Protocol,
    model: String,
    replica: String,
) -> pb::JudgeEvent {
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
    };
    pb::JudgeEvent { event: Some(event) }
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

fn verdict_to_pb(v: JudgeVerdict) -> pb::Verdict {
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

fn usage_to_pb(u: &UsageStats) -> pb::Usage {
    pb::Usage {
        prompt_tokens: u.prompt_tokens as u32,
        completion_tokens: u.completion_tokens as u32,
        cached_prompt_tokens: 0,
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

/// A started judgment's response: its stream watched for metrics and kept in `span` until
/// it ends, or the status it failed with (recorded on both).
fn observed(
    started: Result<EventStream, JudgeError>,
    mut call: crate::metrics::Call,
    span: tracing::Span,
) -> Result<Response<EventStream>, Status> {
    match started {
        Ok(stream) => Ok(Response::new(Box::pin(crate::metrics::observe(
            stream, call, span,
        )))),
        Err(e) => {
            let status = status_of(&e);
            autoj_proto::observe::record_status(&span, &status);
            call.finish(status.code());
            Err(status)
        }
    }
}

#[tonic::async_trait]
impl Judge for JudgeService {
    type CompareStream = EventStream;
    type CritiqueStream = EventStream;
    type EvaluateStream =
        Pin<Box<dyn Stream<Item = Result<pb::EvaluateResult, Status>> + Send + 'static>>;

    async fn compare(
        &self,
        request: Request<pb::CompareRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let span = crate::trace::call_span("Compare", request.metadata());
        let call = crate::metrics::Call::start("Compare");
        let deadline = deadline_of(request.metadata());
        let r = request.into_inner();
        let task = Task::Pairwise {
            query: r.query,
            response_1: r.response_1,
            response_2: r.response_2,
        };
        let started = self
            .judge(task, r.options, deadline)
            .instrument(span.clone());
        observed(started.await, call, span)
    }

    async fn critique(
        &self,
        request: Request<pb::CritiqueRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let span = crate::trace::call_span("Critique", request.metadata());
        let call = crate::metrics::Call::start("Critique");
        let deadline = deadline_of(request.metadata());
        let r = request.into_inner();
        let task = Task::Single {
            query: r.query,
            response: r.response,
        };
        let started = self
            .judge(task, r.options, deadline)
            .instrument(span.clone());
        observed(started.await, call, span)
    }

    async fn score(
        &self,
        request: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        let span = crate::trace::call_span("Score", request.metadata());
        let mut call = crate::metrics::Call::start("Score");
        let deadline = deadline_of(request.metadata());
        let result = self
            .score_candidates(request.into_inner(), deadline)
            .instrument(span.clone())
            .await
            .map_err(|e| status_of(&e));
        match &result {
            Ok(_) => call.finish(tonic::Code::Ok),
            Err(status) => {
                autoj_proto::observe::record_status(&span, status);
                call.finish(status.code());
            }
        }
        result.map(Response::new)
    }

    async fn evaluate(
        &self,
        request: Request<Streaming<pb::EvaluateItem>>,
    ) -> Result<Response<Self::EvaluateStream>, Status> {
        Ok(Response::new(crate::evaluate::evaluate(
            self.clone(),
            request,
        )))
    }
}
