//! `autoj metrics`: Auto-J's agreement and consistency from hand-made files whose right
//! answers are worked out below, in Auto-J's prediction format and in ours.

mod common;

use std::path::Path;

use common::{autoj, run};
use serde_json::Value;

/// Six pairs in two groups. Labels: 0 = response 1, 1 = response 2, 2 = tie.
const SOURCE: &str = r#"{"scenario": "code_generation", "label": 0}
{"scenario": "code_generation", "label": 1}
{"scenario": "code_generation", "label": 2}
{"scenario": "writing_email", "label": 0}
{"scenario": "writing_email", "label": 1}
{"scenario": "writing_email", "label": 0}
"#;
// Original order:            0  1  0  0 -1  1
// Swapped file (as written):  1  1  2  1  0  0  -> mapped back: 0 0 2 0 1 1
// row 0: 0=0 and 0=0 agree; consistent
// row 1: 1=1 but swapped 0 != 1: no; inconsistent
// row 2: 0 != 2: no; 0 vs 2 inconsistent
// row 3: agree; consistent
// row 4: no verdict (unparsed): no; inconsistent
// row 5: 1 != 0: no; 1 = 1 consistent
// overall: agreement 2/6 = 33.33, consistency 3/6 = 50.00, unparsed 1
// Code: 1/3 = 33.33, 1/3 = 33.33; Functional Writing: 1/3 = 33.33, 2/3 = 66.67
// Without the swapped file, agreement is accuracy: rows 0, 1, 3 = 3/6 = 50.00.
const PRED_AUTOJ: &str = "{\"output\": 0}\n{\"output\": 1}\n{\"output\": 0}\n{\"output\": 0}\n{\"output\": -1}\n{\"output\": 1}\n";
const SWAPPED_AUTOJ: &str = "{\"output\": 1}\n{\"output\": 1}\n{\"output\": 2}\n{\"output\": 1}\n{\"output\": 0}\n{\"output\": 0}\n";
const PRED_OURS: &str = r#"{"winner": "response_1"}
{"winner": "response_2"}
{"winner": "response_1"}
{"winner": "response_1"}
{"winner": null}
{"winner": "response_2"}
"#;

fn metrics(dir: &Path, pred: &str, swapped: Option<&str>) -> Value {
    let (s, p, w) = (
        dir.join("src.jsonl"),
        dir.join("pred.jsonl"),
        dir.join("swapped.jsonl"),
    );
    std::fs::write(&s, SOURCE).unwrap();
    std::fs::write(&p, pred).unwrap();
    let mut cmd = autoj();
    cmd.args(["metrics", "--json", "--source"])
        .arg(&s)
        .arg("--pred")
        .arg(&p);
    if let Some(sw) = swapped {
        std::fs::write(&w, sw).unwrap();
        cmd.arg("--pred-swapped").arg(&w);
    }
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn agreement_and_consistency_by_group() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics(dir.path(), PRED_AUTOJ, Some(SWAPPED_AUTOJ));
    assert_eq!(m["overall"]["agreement"], 33.33);
    assert_eq!(m["overall"]["consistency"], 50.0);
    assert_eq!(m["overall"]["unparsed"], 1);
    assert_eq!(m["overall"]["n"], 6);
    assert_eq!(m["groups"]["Code"]["agreement"], 33.33);
    assert_eq!(m["groups"]["Code"]["consistency"], 33.33);
    assert_eq!(m["groups"]["Functional Writing"]["consistency"], 66.67);

    // Our own format gives the same numbers.
    let ours = metrics(dir.path(), PRED_OURS, Some(SWAPPED_AUTOJ));
    assert_eq!(ours, m);

    // One order only: accuracy, no consistency.
    let single = metrics(dir.path(), PRED_AUTOJ, None);
    assert_eq!(single["overall"]["agreement"], 50.0);
    assert_eq!(single["overall"]["consistency"], Value::Null);
}

#[test]
fn mismatched_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (s, p) = (dir.path().join("s.jsonl"), dir.path().join("p.jsonl"));
    std::fs::write(&s, SOURCE).unwrap();
    std::fs::write(&p, "{\"output\": 0}\n").unwrap();
    let out = run(autoj()
        .args(["metrics", "--source"])
        .arg(&s)
        .arg("--pred")
        .arg(&p));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("the prediction file has 1 rows, the source 6"));
}

/// On Auto-J's real test set, predicting "tie" everywhere scores exactly the share of tie
/// labels (skips where ../shared is absent).
#[test]
fn all_tie_on_the_real_test_set() {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/autoj/testdata_pairwise.jsonl");
    if !src.exists() {
        eprintln!("skipping: {} not found (fresh clone)", src.display());
        return;
    }
    let text = std::fs::read_to_string(&src).unwrap();
    let labels: Vec<u64> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["label"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let ties = labels.iter().filter(|&&l| l == 2).count();
    let want = (ties as f64 * 10000.0 / labels.len() as f64).round() / 100.0;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tie.jsonl");
    std::fs::write(&p, "{\"output\": 2}\n".repeat(labels.len())).unwrap();
    let out = run(autoj()
        .args(["metrics", "--json", "--source"])
        .arg(&src)
        .arg("--pred")
        .arg(&p));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["overall"]["n"], labels.len());
    assert_eq!(m["overall"]["agreement"], want);
}
