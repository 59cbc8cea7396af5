//! Verdicts read from whole critiques written in Auto-J's layouts, English and Chinese, and
//! from critiques that go wrong: several ratings, no verdict, a verdict the judge hedged.

use autoj_judge::protocol::verdict::{parse_pairwise, parse_single, PairwiseParse, Winner};

/// A pairwise critique laid out as Auto-J 13B writes them.
const EN_PAIRWISE: &str = "\
1. The key factors to distinguish these two responses:

- (a) Accuracy: Response 1 says the Treaty of Westphalia was signed in 1658, which is wrong;
  Response 2 gives the correct year, 1648.
- (b) Completeness: Response 2 names both treaties (Osnabrück and Münster), while Response 1
  mentions only one.
- (c) Clarity: both responses are well organised and easy to follow.

2. The final decision:

So, the final decision is Response 2. Response 2 is accurate and complete, whereas Response 1 \
contains a factual error about the date.";

/// The same kind of critique in the Chinese template's words.
const ZH_PAIRWISE: &str = "\
1. 区分这两个回应的关键因素：

- (a) 准确性：回应1把日期写错了，
  回应2给出了正确的年份。
- (b) 完整性：回应2同时提到了两个条约。

2. 最终决定：

所以，最终决定是回应2。回应2更准确、更完整。";

#[test]
fn english_pairwise_critique() {
    let p = parse_pairwise(EN_PAIRWISE);
    assert_eq!(p.winner, Some(Winner::Response2));
    assert_eq!(
        p.key_factors,
        [
            "Accuracy: Response 1 says the Treaty of Westphalia was signed in 1658, which is \
             wrong; Response 2 gives the correct year, 1648.",
            "Completeness: Response 2 names both treaties (Osnabrück and Münster), while \
             Response 1 mentions only one.",
            "Clarity: both responses are well organised and easy to follow.",
        ]
    );
    let sentence = p.verdict_sentence.expect("sentence");
    assert!(
        sentence.starts_with("So, the final decision is Response 2."),
        "{sentence}"
    );
    assert!(
        sentence.ends_with("about the date."),
        "the whole line: {sentence}"
    );
}

#[test]
fn chinese_pairwise_critique() {
    let p = parse_pairwise(ZH_PAIRWISE);
    assert_eq!(p.winner, Some(Winner::Response2));
    assert_eq!(
        p.key_factors,
        [
            "准确性：回应1把日期写错了， 回应2给出了正确的年份。",
            "完整性：回应2同时提到了两个条约。"
        ]
    );
    assert_eq!(
        p.verdict_sentence.as_deref(),
        Some("所以，最终决定是回应2。回应2更准确、更完整。")
    );
}

#[test]
fn tie_in_both_languages() {
    let en = EN_PAIRWISE.replace("final decision is Response 2", "final decision is Tie");
    assert_eq!(parse_pairwise(&en).winner, Some(Winner::Tie));
    let zh = ZH_PAIRWISE.replace("最终决定是回应2", "最终决定是平局");
    assert_eq!(parse_pairwise(&zh).winner, Some(Winner::Tie));
}

#[test]
fn missing_pairwise_verdict_keeps_the_factors() {
    // Generation stopped before the decision: factors are still reported, the winner is not.
    let cut = &EN_PAIRWISE[..EN_PAIRWISE.find("2. The final decision").unwrap()];
    let p = parse_pairwise(cut);
    assert_eq!(p.winner, None);
    assert_eq!(p.verdict_sentence, None);
    assert_eq!(p.key_factors.len(), 3);

    assert_eq!(parse_pairwise(""), PairwiseParse::default());
}

#[test]
fn hedged_pairwise_verdict_is_unresolved_but_reported() {
    let text = EN_PAIRWISE.replace(
        "So, the final decision is Response 2.",
        "So, the final decision is hard to make.",
    );
    let p = parse_pairwise(&text);
    assert_eq!(p.winner, None);
    assert!(p
        .verdict_sentence
        .unwrap()
        .contains("final decision is hard to make"));
}

#[test]
fn swapped_order_maps_back() {
    // The swapped run showed Response 2 first; its "Response 1" is the original Response 2.
    let original = parse_pairwise(EN_PAIRWISE).winner.unwrap();
    let swapped_text = EN_PAIRWISE.replace(
        "final decision is Response 2",
        "final decision is Response 1",
    );
    let swapped = parse_pairwise(&swapped_text).winner.unwrap();
    assert_eq!(swapped.swapped(), original, "consistent across orders");
    assert_eq!(Winner::Tie.swapped(), Winner::Tie);
    assert_eq!(original.swapped().swapped(), original);
}

#[test]
fn several_rating_lines_take_the_last() {
    let text = "\
The response answers the question but omits the second treaty. An earlier draft of this \
critique said Rating: [[7]], but on reflection the omission matters.

Rating: [[5]]";
    let s = parse_single(text);
    assert_eq!(s.rating, Some(5.0));
    assert_eq!(s.verdict_sentence.as_deref(), Some("Rating: [[5]]"));

    // The last marker decides even when it is worse than an earlier one.
    let s = parse_single("Rating: [[6]]\n\nRating: [[N/A]]");
    assert_eq!(s.rating, None);
    assert_eq!(s.verdict_sentence.as_deref(), Some("Rating: [[N/A]]"));
}

#[test]
fn chinese_single_critique() {
    let text = "该回应准确地回答了问题，但遗漏了第二个条约。\n\n评分：[[6.5]]";
    let s = parse_single(text);
    assert_eq!(s.rating, Some(6.5));
    assert_eq!(s.verdict_sentence.as_deref(), Some("评分：[[6.5]]"));
}

#[test]
fn missing_or_cut_rating() {
    assert_eq!(parse_single("The response is fine but short.").rating, None);
    let cut = parse_single("The response is fine.\n\nRating: [[7");
    assert_eq!(cut.rating, None, "an unclosed marker is not guessed at");
    assert_eq!(cut.verdict_sentence.as_deref(), Some("Rating: [[7"));
}
