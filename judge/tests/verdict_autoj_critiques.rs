//! The single-response parser agrees with Auto-J's own rating extraction on critiques the
//! real Auto-J 13B wrote, and reads Chinese rating markers after real Chinese text.
//!
//! Reads `../shared/autoj/` (Auto-J's public release, never committed); skips with a message
//! where it is absent, as in a fresh clone.

use std::path::PathBuf;

use autoj_judge::protocol::verdict::{parse_pairwise, parse_single};
use serde_json::Value;

/// Where Auto-J's release lies: `../shared/autoj/` relative to the workspace root.
fn data_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/autoj"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: ../shared/autoj not found (fresh clone)");
        None
    }
}

/// Every JSON row of a `.jsonl` file.
fn rows(path: PathBuf) -> Vec<Value> {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .collect()
}

/// What Auto-J's Python extraction does with a text.
#[derive(Debug, PartialEq)]
enum AutoJ {
    /// `"Rating: [[" not in score_output`: Auto-J scores 0.0.
    NoMarker,
    /// `float(...)` returned this.
    Score(f64),
    /// `float(...)` raised.
    Raises,
}

/// Auto-J's extraction, transcribed line by line, independently of the parser under test:
///
/// ```python
/// if "Rating: [[" in score_output:
///     pos = score_output.rfind("Rating: [[")
///     pos2 = score_output.find("]]", pos)
///     pred_score = float(score_output[pos + len("Rating: [["):pos2].strip())
/// else: pred_score = 0.0
/// ```
///
/// Python slices by characters and `find` gives -1 when absent, so the slice then ends one
/// character before the end. `float()` is approximated by Rust's parser, which agrees on
/// every plain decimal.
fn autoj_rating(score_output: &str) -> AutoJ {
    const MARKER: &str = "Rating: [[";
    let Some(pos) = score_output.rfind(MARKER) else {
        return AutoJ::NoMarker;
    };
    let start = pos + MARKER.len();
    let end = match score_output[pos..].find("]]") {
        Some(i) => pos + i,
        None => score_output
            .char_indices()
            .last()
            .map_or(0, |(i, _)| i)
            .max(start),
    };
    match score_output[start..end].trim().parse::<f64>() {
        Ok(score) => AutoJ::Score(score),
        Err(_) => AutoJ::Raises,
    }
}

#[test]
fn english_critiques_rate_as_autoj_rates_them() {
    let Some(dir) = data_dir() else { return };
    let rows = rows(dir.join("testdata_critique.jsonl"));
    assert_eq!(rows.len(), 232, "rows in testdata_critique.jsonl");

    let (mut scored, mut no_marker) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let text = row["critiques"]["autoj"]
            .as_str()
            .unwrap_or_else(|| panic!("row {i}: no critiques.autoj"));
        let ours = parse_single(text);
        match autoj_rating(text) {
            AutoJ::Score(score) => {
                scored += 1;
                assert_eq!(ours.rating, Some(score as f32), "row {i}");
                let sentence = ours.verdict_sentence.expect("a rated text has a sentence");
                assert!(sentence.starts_with("Rating: [["), "row {i}: {sentence}");
            }
            AutoJ::NoMarker => {
                no_marker += 1;
                assert_eq!(
                    ours.rating, None,
                    "row {i}: Auto-J's 0.0 is reported as none"
                );
            }
            AutoJ::Raises => assert_eq!(ours.rating, None, "row {i}"),
        }
        // A single-response critique never holds a pairwise verdict.
        assert_eq!(parse_pairwise(text).winner, None, "row {i}");
    }
    // One critique (row 185) was cut off inside a long SQL query before its rating.
    assert_eq!((scored, no_marker), (231, 1));
}

#[test]
fn the_reference_reads_unclosed_markers_like_python() {
    // Python's `s[a:-1]` when `]]` is missing: everything but the last character.
    assert_eq!(autoj_rating("Rating: [[7.5"), AutoJ::Score(7.0));
    assert_eq!(autoj_rating("Rating: [[7"), AutoJ::Raises);
    assert_eq!(autoj_rating("Rating: [[rating]]"), AutoJ::Raises);
    assert_eq!(
        autoj_rating("Rating: [[3]] Rating: [[ 6 ]]"),
        AutoJ::Score(6.0)
    );
}

/// The Chinese file holds translated queries and responses only, no critiques: it is Auto-J's
/// input for Chinese critique generation. Its texts are real Chinese model output, with
/// `[[1](url)]` citation links and the word 评分 in queries, so they test that such text
/// neither yields a verdict itself nor hides a Chinese rating written after it.
#[test]
fn chinese_texts_hide_no_rating_and_keep_a_written_one() {
    let Some(dir) = data_dir() else { return };
    let zh = rows(dir.join("zh_testdata_critique.jsonl"));
    // 232 rows: `wc -l` says 231 because the last line has no newline.
    assert_eq!(zh.len(), 232, "rows in zh_testdata_critique.jsonl");
    assert!(
        zh.iter().all(|row| row.get("critiques").is_none()),
        "the Chinese file now carries critiques: compare them with Auto-J's extraction too"
    );
    let en = rows(dir.join("testdata_critique.jsonl"));

    for (i, row) in zh.iter().enumerate() {
        assert_eq!(
            row["scenario"], en[i]["scenario"],
            "row {i}: the files are parallel"
        );
        let text = format!(
            "{}\n\n{}",
            row["prompt"].as_str().unwrap(),
            row["response"].as_str().unwrap()
        );
        assert_eq!(parse_single(&text).rating, None, "row {i}");
        assert_eq!(parse_pairwise(&text).winner, None, "row {i}");

        // The same row's English critique gives the rating to write in Chinese.
        let Some(rating) = parse_single(en[i]["critiques"]["autoj"].as_str().unwrap()).rating
        else {
            continue;
        };
        let marker = if i % 2 == 0 { "评分: " } else { "评分：" };
        let critique = format!("{text}\n\n{marker}[[{rating}]]");
        let parsed = parse_single(&critique);
        assert_eq!(parsed.rating, Some(rating), "row {i}");
        assert_eq!(
            parsed.verdict_sentence,
            Some(format!("{marker}[[{rating}]]")),
            "row {i}"
        );
    }
}
