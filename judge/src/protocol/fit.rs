//! Fitting a request into the model's context.
//!
//! When prompt + `max_new_tokens` exceed the context, the longest input fields are cut from
//! the middle (keeping each field's beginning and end, where queries state the task and
//! responses state their conclusion) and a visible marker replaces the cut. The caller
//! reports how many tokens were removed; a request that forbids truncation gets
//! `ContextOverflow` instead.

use crate::error::{JudgeError, Result};
use crate::protocol::prompt::{render, Lang, PromptFormat, Task};

/// What fitting needs of a tokenizer: text to ids and back. The engine's tokenizer
/// implements it; keeping it a trait keeps this module free of the engine.
pub trait TokenText {
    /// Token ids of `text`, with the beginning-of-sequence token first when `with_bos`.
    fn encode(&self, text: &str, with_bos: bool) -> Result<Vec<u32>>;
    /// The text of `ids`.
    fn decode(&self, ids: &[u32]) -> Result<String>;
}

/// Text put where a field was cut, so the judge (and a human reading the prompt) sees it.
pub const CUT_MARKER: &str = "\n[...]\n";

/// No field is cut below this many tokens; past that, the request cannot fit.
const MIN_FIELD_TOKENS: usize = 16;

/// What to do when the input does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationPolicy {
    /// Cut the longest fields from the middle.
    Auto,
    /// Refuse the request.
    Refuse,
}

/// A request's prompt, ready for the model.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Prompt token ids, BOS included when the model wants one.
    pub prompt_ids: Vec<u32>,
    /// Input tokens removed by truncation (0 when nothing was cut).
    pub truncated_tokens: usize,
}

/// Room a prompt must fit: the model's context, less what generation may add.
#[derive(Debug, Clone, Copy)]
pub struct Room {
    /// The model's context, in tokens.
    pub context: usize,
    /// Tokens kept free after the prompt (max_new_tokens and the verdict reserve).
    pub max_new_tokens: usize,
    /// What to do when the input does not fit.
    pub policy: TruncationPolicy,
}

/// Builds the prompt for `task` in `lang` and `format` and makes it fit `room`.
pub fn prepare(
    task: &Task,
    (lang, format): (Lang, &PromptFormat),
    tok: &impl TokenText,
    room: Room,
) -> Result<Prepared> {
    let Room {
        context,
        max_new_tokens,
        policy,
    } = room;
    let encode = |t: &Task| -> Result<Vec<u32>> { tok.encode(&render(t, lang, format)?, true) };
    let ids = encode(task)?;
    if ids.len() + max_new_tokens <= context {
        return Ok(Prepared {
            prompt_ids: ids,
            truncated_tokens: 0,
        });
    }
    let over = ids.len() + max_new_tokens - context;
    if policy == TruncationPolicy::Refuse {
        return Err(JudgeError::ContextOverflow(format!(
            "the prompt has {} tokens and max_new_tokens is {max_new_tokens}, {over} more than the model's context of {context}; \
             shorten the input, lower max_new_tokens, or allow truncation",
            ids.len()
        )));
    }
    let fields: Vec<Vec<u32>> = task
        .fields()
        .iter()
        .map(|f| tok.encode(f, false))
        .collect::<Result<_>>()?;
    let original: usize = fields.iter().map(Vec::len).sum();
    let marker = tok.encode(CUT_MARKER, false)?.len();
    // Re-rendering can merge tokens differently at the cut, so cut a little more each round
    // until the prompt fits.
    let mut need = over;
    for _ in 0..8 {
        let Some(keep) = level_lengths(&fields, need, marker) else {
            break;
        };
        let cut_fields = fields
            .iter()
            .zip(&keep)
            .map(|(ids, &k)| cut_middle(tok, ids, k))
            .collect::<Result<Vec<_>>>()?;
        let ids = encode(&task.with_fields(&cut_fields))?;
        if ids.len() + max_new_tokens <= context {
            let kept: usize = keep.iter().zip(&fields).map(|(&k, f)| k.min(f.len())).sum();
            return Ok(Prepared {
                prompt_ids: ids,
                truncated_tokens: original - kept,
            });
        }
        need += ids.len() + max_new_tokens - context;
    }
    Err(JudgeError::ContextOverflow(format!(
        "the input cannot fit the model's context of {context} tokens with max_new_tokens {max_new_tokens} \
         even with every field cut to {MIN_FIELD_TOKENS} tokens; lower max_new_tokens"
    )))
}

/// Chooses a kept length per field so that at least `need` tokens (plus one marker per cut
/// field) are removed, cutting only the longest fields down to a common level. `None` when
/// even the minimum lengths are not enough.
fn level_lengths(fields: &[Vec<u32>], need: usize, marker: usize) -> Option<Vec<usize>> {
    let removed_at = |level: usize| -> usize {
        fields
            .iter()
            .filter(|f| f.len() > level)
            .map(|f| (f.len() - level).saturating_sub(marker))
            .sum()
    };
    let longest = fields.iter().map(Vec::len).max().unwrap_or(0);
    if longest <= MIN_FIELD_TOKENS || removed_at(MIN_FIELD_TOKENS) < need {
        return None;
    }
    // The highest level that still removes enough.
    let (mut lo, mut hi) = (MIN_FIELD_TOKENS, longest);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if removed_at(mid) >= need {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(fields.iter().map(|f| f.len().min(lo)).collect())
}

/// Keeps the first and last tokens of a field, `keep` in all, with the marker between.
fn cut_middle(tok: &impl TokenText, ids: &[u32], keep: usize) -> Result<String> {
    if ids.len() <= keep {
        return tok.decode(ids);
    }
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let mut s = tok.decode(&ids[..head])?;
    s.push_str(CUT_MARKER);
    s.push_str(&tok.decode(&ids[ids.len() - tail..])?);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_cut_longest_first() {
        let fields = vec![vec![0; 20], vec![0; 100], vec![0; 60]];
        let keep = level_lengths(&fields, 50, 0).unwrap();
        assert_eq!(keep[0], 20, "short field untouched");
        let removed: usize = fields.iter().zip(&keep).map(|(f, k)| f.len() - k).sum();
        assert!(removed >= 50);
        assert!(
            keep[1] == keep[2],
            "the two long fields level to the same length"
        );
    }

    #[test]
    fn impossible_cut_is_none() {
        let fields = vec![vec![0; 20], vec![0; 20]];
        assert!(level_lengths(&fields, 100, 0).is_none());
    }
}
