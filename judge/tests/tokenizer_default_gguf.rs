//! The tokenizer rebuilt from the default GGUF's metadata (gpt2 BPE, `smollm`
//! pre-tokenizer) matches llama.cpp id for id on the committed reference tokenizations
//! (`tests/fixtures/smollm2_tokens.json`, made by `scripts/make_tokenizer_fixtures.py`).
//! Skips with a message when `scripts/fetch-models.sh` has not fetched the model.

use std::path::PathBuf;

use autoj_judge::engine::tokenizer::TextTokenizer;
use candle_core::quantized::gguf_file;
use serde_json::Value;

#[test]
fn matches_llama_cpp_reference_tokenizations() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !model.exists() {
        eprintln!(
            "skipping: {} not found; run scripts/fetch-models.sh",
            model.display()
        );
        return;
    }
    let fixtures: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/smollm2_tokens.json")).unwrap(),
    )
    .unwrap();
    let mut file = std::fs::File::open(&model).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let tok = TextTokenizer::from_gguf(&content).expect("tokenizer from GGUF metadata");
    let cases = fixtures["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 20,
        "the fixture file holds the reference cases"
    );
    let mut mismatches = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, true).unwrap();
        if got != want {
            mismatches.push(format!(
                "{text:?}\n  llama.cpp: {want:?}\n  ours:      {got:?}"
            ));
        }
        // Decoding gives the text back (special tokens aside).
        if !text.contains("<|") {
            assert_eq!(tok.decode(&got).unwrap(), text, "round trip of {text:?}");
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
    // Facts the engine relies on: no BOS for this model, and it stops at <|im_end|>.
    assert_eq!(
        tok.encode("hi", true).unwrap(),
        tok.encode("hi", false).unwrap()
    );
    assert!(tok.eos_ids().contains(&2));
}
