//! A judging stream answered as Server-Sent Events: each gRPC event becomes
//! `event: <accepted|critique_delta|verdict|usage|consistency|token_logprob>` with the event's message as
//! JSON in `data:`, in the order the judge sent them. A failure part-way is one last
//! `event: error` carrying the error body; then the answer ends.
//!
//! The events are read as the client reads them: when the client goes away, the response
//! body (and with it the relayed stream) is dropped, and the judge stops generating.

use std::convert::Infallible;

use crate::backend::EventStream;
use autoj_proto::v1::{judge_event, JudgeEvent};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tonic::Status;

use super::errors::ErrorBody;

/// `events` as an SSE answer (with a comment every 15 s of silence, so proxies keep a long
/// prefill's connection open).
pub fn respond(events: EventStream) -> Response {
    Sse::new(sse_events(events))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The SSE events of a judging stream, ending after its first error.
fn sse_events(events: EventStream) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    events
        .scan(false, |failed, item| {
            let next = if *failed {
                None
            } else {
                *failed = item.is_err();
                Some(item)
            };
            futures::future::ready(next)
        })
        .filter_map(|item| futures::future::ready(to_event(item).map(Ok)))
}

/// One SSE event: a judging event, or the error; `None` for an empty `JudgeEvent`.
fn to_event(item: Result<JudgeEvent, Status>) -> Option<Event> {
    match item {
        Ok(event) => {
            let event = event.event?;
            Some(match &event {
                judge_event::Event::Accepted(e) => named("accepted", e),
                judge_event::Event::CritiqueDelta(e) => named("critique_delta", e),
                judge_event::Event::Verdict(e) => named("verdict", e),
                judge_event::Event::Usage(e) => named("usage", e),
                judge_event::Event::Consistency(e) => named("consistency", e),
                judge_event::Event::TokenLogprob(e) => named("token_logprob", e),
            })
        }
        Err(status) => Some(named("error", &ErrorBody::of(&status))),
    }
}

/// An event called `name` whose data is `message` as one line of JSON.
fn named(name: &'static str, message: &impl Serialize) -> Event {
    let data = serde_json::to_string(message).unwrap_or_else(|e| {
        tracing::warn!(error = %e, event = name, "cannot write an SSE event");
        "{}".to_owned()
    });
    Event::default().event(name).data(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoj_proto::v1::CritiqueDelta;

    #[tokio::test]
    async fn names_events_and_ends_after_an_error() {
        let delta = JudgeEvent {
            event: Some(judge_event::Event::CritiqueDelta(CritiqueDelta {
                text: "Good\n".into(),
                order: 0,
            })),
        };
        let items = vec![
            Ok(delta.clone()),
            Err(Status::deadline_exceeded("too slow")),
            Ok(delta),
        ];
        let body = respond(Box::pin(futures::stream::iter(items))).into_body();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        assert_eq!(
            String::from_utf8(body.to_vec()).unwrap(),
            "event: critique_delta\ndata: {\"text\":\"Good\\n\",\"order\":0}\n\n\
             event: error\ndata: {\"error\":{\"code\":\"DEADLINE_EXCEEDED\",\"message\":\"too slow\"}}\n\n",
            "one line of JSON per event, nothing after the error"
        );
    }
}
