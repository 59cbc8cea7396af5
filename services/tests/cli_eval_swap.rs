//! `autoj eval --swap`: each pair is judged in both orders; the row carries the swapped
//! judgment (mapped back), whether the orders agree, and the metrics' consistency is the
//! share of rows that agree. `autoj metrics` on the same output gives the same numbers.

mod common;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, label_of, run, Server};
use serde_json::{json, Value};

#[test]
fn swap_gives_consistency() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let server = Server::start(&model, &["--no-classifier"]);
    let (input_path, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    let src: Vec<Value> = [
        ("code_generation", 0, "def f(): pass", "print(1)"),
        ("code_generation", 1, "x", "a longer and better answer"),
        ("writing_email", 2, "Dear Bob, hi.", "Hi Bob."),
        ("chitchat", 0, "Hello there!", "go away"),
    ]
    .iter()
    .map(|(scenario, label, r1, r2)| {
        json!({"prompt": format!("A {scenario} request"), "response 1": r1, "response 2": r2,
               "label": label, "scenario": scenario})
    })
    .collect();
    let text: String = src.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&input_path, text).unwrap();
    let metrics_path = dir.path().join("m.json");

    let out = run(autoj()
        .args(["eval", "--swap", "--addr", &server.addr])
        .args(["--max-new-tokens", "6", "--concurrency", "2", "--input"])
        .arg(&input_path)
        .arg("--output")
        .arg(&output)
        .arg("--metrics-out")
        .arg(&metrics_path));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    let (mut agree, mut consistent) = (0, 0);
    for (row, s) in rows.iter().zip(&src) {
        let (first, second) = (label_of(&row["winner"]), label_of(&row["swap"]["winner"]));
        assert!(first.is_some() && second.is_some(), "{row}");
        assert_eq!(row["swap"]["source"], "forced");
        assert!(row["swap"]["critique"].is_string());
        let p: f64 = ["p_response_1", "p_response_2", "p_tie"]
            .iter()
            .map(|k| row["swap"][k].as_f64().unwrap())
            .sum();
        assert!((p - 1.0).abs() < 1e-3);
        assert_eq!(row["consistent"], json!(first == second), "{row}");
        let combined = if first == second { first } else { Some(2) };
        assert_eq!(label_of(&row["combined"]), combined, "{row}");
        agree += usize::from(first == s["label"].as_u64() && second == s["label"].as_u64());
        consistent += usize::from(first == second);
    }
    let pct = |k: usize| json!((k as f64 * 10000.0 / 4.0).round() / 100.0);
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&metrics_path).unwrap()).unwrap();
    assert_eq!(m["pairwise"]["overall"]["agreement"], pct(agree));
    assert_eq!(m["pairwise"]["overall"]["consistency"], pct(consistent));

    // `autoj metrics` reads the swapped verdicts the output carries.
    let out = run(autoj()
        .args(["metrics", "--json", "--source"])
        .arg(&input_path)
        .arg("--pred")
        .arg(&output));
    assert!(out.status.success());
    let direct: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(direct, m["pairwise"]);

    // A later run without --swap finds every row complete; with --swap too.
    for swap in [false, true] {
        let mut cmd = autoj();
        cmd.args(["eval", "--addr", "http://127.0.0.1:1", "--input"])
            .arg(&input_path)
            .arg("--output")
            .arg(&output)
            .arg("--metrics-out")
            .arg(&metrics_path);
        if swap {
            cmd.arg("--swap");
        }
        let out = run(&mut cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("4 of 4 rows already complete"), "{stderr}");
    }
}
