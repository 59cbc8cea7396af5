//! A `Judge.Chat` stream answered as OpenAI's chat completion: one `chat.completion`
//! document, or `chat.completion.chunk`s as Server-Sent Events ending with `data: [DONE]`.
//!
//! The text comes from the `CritiqueDelta` events, log-probabilities from `TokenLogprob`,
//! counts and the finish reason from `Usage` (`stop` for the end-of-sequence token or a
//! stop string, `length` at the token limit). A failure before the first event is the HTTP
//! error; part-way through a stream it is one last `data: {"error": ...}`.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use autoj_proto::v1::{judge_event, FinishReason, TokenLogprob, TopLogprob, Usage};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use tonic::Status;

use super::errors::{json_response, ErrorBody, HttpError};
use crate::backend::EventStream;

/// What every chunk and the document share.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `chatcmpl-` and the judge's request id.
    id: String,
    /// Seconds since the epoch when the answer started.
    created: u64,
    /// The pool that served it, as the client named it.
    model: String,
}

impl Identity {
    fn new(model: &str) -> Self {
        Self {
            id: String::new(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: model.to_owned(),
        }
    }

    /// A `chat.completion.chunk` with one choice.
    fn chunk(&self, delta: Value, logprobs: Value, finish: Value) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        })
    }
}

/// OpenAI's name for why generation stopped.
fn finish_reason(u: &Usage) -> &'static str {
    match FinishReason::try_from(u.finish_reason) {
        Ok(FinishReason::Length) => "length",
        _ => "stop",
    }
}

/// OpenAI's `usage` object.
fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
    })
}

fn top_json(t: &TopLogprob) -> Value {
    json!({"token": t.token, "logprob": t.logprob, "bytes": t.bytes})
}

/// One entry of `logprobs.content`.
fn logprob_json(t: &TokenLogprob) -> Value {
    let mut entry = t.chosen.as_ref().map_or(json!({}), top_json);
    entry["top_logprobs"] = t.top.iter().map(top_json).collect();
    entry
}

/// Everything a non-streamed answer gathers.
#[derive(Default)]
struct Gathered {
    text: String,
    logprobs: Vec<Value>,
    usage: Option<Usage>,
}

/// The whole stream as one `chat.completion` document (`logprobs` asked or not).
pub async fn document(
    mut events: EventStream,
    model: &str,
    logprobs: bool,
) -> Result<Response, HttpError> {
    let mut who = Identity::new(model);
    let mut got = Gathered::default();
    while let Some(event) = events.next().await {
        match event?.event {
            Some(judge_event::Event::Accepted(a)) => who.id = format!("chatcmpl-{}", a.request_id),
            Some(judge_event::Event::CritiqueDelta(d)) => got.text.push_str(&d.text),
            Some(judge_event::Event::TokenLogprob(t)) => got.logprobs.push(logprob_json(&t)),
            Some(judge_event::Event::Usage(u)) => got.usage = Some(u),
            _ => {}
        }
    }
    let usage = got.usage.ok_or_else(|| {
        HttpError::Status(Status::internal(
            "the judge's chat stream ended without its usage",
        ))
    })?;
    let body = json!({
        "id": who.id, "object": "chat.completion", "created": who.created, "model": who.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": got.text},
            "logprobs": if logprobs { json!({"content": got.logprobs}) } else { Value::Null },
            "finish_reason": finish_reason(&usage),
        }],
        "usage": usage_json(&usage),
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// The stream as `chat.completion.chunk` events; `include_usage` adds a last chunk with no
/// choices and the usage, as OpenAI's `stream_options` does.
pub fn chunks(events: EventStream, model: &str, include_usage: bool) -> Response {
    let mut who = Identity::new(model);
    let mut ended = false;
    let body = events
        .flat_map(move |item| {
            let out: Vec<String> = if ended {
                Vec::new()
            } else {
                match item {
                    Ok(event) => chunk_of(&mut who, event.event, include_usage),
                    Err(status) => {
                        ended = true;
                        vec![serde_json::to_string(&ErrorBody::of(&status)).unwrap_or_default()]
                    }
                }
            };
            futures::stream::iter(out)
        })
        .chain(futures::stream::once(async { "[DONE]".to_owned() }));
    sse(body)
}

/// The chunks one event becomes.
fn chunk_of(
    who: &mut Identity,
    event: Option<judge_event::Event>,
    include_usage: bool,
) -> Vec<String> {
    let none = Value::Null;
    let values = match event {
        Some(judge_event::Event::Accepted(a)) => {
            who.id = format!("chatcmpl-{}", a.request_id);
            vec![who.chunk(
                json!({"role": "assistant", "content": ""}),
                none.clone(),
                none,
            )]
        }
        Some(judge_event::Event::CritiqueDelta(d)) => {
            vec![who.chunk(json!({"content": d.text}), none.clone(), none)]
        }
        Some(judge_event::Event::TokenLogprob(t)) => vec![who.chunk(
            json!({"content": ""}),
            json!({"content": [logprob_json(&t)]}),
            none,
        )],
        Some(judge_event::Event::Usage(u)) => {
            let mut out = vec![who.chunk(json!({}), none, json!(finish_reason(&u)))];
            if include_usage {
                out.push(json!({
                    "id": who.id, "object": "chat.completion.chunk", "created": who.created,
                    "model": who.model, "choices": [], "usage": usage_json(&u),
                }));
            }
            out
        }
        _ => Vec::new(),
    };
    values.iter().map(Value::to_string).collect()
}

/// `data:` lines as an SSE answer, kept alive while the model reads a long prompt.
fn sse(data: impl Stream<Item = String> + Send + 'static) -> Response {
    let events = data.map(|d| Ok::<_, Infallible>(Event::default().data(d)));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoj_proto::v1::{Accepted, CritiqueDelta, JudgeEvent};

    fn ev(e: judge_event::Event) -> Result<JudgeEvent, Status> {
        Ok(JudgeEvent { event: Some(e) })
    }

    fn events() -> Vec<Result<JudgeEvent, Status>> {
        let chosen = TopLogprob {
            token: " Hi".into(),
            logprob: -0.25,
            bytes: b" Hi".to_vec(),
        };
        vec![
            ev(judge_event::Event::Accepted(Accepted {
                request_id: "r1".into(),
                ..Default::default()
            })),
            ev(judge_event::Event::TokenLogprob(TokenLogprob {
                chosen: Some(chosen.clone()),
                top: vec![chosen],
            })),
            ev(judge_event::Event::CritiqueDelta(CritiqueDelta {
                text: " Hi".into(),
                order: 0,
            })),
            ev(judge_event::Event::Usage(Usage {
                prompt_tokens: 5,
                completion_tokens: 1,
                finish_reason: FinishReason::Length as i32,
                ..Default::default()
            })),
        ]
    }

    #[tokio::test]
    async fn a_document_holds_text_logprobs_usage_and_reason() {
        let stream = Box::pin(futures::stream::iter(events()));
        let body = document(stream, "local", true).await.unwrap().into_body();
        let body: Value =
            serde_json::from_slice(&axum::body::to_bytes(body, 1 << 20).await.unwrap()).unwrap();
        assert_eq!(body["id"], "chatcmpl-r1");
        assert_eq!(body["model"], "local");
        let choice = &body["choices"][0];
        assert_eq!(choice["message"]["content"], " Hi");
        assert_eq!(choice["finish_reason"], "length");
        assert_eq!(choice["logprobs"]["content"][0]["logprob"], -0.25);
        assert_eq!(
            choice["logprobs"]["content"][0]["top_logprobs"][0]["token"],
            " Hi"
        );
        assert_eq!(body["usage"]["total_tokens"], 6);
    }

    #[tokio::test]
    async fn chunks_end_with_usage_and_done_or_stop_at_an_error() {
        let stream = Box::pin(futures::stream::iter(events()));
        let body = chunks(stream, "local", true).into_body();
        let text =
            String::from_utf8(axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec()).unwrap();
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(data.len(), 6, "{text}");
        let first: Value = serde_json::from_str(data[0]).unwrap();
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        let last: Value = serde_json::from_str(data[4]).unwrap();
        assert_eq!(last["usage"]["completion_tokens"], 1);
        assert_eq!(data[5], "[DONE]");
        let failing = vec![events().remove(0), Err(Status::unavailable("judge lost"))];
        let body = chunks(Box::pin(futures::stream::iter(failing)), "local", false).into_body();
        let text =
            String::from_utf8(axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec()).unwrap();
        assert!(text.contains("\"code\":\"UNAVAILABLE\""), "{text}");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    }
}
