//! SentencePiece BPE vocabularies (LLaMA, Yi), from either source they come in, built into one
//! `tokenizers::Tokenizer`:
//! - a Hugging Face directory's `tokenizer.model`: the `sentencepiece.ModelProto`, read with
//!   prost through the few messages below (the field numbers of `sentencepiece_model.proto`;
//!   fields we do not need are skipped by the decoder);
//! - a GGUF file's `llama` tokenizer (`tokenizer.ggml.*`, read in `tokenizer.rs`).
//!
//! Either way the result is a [`SpmVocab`], and [`build`] turns it into a BPE with byte
//! fallback whose merges are derived from the piece scores: a pair (a, b) may merge when
//! `a + b` is a normal piece, ranked by that piece's score (higher first), which is how
//! SentencePiece's BPE (and llama.cpp's) chooses merges.

use std::path::Path;

use prost::Message;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::{NormalizerWrapper, Tokenizer};

use crate::error::{JudgeError, Result};

/// Piece types (`ModelProto.SentencePiece.Type`; GGUF's `tokenizer.ggml.token_type` uses the
/// same numbers).
pub mod piece_type {
    /// An ordinary piece, produced by merges.
    pub const NORMAL: i32 = 1;
    /// The unknown piece (`<unk>`).
    pub const UNKNOWN: i32 = 2;
    /// A control symbol (`<s>`, `</s>`): never produced from text by SentencePiece itself.
    pub const CONTROL: i32 = 3;
    /// A user-defined symbol: always one piece where its text occurs.
    pub const USER_DEFINED: i32 = 4;
    /// Left unused by training.
    pub const UNUSED: i32 = 5;
    /// A byte piece `<0xNN>`, for byte fallback.
    pub const BYTE: i32 = 6;
}

/// `TrainerSpec.ModelType.BPE`; the only model type we build (UNIGRAM = 1, WORD = 3,
/// CHAR = 4 are refused).
const MODEL_TYPE_BPE: i32 = 2;
/// `TrainerSpec.model_type`'s proto default.
const MODEL_TYPE_DEFAULT: i32 = 1;

/// `sentencepiece.ModelProto`: the pieces and the specs they were trained and normalised
/// with (only the fields the tokenizer needs).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// The vocabulary, by id.
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<Piece>,
    /// How the model was trained (model type, byte fallback, special ids).
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    /// How text is normalised before it is split.
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
}

/// `ModelProto.SentencePiece`: one vocabulary entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Piece {
    /// The piece's text (`▁` for a space).
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    /// Its score: for BPE, the merge priority (higher merges first).
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    /// One of [`piece_type`] (an enum on the wire, read as its number); absent means NORMAL.
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
}

/// `sentencepiece.TrainerSpec`: the training facts the tokenizer depends on.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrainerSpec {
    /// UNIGRAM = 1 (the proto default), BPE = 2, WORD = 3, CHAR = 4.
    #[prost(int32, optional, tag = "3")]
    pub model_type: Option<i32>,
    /// Suffix instead of prefix whitespace markers (not supported when true).
    #[prost(bool, optional, tag = "24")]
    pub treat_whitespace_as_suffix: Option<bool>,
    /// Unknown characters become their UTF-8 byte pieces instead of `<unk>`.
    #[prost(bool, optional, tag = "35")]
    pub byte_fallback: Option<bool>,
    /// Id of the unknown piece (proto default 0).
    #[prost(int32, optional, tag = "40")]
    pub unk_id: Option<i32>,
    /// Id of BOS (proto default 1; negative when there is none).
    #[prost(int32, optional, tag = "41")]
    pub bos_id: Option<i32>,
    /// Id of EOS (proto default 2; negative when there is none).
    #[prost(int32, optional, tag = "42")]
    pub eos_id: Option<i32>,
}

/// `sentencepiece.NormalizerSpec`: what happens to text before it is split.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NormalizerSpec {
    /// Rule name (`identity` for LLaMA and Yi; `nmt_nfkc` and friends need the charsmap).
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Compiled normalisation rules; empty for `identity`.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub precompiled_charsmap: Option<Vec<u8>>,
    /// Put a space before the text (proto default true; Yi sets false).
    #[prost(bool, optional, tag = "3")]
    pub add_dummy_prefix: Option<bool>,
    /// Drop leading and trailing spaces and collapse runs of them (proto default true;
    /// LLaMA and Yi set false).
    #[prost(bool, optional, tag = "4")]
    pub remove_extra_whitespaces: Option<bool>,
    /// Spaces become `▁` (proto default true; not supported when false).
    #[prost(bool, optional, tag = "5")]
    pub escape_whitespaces: Option<bool>,
}

/// A SentencePiece BPE vocabulary and its text handling, whichever file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SpmVocab {
    /// Piece texts, by id.
    pub pieces: Vec<String>,
    /// Scores, by id (merge priority).
    pub scores: Vec<f32>,
    /// Types, by id ([`piece_type`]).
    pub types: Vec<i32>,
    /// The unknown piece's text.
    pub unk: String,
    /// Put `▁` before the text (SentencePiece's `add_dummy_prefix`, GGUF's
    /// `add_space_prefix`).
    pub add_space_prefix: bool,
    /// Drop leading and trailing spaces and collapse runs of spaces first.
    pub remove_extra_whitespaces: bool,
    /// Unknown characters become byte pieces.
    pub byte_fallback: bool,
    /// BOS id, when the vocabulary has one.
    pub bos: Option<u32>,
    /// EOS id, when the vocabulary has one.
    pub eos: Option<u32>,
}

fn spm_err(path: &Path, reason: impl std::fmt::Display) -> JudgeError {
    JudgeError::Tokenizer(format!("{}: {reason}", path.display()))
}

impl SpmVocab {
    /// Reads a `tokenizer.model` file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| JudgeError::ModelLoad {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            JudgeError::Tokenizer(reason) => spm_err(path, reason),
            other => other,
        })
    }

    /// Decodes a serialized `ModelProto` and checks that it is a BPE model we can build.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let proto = ModelProto::decode(bytes).map_err(|e| {
            JudgeError::Tokenizer(format!(
                "not a SentencePiece model (the ModelProto does not decode: {e})"
            ))
        })?;
        Self::from_proto(proto)
    }

    /// Checks a decoded `ModelProto` and takes what the tokenizer needs from it.
    pub fn from_proto(proto: ModelProto) -> Result<Self> {
        let trainer = proto.trainer_spec.unwrap_or_default();
        let norm = proto.normalizer_spec.unwrap_or_default();
        check_supported(&trainer, &norm)?;
        if proto.pieces.is_empty() {
            return Err(JudgeError::Tokenizer(
                "the SentencePiece model has no pieces".into(),
            ));
        }
        let n = proto.pieces.len();
        let mut pieces = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        for (id, p) in proto.pieces.into_iter().enumerate() {
            let text = p.piece.filter(|t| !t.is_empty()).ok_or_else(|| {
                JudgeError::Tokenizer(format!("SentencePiece piece {id} has no text"))
            })?;
            pieces.push(text);
            scores.push(p.score.unwrap_or(0.0));
            types.push(p.r#type.unwrap_or(piece_type::NORMAL));
        }
        let id_in_range = |id: Option<i32>, default: i32| {
            u32::try_from(id.unwrap_or(default))
                .ok()
                .filter(|&i| (i as usize) < n)
        };
        let unk = id_in_range(trainer.unk_id, 0)
            .map(|i| pieces[i as usize].clone())
            .ok_or_else(|| {
                JudgeError::Tokenizer(format!(
                    "SentencePiece unk_id {:?} is not a piece of the {n}",
                    trainer.unk_id.unwrap_or(0)
                ))
            })?;
        Ok(Self {
            bos: id_in_range(trainer.bos_id, 1),
            eos: id_in_range(trainer.eos_id, 2),
            unk,
            add_space_prefix: norm.add_dummy_prefix.unwrap_or(true),
            remove_extra_whitespaces: norm.remove_extra_whitespaces.unwrap_or(true),
            byte_fallback: trainer.byte_fallback.unwrap_or(false),
            pieces,
            scores,
            types,
        })
    }
}

/// Refuses what the tokenizer cannot do as SentencePiece does: other model types than BPE,
/// suffix whitespace, unescaped spaces, and normalization rules beyond `identity`.
fn check_supported(trainer: &TrainerSpec, norm: &NormalizerSpec) -> Result<()> {
    let model_type = trainer.model_type.unwrap_or(MODEL_TYPE_DEFAULT);
    if model_type != MODEL_TYPE_BPE {
        let name = match model_type {
            1 => "unigram".to_string(),
            3 => "word".to_string(),
            4 => "char".to_string(),
            n => format!("unknown ({n})"),
        };
        return Err(JudgeError::Tokenizer(format!(
            "SentencePiece model type `{name}` is not supported (only BPE, as LLaMA and Yi use); \
             give the model directory a tokenizer.json instead"
        )));
    }
    let unsupported = |what: &str| {
        Err(JudgeError::Tokenizer(format!(
            "SentencePiece {what} is not supported; give the model directory a tokenizer.json instead"
        )))
    };
    if trainer.treat_whitespace_as_suffix == Some(true) {
        return unsupported("`treat_whitespace_as_suffix`");
    }
    if norm.escape_whitespaces == Some(false) {
        return unsupported("`escape_whitespaces: false`");
    }
    if norm
        .precompiled_charsmap
        .as_ref()
        .is_some_and(|m| !m.is_empty())
    {
        let name = norm.name.as_deref().unwrap_or("?");
        return unsupported(&format!("normalization `{name}` (a precompiled charsmap)"));
    }
    Ok(())
}

fn tok_err(e: impl std::fmt::Display) -> JudgeError {
    JudgeError::Tokenizer(e.to_string())
}

/// The BPE merges SentencePiece would make, best first: every split of a normal piece into
/// two pieces of the vocabulary, ranked by the whole piece's score (ties: lower id first).
fn merges(vocab: &SpmVocab) -> Vec<(String, String)> {
    let known: std::collections::HashSet<&str> = vocab.pieces.iter().map(String::as_str).collect();
    let mut ranked: Vec<(f32, usize, &str, &str)> = Vec::new();
    for (id, piece) in vocab.pieces.iter().enumerate() {
        let normal = vocab.types.get(id).is_none_or(|t| *t == piece_type::NORMAL);
        if !normal || piece.chars().nth(1).is_none() {
            continue;
        }
        let score = vocab.scores.get(id).copied().unwrap_or(0.0);
        for (split, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(split);
            if known.contains(a) && known.contains(b) {
                ranked.push((score, id, a, b));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    ranked
        .into_iter()
        .map(|(_, _, a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The normalizer: optionally drop extra spaces, optionally put `▁` first, then every space
/// becomes `▁`.
fn normalizer(vocab: &SpmVocab) -> Result<NormalizerWrapper> {
    let mut steps: Vec<NormalizerWrapper> = Vec::new();
    if vocab.remove_extra_whitespaces {
        // SentencePiece drops leading and trailing spaces and keeps one of each run. (`\A`
        // and `\z`: Oniguruma's `^` and `$` would match at every line.)
        let ends = ReplacePattern::Regex(r"\A +| +\z".into());
        steps.push(Replace::new(ends, "").map_err(tok_err)?.into());
        let runs = ReplacePattern::Regex(" {2,}".into());
        steps.push(Replace::new(runs, " ").map_err(tok_err)?.into());
    }
    if vocab.add_space_prefix {
        steps.push(Prepend::new("▁".into()).into());
    }
    steps.push(Replace::new(" ", "▁").map_err(tok_err)?.into());
    Ok(if steps.len() == 1 {
        steps.remove(0)
    } else {
        tokenizers::normalizers::Sequence::new(steps).into()
    })
}

/// Builds the tokenizer of a SentencePiece BPE vocabulary: BPE with byte fallback (when the
/// vocabulary asks for it), SentencePiece's normalisation, and a decoder that turns `▁` back
/// into spaces, byte pieces into characters, and drops the space put first. Special and
/// user-defined pieces are registered by the caller.
pub fn build(vocab: &SpmVocab) -> Result<Tokenizer> {
    let ids: Vocab = vocab
        .pieces
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(ids, merges(vocab))
        .byte_fallback(vocab.byte_fallback)
        .unk_token(vocab.unk.clone())
        .fuse_unk(true)
        .build()
        .map_err(tok_err)?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_normalizer(Some(normalizer(vocab)?))
        .map_err(tok_err)?;
    let mut decoders = vec![
        Replace::new("▁", " ").map_err(tok_err)?.into(),
        ByteFallback::default().into(),
        Fuse::default().into(),
    ];
    if vocab.add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small LLaMA-style model: `<unk>` `<s>` `</s>`, the 256 byte pieces, then `pieces`.
    fn model(pieces: &[(&str, f32)], add_dummy_prefix: Option<bool>) -> ModelProto {
        let piece = |text: &str, score: f32, kind: i32| Piece {
            piece: Some(text.into()),
            score: Some(score),
            r#type: (kind != piece_type::NORMAL).then_some(kind),
        };
        let mut all = vec![
            piece("<unk>", 0.0, piece_type::UNKNOWN),
            piece("<s>", 0.0, piece_type::CONTROL),
            piece("</s>", 0.0, piece_type::CONTROL),
        ];
        all.extend((0..=255u8).map(|b| piece(&format!("<0x{b:02X}>"), 0.0, piece_type::BYTE)));
        all.extend(pieces.iter().map(|(t, s)| piece(t, *s, piece_type::NORMAL)));
        ModelProto {
            pieces: all,
            trainer_spec: Some(TrainerSpec {
                model_type: Some(MODEL_TYPE_BPE),
                byte_fallback: Some(true),
                ..Default::default()
            }),
            normalizer_spec: Some(NormalizerSpec {
                name: Some("identity".into()),
                add_dummy_prefix,
                remove_extra_whitespaces: Some(false),
                ..Default::default()
            }),
        }
    }

    const PIECES: &[(&str, f32)] = &[
        ("▁hello", -1.0),
        ("hello", -2.0),
        ("hell", -3.0),
        ("he", -4.0),
        ("ll", -5.0),
        ("▁", -10.0),
        ("h", -10.0),
        ("e", -10.0),
        ("l", -10.0),
        ("o", -10.0),
    ];

    fn ids(tok: &Tokenizer, text: &str) -> Vec<u32> {
        tok.encode(text, false).unwrap().get_ids().to_vec()
    }

    fn id(vocab: &SpmVocab, piece: &str) -> u32 {
        vocab.pieces.iter().position(|p| p == piece).unwrap() as u32
    }

    #[test]
    fn an_encoded_model_proto_decodes_back_into_the_tokenizer() {
        let bytes = model(PIECES, None).encode_to_vec();
        let vocab = SpmVocab::from_bytes(&bytes).unwrap();
        assert_eq!(vocab.pieces.len(), 3 + 256 + PIECES.len());
        assert_eq!(vocab.types[0], piece_type::UNKNOWN);
        assert_eq!(vocab.types[3], piece_type::BYTE);
        assert_eq!(
            vocab.types[268],
            piece_type::NORMAL,
            "absent type is NORMAL"
        );
        assert_eq!(vocab.scores[259], -1.0);
        assert_eq!(
            (vocab.unk.as_str(), vocab.bos, vocab.eos),
            ("<unk>", Some(1), Some(2))
        );
        // Proto defaults: a dummy prefix unless the spec says otherwise.
        assert!(vocab.add_space_prefix && vocab.byte_fallback && !vocab.remove_extra_whitespaces);
        let tok = build(&vocab).unwrap();
        // "hello" → "▁hello" merges up by score; "é" falls back to its two UTF-8 bytes.
        assert_eq!(ids(&tok, "hello"), vec![id(&vocab, "▁hello")]);
        let want = vec![id(&vocab, "▁"), id(&vocab, "h"), 3 + 0xC3, 3 + 0xA9];
        assert_eq!(ids(&tok, "hé"), want);
        assert_eq!(tok.decode(&want, true).unwrap(), "hé");
        assert_eq!(ids(&tok, ""), Vec::<u32>::new());
    }

    #[test]
    fn without_a_dummy_prefix_text_is_taken_as_it_is() {
        let bytes = model(PIECES, Some(false)).encode_to_vec();
        let vocab = SpmVocab::from_bytes(&bytes).unwrap();
        assert!(!vocab.add_space_prefix);
        let tok = build(&vocab).unwrap();
        assert_eq!(ids(&tok, "hello"), vec![id(&vocab, "hello")]);
        assert_eq!(ids(&tok, " hello"), vec![id(&vocab, "▁hello")]);
        assert_eq!(tok.decode(&ids(&tok, " hello"), true).unwrap(), " hello");
    }

    #[test]
    fn extra_spaces_are_removed_when_the_spec_says_so() {
        let mut proto = model(PIECES, None);
        proto
            .normalizer_spec
            .as_mut()
            .unwrap()
            .remove_extra_whitespaces = None; // default true
        let vocab = SpmVocab::from_proto(proto).unwrap();
        assert!(vocab.remove_extra_whitespaces);
        let tok = build(&vocab).unwrap();
        let want = ids(&tok, "hello hello");
        assert_eq!(ids(&tok, "  hello    hello "), want);
        assert_eq!(want, vec![id(&vocab, "▁hello"); 2]);
    }

    #[test]
    fn bad_bytes_and_unsupported_models_are_clear_errors() {
        let err = SpmVocab::from_bytes(b"\xff\xff\xff not a proto").unwrap_err();
        assert!(
            err.to_string().contains("not a SentencePiece model"),
            "{err}"
        );
        let mut unigram = model(PIECES, None);
        unigram.trainer_spec.as_mut().unwrap().model_type = None; // proto default: UNIGRAM
        let err = SpmVocab::from_proto(unigram).unwrap_err();
        assert!(
            err.to_string().contains("`unigram` is not supported"),
            "{err}"
        );
        let mut nfkc = model(PIECES, None);
        let spec = nfkc.normalizer_spec.as_mut().unwrap();
        spec.name = Some("nmt_nfkc".into());
        spec.precompiled_charsmap = Some(vec![1, 2, 3]);
        let err = SpmVocab::from_proto(nfkc).unwrap_err();
        assert!(err.to_string().contains("`nmt_nfkc`"), "{err}");
        let empty = ModelProto::default().encode_to_vec();
        assert!(SpmVocab::from_bytes(&empty).is_err());
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let path = Path::new("/nonexistent/tokenizer.model");
        let err = SpmVocab::read(path).unwrap_err();
        assert!(matches!(err, JudgeError::ModelLoad { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/tokenizer.model"),
            "{err}"
        );
    }
}
