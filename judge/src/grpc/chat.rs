//! `Judge.Chat`: free-form chat with the judge model (the HTTP door's OpenAI-compatible
//! endpoint rides on it). The same admission, metrics and traces as a judgment; the stream
//! is `Accepted`, the text as `CritiqueDelta`s with `TokenLogprob`s when asked, `Usage`.

use std::time::Instant;

use autoj_proto::stream::EventStream;
use autoj_proto::v1 as pb;
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::convert::{accepted_event, event_to_pb, Acceptance};
use super::service::JudgeService;
use super::status::status_of;
use super::validate::validate_chat;
use crate::engine::EngineEvent;
use crate::error::JudgeError;

impl JudgeService {
    /// Validates and submits one chat; its events, `Accepted` first.
    pub(super) async fn chat_stream(
        &self,
        request: pb::ChatRequest,
        deadline: Option<Instant>,
    ) -> Result<EventStream, JudgeError> {
        let mut req =
            tracing::info_span!("validate").in_scope(|| validate_chat(&self.limits, request))?;
        req.deadline = deadline;
        let engine = self.engine.clone();
        // Rendering the template and tokenizing take milliseconds: keep them off the reactor.
        let sub = tokio::task::spawn_blocking(move || engine.submit_chat(req))
            .instrument(tracing::info_span!("admit"))
            .await
            .map_err(|_| JudgeError::EngineStopped)??;
        let (queued_at, trace) = (
            std::time::SystemTime::now(),
            tracing::Span::current().context(),
        );
        let request_id = uuid::Uuid::new_v4().to_string();
        tracing::info!(%request_id, prompt_tokens = sub.admission.prompt_tokens, "chat admitted");
        let accepted = accepted_event(
            &sub.admission,
            Acceptance {
                request_id,
                scenario: String::new(),
                protocol: pb::Protocol::Unspecified,
                model: self.engine.info().name.clone(),
                replica: self.replica().to_string(),
            },
        );
        let events = ReceiverStream::new(sub.events).map(move |ev| match ev {
            Ok(ev) => {
                if let EngineEvent::Usage(u) = &ev {
                    crate::grpc::metrics::record_usage(u);
                    crate::grpc::trace::record_phases(&trace, queued_at, u);
                }
                Ok(event_to_pb(ev))
            }
            Err(e) => Err(status_of(&e)),
        });
        Ok(Box::pin(
            futures::stream::once(async move { Ok(accepted) }).chain(events),
        ))
    }
}
