//! What the judge accepts: per-request limits, and the checks that turn a request's fields
//! and options into an engine request or an INVALID_ARGUMENT naming the field at fault.

use autoj_proto::v1 as pb;

use crate::engine::generate::GenerationParams;
use crate::engine::{ChatRequest, JudgeRequest, MAX_TOP_LOGPROBS};
use crate::error::JudgeError;
use crate::protocol::chat::{self, ChatMessage, ChatRole};
use crate::protocol::fit::TruncationPolicy;
use crate::protocol::prompt::{Lang, Task};

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
            default_max_new_tokens: crate::engine::generate::DEFAULT_MAX_NEW_TOKENS,
            max_stop_strings: 8,
            max_score_candidates: 64,
        }
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
    Ok(JudgeRequest {
        task,
        language: language_of(o)?,
        params: generation_params(limits, o.generation.clone().unwrap_or_default())?,
        truncation: truncation_of(o)?,
        deadline: None,
    })
}

/// Builds the engine's chat request from `r`, refusing (INVALID_ARGUMENT) unknown roles,
/// oversize messages, out-of-range options and more alternatives than the engine gives.
pub fn validate_chat(
    limits: &ServiceLimits,
    r: pb::ChatRequest,
) -> Result<ChatRequest, JudgeError> {
    let total: usize = r.messages.iter().map(|m| m.content.len()).sum();
    // A conversation may hold as much text as the largest judging request (three fields).
    let most = limits.max_field_bytes.saturating_mul(3);
    if total > most {
        return Err(invalid(format!(
            "`messages` hold {total} bytes of text, over this server's limit of {most} bytes"
        )));
    }
    let messages = r
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m
                .role
                .parse::<ChatRole>()
                .map_err(|e| invalid(format!("`messages[{i}].role`: {e}")))?;
            Ok(ChatMessage {
                role,
                content: m.content,
            })
        })
        .collect::<Result<Vec<_>, JudgeError>>()?;
    chat::check(&messages)?;
    if r.top_logprobs > 0 && !r.logprobs {
        return Err(invalid(
            "`top_logprobs` needs `logprobs` set to true".to_string(),
        ));
    }
    if r.top_logprobs as usize > MAX_TOP_LOGPROBS {
        return Err(invalid(format!(
            "`top_logprobs` is {}; it must be between 0 and {MAX_TOP_LOGPROBS}",
            r.top_logprobs
        )));
    }
    Ok(ChatRequest {
        messages,
        params: generation_params(limits, r.generation.unwrap_or_default())?,
        logprobs: r.logprobs.then_some(r.top_logprobs as usize),
        deadline: None,
    })
}

/// The requested template language; `None` detects it from the query.
fn language_of(o: &pb::JudgeOptions) -> Result<Option<Lang>, JudgeError> {
    match pb::Language::try_from(o.language) {
        Ok(pb::Language::Auto) => Ok(None),
        Ok(pb::Language::En) => Ok(Some(Lang::En)),
        Ok(pb::Language::Zh) => Ok(Some(Lang::Zh)),
        Err(_) => Err(invalid(format!(
            "`options.language` {} is not a known language",
            o.language
        ))),
    }
}

/// What to do when the input does not fit.
fn truncation_of(o: &pb::JudgeOptions) -> Result<TruncationPolicy, JudgeError> {
    match pb::Truncation::try_from(o.truncation) {
        Ok(pb::Truncation::Auto) => Ok(TruncationPolicy::Auto),
        Ok(pb::Truncation::Refuse) => Ok(TruncationPolicy::Refuse),
        Err(_) => Err(invalid(format!(
            "`options.truncation` {} is not a known policy",
            o.truncation
        ))),
    }
}

/// Sampling and length settings, each checked against its range and this server's limits.
fn generation_params(
    limits: &ServiceLimits,
    g: pb::GenerationOptions,
) -> Result<GenerationParams, JudgeError> {
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
    // Unset, each request draws its own seed: repeated sampled calls differ, as clients
    // of sampling APIs expect; a given seed reproduces a sampled text.
    params.seed = g.seed.unwrap_or_else(rand::random);
    if g.stop.len() > limits.max_stop_strings
        || g.stop.iter().any(|s| s.is_empty() || s.len() > 256)
    {
        return Err(invalid(format!(
            "`options.generation.stop` must hold at most {} non-empty strings of at most 256 bytes",
            limits.max_stop_strings
        )));
    }
    params.stop = g.stop;
    Ok(params)
}

fn invalid(msg: String) -> JudgeError {
    JudgeError::InvalidArgument(msg)
}
