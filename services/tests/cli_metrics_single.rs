//! `autoj metrics --single`: rating statistics per model and a system-level ranking from
//! hand-made rating files whose right answers are worked out below.

mod common;

use std::path::Path;

use common::{autoj, run};
use serde_json::Value;

/// autoj's format: integer rating (null = unresolved) and expected rating.
const ALPHA: &str = r#"{"prompt": "q1", "rating": 8, "expected_rating": 7.5}
{"prompt": "q2", "rating": 6, "expected_rating": 6.0}
{"prompt": "q3", "rating": null}
{"prompt": "q4", "rating": 4, "expected_rating": 4.5}
"#;
/// Auto-J's format: `output` is the rating, 0.0 means none.
const BETA: &str = r#"{"prompt": "q1", "output": 7.0}
{"prompt": "q2", "output": 6.0}
{"prompt": "q3", "output": 9.0}
{"prompt": "q4", "output": 0.0}
"#;
/// A file whose rows name their model.
const GAMMA: &str = r#"{"model": "C", "prompt": "q1", "rating": 5}
{"model": "C", "prompt": "q2", "rating": 6}
{"model": "C", "prompt": "q3", "rating": 2}
{"model": "C", "prompt": "q4", "rating": 10}
"#;
// alpha: ratings 8 6 4 -> mean 6.00, std sqrt((4+0+4)/3) = 1.63, expected mean
//        (7.5+6+4.5)/3 = 6.00, 1 unresolved; scores (expected) q1 7.5 q2 6.0 q4 4.5
// beta:  ratings 7 6 9 -> mean 7.33, std sqrt((1/9+16/9+25/9)/3) = 1.25, 1 unresolved;
//        scores q1 7 q2 6 q3 9
// C:     ratings 5 6 2 10 -> scores q1 5 q2 6 q3 2 q4 10
// Queries every model scored: q1, q2 -> mean_score alpha 6.75, beta 6.50, C 5.50.
// Head to head (a tie is half a win):
//   alpha-beta on q1 q2: win, tie          -> 75.00
//   alpha-C on q1 q2 q4: win, tie, loss    -> 50.00
//   beta-C on q1 q2 q3:  win, tie, win     -> 83.33
// Totals: alpha 2W 1L 2T -> 6/10 = 60.00; beta 2W 1L 2T -> 60.00; C 1W 3L 2T -> 4/12 = 33.33

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn metrics_json(args: &[&std::ffi::OsStr]) -> Value {
    let out = run(autoj().args(["metrics", "--single", "--json"]).args(args));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn statistics_and_ranking_of_three_models() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "alpha.jsonl", ALPHA);
    let b = write(dir.path(), "beta.jsonl", BETA);
    let c = write(dir.path(), "gamma.jsonl", GAMMA);
    let pred = std::ffi::OsStr::new("--pred");
    let m = metrics_json(&[
        pred,
        a.as_os_str(),
        pred,
        b.as_os_str(),
        pred,
        c.as_os_str(),
    ]);

    let alpha = &m["models"]["alpha"];
    assert_eq!(alpha["n"], 4);
    assert_eq!(alpha["rated"], 3);
    assert_eq!(alpha["unresolved"], 1);
    assert_eq!(alpha["mean"], 6.0);
    assert_eq!(alpha["std"], 1.63);
    assert_eq!(alpha["mean_expected"], 6.0);
    assert_eq!(alpha["distribution"]["4"], 1);
    assert_eq!(alpha["distribution"]["8"], 1);
    assert_eq!(alpha["distribution"]["5"], 0);

    let beta = &m["models"]["beta"];
    assert_eq!(beta["unresolved"], 1, "Auto-J's 0.0 is no rating");
    assert_eq!(beta["mean"], 7.33);
    assert_eq!(beta["std"], 1.25);
    assert_eq!(beta["mean_expected"], Value::Null);
    assert_eq!(m["models"]["C"]["distribution"]["10"], 1);
    assert!(
        m["models"].get("gamma").is_none(),
        "rows naming a model override the file name"
    );

    let ranking = m["ranking"].as_array().unwrap();
    let order: Vec<&str> = ranking
        .iter()
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["alpha", "beta", "C"]);
    assert_eq!(ranking[0]["mean_score"], 6.75);
    assert_eq!(ranking[1]["mean_score"], 6.5);
    assert_eq!(ranking[2]["mean_score"], 5.5);
    assert_eq!(ranking[0]["queries"], 2);
    assert_eq!(ranking[0]["win_rate"], 60.0);
    assert_eq!(ranking[1]["win_rate"], 60.0);
    assert_eq!(ranking[2]["win_rate"], 33.33);

    let h2h = m["head_to_head"].as_array().unwrap();
    let find = |x: &str, y: &str| {
        h2h.iter()
            .find(|p| p["model"] == x && p["opponent"] == y)
            .unwrap_or_else(|| panic!("{x} vs {y} in {h2h:?}"))
    };
    assert_eq!(find("alpha", "beta")["win_rate"], 75.0);
    assert_eq!(find("alpha", "beta")["ties"], 1);
    assert_eq!(find("alpha", "C")["queries"], 3);
    assert_eq!(find("alpha", "C")["win_rate"], 50.0);
    assert_eq!(find("beta", "C")["win_rate"], 83.33);
}

#[test]
fn model_names_tables_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "alpha.jsonl", ALPHA);
    let b = write(dir.path(), "beta.jsonl", BETA);

    // One file alone: statistics, no ranking; --model-name renames it.
    let m = metrics_json(&[
        "--pred".as_ref(),
        a.as_os_str(),
        "--model-name".as_ref(),
        "judge-x".as_ref(),
    ]);
    assert_eq!(m["models"]["judge-x"]["mean"], 6.0);
    assert_eq!(m["ranking"].as_array().unwrap().len(), 0);

    // The table names both models and ranks them.
    let out = run(autoj()
        .args(["metrics", "--single", "--pred"])
        .arg(&a)
        .arg("--pred")
        .arg(&b));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("rank") && text.contains("alpha") && text.contains("7.33"));

    // One name for two files is refused, as is the same model in two files.
    let out = run(autoj()
        .args(["metrics", "--single", "--model-name", "x", "--pred"])
        .arg(&a)
        .arg("--pred")
        .arg(&b));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model-name"));
    let out = run(autoj()
        .args(["metrics", "--single", "--pred"])
        .arg(&a)
        .arg("--pred")
        .arg(&a));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than one prediction file"));

    // Pairwise without a source names the missing flag.
    let out = run(autoj().args(["metrics", "--pred"]).arg(&a));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--source"));
}
