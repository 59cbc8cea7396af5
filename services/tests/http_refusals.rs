//! Every refusal of the HTTP door answers with its status and a JSON error naming the
//! problem, and the server goes on serving: no API key or a wrong one (401, the gRPC
//! interceptor's own words), a body that is not JSON or not the message (400), an unknown
//! field or enum value (400), a body over the size limit (413), input over
//! `limits.max_input_bytes` (400), a bad deadline header (400), a deadline that passes
//! (504, or an SSE `error` event once streaming), an unknown route (404), a wrong method
//! (405).

mod common;
#[path = "common/http.rs"]
mod http;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::Server;
use http::{base, curl, post, serve_door, wait_healthy};

/// The key the server accepts.
const KEY: &str = "http-test-key";
/// The router's input limit in this test (bytes of query + responses).
const MAX_INPUT: usize = 2048;

/// `autoj serve` with an API key, a small input limit and the HTTP door.
fn start(dir: &std::path::Path) -> Server {
    let model = write_gguf(dir, &TinySpec::default()).unwrap();
    let config = dir.join("router.toml");
    std::fs::write(
        &config,
        format!(
            "[classifier]\nenabled = false\n[routing]\ndefault_pool = \"local\"\n\
             [[routing.pool]]\nname = \"local\"\nlocal = true\n\
             [limits]\nmax_input_bytes = {MAX_INPUT}\n"
        ),
    )
    .unwrap();
    serve_door(&model, KEY, &["--router-config", config.to_str().unwrap()])
}

/// A compare request whose query is `query`, generating `tokens` tokens.
fn compare(query: &str, tokens: u32) -> String {
    serde_json::json!({
        "query": query, "response_1": "a", "response_2": "b",
        "options": {"generation": {"max_new_tokens": tokens}}
    })
    .to_string()
}

#[test]
fn refusals_name_their_problem_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let base = base(&mut server);
    wait_healthy(&base);
    let url = format!("{base}/v1/judge/compare");
    let auth = format!("Authorization: Bearer {KEY}");
    let with_key = ["-H", auth.as_str()];

    keys(&base, &url);
    bodies(&url, &with_key);
    sizes(&url, &with_key);
    deadlines(&url, &with_key);
    routes(&base, &with_key);

    let ok = post(&url, &compare("Still there?", 4), &with_key);
    assert_eq!(ok.status, 200, "still serving: {}", ok.body);
    assert_eq!(ok.json()["usages"].as_array().unwrap().len(), 1);
}

/// No key or a wrong one: 401 with the gRPC interceptor's message, on judging and scenario
/// routes alike; health and the page stay open.
fn keys(base: &str, url: &str) {
    for args in [
        &[][..],
        &["-H", "Authorization: Bearer wrong"][..],
        &["-H", "Authorization: Basic aHR0cA=="][..],
    ] {
        let (code, message) = post(url, &compare("q", 4), args).error(401);
        assert_eq!(code, "UNAUTHENTICATED");
        assert_eq!(message, "missing or invalid API key");
        let (code, _) = curl(&format!("{base}/v1/scenarios"), args).error(401);
        assert_eq!(code, "UNAUTHENTICATED");
    }
    // The key is checked before the body is read: a bad body without a key is still 401.
    post(url, "{not json", &[]).error(401);
    assert_eq!(curl(&format!("{base}/healthz"), &[]).status, 200);
    assert_eq!(curl(&format!("{base}/"), &[]).status, 200);
}

/// Bodies that are not the message: 400 INVALID_ARGUMENT naming what is wrong.
fn bodies(url: &str, with_key: &[&str]) {
    for (body, needle) in [
        ("", "empty request body; expected a JSON CompareRequest"),
        (
            r#"{"query": "q", "response_1": "#,
            "not a valid JSON CompareRequest",
        ),
        (r#"{"query": 5}"#, "invalid type"),
        (r#"{"qurey": "q"}"#, "unknown field `qurey`"),
        (
            r#"{"query": "q", "response_1": "a", "response_2": "b",
                "options": {"language": "LANGUAGE_KLINGON"}}"#,
            "LANGUAGE_KLINGON",
        ),
        (r#"{"query": "q", "response_1": "a"}"#, "response_2"),
        (
            r#"{"query": "q", "response_1": "a", "response_2": "b",
                "options": {"scenario": "no_such_scenario"}}"#,
            "unknown scenario `no_such_scenario`",
        ),
    ] {
        let (code, message) = post(url, body, with_key).error(400);
        assert_eq!(code, "INVALID_ARGUMENT", "{body}");
        assert!(message.contains(needle), "{body}: {message}");
    }
    let (_, message) = post(&format!("{url}?stram=true"), "{}", with_key).error(400);
    assert!(message.contains("stram"), "{message}");
}

/// A body over the door's limit is 413 before it is read; input within it but over
/// `limits.max_input_bytes` is the router's own 400; too many new tokens is 400 too.
fn sizes(url: &str, with_key: &[&str]) {
    let limit = autoj_router::http::body_limit(&autoj_router::LimitsConfig {
        max_input_bytes: MAX_INPUT,
        ..Default::default()
    });
    let huge = compare(&"x".repeat(limit + 1), 4);
    let (code, message) = post(url, &huge, with_key).error(413);
    assert_eq!(code, "RESOURCE_EXHAUSTED");
    assert!(message.contains(&limit.to_string()), "{message}");
    assert!(message.contains("limits.max_input_bytes"), "{message}");

    let long = compare(&"y".repeat(MAX_INPUT + 1), 4);
    let (code, message) = post(url, &long, with_key).error(400);
    assert_eq!(code, "INVALID_ARGUMENT");
    assert!(message.contains("limits.max_input_bytes"), "{message}");

    let (_, message) = post(url, &compare("q", 100_000), with_key).error(400);
    assert!(message.contains("max_new_tokens"), "{message}");
}

/// A deadline header that does not parse is 400 naming it; a deadline that passes is
/// DEADLINE_EXCEEDED: 504 for a whole answer, an `error` event once events have started.
fn deadlines(url: &str, with_key: &[&str]) {
    let mut args = with_key.to_vec();
    args.extend(["-H", "X-Timeout-Ms: soon"]);
    let (_, message) = post(url, &compare("q", 4), &args).error(400);
    assert!(message.contains("X-Timeout-Ms"), "{message}");

    let (code, _) = post(
        &format!("{url}?timeout_ms=1"),
        &compare("q", 3000),
        with_key,
    )
    .error(504);
    assert_eq!(code, "DEADLINE_EXCEEDED");

    let mut args = with_key.to_vec();
    args.extend(["-N", "-H", "X-Timeout-Ms: 1500"]);
    let streamed = post(&format!("{url}?stream=true"), &compare("q", 3000), &args);
    // The tiny model starts at once and cannot write 3,000 tokens in 1.5 s: events have
    // started when the deadline passes, so the answer is 200 and ends with the error.
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let events = streamed.events();
    assert_eq!(events[0].0, "accepted");
    let (name, data) = events.last().expect("events");
    assert_eq!(name, "error", "the stream ends with an error event");
    assert_eq!(data["error"]["code"], "DEADLINE_EXCEEDED", "{data}");
}

/// Unknown routes are 404 naming the path; a known route with another method is 405.
fn routes(base: &str, with_key: &[&str]) {
    let (code, message) = curl(&format!("{base}/v1/judge/nothing"), with_key).error(404);
    assert_eq!(code, "NOT_FOUND");
    assert!(message.contains("/v1/judge/nothing"), "{message}");
    let (_, message) = curl(&format!("{base}/v1/judge/compare"), with_key).error(405);
    assert!(message.contains("method not allowed"), "{message}");
}
