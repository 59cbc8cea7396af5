//! OpenAI-compatible chat completions, so evaluation tools that take any OpenAI-style
//! endpoint as their grader (promptfoo, Inspect AI, lm-evaluation-harness, LangChain's
//! `ChatOpenAI`, DeepEval) can use an autoj judge: `POST /v1/chat/completions` and
//! `GET /v1/models`.
//!
//! A request becomes one `Judge.Chat` call on the router (same API keys, admission,
//! failover, deadline, metrics and traces as every other call); its `model` names the judge
//! pool. Fields autoj does not implement are refused with 400 naming the field, unless
//! they hold the value that changes nothing (`n: 1`, `presence_penalty: 0`, ...): nothing a
//! client asks for is silently ignored. The answer is built in [`super::openai_answer`].

use std::collections::BTreeMap;

use autoj_proto::v1::{ChatMessage, ChatRequest, GenerationOptions};
use serde::Deserialize;
use serde_json::Value;

use super::errors::HttpError;

/// The body of `POST /v1/chat/completions`, the fields autoj reads; every other field is
/// collected in `other` and refused unless harmless.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The judge pool to serve it (`GET /v1/models` lists them).
    pub model: String,
    /// The conversation.
    pub messages: Vec<InMessage>,
    /// Upper bound on generated tokens (OpenAI's older name).
    pub max_tokens: Option<u32>,
    /// Upper bound on generated tokens (OpenAI's newer name).
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy.
    pub temperature: Option<f32>,
    /// Nucleus mass.
    pub top_p: Option<f32>,
    /// Seed for sampling.
    pub seed: Option<u64>,
    /// Stop strings: one, or a list.
    pub stop: Option<Stop>,
    /// Answer as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
    /// `{"include_usage": true}` adds a last chunk with the usage.
    pub stream_options: Option<StreamOptions>,
    /// Return the generated tokens' log-probabilities.
    #[serde(default)]
    pub logprobs: bool,
    /// With `logprobs`: the N most likely tokens at each position.
    pub top_logprobs: Option<u32>,
    /// Every other field, checked by [`CompletionRequest::refuse_unsupported`].
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk holding the usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// One message as OpenAI's API writes it.
#[derive(Debug, Deserialize)]
pub struct InMessage {
    /// `system`, `developer` (read as system), `user` or `assistant`.
    pub role: String,
    /// A string, or a list of `{"type": "text", "text": ...}` parts.
    pub content: Option<Value>,
    /// A participant name; accepted and not used.
    #[allow(dead_code)]
    pub name: Option<String>,
    /// Any other field (`tool_calls`, ...): refused.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Fields accepted when they hold the value that changes nothing; any other value is 400.
const HARMLESS: &[(&str, &str)] = &[
    ("n", "1"),
    ("presence_penalty", "0"),
    ("frequency_penalty", "0"),
    ("logit_bias", "{}"),
    ("tools", "[]"),
    ("tool_choice", "\"none\""),
    ("parallel_tool_calls", "false"),
    ("response_format", "{\"type\":\"text\"}"),
    ("store", "false"),
];

/// Fields that carry no instruction to the model: accepted whatever they hold.
const INERT: &[&str] = &["user", "metadata", "service_tier"];

impl CompletionRequest {
    /// 400 naming the first field autoj would have to ignore.
    pub fn refuse_unsupported(&self) -> Result<(), HttpError> {
        for (field, value) in &self.other {
            if value.is_null() || INERT.contains(&field.as_str()) {
                continue;
            }
            let harmless = HARMLESS.iter().find(|(name, _)| name == field);
            let ok = harmless.is_some_and(|(_, want)| {
                serde_json::from_str::<Value>(want).is_ok_and(|want| same(value, &want))
            });
            if !ok {
                return Err(HttpError::invalid(match harmless {
                    Some((_, want)) => format!(
                        "`{field}` = {value} is not supported; autoj accepts only {want} (or no value)"
                    ),
                    None => format!("`{field}` is not supported by autoj's chat completions"),
                }));
            }
        }
        Ok(())
    }

    /// The `Judge.Chat` message for this request.
    pub fn to_chat(&self) -> Result<ChatRequest, HttpError> {
        self.refuse_unsupported()?;
        if self.top_logprobs.is_some_and(|n| n > 0) && !self.logprobs {
            return Err(HttpError::invalid("`top_logprobs` needs `logprobs: true`"));
        }
        let messages = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| m.to_proto(i))
            .collect::<Result<Vec<_>, _>>()?;
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        Ok(ChatRequest {
            messages,
            generation: Some(GenerationOptions {
                max_new_tokens: self.max_completion_tokens.or(self.max_tokens),
                temperature: self.temperature,
                top_p: self.top_p,
                seed: self.seed,
                stop,
            }),
            logprobs: self.logprobs,
            top_logprobs: self.top_logprobs.unwrap_or(0),
            pool: self.model.clone(),
        })
    }
}

/// Whether two JSON values are equal, numbers by value (`0` and `0.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

impl InMessage {
    /// The proto message; 400 naming `messages[i]` for what autoj cannot read.
    fn to_proto(&self, i: usize) -> Result<ChatMessage, HttpError> {
        if let Some(field) = self.other.keys().find(|k| !self.other[*k].is_null()) {
            return Err(HttpError::invalid(format!(
                "`messages[{i}].{field}` is not supported (tool and function calls are not)"
            )));
        }
        let role = match self.role.as_str() {
            "developer" => "system",
            r @ ("system" | "user" | "assistant") => r,
            other => {
                return Err(HttpError::invalid(format!(
                    "`messages[{i}].role` `{other}` is not supported; use system, developer, user or assistant"
                )))
            }
        };
        let content = match &self.content {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => text_parts(parts, i)?,
            Some(other) => {
                return Err(HttpError::invalid(format!(
                    "`messages[{i}].content` must be a string or a list of text parts, not {other}"
                )))
            }
        };
        Ok(ChatMessage {
            role: role.to_owned(),
            content,
        })
    }
}

/// The text of a content list: every part must be `{"type": "text", "text": ...}`.
fn text_parts(parts: &[Value], i: usize) -> Result<String, HttpError> {
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        match (part.get("type").and_then(Value::as_str), part.get("text")) {
            (Some("text"), Some(Value::String(t))) => text.push_str(t),
            (kind, _) => {
                return Err(HttpError::invalid(format!(
                    "`messages[{i}].content[{j}]`: only text parts are supported, not {}",
                    kind.unwrap_or("a part without a type")
                )))
            }
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> CompletionRequest {
        serde_json::from_str(body).unwrap()
    }

    fn refusal(body: &str) -> String {
        match parse(body).to_chat() {
            Err(HttpError::Status(s)) => s.message().to_owned(),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn maps_fields_to_the_chat_call() {
        let r = parse(
            r#"{"model":"local","messages":[{"role":"developer","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
            "max_tokens":7,"temperature":0.5,"top_p":0.9,"seed":3,"stop":"END","n":1,
            "presence_penalty":0.0,"user":"u1","logprobs":true,"top_logprobs":2}"#,
        )
        .to_chat()
        .unwrap();
        assert_eq!(r.pool, "local");
        assert_eq!(r.messages[0].role, "system");
        assert_eq!(r.messages[1].content, "ab");
        let g = r.generation.unwrap();
        assert_eq!(
            (g.max_new_tokens, g.temperature, g.top_p, g.seed),
            (Some(7), Some(0.5), Some(0.9), Some(3))
        );
        assert_eq!(g.stop, ["END"]);
        assert!(r.logprobs);
        assert_eq!(r.top_logprobs, 2);
        let newer =
            parse(r#"{"model":"m","messages":[],"max_tokens":7,"max_completion_tokens":9}"#);
        assert_eq!(
            newer.to_chat().unwrap().generation.unwrap().max_new_tokens,
            Some(9)
        );
    }

    #[test]
    fn names_what_it_will_not_ignore() {
        let base = r#""model":"m","messages":[{"role":"user","content":"q"}]"#;
        for (extra, want) in [
            (r#""n":2"#, "`n` = 2 is not supported"),
            (r#""frequency_penalty":0.5"#, "`frequency_penalty`"),
            (r#""functions":[]"#, "`functions` is not supported"),
            (r#""top_logprobs":3"#, "needs `logprobs: true`"),
            (
                r#""response_format":{"type":"json_object"}"#,
                "`response_format`",
            ),
        ] {
            let message = refusal(&format!("{{{base},{extra}}}"));
            assert!(message.contains(want), "{extra}: {message}");
        }
        let tool = refusal(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#);
        assert!(tool.contains("messages[0].role"), "{tool}");
        let image = refusal(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#,
        );
        assert!(
            image.contains("messages[0].content[0]") && image.contains("image_url"),
            "{image}"
        );
        let calls = refusal(
            r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{}]}]}"#,
        );
        assert!(calls.contains("messages[0].tool_calls"), "{calls}");
    }
}
