//! Reads the verdict out of a critique the judge wrote.
//!
//! Auto-J ends a pairwise critique with "So, the final decision is Response 1 / Response 2 /
//! Tie" (Chinese: "所以，最终决定是回应1/回应2/平局") and a single-response critique with
//! "Rating: \[\[N\]\]" (Chinese: "评分: \[\[N\]\]"). Auto-J's own scripts find the *last* such phrase
//! and read what follows it; these functions do the same, so a parse here agrees with every
//! parse Auto-J makes, and they resolve a few more texts Auto-J gives up on (case, full-width
//! punctuation, quotes around the choice, Chinese). They also keep the sentence the verdict
//! came from and, for pairwise critiques, the key factors the judge listed, so a caller can
//! show why an answer was reached or that none was.
//!
//! Give these functions the generated critique only, not the prompt: Auto-J's templates quote
//! the verdict formats themselves ("Rating: \[\[5\]\]", "final decision is Response 1 / ...").
//!
//! Everything here indexes strings by byte offsets taken from the same string they index.
//! Case-insensitive matching only folds ASCII letters, so a match found that way starts and
//! ends on character boundaries of the original text, whatever non-ASCII text surrounds it.

/// The English phrase Auto-J's pairwise verdict sentence contains (matched ignoring ASCII case
/// and only where no letter or digit follows, so `is:` counts and `isn't` does not; Auto-J
/// itself looks for the phrase followed by a space).
const EN_DECISION: &str = "final decision is";
/// The Chinese phrase the Chinese pairwise template asks the verdict sentence to contain.
const ZH_DECISION: &str = "最终决定是";
/// Characters allowed between a decision phrase and the choice: models wrap the choice in
/// quotes or Markdown emphasis, or add a colon, none of which changes the answer.
const DECORATION: &[char] = &[
    ':', '：', '"', '\'', '“', '”', '‘', '’', '「', '」', '『', '』', '*', '_', '`', ',', '，',
];

/// Which of the two responses a pairwise critique prefers.
///
/// It exists so callers compare verdicts as values, not strings in two languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner {
    /// The first response shown to the judge is better.
    Response1,
    /// The second response shown to the judge is better.
    Response2,
    /// Neither is better.
    Tie,
}

impl Winner {
    /// Maps a verdict given on the swapped order (response 2 shown first) back to the original
    /// order, so that both runs of a position-bias check can be compared: 1 and 2 trade places,
    /// a tie stays a tie.
    pub fn swapped(self) -> Winner {
        match self {
            Winner::Response1 => Winner::Response2,
            Winner::Response2 => Winner::Response1,
            Winner::Tie => Winner::Tie,
        }
    }
}

/// What could be read from a pairwise critique.
///
/// Each part is optional on its own so that a caller can report how far parsing got: a text
/// can name its decision phrase but no legal choice, or list key factors but no decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairwiseParse {
    /// The preferred response, read after the last decision phrase; `None` when the text has
    /// no decision phrase or the phrase is not followed by a legal choice.
    pub winner: Option<Winner>,
    /// The factors the judge listed under its "key factors" heading, one string per bullet,
    /// without the bullet marker; empty when the text has no such section. Kept because the
    /// factors are the judge's reasons, which a client may show next to the verdict.
    pub key_factors: Vec<String>,
    /// The trimmed line holding the last decision phrase (present even when no legal choice
    /// follows it), so a caller can show the judge's own words for its verdict.
    pub verdict_sentence: Option<String>,
}

/// What could be read from a single-response critique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SingleParse {
    /// The number in the last rating marker, as written. Auto-J asks for 1 to 10, but values
    /// outside that range are returned unchanged so the caller decides what to do with them.
    /// `None` when there is no marker, when the last marker is not closed by `]]`, or when its
    /// content is not a finite number (Auto-J's `float()` would raise, or give inf/nan).
    pub rating: Option<f32>,
    /// The trimmed line holding the last rating marker (present even when its content is not
    /// a number), so a caller can show what the judge actually wrote.
    pub verdict_sentence: Option<String>,
}

/// Reads the winner, the key factors and the verdict sentence from a pairwise critique.
///
/// The winner comes from the text right after the last decision phrase, English
/// (`final decision is`, any ASCII case, then no letter or digit) or Chinese (`最终决定是`), whichever occurs last.
/// After skipping whitespace and decoration (quotes, `*`, colons), `response 1` / `response 2`
/// / `tie` (any case) or `回应1` / `回应2` / `平局` name the winner. Only the last phrase counts,
/// as in Auto-J: an earlier, resolved phrase is not used when the last one is unresolved.
///
/// Like Auto-J's `startswith`, the choice is a prefix test, so `Response 10` reads as
/// `Response1` and `Tiebreak` as `Tie`; an Auto-J judge only ever has two responses.
pub fn parse_pairwise(text: &str) -> PairwiseParse {
    let decision = last_decision(text);
    PairwiseParse {
        winner: decision.and_then(|(_, end)| choice_at(&text[end..])),
        key_factors: key_factors(text),
        verdict_sentence: decision.map(|(start, _)| line_around(text, start).to_string()),
    }
}

/// Reads the rating from a single-response critique.
///
/// The rating is the content of the last `Rating: [[...]]` marker, parsed as a number after
/// trimming, as Auto-J's `float(score_output[pos + len("Rating: [["):pos2].strip())` does; for
/// every text where that gives a finite number this gives the same number. Beyond Auto-J it
/// accepts `评分` for `Rating`, `：` for `:`, any number of spaces around the colon, any ASCII
/// case, and full-width digits. Where Auto-J returns 0.0 (no marker) or raises, the rating is
/// `None`. One deliberate difference: Auto-J reads an unclosed last marker (`Rating: [[7.5`,
/// as a truncated generation leaves it) up to the text's last character but one, which can
/// give a wrong number (`7.`); here it is `None`.
pub fn parse_single(text: &str) -> SingleParse {
    let Some((marker, open_end)) = last_rating_marker(text) else {
        return SingleParse::default();
    };
    let after = &text[open_end..];
    let rating = after
        .find("]]")
        .and_then(|close| parse_number(&after[..close]));
    SingleParse {
        rating,
        verdict_sentence: Some(line_around(text, marker).to_string()),
    }
}

/// Byte range of the last decision phrase in either language.
fn last_decision(text: &str) -> Option<(usize, usize)> {
    let en = rfind_ascii_ci(text, EN_DECISION, |after| {
        !after.starts_with(|c: char| c.is_ascii_alphanumeric())
    })
    .map(|s| (s, s + EN_DECISION.len()));
    let zh = text.rfind(ZH_DECISION).map(|s| (s, s + ZH_DECISION.len()));
    match (en, zh) {
        (Some(e), Some(z)) => Some(if e.0 > z.0 { e } else { z }),
        (e, z) => e.or(z),
    }
}

/// The winner named at the start of `rest`, the text after a decision phrase.
fn choice_at(rest: &str) -> Option<Winner> {
    let rest = rest.trim_start_matches(|c: char| c.is_whitespace() || DECORATION.contains(&c));
    if let Some(n) = strip_prefix_ascii_ci(rest, "response").or_else(|| rest.strip_prefix("回应"))
    {
        return match n.trim_start().chars().next()? {
            '1' | '１' => Some(Winner::Response1),
            '2' | '２' => Some(Winner::Response2),
            _ => None,
        };
    }
    if strip_prefix_ascii_ci(rest, "tie").is_some() || rest.starts_with("平局") {
        return Some(Winner::Tie);
    }
    None
}

/// The bullet items between the key-factors heading and the final-decision section.
///
/// The heading is the first line mentioning "key factor" (any case) or `关键因素`; the section
/// ends at the first later line mentioning "final decision" or `最终决定`. A line that is not
/// a bullet extends the bullet on the line above it; after a blank line it is prose, skipped.
fn key_factors(text: &str) -> Vec<String> {
    let mut lines = text.lines();
    if !lines.any(|l| contains_ascii_ci(l, "key factor") || l.contains("关键因素")) {
        return Vec::new();
    }
    let mut items: Vec<String> = Vec::new();
    let mut extending = false;
    for line in lines {
        if contains_ascii_ci(line, "final decision") || line.contains("最终决定") {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            extending = false;
        } else if let Some(body) = strip_bullet(line) {
            items.push(body.to_string());
            extending = true;
        } else if let (true, Some(last)) = (extending, items.last_mut()) {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(line);
        }
    }
    items.retain(|item| !item.is_empty());
    items
}

/// The text of a bullet line without its marker, or `None` when the line is not a bullet.
///
/// Markers are `-`, `*`, `+` (followed by a space, so `**bold**` and `-5` are not bullets),
/// `•`, `·`, and enumerators (see [`strip_enumerator`]); a symbol may be followed by an
/// enumerator, as in Auto-J's own `- (a) ...`, and both are removed.
fn strip_bullet(line: &str) -> Option<&str> {
    let symbol = line
        .strip_prefix(['-', '*', '+'])
        .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
        .or_else(|| line.strip_prefix(['•', '·']));
    match symbol {
        Some(rest) => {
            let rest = rest.trim_start();
            Some(strip_enumerator(rest).unwrap_or(rest))
        }
        None => strip_enumerator(line),
    }
}

/// The text after a leading enumerator, or `None` when `s` does not start with one.
///
/// Enumerators are a tag in parentheses (`(a)`, `(ii)`, `（1）`), or one or two digits or a
/// single letter followed by `.`, `)`, `、` or `．` (`1.`, `b)`, `2、`). After an ASCII closer
/// a space or the end of line must follow, so `1.5 points` is not a bullet.
fn strip_enumerator(s: &str) -> Option<&str> {
    let (inner, parenthesised) = match s.strip_prefix(['(', '（']) {
        Some(inner) => (inner, true),
        None => (s, false),
    };
    let tag_len = inner.bytes().take_while(u8::is_ascii_alphanumeric).count();
    let tag = &inner[..tag_len];
    let tag_ok = if parenthesised {
        (1..=3).contains(&tag_len)
    } else {
        ((1..=2).contains(&tag_len) && tag.bytes().all(|b| b.is_ascii_digit())) || tag_len == 1
    };
    if !tag_ok {
        return None;
    }
    let closers: &[char] = if parenthesised {
        &[')', '）']
    } else {
        &['.', ')', '、', '．']
    };
    let closer = inner[tag_len..]
        .chars()
        .next()
        .filter(|c| closers.contains(c))?;
    let rest = &inner[tag_len + closer.len_utf8()..];
    if closer.is_ascii() && !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    Some(rest.trim_start())
}

/// Start of the last rating marker's label and the end of its `[[`.
///
/// A marker is `Rating` (any ASCII case) or `评分`, optional spaces, `:` or `：`, optional
/// spaces, then `[[`.
fn last_rating_marker(text: &str) -> Option<(usize, usize)> {
    let mut best = None;
    for (open, _) in text.match_indices("[[") {
        let before = text[..open].trim_end_matches([' ', '\t']);
        let Some(before) = before.strip_suffix([':', '：']) else {
            continue;
        };
        let before = before.trim_end_matches([' ', '\t']);
        let label_start = if before.ends_with("评分") {
            Some(before.len() - "评分".len())
        } else {
            let start = before.len().checked_sub("rating".len());
            start.filter(|&s| {
                before.is_char_boundary(s) && before[s..].eq_ignore_ascii_case("rating")
            })
        };
        if let Some(start) = label_start {
            best = Some((start, open + "[[".len()));
        }
    }
    best
}

/// The finite number `raw` holds once trimmed, reading full-width digits and points as ASCII.
fn parse_number(raw: &str) -> Option<f32> {
    let ascii: String = raw
        .trim()
        .chars()
        .map(|c| match c {
            '０'..='９' => char::from(b'0' + (u32::from(c) - u32::from('０')) as u8),
            '．' => '.',
            other => other,
        })
        .collect();
    ascii.parse::<f32>().ok().filter(|n| n.is_finite())
}

/// The trimmed line of `text` that contains byte offset `at`.
fn line_around(text: &str, at: usize) -> &str {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    text[start..end].trim()
}

/// Byte offset of the last occurrence of the ASCII `needle`, ignoring ASCII case, for which
/// `accept` approves of the text following the match.
///
/// Comparing bytes is sound for an ASCII needle: a matched byte is ASCII, so the match starts
/// and ends on character boundaries of `haystack`.
fn rfind_ascii_ci(haystack: &str, needle: &str, accept: impl Fn(&str) -> bool) -> Option<usize> {
    debug_assert!(needle.is_ascii());
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    (0..=h.len().checked_sub(n.len())?)
        .rev()
        .find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n) && accept(&haystack[i + n.len()..]))
}

/// Whether `haystack` contains the ASCII `needle`, ignoring ASCII case.
fn contains_ascii_ci(haystack: &str, needle: &str) -> bool {
    rfind_ascii_ci(haystack, needle, |_| true).is_some()
}

/// `s` without the ASCII `prefix`, compared ignoring ASCII case.
fn strip_prefix_ascii_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.as_bytes().get(..prefix.len())?;
    // An ASCII prefix that matched ends on a character boundary, so slicing is safe.
    head.eq_ignore_ascii_case(prefix.as_bytes())
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swapped_trades_responses_and_keeps_tie() {
        assert_eq!(Winner::Response1.swapped(), Winner::Response2);
        assert_eq!(Winner::Response2.swapped(), Winner::Response1);
        assert_eq!(Winner::Tie.swapped(), Winner::Tie);
    }

    #[test]
    fn missing_verdict_is_none_everywhere() {
        let p = parse_pairwise("Both responses are fine.\nI cannot decide.");
        assert_eq!(p, PairwiseParse::default());
        assert_eq!(
            parse_single("A good answer overall."),
            SingleParse::default()
        );
    }

    #[test]
    fn lowercase_decision_and_choice_resolve() {
        let p = parse_pairwise("so, the final decision is response 1.");
        assert_eq!(p.winner, Some(Winner::Response1));
        assert_eq!(
            p.verdict_sentence.as_deref(),
            Some("so, the final decision is response 1.")
        );
        let p = parse_pairwise("FINAL DECISION IS TIE");
        assert_eq!(p.winner, Some(Winner::Tie));
    }

    #[test]
    fn only_the_last_decision_counts() {
        let p = parse_pairwise(
            "The final decision is Response 1.\nSo, the final decision is Response 2.",
        );
        assert_eq!(p.winner, Some(Winner::Response2));
        // An unresolved last phrase is not rescued by an earlier one, as in Auto-J.
        let p =
            parse_pairwise("The final decision is Response 1.\nSo, the final decision is unclear.");
        assert_eq!(p.winner, None);
        assert_eq!(
            p.verdict_sentence.as_deref(),
            Some("So, the final decision is unclear.")
        );
    }

    #[test]
    fn response_10_reads_as_response_1_like_autoj() {
        // Auto-J tests `startswith('response 1')`; an Auto-J judge never sees a tenth response.
        assert_eq!(
            parse_pairwise("final decision is Response 10").winner,
            Some(Winner::Response1)
        );
    }

    #[test]
    fn decoration_before_the_choice_is_skipped() {
        let p = parse_pairwise("So, the final decision is **\"Response 2\"**.");
        assert_eq!(p.winner, Some(Winner::Response2));
        assert_eq!(
            parse_pairwise("final decision is: Response2").winner,
            Some(Winner::Response2)
        );
        // `isn't` is not the phrase, so the earlier real verdict is the last one.
        let p = parse_pairwise("So, the final decision is Tie. The final decision isn't easy.");
        assert_eq!(p.winner, Some(Winner::Tie));
    }

    #[test]
    fn chinese_decisions() {
        assert_eq!(
            parse_pairwise("所以，最终决定是回应1。").winner,
            Some(Winner::Response1)
        );
        assert_eq!(
            parse_pairwise("所以，最终决定是：“回应2”").winner,
            Some(Winner::Response2)
        );
        assert_eq!(
            parse_pairwise("所以，最终决定是 平局").winner,
            Some(Winner::Tie)
        );
        assert_eq!(parse_pairwise("所以，最终决定是回应３").winner, None);
    }

    #[test]
    fn the_language_written_last_wins() {
        let text = "So, the final decision is Response 1.\n翻译：所以，最终决定是回应2。";
        let p = parse_pairwise(text);
        assert_eq!(p.winner, Some(Winner::Response2));
        assert_eq!(
            p.verdict_sentence.as_deref(),
            Some("翻译：所以，最终决定是回应2。")
        );
        let text = "所以，最终决定是回应2。\nSo, the final decision is Tie.";
        assert_eq!(parse_pairwise(text).winner, Some(Winner::Tie));
    }

    #[test]
    fn multibyte_text_before_the_phrase() {
        // 'İ' lowercases to two chars in Unicode; byte offsets must still line up.
        let text = "İİİ ünïcödé — “quoted” 回应 text. So, the FINAL decision is Response 2 — done";
        let p = parse_pairwise(text);
        assert_eq!(p.winner, Some(Winner::Response2));
        assert_eq!(p.verdict_sentence.as_deref(), Some(text));
        let s = parse_single("ÀÉÎ 评分很难 İ\nRating: [[8]] ✓");
        assert_eq!(s.rating, Some(8.0));
        assert_eq!(s.verdict_sentence.as_deref(), Some("Rating: [[8]] ✓"));
    }

    #[test]
    fn ratings_as_float_reads_them() {
        assert_eq!(parse_single("Rating: [[7]]").rating, Some(7.0));
        assert_eq!(parse_single("Rating: [[7.5]]").rating, Some(7.5));
        assert_eq!(parse_single("Rating: [[ 8 ]]").rating, Some(8.0));
        assert_eq!(
            parse_single("Rating: [[11]]").rating,
            Some(11.0),
            "out of range kept"
        );
        assert_eq!(
            parse_single("Rating: [[-1]]").rating,
            Some(-1.0),
            "out of range kept"
        );
    }

    #[test]
    fn last_rating_counts_without_falling_back() {
        let s = parse_single("Rating: [[3]]\nOn reflection:\nRating: [[6]]");
        assert_eq!(s.rating, Some(6.0));
        let s = parse_single("Rating: [[3]]\nformat: \"[[rating]]\", e.g. Rating: [[rating]]");
        assert_eq!(s.rating, None);
        assert_eq!(
            s.verdict_sentence.as_deref(),
            Some("format: \"[[rating]]\", e.g. Rating: [[rating]]")
        );
    }

    #[test]
    fn brackets_without_a_label_are_not_ratings() {
        let s = parse_single(
            "a \"[[number]]-year veteran\" and a link [[1](http://x)]\nRating: [[6]] ",
        );
        assert_eq!(s.rating, Some(6.0));
        assert_eq!(
            parse_single("see [[1](http://x)] and [[5]]"),
            SingleParse::default()
        );
    }

    #[test]
    fn unclosed_or_non_numeric_ratings_are_none() {
        for text in [
            "Rating: [[7.5",
            "Rating: [[]]",
            "Rating: [[seven]]",
            "Rating: [[nan]]",
            "Rating: [[inf]]",
        ] {
            let s = parse_single(text);
            assert_eq!(s.rating, None, "{text}");
            assert_eq!(s.verdict_sentence.as_deref(), Some(text));
        }
    }

    #[test]
    fn chinese_and_lenient_rating_markers() {
        assert_eq!(parse_single("评分: [[5]]").rating, Some(5.0));
        assert_eq!(parse_single("评分：[[6]]").rating, Some(6.0));
        assert_eq!(parse_single("评分 ： [[7]]").rating, Some(7.0));
        assert_eq!(parse_single("评分：[[８]]").rating, Some(8.0));
        assert_eq!(parse_single("rating:[[9]]").rating, Some(9.0));
        assert_eq!(parse_single("Rating：[[4.5]]").rating, Some(4.5));
        // A label must end right before the colon.
        assert_eq!(parse_single("Overratingx: [[4]]").rating, None);
    }

    #[test]
    fn key_factors_from_autoj_layout() {
        let text = "1. The key factors to distinguish these two responses:\n\n\
                    - (a) Accuracy: Response 1 gets the date wrong,\n  while Response 2 does not.\n\
                    - (b) Clarity.\n\n2. The final decision:\n\nSo, the final decision is Response 2.";
        let p = parse_pairwise(text);
        assert_eq!(
            p.key_factors,
            [
                "Accuracy: Response 1 gets the date wrong, while Response 2 does not.",
                "Clarity."
            ]
        );
        assert_eq!(p.winner, Some(Winner::Response2));
    }

    #[test]
    fn bullet_markers() {
        assert_eq!(strip_bullet("- x"), Some("x"));
        assert_eq!(strip_bullet("* (ii) x"), Some("x"));
        assert_eq!(strip_bullet("• x"), Some("x"));
        assert_eq!(strip_bullet("(a) x"), Some("x"));
        assert_eq!(strip_bullet("（1）回应1更准确"), Some("回应1更准确"));
        assert_eq!(strip_bullet("12. x"), Some("x"));
        assert_eq!(strip_bullet("b) x"), Some("x"));
        assert_eq!(strip_bullet("2、准确性"), Some("准确性"));
        assert_eq!(strip_bullet("**Accuracy**"), None);
        assert_eq!(strip_bullet("-5 degrees"), None);
        assert_eq!(strip_bullet("1.5 points"), None);
        assert_eq!(strip_bullet("e.g. this"), None);
        assert_eq!(strip_bullet("Response 1 is better"), None);
    }

    #[test]
    fn no_key_factor_section_gives_nothing() {
        assert!(parse_pairwise("- a\n- b\nSo, the final decision is Tie.")
            .key_factors
            .is_empty());
    }
}
