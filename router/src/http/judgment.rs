//! A judging stream answered as one JSON document: every event gathered, as the Python
//! client's `Judgment` gathers them. A stream that fails part-way answers with its error
//! instead (what has been generated so far is not a judgment).

use crate::backend::EventStream;
use autoj_proto::v1::{judge_event, Accepted, Consistency, Usage, Verdict};
use axum::http::StatusCode;
use axum::response::Response;
use futures::StreamExt;
use serde::Serialize;

use super::errors::{json_response, HttpError};

/// Every event of one Compare / Critique call. Index 0 of each list is the order sent;
/// index 1, with `swap_check`, the swapped order.
#[derive(Debug, Default, Serialize)]
pub struct Judgment {
    /// The `Accepted` event of each order.
    accepted: Vec<Accepted>,
    /// The whole critique text of each order.
    critiques: Vec<String>,
    /// The verdict of each order (the swapped one mapped back to the order sent).
    verdicts: Vec<Verdict>,
    /// Token counts and timings of each order.
    usages: Vec<Usage>,
    /// With `swap_check`: whether both orders agree.
    #[serde(skip_serializing_if = "Option::is_none")]
    consistency: Option<Consistency>,
}

impl Judgment {
    /// Adds one event.
    fn add(&mut self, event: judge_event::Event) {
        match event {
            judge_event::Event::Accepted(accepted) => self.accepted.push(accepted),
            judge_event::Event::CritiqueDelta(delta) => {
                let order = delta.order as usize;
                if self.critiques.len() <= order {
                    self.critiques.resize(order + 1, String::new());
                }
                self.critiques[order].push_str(&delta.text);
            }
            judge_event::Event::Verdict(verdict) => self.verdicts.push(verdict),
            judge_event::Event::Usage(usage) => self.usages.push(usage),
            judge_event::Event::Consistency(consistency) => self.consistency = Some(consistency),
            // Only chats carry token log-probabilities; a judgment never does.
            judge_event::Event::TokenLogprob(_) => {}
        }
    }

    /// Reads `events` to their end; the stream's error if it fails.
    pub async fn gather(mut events: EventStream) -> Result<Self, HttpError> {
        let mut judgment = Self::default();
        while let Some(event) = events.next().await {
            if let Some(event) = event?.event {
                judgment.add(event);
            }
        }
        // A critique-less order still has its (empty) text.
        if judgment.critiques.len() < judgment.accepted.len() {
            judgment
                .critiques
                .resize(judgment.accepted.len(), String::new());
        }
        Ok(judgment)
    }

    /// The 200 answer.
    pub fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoj_proto::v1::{CritiqueDelta, JudgeEvent};

    fn event(e: judge_event::Event) -> Result<JudgeEvent, tonic::Status> {
        Ok(JudgeEvent { event: Some(e) })
    }

    #[tokio::test]
    async fn gathers_both_orders() {
        let delta = |text: &str, order| {
            event(judge_event::Event::CritiqueDelta(CritiqueDelta {
                text: text.into(),
                order,
            }))
        };
        let events = vec![
            event(judge_event::Event::Accepted(Accepted::default())),
            event(judge_event::Event::Accepted(Accepted {
                order: 1,
                ..Default::default()
            })),
            delta("a", 0),
            delta("x", 1),
            delta("b", 0),
            event(judge_event::Event::Consistency(Consistency::default())),
        ];
        let judgment = Judgment::gather(Box::pin(futures::stream::iter(events)))
            .await
            .unwrap();
        assert_eq!(judgment.critiques, ["ab", "x"]);
        let json = serde_json::to_value(&judgment).unwrap();
        assert_eq!(json["accepted"][1]["order"], 1);
        assert!(json["consistency"].is_object());
    }

    #[tokio::test]
    async fn a_failed_stream_is_its_error() {
        let events = vec![
            event(judge_event::Event::Accepted(Accepted::default())),
            Err(tonic::Status::unavailable("judge went away")),
        ];
        let err = Judgment::gather(Box::pin(futures::stream::iter(events)))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Status(s) if s.code() == tonic::Code::Unavailable));
    }
}
