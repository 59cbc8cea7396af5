//! A Hugging Face model directory's tokenizer files: `tokenizer.json`, or SentencePiece's
//! `tokenizer.model` with `tokenizer_config.json` (`add_bos_token`); then `added_tokens.json`
//! (tokens appended after the vocabulary, with their ids), whose entries named in
//! `special_tokens_map.json` are special.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;
use tokenizers::AddedToken;

use super::{tok_err, TextTokenizer};
use crate::engine::sentencepiece::SpmVocab;
use crate::error::{JudgeError, Result};

impl TextTokenizer {
    /// Loads the tokenizer of a Hugging Face model directory: `tokenizer.json` when present
    /// (BOS as its post-processor says), else SentencePiece's `tokenizer.model` (BOS put
    /// first unless `tokenizer_config.json` says `"add_bos_token": false`, LLaMA's default).
    /// Then the tokens of `added_tokens.json` that the tokenizer lacks are registered at
    /// exactly their ids, which must follow the vocabulary without gaps (special when
    /// `special_tokens_map.json` names them). `eos` comes from the model config. A directory
    /// with neither tokenizer file is a [`JudgeError::ModelLoad`] naming it and both files.
    pub fn from_dir(dir: &Path, eos: &[u32]) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let model = dir.join("tokenizer.model");
        let mut tok = if json.is_file() {
            Self::from_file(&json, eos)?
        } else if model.is_file() {
            let add_bos = config_add_bos(dir)?.unwrap_or(true);
            Self::from_spm(&SpmVocab::read(&model)?, add_bos, eos)?
        } else {
            return Err(JudgeError::ModelLoad {
                path: dir.to_path_buf(),
                reason:
                    "no tokenizer: the directory has neither tokenizer.json nor tokenizer.model"
                        .into(),
            });
        };
        tok.add_tokens_json(dir)?;
        Ok(tok)
    }

    /// Registers the entries of `dir/added_tokens.json` (if any) the tokenizer lacks.
    fn add_tokens_json(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("added_tokens.json");
        let Some(value) = read_json(&path)? else {
            return Ok(());
        };
        let bad = |reason: String| JudgeError::ModelLoad {
            path: path.clone(),
            reason,
        };
        let Value::Object(map) = value else {
            return Err(bad("expected a JSON object of token text to id".into()));
        };
        let mut added = Vec::with_capacity(map.len());
        for (text, id) in map {
            let id = id
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| bad(format!("the id of `{text}` is not a token id: {id}")))?;
            added.push((id, text));
        }
        added.sort();
        let special = special_names(dir)?;
        for (id, text) in added {
            match self.inner.token_to_id(&text) {
                Some(have) if have == id => continue,
                Some(have) => {
                    return Err(bad(format!(
                        "gives `{text}` id {id}, but the tokenizer already has it as id {have}"
                    )))
                }
                None => {}
            }
            let next = self.next_free_id();
            if id != next {
                return Err(bad(format!(
                    "gives `{text}` id {id}, but the next free id is {next} (added ids must \
                     follow the vocabulary without gaps)"
                )));
            }
            let is_special = special.contains(&text);
            // Matched in the raw text, before the normalizer puts `▁` in.
            let token = AddedToken::from(text.clone(), is_special).normalized(false);
            if is_special {
                self.inner.add_special_tokens([token]).map_err(tok_err)?;
            } else {
                self.inner.add_tokens([token]).map_err(tok_err)?;
            }
            if self.inner.token_to_id(&text) != Some(id) {
                return Err(bad(format!("`{text}` did not get id {id}")));
            }
        }
        self.add_named_end_tokens();
        Ok(())
    }

    /// The id the next added token gets: past the model's vocabulary and every added token.
    fn next_free_id(&self) -> u32 {
        let base = self.inner.get_vocab_size(false) as u32;
        let past_added = self
            .inner
            .get_added_tokens_decoder()
            .keys()
            .max()
            .map_or(0, |id| id + 1);
        base.max(past_added)
    }
}

/// `tokenizer_config.json`'s `add_bos_token`, when the file and the key are there.
pub(crate) fn config_add_bos(dir: &Path) -> Result<Option<bool>> {
    let config = read_json(&dir.join("tokenizer_config.json"))?;
    Ok(config.and_then(|c| c.get("add_bos_token").and_then(Value::as_bool)))
}

/// Token texts `special_tokens_map.json` names (as strings, `{"content": ..}` objects, or
/// lists of either, as `additional_special_tokens` is).
pub(crate) fn special_names(dir: &Path) -> Result<HashSet<String>> {
    fn collect(v: &Value, out: &mut HashSet<String>) {
        match v {
            Value::String(s) => {
                out.insert(s.clone());
            }
            Value::Object(o) => {
                if let Some(Value::String(s)) = o.get("content") {
                    out.insert(s.clone());
                }
            }
            Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    let mut names = HashSet::new();
    if let Some(Value::Object(map)) = read_json(&dir.join("special_tokens_map.json"))? {
        map.values().for_each(|v| collect(v, &mut names));
    }
    Ok(names)
}

/// A JSON file's value; `None` when the file does not exist.
pub(crate) fn read_json(path: &Path) -> Result<Option<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(JudgeError::ModelLoad {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| JudgeError::ModelLoad {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })
}
