//! Verdicts that always parse, with probabilities from the model's own logits.
//!
//! At the verdict position (right after "final decision is" / "Rating: [[" and their Chinese
//! forms) the model's next-token distribution says how likely each legal verdict is. We score
//! every legal continuation as a whole (product of its token probabilities from one saved
//! attention state), normalise over the legal set, and so get P(Response 1 / Response 2 /
//! Tie) or a distribution over ratings 1-10 and its expected value. When the text has no
//! verdict, the verdict phrase is appended and the most probable legal continuation is the
//! (forced) verdict.

use super::prompt::Lang;
use super::verdict::Winner;

/// Tokens kept free in the context for the forced verdict phrase and its scoring.
pub const VERDICT_RESERVE: usize = 32;

/// Probabilities over the legal verdicts.
#[derive(Debug, Clone, PartialEq)]
pub enum ChoiceScores {
    /// P(Response 1), P(Response 2), P(Tie); they sum to 1.
    Pairwise {
        /// Response 1.
        p_response_1: f32,
        /// Response 2.
        p_response_2: f32,
        /// Tie.
        p_tie: f32,
    },
    /// P(rating = 1..=10) and the expected rating.
    Single {
        /// Index 0 is rating 1.
        distribution: Vec<f32>,
        /// Sum of rating × probability.
        expected: f32,
    },
}

impl ChoiceScores {
    /// The most probable pairwise winner.
    pub fn winner(&self) -> Option<Winner> {
        match self {
            ChoiceScores::Pairwise {
                p_response_1,
                p_response_2,
                p_tie,
            } => {
                let best = p_response_1.max(*p_response_2).max(*p_tie);
                Some(if best == *p_response_1 {
                    Winner::Response1
                } else if best == *p_response_2 {
                    Winner::Response2
                } else {
                    Winner::Tie
                })
            }
            ChoiceScores::Single { .. } => None,
        }
    }

    /// The most probable rating.
    pub fn rating(&self) -> Option<f32> {
        match self {
            ChoiceScores::Single { distribution, .. } => distribution
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| (i + 1) as f32),
            ChoiceScores::Pairwise { .. } => None,
        }
    }
}

/// Does the generated text end at a verdict position (the model is about to write the
/// choice)? The parser reads the last such phrase, so the last capture wins.
pub fn at_verdict_position(text: &str, pairwise: bool) -> bool {
    // Called after every generated token: look only at the tail, never the whole text.
    let mut start = text.len().saturating_sub(48);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let text = &text[start..];
    let t = text.trim_end_matches([' ', '：', ':', '"', '*']);
    if pairwise {
        t.to_ascii_lowercase().ends_with("final decision is") || t.ends_with("最终决定是")
    } else {
        let Some(head) = text.strip_suffix("[[") else {
            return false;
        };
        let head = head.trim_end_matches([' ', '：', ':']);
        head.ends_with("Rating") || head.ends_with("评分")
    }
}

/// The phrase appended to force a verdict, in the template's own words.
pub fn forced_prefix(pairwise: bool, lang: Lang) -> &'static str {
    match (pairwise, lang) {
        (true, Lang::En) => "\n\nSo, the final decision is",
        (true, Lang::Zh) => "\n\n所以，最终决定是",
        (false, Lang::En) => "\n\nRating: [[",
        (false, Lang::Zh) => "\n\n评分: [[",
    }
}

/// The legal continuations' texts, in the order of [`ChoiceScores`].
pub fn candidates(pairwise: bool, lang: Lang, space: bool) -> Vec<String> {
    let sp = if space { "" } else { " " };
    match (pairwise, lang) {
        (true, Lang::En) => ["Response 1", "Response 2", "Tie"]
            .iter()
            .map(|c| format!("{sp}{c}"))
            .collect(),
        (true, Lang::Zh) => ["回应1", "回应2", "平局"]
            .iter()
            .map(|c| c.to_string())
            .collect(),
        // The closing brackets tell "1" from the start of "10".
        (false, _) => (1..=10).map(|r| format!("{r}]]")).collect(),
    }
}

/// Normalises the legal continuations' log-probabilities into [`ChoiceScores`].
pub fn choice_scores(log_p: &[f32], pairwise: bool) -> ChoiceScores {
    let probs = normalise(log_p);
    if pairwise {
        ChoiceScores::Pairwise {
            p_response_1: probs[0],
            p_response_2: probs[1],
            p_tie: probs[2],
        }
    } else {
        let expected = probs
            .iter()
            .enumerate()
            .map(|(i, p)| (i + 1) as f32 * p)
            .sum();
        ChoiceScores::Single {
            distribution: probs,
            expected,
        }
    }
}

/// Log-softmax of one row of logits.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let log_sum = max + sum.ln();
    logits.iter().map(|l| l - log_sum).collect()
}

/// Softmax over log-probabilities (uniform when all are impossible).
fn normalise(log_p: &[f32]) -> Vec<f32> {
    let max = log_p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return vec![1.0 / log_p.len() as f32; log_p.len()];
    }
    let exp: Vec<f32> = log_p.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_positions() {
        assert!(at_verdict_position("blah. So, the final decision is", true));
        assert!(at_verdict_position("So, the Final Decision is ", true));
        assert!(at_verdict_position("所以，最终决定是", true));
        assert!(!at_verdict_position(
            "the final decision is Response 1",
            true
        ));
        assert!(at_verdict_position("Good.\nRating: [[", false));
        assert!(at_verdict_position("评分: [[", false));
        assert!(!at_verdict_position("see [[", false));
    }

    #[test]
    fn normalise_sums_to_one() {
        let p = normalise(&[-1.0, -2.0, f32::NEG_INFINITY]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(p[2], 0.0);
        assert_eq!(normalise(&[f32::NEG_INFINITY; 2]), vec![0.5, 0.5]);
    }

    #[test]
    fn best_choice() {
        let s = ChoiceScores::Pairwise {
            p_response_1: 0.2,
            p_response_2: 0.7,
            p_tie: 0.1,
        };
        assert_eq!(s.winner(), Some(Winner::Response2));
        let mut d = vec![0.0; 10];
        d[6] = 1.0;
        let s = ChoiceScores::Single {
            distribution: d,
            expected: 7.0,
        };
        assert_eq!(s.rating(), Some(7.0));
    }
}
