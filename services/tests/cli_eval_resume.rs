//! `autoj eval` resumes an interrupted run: rows already complete in the output are kept
//! and never requested again, failed rows are retried, a torn last line is dropped, and a
//! row that fails is recorded with its status and makes the exit status non-zero.

mod common;

use std::path::Path;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, run, Server};
use serde_json::{json, Value};

/// Row 1's second response is blank: the server refuses it, so judging it again fails.
fn input() -> Vec<Value> {
    (0..5)
        .map(|i| {
            json!({
                "prompt": format!("Question {i}?"),
                "response 1": "An answer.",
                "response 2": if i == 1 { "   " } else { "Another answer." },
                "label": i % 3,
                "scenario": "default",
            })
        })
        .collect()
}

fn read_rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn eval(addr: &str, input: &Path, output: &Path) -> (bool, String) {
    let out = run(autoj()
        .args(["eval", "--addr", addr, "--max-new-tokens", "5", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn resume_keeps_done_rows_and_retries_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let server = Server::start(&model, &["--no-classifier"]);
    let (input_path, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    let src = input();
    let text: String = src.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&input_path, text).unwrap();

    // An interrupted run's output: rows 1 and 0 complete (row 1 could not be judged now), row
    // 2 failed, row 3 torn mid-write.
    let seeded = |i: usize, winner: &str| {
        json!({"index": i, "kind": "pairwise", "prompt": src[i]["prompt"], "label": src[i]["label"],
               "scenario": "default", "winner": winner, "source": "parsed",
               "critique": format!("seeded critique {i}")})
    };
    let failed = json!({"index": 2, "kind": "pairwise", "prompt": src[2]["prompt"],
                        "error": {"code": "Unavailable", "message": "server went away"}});
    let torn = r#"{"index": 3, "kind": "pairwise", "prompt": "Quest"#;
    std::fs::write(
        &output,
        format!(
            "{}\n{}\n{failed}\n{torn}",
            seeded(1, "tie"),
            seeded(0, "response_2")
        ),
    )
    .unwrap();

    let (ok, stderr) = eval(&server.addr, &input_path, &output);
    assert!(ok, "row 1 was not requested again: {stderr}");
    assert!(
        stderr.contains("2 of 5 rows already complete, 3 to judge"),
        "{stderr}"
    );
    let rows = read_rows(&output);
    assert_eq!(rows.len(), 5, "one row per input row");
    assert_eq!(rows[0], seeded(0, "response_2"), "kept as it was");
    assert_eq!(rows[1], seeded(1, "tie"), "kept as it was");
    for (i, row) in rows.iter().enumerate().skip(2) {
        assert_eq!(row["index"], i);
        assert!(row.get("error").is_none(), "retried and judged: {row}");
        assert_eq!(row["source"], "forced");
        assert_eq!(row["completion_tokens"], 5);
    }
    // The metrics count the seeded verdicts too: row 0 says response_2 (label 0, wrong),
    // row 1 tie (label 1, wrong).
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out.metrics.json")).unwrap(),
    )
    .unwrap();
    let right = (2..5)
        .filter(|i| {
            let w = rows[*i]["winner"].as_str().unwrap();
            ["response_1", "response_2", "tie"][src[*i]["label"].as_u64().unwrap() as usize] == w
        })
        .count();
    assert_eq!(
        m["pairwise"]["overall"]["agreement"],
        json!((right as f64 * 10000.0 / 5.0).round() / 100.0)
    );

    // Without its seeded row, row 1 is judged, fails, is recorded, and the run fails.
    let kept: String = rows
        .iter()
        .filter(|r| r["index"] != 1)
        .map(|r| format!("{r}\n"))
        .collect();
    std::fs::write(&output, kept).unwrap();
    let (ok, stderr) = eval(&server.addr, &input_path, &output);
    assert!(!ok, "a failed row makes the exit status non-zero");
    assert!(
        stderr.contains("4 of 5 rows already complete, 1 to judge"),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 5 rows failed"), "{stderr}");
    let rows = read_rows(&output);
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[1]["error"]["code"], "InvalidArgument");
    assert!(
        rows[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response_2"),
        "{}",
        rows[1]
    );
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out.metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["failed"], 1);
    assert_eq!(m["pairwise"]["overall"]["unparsed"], 1);

    // A failed row is retried on the next run (and fails again), the others are not.
    let (ok, stderr) = eval(&server.addr, &input_path, &output);
    assert!(!ok);
    assert!(
        stderr.contains("4 of 5 rows already complete, 1 to judge"),
        "{stderr}"
    );
    assert_eq!(read_rows(&output).len(), 5);
}
