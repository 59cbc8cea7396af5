//! A SentencePiece `tokenizer.model` gives the ids of the real references: the sentencepiece
//! library itself, transformers' `tokenizer.json` of the same vocabulary, and llama.cpp's
//! GGUF of it. `scripts/spm-reference.sh` writes `models/spm-reference/` from llama.cpp's
//! LLaMA test vocabulary (`models/vocab/ggml-vocab-llama-spm.gguf`): LLaMA's
//! `tokenizer.model` and transformers' conversion of it, a Yi-style model (no dummy prefix,
//! `add_bos_token: false`), one that removes extra spaces, and sentencepiece's ids for
//! llama.cpp's `.inp` cases, hand-written cases and Auto-J prompts filled from
//! `../shared/autoj` (when it is there). Skips with a message when the folder is absent.

use std::path::{Path, PathBuf};

use autoj_judge::engine::tokenizer::TextTokenizer;
use candle_core::quantized::gguf_file::Content;
use serde_json::Value;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The reference cases: text and sentencepiece's ids for each variant, by variant name.
struct Case {
    text: String,
    ids: serde_json::Map<String, Value>,
}

impl Case {
    fn want(&self, variant: &str) -> Vec<u32> {
        self.ids[variant]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    }
}

/// Reads `reference.json`; `None` (after saying why) when the reference was not written.
fn reference() -> Option<(PathBuf, Vec<Case>, Value)> {
    let dir = models().join("spm-reference");
    let path = dir.join("reference.json");
    if !path.is_file() {
        eprintln!(
            "skipping: {} not found; run scripts/spm-reference.sh",
            path.display()
        );
        return None;
    }
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cases = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut ids = c.as_object().unwrap().clone();
            let text = ids.remove("text").unwrap().as_str().unwrap().to_string();
            Case { text, ids }
        })
        .collect();
    Some((dir, cases, json["meta"].clone()))
}

/// A directory holding only `files` copied from `from` (so `from_dir` takes `tokenizer.model`
/// even where the reference folder has a `tokenizer.json` too).
fn only(from: &Path, files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(from.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

/// Cases where `tok` differs from sentencepiece's `variant` ids, described.
fn mismatches(tok: &TextTokenizer, cases: &[Case], variant: &str) -> Vec<String> {
    cases
        .iter()
        .filter_map(|c| {
            let want = c.want(variant);
            let got = tok.encode(&c.text, false).unwrap();
            (got != want).then(|| {
                let text: String = c.text.chars().take(80).collect();
                // Where they part, with a few ids either side.
                let at = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
                let window = |ids: &[u32]| ids[at.saturating_sub(3)..ids.len().min(at + 6)].to_vec();
                format!(
                    "{text:?}: ids part at {at} of {}\n    sentencepiece: {:?}\n    ours:          {:?}",
                    want.len(),
                    window(&want),
                    window(&got)
                )
            })
        })
        .collect()
}

fn assert_exact(what: &str, tok: &TextTokenizer, cases: &[Case], variant: &str) {
    let wrong = mismatches(tok, cases, variant);
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} cases differ from sentencepiece:\n  {}",
        wrong.len(),
        cases.len(),
        wrong.join("\n  ")
    );
    eprintln!("{what}: {} of {} exact", cases.len(), cases.len());
}

/// The reference holds Auto-J prompts whenever ../shared/autoj is there, so these tests
/// never pass on the hand-written cases alone where the real prompts could be checked.
fn check_case_counts(cases: &[Case], meta: &Value) {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/autoj");
    let prompts = meta["autoj_prompts"].as_u64().unwrap();
    eprintln!("{} cases, {prompts} of them Auto-J prompts", cases.len());
    assert!(cases.len() >= 60, "llama.cpp's and the hand-written cases");
    if shared.join("prompt_templates.json").is_file() {
        assert!(
            prompts > 0,
            "../shared/autoj is there but the reference has no Auto-J prompt; rerun scripts/spm-reference.sh"
        );
    } else {
        eprintln!("note: ../shared/autoj not found; Auto-J prompts not checked");
    }
}

#[test]
fn llama_tokenizer_model_gives_sentencepieces_ids_as_tokenizer_json_and_gguf_do() {
    let Some((dir, cases, meta)) = reference() else {
        return;
    };
    check_case_counts(&cases, &meta);
    let llama = dir.join("llama");
    let model_dir = only(
        &llama,
        &[
            "tokenizer.model",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ],
    );
    let from_model = TextTokenizer::from_dir(model_dir.path(), &[2]).unwrap();
    assert_exact("tokenizer.model", &from_model, &cases, "llama");
    let from_json = TextTokenizer::from_dir(&llama, &[2]).unwrap();
    assert_exact("transformers' tokenizer.json", &from_json, &cases, "llama");
    let gguf = models().join("vocab/ggml-vocab-llama-spm.gguf");
    let content = Content::read(&mut std::fs::File::open(gguf).unwrap()).unwrap();
    let from_gguf = TextTokenizer::from_gguf(&content).unwrap();
    assert_exact("llama.cpp's GGUF", &from_gguf, &cases, "llama");

    for c in &cases {
        // BOS first, as LLaMA's tokenizer_config says, and the text back from the ids.
        let mut with_bos = vec![1];
        with_bos.extend(c.want("llama"));
        assert_eq!(from_model.encode(&c.text, true).unwrap(), with_bos);
        assert_eq!(from_json.encode(&c.text, true).unwrap(), with_bos);
        let back = from_model.decode(&with_bos).unwrap();
        assert_eq!(back, c.text, "decode of {:?}", c.text);
    }
    assert_eq!(from_model.vocab_size(), 32000);
    assert_eq!(from_model.bos_id(), Some(1));
    assert_eq!(from_model.eos_ids(), &[2]);
}

#[test]
fn yi_style_model_has_no_dummy_prefix_and_no_bos() {
    let Some((dir, cases, _)) = reference() else {
        return;
    };
    let tok = TextTokenizer::from_dir(&dir.join("yi-style"), &[]).unwrap();
    assert_exact("Yi-style tokenizer.model", &tok, &cases, "yi_style");
    let hello = tok.encode("Hello", true).unwrap();
    assert_eq!(hello, tok.encode("Hello", false).unwrap(), "no BOS");
    assert_ne!(
        hello,
        tok.encode(" Hello", false).unwrap(),
        "no space put first"
    );
    for c in &cases {
        assert_eq!(tok.decode(&c.want("yi_style")).unwrap(), c.text);
    }
    // No EOS from the caller: the model's own (`</s>`, id 2).
    assert_eq!(tok.eos_ids(), &[2]);
}

#[test]
fn extra_spaces_are_removed_as_sentencepiece_removes_them() {
    let Some((dir, cases, _)) = reference() else {
        return;
    };
    let tok = TextTokenizer::from_dir(&dir.join("squeeze"), &[2]).unwrap();
    assert_exact(
        "tokenizer.model removing extra spaces",
        &tok,
        &cases,
        "squeeze",
    );
}
