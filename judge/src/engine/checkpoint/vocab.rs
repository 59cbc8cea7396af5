//! A model directory's LLaMA (SentencePiece BPE) vocabulary as GGUF's `llama` tokenizer
//! metadata, in the tokenizer module's own [`SpmVocab`]: one piece per embedding row, each
//! with a score (merges are taken highest score first) and a type. Read from
//! `tokenizer.json` (merge ranks become scores: the first merge scores highest) or, where
//! a directory has only that, `tokenizer.model` with its `added_tokens.json`; rows past the
//! tokenizer become `[PAD<id>]` pieces of type unused, as llama.cpp's converter writes them.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use super::HfConfig;
use crate::engine::sentencepiece::piece_type::{
    BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED,
};
use crate::engine::sentencepiece::SpmVocab;
use crate::engine::tokenizer::dir::{config_add_bos, read_json, special_names};
use crate::error::{load_err, Result};

#[derive(serde::Deserialize)]
struct TokJson {
    #[serde(default)]
    added_tokens: Vec<Added>,
    model: TokModel,
    #[serde(default)]
    normalizer: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct Added {
    id: u32,
    content: String,
    #[serde(default)]
    special: bool,
}

#[derive(serde::Deserialize)]
struct TokModel {
    #[serde(rename = "type")]
    kind: Option<String>,
    vocab: HashMap<String, u32>,
    #[serde(default)]
    merges: Vec<serde_json::Value>,
    #[serde(default)]
    byte_fallback: bool,
    #[serde(default)]
    unk_token: Option<String>,
}

/// One merge of `tokenizer.json`: `"a b"` (older files) or `["a", "b"]`.
fn merge_result(m: &serde_json::Value) -> Option<String> {
    match m {
        serde_json::Value::String(s) => s.split_once(' ').map(|(a, b)| format!("{a}{b}")),
        serde_json::Value::Array(v) => match v.as_slice() {
            [a, b] => Some(format!("{}{}", a.as_str()?, b.as_str()?)),
            _ => None,
        },
        _ => None,
    }
}

fn is_byte_piece(t: &str) -> bool {
    t.len() == 6 && t.starts_with("<0x") && t.ends_with('>')
}

/// The vocabulary of `dir` with one piece per embedding row (`rows`), and whether BOS
/// starts a prompt (`tokenizer_config.json`'s `add_bos_token`, LLaMA's default on).
pub fn read(dir: &Path, rows: usize, cfg: &HfConfig) -> Result<(SpmVocab, bool)> {
    let mut vocab = if dir.join("tokenizer.json").is_file() {
        from_tokenizer_json(dir)?
    } else if dir.join("tokenizer.model").is_file() {
        from_tokenizer_model(dir)?
    } else {
        return Err(load_err(
            dir,
            "no tokenizer.json or tokenizer.model to export",
        ));
    };
    if let Some(&eos) = cfg.eos_ids().first() {
        vocab.eos = Some(eos);
    }
    if vocab.pieces.len() > rows {
        return Err(load_err(
            dir,
            format!(
                "the tokenizer has {} ids for {rows} embedding rows",
                vocab.pieces.len()
            ),
        ));
    }
    for id in vocab.pieces.len()..rows {
        vocab.pieces.push(format!("[PAD{id}]"));
        vocab.scores.push(0.0);
        vocab.types.push(UNUSED);
    }
    Ok((vocab, config_add_bos(dir)?.unwrap_or(true)))
}

/// `tokenizer.json`'s BPE as SentencePiece pieces: ids from the vocabulary and the added
/// tokens, scores from the merge ranks, types from the byte-piece names and specialness.
fn from_tokenizer_json(dir: &Path) -> Result<SpmVocab> {
    let path = dir.join("tokenizer.json");
    let raw = std::fs::read(&path).map_err(|e| load_err(&path, e))?;
    let tj: TokJson = serde_json::from_slice(&raw).map_err(|e| load_err(&path, e))?;
    if tj.model.kind.as_deref().is_some_and(|k| k != "BPE") || !tj.model.byte_fallback {
        return Err(load_err(
            &path,
            "not a SentencePiece BPE vocabulary with byte fallback (LLaMA / Yi); GGUF \
             export writes llama tokenizers only",
        ));
    }
    let ids = tj
        .model
        .vocab
        .values()
        .chain(tj.added_tokens.iter().map(|a| &a.id));
    let len = ids.max().map_or(0, |&m| m as usize + 1);
    let mut pieces: Vec<Option<String>> = vec![None; len];
    let mut types = vec![NORMAL; len];
    for (t, &id) in &tj.model.vocab {
        pieces[id as usize] = Some(t.clone());
        if is_byte_piece(t) {
            types[id as usize] = BYTE;
        }
    }
    let unk = tj.model.unk_token.clone().unwrap_or_else(|| "<unk>".into());
    for a in &tj.added_tokens {
        pieces[a.id as usize] = Some(a.content.clone());
        types[a.id as usize] = match a.special {
            _ if a.content == unk => UNKNOWN,
            true => CONTROL,
            false => USER_DEFINED,
        };
    }
    let mut rank: HashMap<String, usize> = HashMap::new();
    for (r, m) in tj.model.merges.iter().enumerate() {
        if let Some(t) = merge_result(m) {
            rank.entry(t).or_insert(r);
        }
    }
    let mut scores = vec![0f32; len];
    let pieces: Vec<String> = pieces
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            let t = t.unwrap_or_else(|| {
                types[id] = UNUSED;
                format!("[PAD{id}]")
            });
            if types[id] == NORMAL && t.chars().count() > 1 {
                // Not made by any merge: never chosen over one that is.
                scores[id] = rank.get(&t).map_or(-1e9, |&r| -(r as f32));
            }
            t
        })
        .collect();
    let by_name = |n: &str| pieces.iter().position(|p| p == n).map(|i| i as u32);
    let add_space_prefix = tj
        .normalizer
        .as_ref()
        .is_some_and(|n| n.to_string().contains("Prepend"));
    Ok(SpmVocab {
        bos: by_name("<s>"),
        eos: by_name("</s>"),
        pieces,
        scores,
        types,
        unk,
        add_space_prefix,
        remove_extra_whitespaces: false,
        byte_fallback: true,
    })
}

/// `tokenizer.model` with the tokens `added_tokens.json` puts after its pieces (control
/// tokens where `special_tokens_map.json` names them).
fn from_tokenizer_model(dir: &Path) -> Result<SpmVocab> {
    let mut vocab = SpmVocab::read(&dir.join("tokenizer.model"))?;
    let path = dir.join("added_tokens.json");
    let Some(serde_json::Value::Object(added)) = read_json(&path)? else {
        return Ok(vocab);
    };
    let special = special_names(dir)?;
    let mut added: Vec<(u64, String)> = added
        .into_iter()
        .filter_map(|(t, id)| id.as_u64().map(|id| (id, t)))
        .collect();
    added.sort();
    for (id, text) in added {
        if (id as usize) < vocab.pieces.len() {
            continue;
        }
        if id as usize != vocab.pieces.len() {
            return Err(load_err(
                &path,
                format!("`{text}` leaves a gap before id {id}"),
            ));
        }
        let kind = if special.contains(&text) {
            CONTROL
        } else {
            USER_DEFINED
        };
        vocab.pieces.push(text);
        vocab.scores.push(0.0);
        vocab.types.push(kind);
    }
    Ok(vocab)
}

/// The `tokenizer.ggml.*` entries of `vocab`.
pub fn metadata(vocab: &SpmVocab, add_bos: bool) -> Vec<(&'static str, Value)> {
    let unk = vocab.pieces.iter().position(|p| *p == vocab.unk);
    let mut md = vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.pre", Value::String("default".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(vocab.pieces.iter().cloned().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(vocab.scores.iter().map(|&s| Value::F32(s)).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(vocab.types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        ("tokenizer.ggml.add_bos_token", Value::Bool(add_bos)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
        (
            "tokenizer.ggml.add_space_prefix",
            Value::Bool(vocab.add_space_prefix),
        ),
    ];
    for (k, v) in [
        ("tokenizer.ggml.bos_token_id", vocab.bos),
        ("tokenizer.ggml.eos_token_id", vocab.eos),
        ("tokenizer.ggml.unknown_token_id", unk.map(|u| u as u32)),
    ] {
        if let Some(id) = v {
            md.push((k, Value::U32(id)));
        }
    }
    md
}
