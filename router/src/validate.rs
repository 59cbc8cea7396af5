//! Request validation at the edge: every problem becomes INVALID_ARGUMENT naming the field,
//! before any classification or judge work is spent on the request.

use autoj_proto::v1::{
    ClassifyRequest, CompareRequest, CritiqueRequest, JudgeOptions, Language, ScoreRequest,
};

use crate::config::LimitsConfig;
use crate::error::RouterError;

/// Most queries one `Classify` call may carry (each is one model run).
pub const MAX_CLASSIFY_BATCH: usize = 64;

/// `top_k` when a `Classify` request leaves it 0.
pub const DEFAULT_TOP_K: usize = 3;

/// A judging request: its query, its options, and its own field checks.
pub(crate) trait Judged {
    /// The user's query (classified and language-detected).
    fn query(&self) -> &str;
    /// The options, created when absent so the router can fill scenario and language.
    fn options_mut(&mut self) -> &mut JudgeOptions;
    /// Checks the request's own fields (not the options).
    fn check_fields(&self) -> Result<(), RouterError>;
    /// Bytes of input text: the query and every response.
    fn input_bytes(&self) -> usize;
}

/// Every check a `Compare` request meets before it is classified and routed (fields,
/// limits, options), as the service runs them; public so the fuzz targets reach it.
pub fn check_compare(msg: &mut CompareRequest, limits: &LimitsConfig) -> Result<(), RouterError> {
    check_all(msg, limits)
}

/// As [`check_compare`], for `Critique`.
pub fn check_critique(msg: &mut CritiqueRequest, limits: &LimitsConfig) -> Result<(), RouterError> {
    check_all(msg, limits)
}

/// As [`check_compare`], for `Score`.
pub fn check_score(msg: &mut ScoreRequest, limits: &LimitsConfig) -> Result<(), RouterError> {
    check_all(msg, limits)
}

fn check_all<M: Judged>(msg: &mut M, limits: &LimitsConfig) -> Result<(), RouterError> {
    msg.check_fields()?;
    check_limits(msg, limits)?;
    check_options(msg.options_mut()).map(|_| ())
}

/// Checks the request against the router's per-request limits: total input size and the
/// `max_new_tokens` asked for. The message names the limit so a client knows what to change.
pub(crate) fn check_limits<M: Judged>(
    msg: &mut M,
    limits: &LimitsConfig,
) -> Result<(), RouterError> {
    let bytes = msg.input_bytes();
    if bytes > limits.max_input_bytes {
        return Err(invalid(
            "query+responses",
            format!(
                "{bytes} bytes of input, over this router's limit `limits.max_input_bytes` = {}",
                limits.max_input_bytes
            ),
        ));
    }
    let asked = msg
        .options_mut()
        .generation
        .as_ref()
        .and_then(|g| g.max_new_tokens);
    if let Some(n) = asked {
        if n > limits.max_new_tokens {
            return Err(invalid(
                "options.generation.max_new_tokens",
                format!(
                    "{n} is over this router's limit `limits.max_new_tokens` = {}",
                    limits.max_new_tokens
                ),
            ));
        }
    }
    Ok(())
}

/// INVALID_ARGUMENT for `field`.
pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RouterError {
    RouterError::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Rejects an empty or whitespace-only text field.
fn non_empty(field: &str, value: &str) -> Result<(), RouterError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Ok(())
}

/// Checks the option fields the router itself interprets and returns the language asked for.
pub(crate) fn check_options(options: &JudgeOptions) -> Result<Language, RouterError> {
    Language::try_from(options.language).map_err(|_| {
        invalid(
            "options.language",
            format!("unknown value {}", options.language),
        )
    })
}

impl Judged for CompareRequest {
    fn query(&self) -> &str {
        &self.query
    }
    fn options_mut(&mut self) -> &mut JudgeOptions {
        self.options.get_or_insert_with(Default::default)
    }
    fn check_fields(&self) -> Result<(), RouterError> {
        non_empty("query", &self.query)?;
        non_empty("response_1", &self.response_1)?;
        non_empty("response_2", &self.response_2)
    }
    fn input_bytes(&self) -> usize {
        self.query.len() + self.response_1.len() + self.response_2.len()
    }
}

impl Judged for CritiqueRequest {
    fn query(&self) -> &str {
        &self.query
    }
    fn options_mut(&mut self) -> &mut JudgeOptions {
        self.options.get_or_insert_with(Default::default)
    }
    fn check_fields(&self) -> Result<(), RouterError> {
        non_empty("query", &self.query)?;
        non_empty("response", &self.response)
    }
    fn input_bytes(&self) -> usize {
        self.query.len() + self.response.len()
    }
}

impl Judged for ScoreRequest {
    fn query(&self) -> &str {
        &self.query
    }
    fn options_mut(&mut self) -> &mut JudgeOptions {
        self.options.get_or_insert_with(Default::default)
    }
    fn check_fields(&self) -> Result<(), RouterError> {
        non_empty("query", &self.query)?;
        if self.responses.is_empty() {
            return Err(invalid("responses", "needs at least one response"));
        }
        for (i, response) in self.responses.iter().enumerate() {
            non_empty(&format!("responses[{i}]"), response)?;
        }
        Ok(())
    }
    fn input_bytes(&self) -> usize {
        self.query.len() + self.responses.iter().map(String::len).sum::<usize>()
    }
}

/// Checks a `Classify` request and returns the effective `top_k`; `max_top_k` is how many
/// scenarios the classifier knows.
pub(crate) fn check_classify(
    request: &ClassifyRequest,
    max_top_k: usize,
) -> Result<usize, RouterError> {
    if request.queries.is_empty() {
        return Err(invalid("queries", "needs at least one query"));
    }
    if request.queries.len() > MAX_CLASSIFY_BATCH {
        return Err(invalid(
            "queries",
            format!(
                "at most {MAX_CLASSIFY_BATCH} queries per call, got {}",
                request.queries.len()
            ),
        ));
    }
    for (i, query) in request.queries.iter().enumerate() {
        non_empty(&format!("queries[{i}]"), query)?;
    }
    let top_k = match request.top_k as usize {
        0 => DEFAULT_TOP_K.min(max_top_k),
        k if k > max_top_k => {
            return Err(invalid(
                "top_k",
                format!("must be between 1 and {max_top_k}, got {k}"),
            ))
        }
        k => k,
    };
    Ok(top_k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_empty_field() {
        let req = CompareRequest {
            query: "q".into(),
            response_1: "a".into(),
            response_2: "  ".into(),
            options: None,
        };
        let err = req.check_fields().unwrap_err().to_string();
        assert!(err.starts_with("response_2:"), "{err}");
        let score = ScoreRequest {
            query: "q".into(),
            responses: vec!["a".into(), String::new()],
            options: None,
        };
        assert!(score
            .check_fields()
            .unwrap_err()
            .to_string()
            .starts_with("responses[1]:"));
    }

    #[test]
    fn limits_name_the_setting() {
        let limits = LimitsConfig {
            max_in_flight: 1,
            max_input_bytes: 10,
            max_new_tokens: 8,
        };
        let mut req = CritiqueRequest {
            query: "12345".into(),
            response: "123456".into(),
            options: None,
        };
        let err = check_limits(&mut req, &limits).unwrap_err().to_string();
        assert!(
            err.contains("limits.max_input_bytes") && err.contains("11 bytes"),
            "{err}"
        );
        req.response.pop();
        assert!(check_limits(&mut req, &limits).is_ok());
        req.options_mut().generation = Some(autoj_proto::v1::GenerationOptions {
            max_new_tokens: Some(9),
            ..Default::default()
        });
        let err = check_limits(&mut req, &limits).unwrap_err().to_string();
        assert!(err.contains("limits.max_new_tokens"), "{err}");
    }

    #[test]
    fn top_k_range() {
        let req = |top_k| ClassifyRequest {
            queries: vec!["q".into()],
            top_k,
        };
        assert_eq!(check_classify(&req(0), 10).unwrap(), 3);
        assert_eq!(check_classify(&req(10), 10).unwrap(), 10);
        assert!(check_classify(&req(11), 10).is_err());
    }
}
