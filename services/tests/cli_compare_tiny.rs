//! `autoj serve` + `autoj compare` / `autoj critique` end to end with a tiny model the test
//! writes itself: text mode ends with the verdict line, `--json` prints one object per
//! event in the contract's order, and errors come back as the gRPC status.

mod common;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, json_lines, run, Server};

#[test]
fn compare_and_critique_over_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let server = Server::start(&model, &["--no-classifier"]);

    let out = run(autoj().args([
        "compare",
        "--addr",
        &server.addr,
        "--query",
        "2+2?",
        "--response-1",
        "4",
        "--response-2",
        "5",
        "--max-new-tokens",
        "12",
        "--json",
    ]));
    let events = json_lines(&out);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"accepted"));
    assert_eq!(&kinds[kinds.len() - 2..], &["verdict", "usage"]);
    assert!(kinds[1..kinds.len() - 2]
        .iter()
        .all(|k| *k == "critique_delta"));
    assert_eq!(events[kinds.len() - 1]["completion_tokens"], 12);
    assert_eq!(events[kinds.len() - 2]["source"], "forced");
    assert!(
        events[kinds.len() - 2]["winner"].is_string(),
        "a forced verdict is a legal choice"
    );

    let out = run(autoj().args([
        "critique",
        "--addr",
        &server.addr,
        "--query",
        "hi",
        "--response",
        "hello",
        "--max-new-tokens",
        "8",
    ]));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("(forced)") && text.contains("== verdict: rating "),
        "{text}"
    );

    let out = run(autoj().args([
        "critique",
        "--addr",
        &server.addr,
        "--query",
        "hi",
        "--response",
        " ",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("InvalidArgument") && err.contains("response") && err.contains("empty"),
        "{err}"
    );
}

#[test]
fn missing_model_is_a_usage_error() {
    let out = run(autoj().args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--model",
        "/nonexistent/model.gguf",
    ]));
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("model not found at /nonexistent/model.gguf"),
        "{err}"
    );
}
