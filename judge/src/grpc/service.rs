//! The `autoj.v1.Judge` gRPC service over the engine: validates requests, submits them and
//! translates engine events into `JudgeEvent`s. Every error becomes a status in exactly one
//! place, [`super::status::status_of`].

use std::time::Instant;

use autoj_proto::deadline::deadline_of;
use autoj_proto::stream::EventStream;
use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_server::Judge;
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::convert::{accepted_event, event_to_pb, Acceptance};
use super::status::status_of;
use super::validate::{validate_request, ServiceLimits};
use crate::engine::{Engine, EngineEvent, EventReceiver, JudgeRequest, Submission};
use crate::error::JudgeError;
use crate::protocol::prompt::Task;

/// The judge service: one engine behind the `Judge` RPCs.
#[derive(Debug, Clone)]
pub struct JudgeService {
    /// The engine every judgment goes to.
    pub(super) engine: Engine,
    /// What a request may ask for.
    pub(super) limits: ServiceLimits,
    /// This server's name in `Accepted.replica`.
    replica: String,
}

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
            return Err(JudgeError::InvalidArgument(
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
        Ok(crate::grpc::swap::combine(first, second))
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
        let sub = self.admit(move |engine| engine.submit(req)).await?;
        let request_id = uuid::Uuid::new_v4().to_string();
        tracing::info!(%request_id, prompt_tokens = sub.admission.prompt_tokens, truncated = sub.admission.truncated_tokens, swapped, "request admitted");
        let accepted = accepted_event(
            &sub.admission,
            Acceptance {
                request_id,
                scenario: options.scenario.clone(),
                protocol,
                model: self.engine.info().name.clone(),
                replica: self.replica.clone(),
            },
        );
        let stream = relay(sub.events, accepted);
        Ok(if swapped {
            Box::pin(stream.map(|ev| ev.map(crate::grpc::swap::mark_swapped)))
        } else {
            Box::pin(stream)
        })
    }

    /// Admits a request on a blocking thread: templating, tokenizing and fitting a long
    /// input take milliseconds, kept off the reactor.
    pub(super) async fn admit(
        &self,
        submit: impl FnOnce(&Engine) -> Result<Submission, JudgeError> + Send + 'static,
    ) -> Result<Submission, JudgeError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || submit(&engine))
            .instrument(tracing::info_span!("admit"))
            .await
            .map_err(|_| JudgeError::EngineStopped)?
    }

    /// This server's name in `Accepted.replica`.
    pub(super) fn replica(&self) -> &str {
        &self.replica
    }

    pub(super) fn validate(
        &self,
        task: Task,
        o: &pb::JudgeOptions,
    ) -> Result<JudgeRequest, JudgeError> {
        validate_request(&self.limits, task, o)
    }
}

/// A started judgment's response: its stream watched for metrics and kept in `span` until
/// it ends, or the status it failed with (recorded on both).
fn observed(
    started: Result<EventStream, JudgeError>,
    call: crate::grpc::metrics::Call,
    span: tracing::Span,
) -> Result<Response<EventStream>, Status> {
    let started = started.map(Response::new).map_err(|e| status_of(&e));
    autoj_proto::calls::respond(started, call, span)
}

#[tonic::async_trait]
impl Judge for JudgeService {
    type CompareStream = EventStream;
    type CritiqueStream = EventStream;
    type EvaluateStream = autoj_proto::stream::ResultStream;
    type ChatStream = EventStream;

    async fn compare(
        &self,
        request: Request<pb::CompareRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let span = crate::grpc::trace::call_span("Compare", request.metadata());
        let call = crate::grpc::metrics::JudgeCall::start("Compare");
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
        let span = crate::grpc::trace::call_span("Critique", request.metadata());
        let call = crate::grpc::metrics::JudgeCall::start("Critique");
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
        let span = crate::grpc::trace::call_span("Score", request.metadata());
        let call = crate::grpc::metrics::JudgeCall::start("Score");
        let deadline = deadline_of(request.metadata());
        let result = self
            .score_candidates(request.into_inner(), deadline)
            .instrument(span.clone())
            .await
            .map_err(|e| status_of(&e));
        call.settle(&span, &result);
        result.map(Response::new)
    }

    async fn evaluate(
        &self,
        request: Request<Streaming<pb::EvaluateItem>>,
    ) -> Result<Response<Self::EvaluateStream>, Status> {
        Ok(Response::new(autoj_proto::evaluate::evaluate(
            self.clone(),
            request,
        )))
    }

    async fn chat(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let span = crate::grpc::trace::call_span("Chat", request.metadata());
        let call = crate::grpc::metrics::JudgeCall::start("Chat");
        let deadline = deadline_of(request.metadata());
        let started = self
            .chat_stream(request.into_inner(), deadline)
            .instrument(span.clone());
        observed(started.await, call, span)
    }
}

/// An admitted request's engine events as the gRPC stream, `accepted` first; each `Usage`
/// goes to the metrics and to the request's trace (its phases measured from now).
pub(super) fn relay(events: EventReceiver, accepted: pb::JudgeEvent) -> EventStream {
    let (queued_at, trace) = (
        std::time::SystemTime::now(),
        tracing::Span::current().context(),
    );
    let events = ReceiverStream::new(events).map(move |ev| match ev {
        Ok(ev) => {
            if let EngineEvent::Usage(u) = &ev {
                crate::grpc::metrics::record_usage(u);
                crate::grpc::trace::record_phases(&trace, queued_at, u);
            }
            Ok(event_to_pb(ev))
        }
        Err(e) => Err(status_of(&e)),
    });
    Box::pin(futures::stream::once(async move { Ok(accepted) }).chain(events))
}
