//! A model directory's LLaMA (SentencePiece BPE) vocabulary as GGUF's `llama` tokenizer
//! metadata: one token per embedding row, each with a score (merges are taken highest score
//! first) and a type. Read from `tokenizer.json` (merge ranks become scores: the first
//! merge scores highest); rows past the tokenizer become `[PAD<id>]` tokens of type
//! unused, as llama.cpp's converter writes them.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use super::HfConfig;
use crate::engine::model::load_err;
use crate::error::Result;

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// The vocabulary as GGUF stores it.
#[derive(Debug, Clone)]
pub struct SpmVocab {
    /// Token texts, by id (one per embedding row).
    pub tokens: Vec<String>,
    /// Merge priority of each token (higher merges first).
    pub scores: Vec<f32>,
    /// llama.cpp token types.
    pub types: Vec<i32>,
    /// Start, end and unknown ids.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// Unknown-token id.
    pub unk: Option<u32>,
    /// Whether a space is put before the text (LLaMA-2 yes, Yi no).
    pub add_space_prefix: bool,
    /// Whether BOS starts every prompt.
    pub add_bos: bool,
}

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

impl SpmVocab {
    /// Reads `tokenizer.json` of `dir`, sized to `rows` embedding rows.
    pub fn read(dir: &Path, rows: usize, cfg: &HfConfig) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let raw = std::fs::read(&path).map_err(|e| {
            load_err(
                &path,
                format!("{e} (autoj quantize reads the vocabulary from tokenizer.json)"),
            )
        })?;
        let tj: TokJson = serde_json::from_slice(&raw).map_err(|e| load_err(&path, e))?;
        if tj.model.kind.as_deref().is_some_and(|k| k != "BPE") || !tj.model.byte_fallback {
            return Err(load_err(
                &path,
                "not a SentencePiece BPE vocabulary with byte fallback (LLaMA / Yi); GGUF \
                 export writes llama tokenizers only",
            ));
        }
        let mut tokens: Vec<Option<String>> = vec![None; rows];
        let mut types = vec![NORMAL; rows];
        for (t, &id) in &tj.model.vocab {
            if let Some(slot) = tokens.get_mut(id as usize) {
                *slot = Some(t.clone());
                if is_byte_piece(t) {
                    types[id as usize] = BYTE;
                }
            }
        }
        let mut rank: HashMap<String, usize> = HashMap::new();
        for (r, m) in tj.model.merges.iter().enumerate() {
            if let Some(t) = merge_result(m) {
                rank.entry(t).or_insert(r);
            }
        }
        let by_name = |n: &str| {
            tj.added_tokens
                .iter()
                .find(|a| a.content == n)
                .map(|a| a.id)
        };
        for a in &tj.added_tokens {
            if let Some(slot) = tokens.get_mut(a.id as usize) {
                *slot = Some(a.content.clone());
                types[a.id as usize] = match (a.special, a.content.as_str()) {
                    (_, "<unk>") => UNKNOWN,
                    (true, _) => CONTROL,
                    (false, _) => USER_DEFINED,
                };
            }
        }
        let mut scores = vec![0f32; rows];
        let tokens: Vec<String> = tokens
            .into_iter()
            .enumerate()
            .map(|(id, t)| match t {
                Some(t) => {
                    if types[id] == NORMAL && t.chars().count() > 1 {
                        // Not made by any merge: never chosen over one that is.
                        scores[id] = rank.get(&t).map_or(-1e9, |&r| -(r as f32));
                    }
                    t
                }
                None => {
                    types[id] = UNUSED;
                    format!("[PAD{id}]")
                }
            })
            .collect();
        let eos = cfg.eos_ids().first().copied().or_else(|| by_name("</s>"));
        let prepends = tj
            .normalizer
            .as_ref()
            .is_some_and(|n| n.to_string().contains("Prepend"));
        Ok(Self {
            tokens,
            scores,
            types,
            bos: by_name("<s>"),
            eos,
            unk: by_name("<unk>"),
            add_space_prefix: prepends,
            add_bos: add_bos(dir),
        })
    }

    /// The `tokenizer.ggml.*` entries.
    pub fn metadata(&self) -> Vec<(&'static str, Value)> {
        let mut md = vec![
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.pre", Value::String("default".into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(self.tokens.iter().cloned().map(Value::String).collect()),
            ),
            (
                "tokenizer.ggml.scores",
                Value::Array(self.scores.iter().map(|&s| Value::F32(s)).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(self.types.iter().map(|&t| Value::I32(t)).collect()),
            ),
            ("tokenizer.ggml.add_bos_token", Value::Bool(self.add_bos)),
            ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
            (
                "tokenizer.ggml.add_space_prefix",
                Value::Bool(self.add_space_prefix),
            ),
        ];
        for (k, v) in [
            ("tokenizer.ggml.bos_token_id", self.bos),
            ("tokenizer.ggml.eos_token_id", self.eos),
            ("tokenizer.ggml.unknown_token_id", self.unk),
        ] {
            if let Some(id) = v {
                md.push((k, Value::U32(id)));
            }
        }
        md
    }
}

/// `add_bos_token` of `tokenizer_config.json` (LLaMA's default, true, when absent).
fn add_bos(dir: &Path) -> bool {
    std::fs::read(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .and_then(|v| v.get("add_bos_token").and_then(|b| b.as_bool()))
        .unwrap_or(true)
}
