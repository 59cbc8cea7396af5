//! Our GGUF tokenizer against llama.cpp's own tokenizer tests: every `ggml-vocab-*.gguf` in
//! `models/vocab/` (fetched by `scripts/fetch-vocabs.sh` from the pinned llama-cpp-python
//! sdist) with its `.gguf.inp` cases and the ids llama.cpp gives them in `.gguf.out`. The
//! files are read as llama.cpp's `tests/test-tokenizer-0.cpp` reads them: inputs separated
//! by `\n__ggml_vocab_test__\n`, one line of space-separated ids per input, tokenized
//! without BOS (`add_special = false`) and without parsing special-token text (no input
//! holds any).
//!
//! Every vocabulary in the folder is in [`EXPECTED`]: the ones we load must give exactly
//! llama.cpp's ids on every case, and each one we refuse is listed with the reason. A
//! vocabulary that is not listed, or that behaves otherwise than listed, fails the test.
//! Skips with a message when `models/vocab/` is absent.

use std::path::{Path, PathBuf};

use autoj_judge::engine::tokenizer::TextTokenizer;
use candle_core::quantized::gguf_file::Content;

/// How llama.cpp's test program separates the inputs of a `.inp` file.
const SEP: &str = "\n__ggml_vocab_test__\n";

/// What each vocabulary of llama.cpp's test set does with our loader.
enum Expect {
    /// Loads, and every case gives exactly llama.cpp's ids.
    Exact,
    /// Refused at load; the error names this (kind or pre-tokenizer) and why it is refused.
    Refused(&'static str),
}

/// Refused: a GGUF pre-tokenizer (the regex llama.cpp splits text with before BPE) that we
/// have not implemented; the error says to use the model's tokenizer.json instead.
const PRE: &str = "pre-tokenizer";

const EXPECTED: &[(&str, Expect)] = &[
    ("ggml-vocab-llama-spm.gguf", Expect::Exact),
    ("ggml-vocab-phi-3.gguf", Expect::Exact),
    ("ggml-vocab-gpt-2.gguf", Expect::Exact),
    ("ggml-vocab-llama-bpe.gguf", Expect::Exact),
    ("ggml-vocab-refact.gguf", Expect::Exact),
    ("ggml-vocab-starcoder.gguf", Expect::Exact),
    // WordPiece (BERT), not a generative judge's tokenizer.
    ("ggml-vocab-bert-bge.gguf", Expect::Refused("kind `bert`")),
    // Gemma 4's own tokenizer kind.
    ("ggml-vocab-gemma-4.gguf", Expect::Refused("kind `gemma4`")),
    ("ggml-vocab-command-r.gguf", Expect::Refused(PRE)),
    ("ggml-vocab-deepseek-coder.gguf", Expect::Refused(PRE)),
    ("ggml-vocab-deepseek-llm.gguf", Expect::Refused(PRE)),
    ("ggml-vocab-falcon.gguf", Expect::Refused(PRE)),
    ("ggml-vocab-mpt.gguf", Expect::Refused(PRE)),
    ("ggml-vocab-qwen2.gguf", Expect::Refused(PRE)),
    ("ggml-vocab-qwen35.gguf", Expect::Refused(PRE)),
];

fn vocab_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/vocab")
}

/// The `(input, ids)` cases of `vocab` (`.gguf.inp` / `.gguf.out`), split as
/// test-tokenizer-0.cpp does.
fn cases(vocab: &Path) -> Vec<(String, Vec<u32>)> {
    let with = |ext: &str| {
        let mut p = vocab.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let raw = std::fs::read_to_string(with(".inp")).unwrap();
    let mut inputs: Vec<&str> = raw.split(SEP).collect();
    if raw.ends_with(SEP) || raw.is_empty() {
        inputs.pop(); // a separator at the very end starts no case
    }
    let out = std::fs::read_to_string(with(".out")).unwrap();
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{}: inputs vs outputs",
        vocab.display()
    );
    inputs.into_iter().map(String::from).zip(outputs).collect()
}

/// Vocabularies with test cases, by file name.
fn vocabularies(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gguf") && dir.join(format!("{n}.inp")).is_file())
        .collect();
    names.sort();
    names
}

/// Loads a vocabulary and counts the cases whose ids differ from llama.cpp's.
fn run(path: &Path) -> Result<(usize, Vec<String>), String> {
    let mut file = std::fs::File::open(path).unwrap();
    let content = Content::read(&mut file).map_err(|e| e.to_string())?;
    let tok = TextTokenizer::from_gguf(&content).map_err(|e| e.to_string())?;
    let cases = cases(path);
    let mut wrong = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, false).unwrap();
        if &got != want {
            wrong.push(format!(
                "{text:?}\n    llama.cpp: {want:?}\n    ours:      {got:?}"
            ));
        }
    }
    Ok((cases.len(), wrong))
}

#[test]
fn every_llamacpp_vocabulary_gives_llamacpps_ids_or_is_refused_as_listed() {
    let dir = vocab_dir();
    if !dir.is_dir() {
        eprintln!(
            "skipping: {} not found; run scripts/fetch-vocabs.sh",
            dir.display()
        );
        return;
    }
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for name in vocabularies(&dir) {
        let outcome = run(&dir.join(&name));
        let expect = EXPECTED.iter().find(|(n, _)| *n == name).map(|(_, e)| e);
        match (&outcome, expect) {
            (Ok((n, wrong)), Some(Expect::Exact)) if wrong.is_empty() => {
                summary.push(format!("{name}: {n} of {n} exact"));
            }
            (Err(e), Some(Expect::Refused(why))) if e.contains(why) => {
                summary.push(format!("{name}: refused ({e})"));
            }
            (Ok((n, wrong)), _) => failures.push(format!(
                "{name}: {} of {n} cases differ from llama.cpp\n  {}",
                wrong.len(),
                wrong.join("\n  ")
            )),
            (Err(e), _) => failures.push(format!("{name}: not loaded: {e}")),
        }
        if expect.is_none() {
            failures.push(format!("{name} is not listed in EXPECTED"));
        }
    }
    eprintln!("{}", summary.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
