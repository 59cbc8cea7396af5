//! Text ⇄ token ids for the judge model.
//!
//! A Hugging Face model directory brings its `tokenizer.json`, or only SentencePiece's
//! `tokenizer.model` (as Auto-J 13B is published): [`TextTokenizer::from_dir`] takes either,
//! plus `added_tokens.json` and `tokenizer_config.json` (`dir.rs`). A GGUF file carries its
//! vocabulary in metadata; we rebuild an equivalent `tokenizers::Tokenizer` from it for both
//! GGUF tokenizer kinds, because candle's built-in GGUF tokenizer does not know pre-tokenizers
//! such as SmolLM's and splits text differently from llama.cpp:
//! - `gpt2`: byte-level BPE from `tokens` + `merges`, with the pre-tokenizer named by
//!   `tokenizer.ggml.pre`;
//! - `llama`: SentencePiece BPE with byte fallback, merges derived from the token scores,
//!   built by `sentencepiece.rs` exactly as a `tokenizer.model` is.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::engine::sentencepiece::{self, piece_type, SpmVocab};
use crate::error::{JudgeError, Result};

pub(crate) mod dir;

/// The regex llama.cpp uses for `llama3`/`llama-bpe` style pre-tokenization.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The judge's tokenizer plus the facts generation needs: whether to prepend BOS, and which
/// ids end a sequence.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    bos: Option<u32>,
    add_bos: bool,
    eos_ids: Vec<u32>,
    /// Pieces of type unused at the end of the vocabulary (the `[PAD<id>]` rows a converter
    /// writes for embedding rows past the tokenizer): never generated.
    unused_tail: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("bos", &self.bos)
            .field("add_bos", &self.add_bos)
            .field("eos_ids", &self.eos_ids)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> JudgeError {
    JudgeError::Tokenizer(e.to_string())
}

/// Names of tokens that end a turn in common chat formats; resolved against the vocabulary
/// at load so a chat model stops at the end of its answer even when its metadata names a
/// different EOS.
const END_TOKEN_NAMES: &[&str] = &[
    "</s>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end|>",
];

impl TextTokenizer {
    /// Loads `tokenizer.json` from a Hugging Face model directory. BOS handling is read off
    /// the tokenizer's own post-processor; `eos` comes from the model config.
    pub fn from_file(path: &Path, eos: &[u32]) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| JudgeError::ModelLoad {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        // Does the tokenizer's post-processor prepend a BOS? Encode nothing and look.
        let probe = inner.encode("", true).map_err(tok_err)?;
        let bos = probe.get_ids().first().copied();
        let mut tok = Self {
            inner,
            bos,
            add_bos: bos.is_some(),
            eos_ids: eos.to_vec(),
            unused_tail: 0,
        };
        tok.add_named_end_tokens();
        Ok(tok)
    }

    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let md = &content.metadata;
        let model = md_str(md, "tokenizer.ggml.model")?;
        let tokens = md_strings(md, "tokenizer.ggml.tokens")?;
        let types = md_i32s(md, "tokenizer.ggml.token_type").unwrap_or_default();
        let bos = md_u32(md, "tokenizer.ggml.bos_token_id");
        let eos = md_u32(md, "tokenizer.ggml.eos_token_id");
        let add_bos_meta = md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok());
        let (mut inner, default_add_bos) = match model.as_str() {
            "gpt2" => (build_gpt2(md, &tokens)?, is_llama3_pre(&gguf_pre(md))),
            "llama" => (
                sentencepiece::build(&spm_from_gguf(md, &tokens, &types)?)?,
                true,
            ),
            other => {
                return Err(JudgeError::Tokenizer(format!(
                    "GGUF tokenizer kind `{other}` is not supported (supported: gpt2, llama)"
                )))
            }
        };
        add_special_tokens(&mut inner, &tokens, &types)?;
        let mut tok = Self {
            inner,
            bos,
            add_bos: add_bos_meta.unwrap_or(default_add_bos) && bos.is_some(),
            eos_ids: eos.into_iter().collect(),
            unused_tail: unused_tail(&types),
        };
        tok.set_bos_processor();
        tok.add_named_end_tokens();
        Ok(tok)
    }

    /// Builds the tokenizer of a SentencePiece vocabulary (a `tokenizer.model` read by
    /// [`SpmVocab::read`]), the same one a GGUF `llama` vocabulary gives. BOS is put first
    /// when `add_bos` and the vocabulary has one; `eos` comes from the model config (the
    /// vocabulary's own EOS when empty).
    pub fn from_spm(vocab: &SpmVocab, add_bos: bool, eos: &[u32]) -> Result<Self> {
        let mut inner = sentencepiece::build(vocab)?;
        add_special_tokens(&mut inner, &vocab.pieces, &vocab.types)?;
        let eos_ids = if eos.is_empty() {
            vocab.eos.into_iter().collect()
        } else {
            eos.to_vec()
        };
        let mut tok = Self {
            inner,
            bos: vocab.bos,
            add_bos: add_bos && vocab.bos.is_some(),
            eos_ids,
            unused_tail: unused_tail(&vocab.types),
        };
        tok.set_bos_processor();
        tok.add_named_end_tokens();
        Ok(tok)
    }

    /// Gives the inner tokenizer a post-processor that puts BOS first when the model wants
    /// it (as transformers' LLaMA `tokenizer.json` has), so that a tokenizer built here and
    /// [saved](Self::save) loads back through [`from_file`](Self::from_file) with the same
    /// BOS handling. [`encode`](Self::encode) adds BOS itself and never runs it.
    fn set_bos_processor(&mut self) {
        let Some(bos) = self.bos.filter(|_| self.add_bos) else {
            return;
        };
        let Some(text) = self.inner.id_to_token(bos) else {
            return;
        };
        let template = TemplateProcessing::builder()
            .try_single(vec![text.clone(), "$A".into()])
            .and_then(|b| {
                b.try_pair(vec![
                    text.clone(),
                    "$A".into(),
                    format!("{text}:1"),
                    "$B:1".into(),
                ])
            })
            .map(|b| b.special_tokens(vec![(text.clone(), bos)]).build());
        // A BOS text the template syntax cannot hold (a space, a `:`) only costs the saved
        // file its BOS: nothing here reads it back.
        if let Ok(Ok(template)) = template {
            self.inner.with_post_processor(Some(template));
        }
    }

    fn add_named_end_tokens(&mut self) {
        for name in END_TOKEN_NAMES {
            if let Some(id) = self.inner.token_to_id(name) {
                if !self.eos_ids.contains(&id) && self.bos != Some(id) {
                    self.eos_ids.push(id);
                }
            }
        }
    }

    /// Encodes text as the model sees it: special-token text (e.g. `<|im_start|>`) becomes
    /// the special token, and BOS is prepended when `with_bos` and the model wants one.
    pub fn encode(&self, text: &str, with_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if with_bos && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Decodes ids to text, dropping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tok_err)
    }

    /// Token ids that end generation.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The text of a token id, if any (used to render chat templates).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// BOS token id, when the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Size of the vocabulary including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// How many ids, from 0, the model may generate: up to the highest id of the
    /// vocabulary and its added tokens, less a tail of unused pieces. Embedding rows past it
    /// are padding (Auto-J 13B: 32,128 rows, 32,000 pieces and its added tokens) and are
    /// never sampled. Walks the vocabulary: ask once, not per token.
    pub fn producible(&self) -> usize {
        let top = self.inner.get_vocab(true).into_values().max();
        let top = top.map_or(0, |id| id as usize + 1);
        top.saturating_sub(self.unused_tail)
    }

    /// Writes the tokenizer as a `tokenizer.json` (e.g. one read from a GGUF file, to carry
    /// to a machine that runs a random-weight model with the same vocabulary).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(tok_err)
    }
}

/// Unused pieces at the end of a vocabulary's types.
fn unused_tail(types: &[i32]) -> usize {
    types
        .iter()
        .rev()
        .take_while(|&&t| t == sentencepiece::piece_type::UNUSED)
        .count()
}

fn md_str(md: &HashMap<String, Value>, key: &str) -> Result<String> {
    md.get(key)
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| JudgeError::Tokenizer(format!("GGUF metadata lacks `{key}`")))
}

fn md_u32(md: &HashMap<String, Value>, key: &str) -> Option<u32> {
    md.get(key).and_then(|v| v.to_u32().ok())
}

fn md_strings(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>> {
    let arr = md
        .get(key)
        .and_then(|v| v.to_vec().ok())
        .ok_or_else(|| JudgeError::Tokenizer(format!("GGUF metadata lacks the array `{key}`")))?;
    arr.iter()
        .map(|v| v.to_string().cloned().map_err(tok_err))
        .collect()
}

fn md_i32s(md: &HashMap<String, Value>, key: &str) -> Option<Vec<i32>> {
    let arr = md.get(key)?.to_vec().ok()?;
    arr.iter().map(|v| v.to_i32().ok()).collect()
}

fn md_f32s(md: &HashMap<String, Value>, key: &str) -> Option<Vec<f32>> {
    let arr = md.get(key)?.to_vec().ok()?;
    arr.iter().map(|v| v.to_f32().ok()).collect()
}

/// `tokenizer.ggml.pre`, `default` when absent.
fn gguf_pre(md: &HashMap<String, Value>) -> String {
    md.get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "default".to_string())
}

/// LLaMA-3's pre-tokenizer: llama.cpp then takes a word that is a whole token as that token
/// without merging (`ignore_merges`) and puts BOS first unless the file says otherwise.
fn is_llama3_pre(pre: &str) -> bool {
    matches!(pre, "llama3" | "llama-bpe" | "llama-v3")
}

/// Byte-level BPE (GPT-2 family) with the pre-tokenizer llama.cpp applies for `pre`.
fn build_gpt2(md: &HashMap<String, Value>, tokens: &[String]) -> Result<Tokenizer> {
    let merges_raw = md_strings(md, "tokenizer.ggml.merges")?;
    let merges = merges_raw
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| JudgeError::Tokenizer(format!("malformed merge `{m}`")))
        })
        .collect::<Result<Vec<_>>>()?;
    let vocab = vocab_map(tokens);
    let pre = gguf_pre(md);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(is_llama3_pre(&pre))
        .build()
        .map_err(tok_err)?;
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tok: PreTokenizerWrapper = match pre.as_str() {
        // GPT-2's own regex, applied by the byte-level pre-tokenizer.
        "default" | "gpt2" | "gpt-2" => byte_level.into(),
        // StarCoder-style: every digit on its own, then the GPT-2 regex.
        "smollm" | "starcoder" | "refact" | "codeshell" => PreSequence::new(vec![
            Digits::new(true).into(),
            byte_level.into(),
        ])
        .into(),
        p if is_llama3_pre(p) => {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_SPLIT.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tok_err)?;
            PreSequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into()
        }
        other => {
            return Err(JudgeError::Tokenizer(format!(
                "GGUF pre-tokenizer `{other}` is not supported (supported: default, gpt2, smollm, starcoder, refact, codeshell, llama3, llama-bpe); \
                 use the model's tokenizer.json instead"
            )))
        }
    };
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tok));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tok)
}

fn vocab_map(tokens: &[String]) -> Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

/// The SentencePiece BPE vocabulary of a GGUF `llama` tokenizer (llama.cpp always falls
/// back to byte pieces and never drops extra spaces).
fn spm_from_gguf(
    md: &HashMap<String, Value>,
    tokens: &[String],
    types: &[i32],
) -> Result<SpmVocab> {
    let scores = md_f32s(md, "tokenizer.ggml.scores").ok_or_else(|| {
        JudgeError::Tokenizer("GGUF llama tokenizer lacks `tokenizer.ggml.scores`".into())
    })?;
    let unk = md_u32(md, "tokenizer.ggml.unknown_token_id")
        .and_then(|id| tokens.get(id as usize).cloned())
        .unwrap_or_else(|| "<unk>".to_string());
    let add_space_prefix = md
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(true);
    Ok(SpmVocab {
        pieces: tokens.to_vec(),
        scores,
        types: types.to_vec(),
        unk,
        add_space_prefix,
        remove_extra_whitespaces: false,
        byte_fallback: true,
        bos: md_u32(md, "tokenizer.ggml.bos_token_id"),
        eos: md_u32(md, "tokenizer.ggml.eos_token_id"),
    })
}

/// Registers control, unknown and user-defined tokens so their text in the input maps to the
/// token itself, as llama.cpp does when parsing special tokens (and as `tokenizer.json`
/// files of LLaMA models register `<unk>`, `<s>` and `</s>`).
fn add_special_tokens(tok: &mut Tokenizer, tokens: &[String], types: &[i32]) -> Result<()> {
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        match types.get(id) {
            Some(&piece_type::CONTROL | &piece_type::UNKNOWN) => {
                special.push(AddedToken::from(t.clone(), true))
            }
            // Matched in the raw text (not after the normalizer put `▁` in), as llama.cpp
            // and SentencePiece match user-defined pieces.
            Some(&piece_type::USER_DEFINED) => {
                user.push(AddedToken::from(t.clone(), false).normalized(false))
            }
            _ => {}
        }
    }
    if !special.is_empty() {
        tok.add_special_tokens(special).map_err(tok_err)?;
    }
    if !user.is_empty() {
        tok.add_tokens(user).map_err(tok_err)?;
    }
    Ok(())
}

impl crate::protocol::fit::TokenText for TextTokenizer {
    fn encode(&self, text: &str, with_bos: bool) -> Result<Vec<u32>> {
        TextTokenizer::encode(self, text, with_bos)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        TextTokenizer::decode(self, ids)
    }
}
