//! The HTTP door of `autoj serve --http-listen` with a tiny model, called with curl: Compare
//! and Critique answer one gathered JSON document, or stream the same events as Server-Sent
//! Events (critique text before the verdict, ending after `usage`); Score, the scenario list
//! and criteria answer JSON; both spellings of field names are read; the page is served.

mod common;
#[path = "common/http.rs"]
mod http;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::Server;
use http::{base, curl, post, wait_healthy};
use serde_json::Value;

/// A pairwise request in the .proto's field names.
const COMPARE: &str = r#"{"query": "What is 2 + 2?", "response_1": "4", "response_2": "5",
    "options": {"scenario": "code_generation", "generation": {"max_new_tokens": 8}}}"#;

#[test]
fn json_and_server_sent_events() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let mut server = Server::start(&model, &["--no-classifier", "--http-listen", "127.0.0.1:0"]);
    let base = base(&mut server);
    wait_healthy(&base);
    gathered_compare(&base);
    swap_check_in_camel_case(&base);
    streamed_critique(
        &base,
        "-H",
        "Accept: text/event-stream",
        "/v1/judge/critique",
    );
    streamed_critique(&base, "-H", "X-Unused: 1", "/v1/judge/critique?stream=true");
    score_and_scenarios(&base);
    page(&base);
}

/// Compare without SSE: every event gathered into one document.
fn gathered_compare(base: &str) {
    let answer = post(&format!("{base}/v1/judge/compare"), COMPARE, &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.content_type.starts_with("application/json"));
    let judgment = answer.json();
    let accepted = &judgment["accepted"][0];
    assert_eq!(accepted["protocol"], "PROTOCOL_PAIRWISE");
    assert_eq!(accepted["scenario"], "code_generation");
    assert_eq!(accepted["scenario_source"], "SCENARIO_SOURCE_CLIENT");
    assert_eq!(judgment["critiques"].as_array().unwrap().len(), 1);
    let verdict = &judgment["verdicts"][0];
    let pairwise = &verdict["pairwise"];
    assert!(
        pairwise["winner"].as_str().unwrap().starts_with("WINNER_"),
        "{verdict}"
    );
    let total: f64 = ["p_response_1", "p_response_2", "p_tie"]
        .iter()
        .map(|p| pairwise[p].as_f64().expect("a probability"))
        .sum();
    assert!(
        (total - 1.0).abs() < 1e-3,
        "probabilities sum to 1: {total}"
    );
    let usage = &judgment["usages"][0];
    assert!(usage["completion_tokens"].as_u64().unwrap() >= 1, "{usage}");
    assert!(judgment.get("consistency").is_none(), "no swap check asked");
}

/// lowerCamelCase field names are read too; with `swapCheck` both orders are gathered.
fn swap_check_in_camel_case(base: &str) {
    let body = r#"{"query": "Pick one", "response1": "A", "response2": "B",
        "options": {"swapCheck": true, "language": "LANGUAGE_EN",
                    "generation": {"maxNewTokens": 4, "seed": "7"}}}"#;
    let answer = post(&format!("{base}/v1/judge/compare"), body, &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let judgment = answer.json();
    assert_eq!(judgment["verdicts"].as_array().unwrap().len(), 2);
    assert_eq!(judgment["critiques"].as_array().unwrap().len(), 2);
    let consistency = &judgment["consistency"];
    assert!(consistency["consistent"].is_boolean(), "{judgment}");
    assert!(consistency["combined"]
        .as_str()
        .unwrap()
        .starts_with("WINNER_"));
}

/// Critique as Server-Sent Events, asked for with a header or `?stream=true`: the gRPC
/// event order, critique text before the verdict, and nothing after `usage`.
fn streamed_critique(base: &str, flag: &str, header: &str, path: &str) {
    let body = r#"{"query": "Write a haiku about rain.", "response": "Rain falls. The end.",
        "options": {"generation": {"max_new_tokens": 12}}}"#;
    let answer = post(&format!("{base}{path}"), body, &["-N", flag, header]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let events = answer.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"accepted"), "{names:?}");
    assert_eq!(names.last(), Some(&"usage"), "ends after usage: {names:?}");
    let verdict_at = names
        .iter()
        .position(|n| *n == "verdict")
        .expect("a verdict");
    let deltas = names[..verdict_at]
        .iter()
        .filter(|n| **n == "critique_delta")
        .count();
    assert!(deltas >= 1, "critique text before the verdict: {names:?}");
    assert_eq!(verdict_at, names.len() - 2, "{names:?}");
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "critique_delta")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert!(!text.is_empty());
    let single = &events[verdict_at].1["single"];
    let rating = single["rating"].as_f64().expect("a rating");
    assert!((1.0..=10.0).contains(&rating), "{single}");
    assert_eq!(single["distribution"].as_array().unwrap().len(), 10);
    assert_eq!(events[0].1["protocol"], "PROTOCOL_SINGLE");
}

/// The unary RPCs: Score, the scenario list and a scenario's criteria; an unknown scenario
/// is INVALID_ARGUMENT naming it; Classify on a server without a classifier is 501.
fn score_and_scenarios(base: &str) {
    let body = r#"{"query": "2 + 2?", "responses": ["4", "5", "four"],
        "options": {"generation": {"max_new_tokens": 4}}}"#;
    let answer = post(&format!("{base}/v1/judge/score"), body, &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let score = answer.json();
    assert_eq!(score["scores"].as_array().unwrap().len(), 3);
    assert!(score["best_index"].as_u64().unwrap() < 3);

    let list = curl(&format!("{base}/v1/scenarios"), &[]).json();
    let names: Vec<&str> = list["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"code_generation"), "{names:?}");

    let criteria = curl(
        &format!("{base}/v1/scenarios/code_generation/criteria"),
        &[],
    );
    let criteria = criteria.json();
    assert_eq!(criteria["scenario"], "code_generation");
    assert!(!criteria["criteria"].as_array().unwrap().is_empty());
    let unknown = curl(&format!("{base}/v1/scenarios/no_such_thing/criteria"), &[]);
    let (code, message) = unknown.error(400);
    assert_eq!(code, "INVALID_ARGUMENT");
    assert!(message.contains("no_such_thing"), "{message}");

    let classify = post(
        &format!("{base}/v1/scenarios/classify"),
        r#"{"queries": ["write a python function"]}"#,
        &[],
    );
    let (code, _) = classify.error(501);
    assert_eq!(code, "UNIMPLEMENTED");
}

/// The page and its assets, embedded in the binary.
fn page(base: &str) {
    let page = curl(&format!("{base}/"), &[]);
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"), "{page:?}");
    assert!(
        page.body.contains("/page/app.js"),
        "the page loads its script"
    );
    for (asset, kind) in [("app.js", "text/javascript"), ("style.css", "text/css")] {
        let answer = curl(&format!("{base}/page/{asset}"), &[]);
        assert_eq!(answer.status, 200, "{asset}");
        assert!(answer.content_type.starts_with(kind), "{answer:?}");
        assert!(!answer.body.is_empty(), "{asset}");
    }
    let health: Value = curl(&format!("{base}/healthz"), &[]).json();
    assert_eq!(health["status"], "SERVING");
}
