//! The verdict of one judgment as the engine reports it: what was parsed from the critique
//! (or forced at the verdict position), how it was obtained, and its probabilities.

use super::prompt::Lang;
use super::scoring::{forced_prefix, ChoiceScores};
use super::verdict::{parse_pairwise, parse_single, PairwiseParse, SingleParse, Winner};

/// How a verdict was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictSource {
    /// Parsed from the text.
    Parsed,
    /// The text had no verdict; the verdict phrase was appended and the most probable legal
    /// continuation chosen.
    Forced,
    /// The text had no verdict and none could be forced.
    Unresolved,
}

/// The protocol-specific verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Pairwise.
    Pairwise(PairwiseParse),
    /// Single.
    Single(SingleParse),
}

/// The verdict event.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeVerdict {
    /// The result.
    pub outcome: Outcome,
    /// Parsed from the text, forced at the verdict position, or unresolved.
    pub source: VerdictSource,
    /// The verdict sentence, or the whole text when unresolved.
    pub raw_text: String,
    /// Probabilities of the legal verdicts at the verdict position.
    pub scores: Option<ChoiceScores>,
}

/// Parses the verdict from the whole generated text.
pub fn verdict_of(text: &str, pairwise: bool) -> JudgeVerdict {
    let (outcome, sentence, resolved) = if pairwise {
        let p = parse_pairwise(text);
        let (sentence, resolved) = (p.verdict_sentence.clone(), p.winner.is_some());
        (Outcome::Pairwise(p), sentence, resolved)
    } else {
        let s = parse_single(text);
        let (sentence, resolved) = (s.verdict_sentence.clone(), s.rating.is_some());
        (Outcome::Single(s), sentence, resolved)
    };
    // An unresolved verdict carries the whole text, so the client sees what the model wrote.
    let (raw_text, source) = if resolved {
        (sentence.unwrap_or_default(), VerdictSource::Parsed)
    } else {
        (text.to_string(), VerdictSource::Unresolved)
    };
    JudgeVerdict {
        outcome,
        source,
        raw_text,
        scores: None,
    }
}

/// Turns an unresolved verdict into the forced one: the most probable legal choice.
pub fn force(verdict: &mut JudgeVerdict, scores: &ChoiceScores, pairwise: bool, lang: Lang) {
    let prefix = forced_prefix(pairwise, lang).trim_start();
    let choice = match (&mut verdict.outcome, pairwise) {
        (Outcome::Pairwise(p), true) => {
            p.winner = scores.winner();
            let zh = lang == Lang::Zh;
            match p.winner {
                Some(Winner::Response1) => {
                    if zh {
                        "回应1"
                    } else {
                        " Response 1"
                    }
                }
                Some(Winner::Response2) => {
                    if zh {
                        "回应2"
                    } else {
                        " Response 2"
                    }
                }
                _ => {
                    if zh {
                        "平局"
                    } else {
                        " Tie"
                    }
                }
            }
            .to_string()
        }
        (Outcome::Single(s), _) => {
            s.rating = scores.rating();
            format!("{}]]", s.rating.unwrap_or_default())
        }
        _ => return,
    };
    verdict.raw_text = format!("{prefix}{choice}");
    verdict.source = VerdictSource::Forced;
}
