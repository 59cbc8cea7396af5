//! With the embedded default model (SmolLM2-135M-Instruct Q4_1, fetched by
//! `scripts/fetch-models.sh`), `autoj serve` + `autoj compare` streams a critique to the end.
//! Skips with a message when the model has not been fetched.

mod common;

use std::path::PathBuf;

use common::{autoj, run, Server};

fn default_model() -> Option<PathBuf> {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} not found; run scripts/fetch-models.sh",
            p.display()
        );
        None
    }
}

#[test]
fn compare_streams_a_critique_with_the_default_model() {
    let Some(model) = default_model() else { return };
    let server = Server::start(&model, &["--threads", "2", "--no-classifier"]);
    let out = run(autoj().args([
        "compare",
        "--addr",
        &server.addr,
        "--query",
        "What is the boiling point of water at sea level?",
        "--response-1",
        "100 degrees Celsius.",
        "--response-2",
        "About 50 degrees Celsius.",
        "--max-new-tokens",
        "48",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (critique, tail) = text
        .split_once("\n\n== verdict: ")
        .expect("verdict line after the critique");
    assert!(
        critique.trim().len() > 20,
        "a real critique was streamed: {critique:?}"
    );
    assert!(
        tail.contains("prompt +") && tail.contains("generated tokens"),
        "{tail}"
    );
}
