//! `autoj serve --model DIR` on directories laid out exactly as GAIR publishes Auto-J
//! (written by torch and transformers: judge/tests/fixtures/checkpoints), served as they
//! are, quantized at load, and GPTQ: a full Compare and Critique through gRPC, with the
//! prompt token count transformers' tokenizer gives for the same Auto-J prompt.

mod common;

use std::path::{Path, PathBuf};

use common::{autoj, json_lines, run, Server};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../judge/tests/fixtures/checkpoints")
        .join(name)
}

fn reference() -> Value {
    let raw = std::fs::read(fixture("reference.json")).unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// `autoj compare|critique --json` against `addr`; the events.
fn judge(addr: &str, args: &[&str]) -> Vec<Value> {
    let out = run(autoj()
        .args(args)
        .args(["--addr", addr, "--json", "--max-new-tokens", "10"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out)
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// A full judgment: accepted, deltas, a legal verdict, usage with the tokens asked for.
fn check_judgment(what: &str, events: &[Value]) {
    let k = kinds(events);
    assert_eq!(k.first(), Some(&"accepted"), "{what}: {k:?}");
    assert_eq!(&k[k.len() - 2..], &["verdict", "usage"], "{what}");
    let usage = &events[k.len() - 1];
    assert!(usage["completion_tokens"].as_u64().unwrap() <= 10, "{what}");
    let verdict = &events[k.len() - 2];
    assert!(
        verdict["winner"].is_string() || verdict["rating"].is_number(),
        "{what}: {verdict}"
    );
}

#[test]
fn gair_layouts_serve_compare_and_critique() {
    let r = reference();
    let f = &r["prompt_fields"]["pairwise_en"];
    let (q, a, b) = (
        f["prompt"].as_str().unwrap(),
        f["response"].as_str().unwrap(),
        f["response_another"].as_str().unwrap(),
    );
    for (dir, extra) in [
        ("autoj-13b-layout", &[][..]),
        ("autoj-13b-layout", &["--quantize", "q4_k_m"][..]),
        ("gptq-4bit", &[][..]),
        ("autoj-bilingual-layout", &[][..]),
    ] {
        let what = format!("{dir} {extra:?}");
        let mut args = vec!["--no-classifier", "--prompt-format", "autoj"];
        args.extend_from_slice(extra);
        let server = Server::start(&fixture(dir), &args);
        let events = judge(
            &server.addr,
            &[
                "compare",
                "--language",
                "en",
                "--query",
                q,
                "--response-1",
                a,
                "--response-2",
                b,
            ],
        );
        check_judgment(&what, &events);
        let want = r["models"][dir]["prompts"]["pairwise_en"]["ids"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(
            events[0]["prompt_tokens"], want,
            "{what}: transformers' prompt length"
        );
        let events = judge(
            &server.addr,
            &[
                "critique",
                "--language",
                "en",
                "--query",
                q,
                "--response",
                a,
            ],
        );
        check_judgment(&what, &events);
    }
}

#[test]
fn the_bilingual_layout_judges_in_chinese_with_transformers_prompt_length() {
    let r = reference();
    let f = &r["prompt_fields"]["single_zh"];
    let server = Server::start(
        &fixture("autoj-bilingual-layout"),
        &["--no-classifier", "--prompt-format", "autoj"],
    );
    let events = judge(
        &server.addr,
        &[
            "critique",
            "--language",
            "zh",
            "--query",
            f["prompt"].as_str().unwrap(),
            "--response",
            f["response"].as_str().unwrap(),
        ],
    );
    check_judgment("bilingual zh", &events);
    let want = r["models"]["autoj-bilingual-layout"]["prompts"]["single_zh"]["ids"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(events[0]["prompt_tokens"], want);
}

#[test]
fn autoj_quantize_writes_a_gguf_that_serves_with_transformers_prompt_length() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("autoj-13b-layout.Q8_0.gguf");
    let res = run(autoj().args([
        "quantize",
        "--model",
        fixture("autoj-13b-layout").to_str().unwrap(),
        "--type",
        "q8_0",
        "--out",
        out.to_str().unwrap(),
    ]));
    let said = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success() && said.contains("wrote"), "{said}");
    let f = &r["prompt_fields"]["pairwise_en"];
    let server = Server::start(&out, &["--no-classifier", "--prompt-format", "autoj"]);
    let events = judge(
        &server.addr,
        &[
            "compare",
            "--language",
            "en",
            "--query",
            f["prompt"].as_str().unwrap(),
            "--response-1",
            f["response"].as_str().unwrap(),
            "--response-2",
            f["response_another"].as_str().unwrap(),
        ],
    );
    check_judgment("GGUF from autoj quantize", &events);
    let want = r["models"]["autoj-13b-layout"]["prompts"]["pairwise_en"]["ids"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        events[0]["prompt_tokens"], want,
        "the GGUF vocabulary tokenizes alike"
    );
    // A type that does not exist is a usage error naming the ones that do.
    let res = run(autoj().args(["quantize", "--model", "x", "--type", "q3", "--out", "y"]));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && err.contains("q4_k_m"), "{err}");
}
