//! `Judge.Chat`: free-form chat with the judge model (the HTTP door's OpenAI-compatible
//! endpoint rides on it). The same admission, metrics and traces as a judgment; the stream
//! is `Accepted`, the text as `CritiqueDelta`s with `TokenLogprob`s when asked, `Usage`.

use std::time::Instant;

use autoj_proto::stream::EventStream;
use autoj_proto::v1 as pb;

use super::convert::{accepted_event, Acceptance};
use super::service::{relay, JudgeService};
use super::validate::validate_chat;
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
        let sub = self.admit(move |engine| engine.submit_chat(req)).await?;
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
        Ok(relay(sub.events, accepted))
    }
}
