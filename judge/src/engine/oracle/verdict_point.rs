//! Forced-choice scoring on the serial engine: the model state saved at the verdict
//! position, and every legal continuation scored from it through candle's stock models (the
//! batched engine scores inside its own step loop). The arithmetic is in
//! [`crate::protocol::scoring`].

use candle_core::{Tensor, D};

use super::stock::{JudgeModel, Snapshot};
use crate::error::Result;
use crate::protocol::prompt::Lang;
use crate::protocol::scoring::{candidates, choice_scores, ChoiceScores};

/// The model state at a verdict position: its attention state, the next-token logits and
/// whether the text there already ends in a space.
pub struct VerdictPoint {
    snapshot: Snapshot,
    logits: Tensor,
    pos: usize,
    trailing_space: bool,
}

impl VerdictPoint {
    /// Captures the model right after the verdict phrase; `logits` are for the next token
    /// and `pos` is the next position.
    pub fn capture(model: &JudgeModel, logits: &Tensor, pos: usize, text: &str) -> Self {
        Self {
            snapshot: model.snapshot(),
            logits: logits.clone(),
            pos,
            trailing_space: text.ends_with(char::is_whitespace),
        }
    }
}

/// Scores every legal continuation from `point` and returns the normalised probabilities.
/// Leaves the model in an unspecified state (callers reset it before the next request).
pub fn score(
    model: &mut JudgeModel,
    point: &VerdictPoint,
    pairwise: bool,
    lang: Lang,
) -> Result<ChoiceScores> {
    let first = candle_nn::ops::log_softmax(&point.logits, D::Minus1)?.to_vec1::<f32>()?;
    let mut log_p = Vec::new();
    for text in candidates(pairwise, lang, point.trailing_space) {
        let ids = model.tokenizer.encode(&text, false)?;
        let Some((&head, rest)) = ids.split_first() else {
            log_p.push(f32::NEG_INFINITY);
            continue;
        };
        let mut lp = first
            .get(head as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY);
        model.restore(&point.snapshot);
        let mut prev = head;
        for (i, &id) in rest.iter().enumerate() {
            let logits = model.forward(&[prev], point.pos + i)?;
            let row = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec1::<f32>()?;
            lp += row.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY);
            prev = id;
        }
        log_p.push(lp);
    }
    Ok(choice_scores(&log_p, pairwise))
}
