//! A tiny LLaMA-style vocabulary (SentencePiece BPE with byte fallback, `▁` for spaces, a
//! space put before the text, `<unk>` `<s>` `</s>` at ids 0-2 and the 256 byte pieces after
//! them) saved as a `tokenizer.json` of the shape transformers writes for LLaMA.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, NormalizerWrapper, Tokenizer};

use crate::error::{JudgeError, Result};

/// Single characters of the vocabulary (besides the byte pieces).
const CHARS: &str =
    "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"()[]-/";

/// Merges, in priority order.
const MERGES: &[(&str, &str)] = &[
    ("▁", "t"),
    ("h", "e"),
    ("▁t", "he"),
    ("i", "n"),
    ("e", "r"),
    ("▁", "a"),
    ("o", "n"),
    ("r", "e"),
    ("▁", "s"),
    ("e", "s"),
    ("▁", "R"),
    ("▁R", "es"),
    ("p", "on"),
    ("s", "e"),
    ("▁Res", "pon"),
    ("▁Respon", "se"),
    ("a", "t"),
    ("▁", "c"),
    ("o", "r"),
    ("i", "s"),
];

fn tok_err(e: impl std::fmt::Display) -> JudgeError {
    JudgeError::Tokenizer(e.to_string())
}

/// The vocabulary's tokens, by id.
pub fn spm_tokens() -> Vec<String> {
    let mut v: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    v.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    v.extend(CHARS.chars().map(String::from));
    v.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    v
}

/// The tokenizer: BPE with byte fallback, LLaMA's normalizer and decoder, `<s>` put first.
pub fn spm_tokenizer() -> Result<Tokenizer> {
    let vocab: tokenizers::models::bpe::Vocab = spm_tokens()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let merges = MERGES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .unk_token("<unk>".into())
        .fuse_unk(true)
        .build()
        .map_err(tok_err)?;
    let mut tok = Tokenizer::new(bpe);
    let normalizer: NormalizerWrapper = tokenizers::normalizers::Sequence::new(vec![
        Prepend::new("▁".into()).into(),
        Replace::new(" ", "▁").map_err(tok_err)?.into(),
    ])
    .into();
    tok.with_normalizer(Some(normalizer)).map_err(tok_err)?;
    tok.with_decoder(Some(DecoderSequence::new(vec![
        Replace::new("▁", " ").map_err(tok_err)?.into(),
        ByteFallback::default().into(),
        Fuse::default().into(),
        Strip::new(' ', 1, 0).into(),
    ])));
    let post = TemplateProcessing::builder()
        .try_single("<s> $A")
        .map_err(tok_err)?
        .special_tokens(vec![("<s>", 1)])
        .build()
        .map_err(tok_err)?;
    tok.with_post_processor(Some(post));
    let specials: Vec<AddedToken> = ["<unk>", "<s>", "</s>"]
        .into_iter()
        .map(|t| AddedToken::from(t, true))
        .collect();
    tok.add_special_tokens(specials).map_err(tok_err)?;
    Ok(tok)
}
