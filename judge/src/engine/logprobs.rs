//! Token log-probabilities for chat requests that ask for them (OpenAI's `logprobs` and
//! `top_logprobs`): the chosen token's and the most likely alternatives', from the step's
//! logits over the ids the tokenizer can produce, before temperature and top-p.
//!
//! A token's text is what it adds after the token before it (`decode([prev, id])` less
//! `decode([prev])`), so SentencePiece's word-initial spaces are kept where decoding the
//! token alone would strip them. A token that is part of a UTF-8 character has U+FFFD in
//! its text; its bytes are exact for byte-fallback pieces (`<0xNN>`), else the text's.

use super::job::{TokenLogprobs, TokenProb};
use super::tokenizer::TextTokenizer;
use crate::error::Result;
use crate::protocol::scoring::log_softmax;

/// `chosen`'s log-probability and the `top` most likely tokens under `logits`, each
/// token's text read after `prev`.
pub(crate) fn token_logprobs(
    tok: &TextTokenizer,
    logits: &[f32],
    (prev, chosen): (u32, u32),
    top: usize,
) -> Result<TokenLogprobs> {
    let log_p = log_softmax(logits);
    let mut best: Vec<u32> = (0..log_p.len() as u32).collect();
    let top = top.min(best.len());
    let by_p = |a: &u32, b: &u32| {
        log_p[*b as usize]
            .total_cmp(&log_p[*a as usize])
            .then(a.cmp(b))
    };
    if top > 0 && top < best.len() {
        best.select_nth_unstable_by(top - 1, by_p);
    }
    best.truncate(top);
    best.sort_by(by_p);
    let before = tok.decode(&[prev])?;
    let prob = |id: u32| -> Result<TokenProb> {
        let full = tok.decode(&[prev, id])?;
        let text = full
            .strip_prefix(before.as_str())
            .unwrap_or(&full)
            .to_string();
        Ok(TokenProb {
            id,
            bytes: bytes_of(tok, id, &text),
            text,
            logprob: log_p.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY),
        })
    };
    Ok(TokenLogprobs {
        chosen: prob(chosen)?,
        top: best.into_iter().map(prob).collect::<Result<_>>()?,
    })
}

/// The token's bytes: the byte of a `<0xNN>` piece, else its text's.
fn bytes_of(tok: &TextTokenizer, id: u32, text: &str) -> Vec<u8> {
    if text.contains('\u{FFFD}') {
        let piece = tok.id_to_token(id).unwrap_or_default();
        let byte = piece
            .strip_prefix("<0x")
            .and_then(|p| p.strip_suffix('>'))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let Some(b) = byte {
            return vec![b];
        }
    }
    text.as_bytes().to_vec()
}
