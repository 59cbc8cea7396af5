//! Verdicts scored inside the batch. A judgment whose text ended has its verdict found or
//! forced and scored by rows of the ordinary steps, beside every other sequence's tokens:
//!
//! 1. While generating, a row at a verdict position (the text ends in "final decision is",
//!    "Rating: [[", ...) asks for the log-probabilities of the legal continuations' first
//!    tokens with its next token ([`Point`]).
//! 2. When the text ends without a parsed verdict, one row runs the template's verdict phrase
//!    (the pending token first) and asks for the same first-token log-probabilities
//!    ([`Stage::Force`]).
//! 3. Continuations longer than one token ("Response 1" may be two) run as one row holding
//!    a tree of their tokens at the verdict position ([`Stage::Tree`]), as many branches per
//!    step as the cache has room for.
//!
//! No pass ever runs for one sequence alone, so the rest of the batch never waits.

use super::backend::Ask;
use crate::engine::job::UsageStats;
use crate::engine::tokenizer::TextTokenizer;
use crate::error::{JudgeError, Result};
use crate::protocol::outcome::{force, JudgeVerdict, VerdictSource};
use crate::protocol::prompt::Lang;
use crate::protocol::scoring::{candidates, choice_scores, forced_prefix, ChoiceScores};

/// The legal continuations of one protocol and language, tokenized.
#[derive(Debug, Clone)]
pub(super) struct Choices {
    /// Each continuation's ids, in [`ChoiceScores`] order.
    ids: Vec<Vec<u32>>,
    /// Each one's first id (`u32::MAX`, scored minus infinity, for an empty one).
    heads: Vec<u32>,
}

impl Choices {
    fn new(tok: &TextTokenizer, pairwise: bool, lang: Lang, spaced: bool) -> Result<Self> {
        let mut ids = Vec::new();
        for text in candidates(pairwise, lang, spaced) {
            ids.push(tok.encode(&text, false)?);
        }
        let heads = ids
            .iter()
            .map(|i| i.first().copied().unwrap_or(u32::MAX))
            .collect();
        Ok(Self { ids, heads })
    }

    /// The first ids, whose log-probabilities a verdict point asks for.
    pub(super) fn heads(&self) -> &[u32] {
        &self.heads
    }

    /// The continuations longer than one token (they need a tree).
    fn multi(&self) -> Vec<usize> {
        (0..self.ids.len())
            .filter(|&c| self.ids[c].len() > 1)
            .collect()
    }
}

/// A judgment's continuations both ways: after text that ends in a space and after text
/// that does not (made at admission, so a tokenizer error fails the request there).
#[derive(Debug, Clone)]
pub(super) struct JudgeChoices {
    pub(super) pairwise: bool,
    pub(super) lang: Lang,
    plain: Choices,
    spaced: Choices,
}

impl JudgeChoices {
    /// Tokenizes the continuations of `pairwise` judgments in `lang`.
    pub(super) fn new(tok: &TextTokenizer, pairwise: bool, lang: Lang) -> Result<Self> {
        Ok(Self {
            pairwise,
            lang,
            plain: Choices::new(tok, pairwise, lang, false)?,
            spaced: Choices::new(tok, pairwise, lang, true)?,
        })
    }

    /// The continuations after text ending (`spaced`) or not in whitespace.
    pub(super) fn after(&self, spaced: bool) -> &Choices {
        if spaced {
            &self.spaced
        } else {
            &self.plain
        }
    }
}

/// The last verdict position seen while generating: where it is and the first tokens'
/// log-probabilities there.
#[derive(Debug, Clone)]
pub(super) struct Point {
    /// Cache position right after the verdict phrase.
    pub(super) pos: usize,
    /// Whether the text there ended in whitespace (which continuations apply).
    pub(super) spaced: bool,
    /// Per continuation, its first token's log-probability.
    pub(super) log_p: Vec<f32>,
}

/// One step's worth of continuation tree.
#[derive(Debug)]
pub(super) struct Tree {
    /// The continuations it scores.
    cands: Vec<usize>,
    /// Their tokens but the last, branch after branch.
    tokens: Vec<u32>,
    /// Per token, the index of its branch's first token.
    branch: Vec<usize>,
    /// Per token, the continuation's token after it.
    follow: Vec<u32>,
}

/// What is left to do for a verdict.
#[derive(Debug)]
pub(super) enum Stage {
    /// Run the verdict phrase (pending token first) and read the first tokens after it.
    Force {
        /// The tokens to run.
        tokens: Vec<u32>,
        /// Whether the phrase ends in whitespace.
        spaced: bool,
    },
    /// Score the longer continuations' remaining tokens at `base`.
    Tree {
        /// The verdict position.
        base: usize,
        /// This step's branches.
        now: Tree,
        /// Continuations for later steps.
        left: Vec<usize>,
    },
}

/// A judgment whose text is done, its verdict being scored.
#[derive(Debug)]
pub(super) struct Verdicting {
    verdict: JudgeVerdict,
    /// The usage reported after the verdict (measured when the text ended).
    pub(super) usage: UsageStats,
    spaced: bool,
    /// Per continuation, its log-probability so far.
    log_p: Vec<f32>,
    pub(super) stage: Stage,
}

/// Where the verdict of a finished text stands.
pub(super) enum Begun {
    /// Scored already (a parsed verdict whose continuations are all one token), with the
    /// usage to send after it.
    Ready(JudgeVerdict, UsageStats),
    /// Rows of later steps score it.
    Scoring(Box<Verdicting>),
}

/// Starts scoring the verdict of `text`: from `point` when the text holds a parsed verdict
/// and a verdict position was seen, else by forcing the phrase after `pending`.
pub(super) fn begin(
    choices: &JudgeChoices,
    tok: &TextTokenizer,
    text: &str,
    (point, pending): (Option<Point>, Option<u32>),
    usage: UsageStats,
    room: impl Fn(usize) -> usize,
) -> Result<Begun> {
    let verdict = crate::protocol::outcome::verdict_of(text, choices.pairwise);
    if let Some(p) = point.filter(|_| verdict.source == VerdictSource::Parsed) {
        let left = choices.after(p.spaced).multi();
        if left.is_empty() {
            return Ok(Begun::Ready(complete(verdict, &p.log_p, choices), usage));
        }
        let stage = tree_stage(choices.after(p.spaced), p.pos, left, &room)?;
        return Ok(Begun::Scoring(Box::new(Verdicting {
            verdict,
            usage,
            spaced: p.spaced,
            log_p: p.log_p,
            stage,
        })));
    }
    let prefix = forced_prefix(choices.pairwise, choices.lang);
    let mut tokens: Vec<u32> = pending.into_iter().collect();
    tokens.extend(tok.encode(prefix, false)?);
    let spaced = prefix.ends_with(char::is_whitespace);
    Ok(Begun::Scoring(Box::new(Verdicting {
        verdict,
        usage,
        spaced,
        log_p: Vec::new(),
        stage: Stage::Force { tokens, spaced },
    })))
}

impl Verdicting {
    /// The tokens and ask of this verdict's row in the next step.
    pub(super) fn row<'a>(&'a self, choices: &'a JudgeChoices) -> (&'a [u32], Ask<'a>) {
        match &self.stage {
            Stage::Force { tokens, spaced } => {
                (tokens, Ask::Scored(choices.after(*spaced).heads()))
            }
            Stage::Tree { base, now, .. } => (
                &now.tokens,
                Ask::Tree {
                    base: *base,
                    branch: &now.branch,
                    follow: &now.follow,
                },
            ),
        }
    }

    /// Takes the step's answer (`scores`); `Some(verdict)` when it is fully scored.
    /// `kv_len` is the sequence's cache length after the step, `room` the tree room at a
    /// position.
    pub(super) fn absorb(
        &mut self,
        choices: &JudgeChoices,
        scores: &[f32],
        kv_len: usize,
        room: impl Fn(usize) -> usize,
    ) -> Result<Option<JudgeVerdict>> {
        let next = match &mut self.stage {
            Stage::Force { spaced, .. } => {
                self.spaced = *spaced;
                self.log_p = scores.to_vec();
                let left = choices.after(self.spaced).multi();
                (!left.is_empty()).then_some((kv_len, left))
            }
            Stage::Tree { base, now, left } => {
                let mut at = 0;
                for &c in &now.cands {
                    let n = choices.after(self.spaced).ids[c].len() - 1;
                    self.log_p[c] += scores[at..at + n].iter().sum::<f32>();
                    at += n;
                }
                (!left.is_empty()).then(|| (*base, std::mem::take(left)))
            }
        };
        match next {
            Some((base, left)) => {
                self.stage = tree_stage(choices.after(self.spaced), base, left, &room)?;
                Ok(None)
            }
            None => Ok(Some(complete(self.verdict.clone(), &self.log_p, choices))),
        }
    }
}

/// `verdict` with the probabilities of `log_p`, its continuations' log-probabilities (and
/// forced by them when the text had none).
fn complete(mut verdict: JudgeVerdict, log_p: &[f32], choices: &JudgeChoices) -> JudgeVerdict {
    let scores: ChoiceScores = choice_scores(log_p, choices.pairwise);
    if verdict.source == VerdictSource::Unresolved {
        force(&mut verdict, &scores, choices.pairwise, choices.lang);
    }
    verdict.scores = Some(scores);
    verdict
}

/// The tree stage for `left` at `base`: as many whole branches as `room(base)` holds.
fn tree_stage(
    choices: &Choices,
    base: usize,
    mut left: Vec<usize>,
    room: &impl Fn(usize) -> usize,
) -> Result<Stage> {
    let room = room(base);
    let mut now = Tree {
        cands: Vec::new(),
        tokens: Vec::new(),
        branch: Vec::new(),
        follow: Vec::new(),
    };
    while let Some(&c) = left.first() {
        let ids = &choices.ids[c];
        let n = ids.len() - 1;
        if now.tokens.len() + n > room {
            break;
        }
        let first = now.tokens.len();
        now.tokens.extend_from_slice(&ids[..n]);
        now.branch.extend(std::iter::repeat_n(first, n));
        now.follow.extend_from_slice(&ids[1..]);
        now.cands.push(c);
        left.remove(0);
    }
    if now.cands.is_empty() {
        return Err(JudgeError::ContextOverflow(format!(
            "the verdict's continuations need {} positions after position {base} but the \
             key/value cache holds {room} more",
            left.first().map_or(0, |&c| choices.ids[c].len() - 1)
        )));
    }
    Ok(Stage::Tree { base, now, left })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::job::FinishReason;
    use crate::protocol::verdict::Winner;

    fn tokenizer() -> (tempfile::TempDir, TextTokenizer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        crate::testkit::tiny_tokenizer()
            .unwrap()
            .save(&path, false)
            .unwrap();
        let tok = TextTokenizer::from_file(&path, &[2]).unwrap();
        (dir, tok)
    }

    fn usage() -> UsageStats {
        UsageStats {
            prompt_tokens: 10,
            cached_prompt_tokens: 0,
            completion_tokens: 5,
            queue: Duration::ZERO,
            prefill: Duration::ZERO,
            decode: Duration::ZERO,
            finish: FinishReason::Length,
        }
    }

    fn winner(v: &JudgeVerdict) -> Option<Winner> {
        v.scores.as_ref().and_then(ChoiceScores::winner)
    }

    /// Runs the verdict's rows as a backend would answer them (each tree token scoring
    /// `tree_score`) and returns the verdict and the trees' token counts.
    fn drive(begun: Begun, choices: &JudgeChoices, head_scores: &[f32]) -> (JudgeVerdict, usize) {
        let mut v = match begun {
            Begun::Ready(verdict, _) => return (verdict, 0),
            Begun::Scoring(v) => v,
        };
        let mut tree_tokens = 0;
        loop {
            let (tokens, ask) = v.row(choices);
            let scores = match ask {
                Ask::Scored(ids) => {
                    assert_eq!(ids.len(), head_scores.len());
                    head_scores.to_vec()
                }
                Ask::Tree { follow, branch, .. } => {
                    assert_eq!((follow.len(), branch.len()), (tokens.len(), tokens.len()));
                    tree_tokens += tokens.len();
                    vec![-0.25; tokens.len()]
                }
                other => panic!("a verdict row asks {other:?}"),
            };
            let kv_len = 50;
            if let Some(verdict) = v.absorb(choices, &scores, kv_len, |_| usize::MAX).unwrap() {
                return (verdict, tree_tokens);
            }
        }
    }

    #[test]
    fn a_forced_verdict_is_scored_from_its_phrase_then_its_tree() {
        let (_dir, tok) = tokenizer();
        let choices = JudgeChoices::new(&tok, true, Lang::En).unwrap();
        let begun = begin(
            &choices,
            &tok,
            "no verdict in here",
            (None, Some(7)),
            usage(),
            |_| 64,
        )
        .unwrap();
        let Begun::Scoring(v) = &begun else {
            panic!("a forced verdict needs rows");
        };
        let (tokens, ask) = v.row(&choices);
        assert_eq!(tokens[0], 7, "the pending token runs first");
        let phrase = tok.encode(forced_prefix(true, Lang::En), false).unwrap();
        assert_eq!(&tokens[1..], phrase.as_slice());
        assert!(matches!(ask, Ask::Scored(ids) if ids == choices.after(false).heads()));
        let (verdict, tree_tokens) = drive(begun, &choices, &[-3.0, -0.5, -2.0]);
        assert_eq!(verdict.source, VerdictSource::Forced);
        assert_eq!(winner(&verdict), Some(Winner::Response2));
        let multi = choices.after(false).multi();
        let expected: usize = multi
            .iter()
            .map(|&c| choices.after(false).ids[c].len() - 1)
            .sum();
        assert_eq!(
            tree_tokens, expected,
            "every longer continuation's tokens scored once"
        );
    }

    #[test]
    fn a_parsed_verdict_is_scored_from_its_point() {
        let (_dir, tok) = tokenizer();
        let choices = JudgeChoices::new(&tok, true, Lang::En).unwrap();
        let text = "Both are fine. So, the final decision is Response 1";
        let point = Point {
            pos: 40,
            spaced: false,
            log_p: vec![-0.1, -4.0, -5.0],
        };
        let begun = begin(&choices, &tok, text, (Some(point), None), usage(), |_| 64).unwrap();
        let (verdict, _) = drive(begun, &choices, &[]);
        assert_eq!(verdict.source, VerdictSource::Parsed);
        assert_eq!(winner(&verdict), Some(Winner::Response1));
        let Some(ChoiceScores::Pairwise { p_response_1, .. }) = verdict.scores else {
            panic!("pairwise scores");
        };
        assert!(p_response_1 > 0.9, "{p_response_1}");
    }

    #[test]
    fn a_tree_that_cannot_fit_is_refused_by_its_size() {
        let (_dir, tok) = tokenizer();
        let choices = JudgeChoices::new(&tok, true, Lang::En).unwrap();
        // The tiny vocabulary spells every continuation in several tokens: a tree is needed.
        assert!(!choices.after(false).multi().is_empty());
        let point = Point {
            pos: 40,
            spaced: false,
            log_p: vec![-1.0; 3],
        };
        let text = "So, the final decision is Tie";
        let err = match begin(&choices, &tok, text, (Some(point), None), usage(), |_| 0) {
            Err(e) => e,
            Ok(_) => panic!("no room for a tree"),
        };
        assert!(
            matches!(err, JudgeError::ContextOverflow(ref m) if m.contains("after position 40"))
        );
    }
}
