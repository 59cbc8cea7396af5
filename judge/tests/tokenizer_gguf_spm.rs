//! A `llama` (SentencePiece) GGUF vocabulary becomes a BPE whose merges follow the token
//! scores, with byte fallback for unknown characters; worked out by hand on a small vocab.

use std::collections::HashMap;

use autoj_judge::engine::tokenizer::TextTokenizer;
use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};

/// (token, score, type): 1 normal, 2 unknown, 3 control, 6 byte.
fn vocab() -> Vec<(String, f32, i32)> {
    let mut v = vec![
        ("<unk>".to_string(), 0.0, 2),
        ("<s>".to_string(), 0.0, 3),
        ("</s>".to_string(), 0.0, 3),
    ];
    for b in 0..=255u8 {
        v.push((format!("<0x{b:02X}>"), 0.0, 6));
    }
    for (t, s) in [
        ("▁hello", -1.0),
        ("hello", -2.0),
        ("hell", -3.0),
        ("he", -4.0),
        ("ll", -5.0),
        ("▁w", -6.0),
        ("▁", -10.0),
        ("h", -10.0),
        ("e", -10.0),
        ("l", -10.0),
        ("o", -10.0),
        ("w", -10.0),
        ("r", -10.0),
        ("d", -10.0),
    ] {
        v.push((t.to_string(), s, 1));
    }
    v
}

fn content() -> Content {
    let v = vocab();
    let mut md = HashMap::new();
    md.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
    md.insert(
        "tokenizer.ggml.tokens".into(),
        Value::Array(v.iter().map(|(t, _, _)| Value::String(t.clone())).collect()),
    );
    md.insert(
        "tokenizer.ggml.scores".into(),
        Value::Array(v.iter().map(|(_, s, _)| Value::F32(*s)).collect()),
    );
    md.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array(v.iter().map(|(_, _, k)| Value::I32(*k)).collect()),
    );
    md.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(1));
    md.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(2));
    md.insert("tokenizer.ggml.unknown_token_id".into(), Value::U32(0));
    Content {
        magic: VersionedMagic::GgufV3,
        metadata: md,
        tensor_infos: HashMap::new(),
        tensor_data_offset: 0,
    }
}

fn id(t: &str) -> u32 {
    vocab().iter().position(|(x, _, _)| x == t).unwrap() as u32
}

#[test]
fn merges_follow_scores_and_bytes_fall_back() {
    let tok = TextTokenizer::from_gguf(&content()).expect("spm tokenizer");
    // "hello world" → "▁hello▁world": he, ll, hell, hello, ▁hello by score, then ▁w.
    let got = tok.encode("hello world", true).unwrap();
    let want: Vec<u32> = ["<s>", "▁hello", "▁w", "o", "r", "l", "d"]
        .iter()
        .map(|t| id(t))
        .collect();
    assert_eq!(got, want);
    assert_eq!(tok.decode(&got).unwrap(), "hello world");
    // "é" is not in the vocabulary: its UTF-8 bytes C3 A9 as byte tokens.
    let got = tok.encode("hé", false).unwrap();
    assert_eq!(got, vec![id("▁"), id("h"), id("<0xC3>"), id("<0xA9>")]);
    assert_eq!(tok.decode(&got).unwrap(), "hé");
    assert_eq!(tok.eos_ids(), &[2]);
}
