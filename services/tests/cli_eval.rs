//! `autoj eval` against a running `autoj serve` (tiny model): every input row gets one output
//! row in input order, progress is reported, and the metrics JSON holds the numbers the
//! rows themselves give.

mod common;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, label_of, run, Server};
use serde_json::{json, Value};

fn input() -> String {
    let pair = |scenario: &str, label: Option<u8>, r2: &str| {
        let mut row = json!({
            "prompt": format!("Question about {scenario}?"),
            "response 1": "A careful, correct answer.",
            "response 2": r2,
            "scenario": scenario,
        });
        if let Some(l) = label {
            row["label"] = json!(l);
        }
        row
    };
    let rows = [
        pair("code_generation", Some(0), "wrong"),
        pair("code_generation", Some(1), "better"),
        pair("writing_email", Some(2), "same"),
        pair("writing_email", Some(0), "worse"),
        pair("chitchat", None, "unlabelled"),
        json!({"prompt": "Say hi.", "response": "Hello!", "model": "sys-a", "id": "q1"}),
        json!({"prompt": "Say hi.", "response": "hi", "model": "sys-b", "id": "q1"}),
    ];
    rows.iter().map(|r| format!("{r}\n")).collect()
}

#[test]
fn eval_completes_with_rows_progress_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let server = Server::start(&model, &["--no-classifier"]);
    let (input_path, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    std::fs::write(&input_path, input()).unwrap();

    let out = run(autoj()
        .args(["eval", "--addr", &server.addr, "--concurrency", "3"])
        .args(["--max-new-tokens", "6", "--input"])
        .arg(&input_path)
        .arg("--output")
        .arg(&output));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    // Not a terminal: plain progress lines, the last one at the total.
    assert!(stderr.contains("progress: 7/7 rows, 0 failed"), "{stderr}");
    assert!(
        stdout.contains("agreement") && stdout.contains("overall"),
        "{stdout}"
    );

    let rows: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 7);
    let src: Vec<Value> = input()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["index"], i, "rows are in input order");
        assert_eq!(row["prompt"], src[i]["prompt"]);
        assert!(row.get("error").is_none(), "{row}");
        assert!(row["critique"].is_string());
        assert_eq!(row["completion_tokens"], 6);
        assert_eq!(
            row["source"], "forced",
            "a 6-token critique has no verdict phrase"
        );
        if i < 5 {
            assert_eq!(row["kind"], "pairwise");
            assert!(label_of(&row["winner"]).is_some(), "a legal choice: {row}");
            let p = ["p_response_1", "p_response_2", "p_tie"]
                .iter()
                .map(|k| row[k].as_f64().unwrap())
                .sum::<f64>();
            assert!((p - 1.0).abs() < 1e-3, "{row}");
            assert_eq!(row["scenario"], src[i]["scenario"]);
        } else {
            assert_eq!(row["kind"], "single");
            let r = row["rating"].as_f64().unwrap_or_else(|| panic!("{row}"));
            assert!((1.0..=10.0).contains(&r) && r.fract() == 0.0, "{row}");
            assert!(row["expected_rating"].as_f64().is_some());
            assert_eq!(row["model"], src[i]["model"]);
        }
    }

    // The metrics file (default: next to the output) agrees with the rows.
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out.metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["rows"], 7);
    assert_eq!(m["failed"], 0);
    let right = |range: std::ops::Range<usize>| {
        range
            .filter(|i| label_of(&rows[*i]["winner"]) == src[*i]["label"].as_u64())
            .count() as f64
    };
    let pct = |k: f64, n: f64| (k * 10000.0 / n).round() / 100.0;
    let pw = &m["pairwise"];
    assert_eq!(pw["overall"]["n"], 4, "only labelled rows count");
    assert_eq!(pw["overall"]["agreement"], json!(pct(right(0..4), 4.0)));
    assert_eq!(pw["overall"]["consistency"], Value::Null, "no --swap");
    assert_eq!(
        pw["groups"]["Code"]["agreement"],
        json!(pct(right(0..2), 2.0))
    );
    assert_eq!(
        pw["groups"]["Functional Writing"]["agreement"],
        json!(pct(right(2..4), 2.0))
    );
    let unlabelled: u64 = m["unlabelled"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(unlabelled, 1);
    let single = &m["single"];
    for (i, name) in [(5, "sys-a"), (6, "sys-b")] {
        assert_eq!(single["models"][name]["rated"], 1);
        let mean = single["models"][name]["mean"].as_f64().unwrap();
        assert_eq!(mean, rows[i]["rating"].as_f64().unwrap());
    }
    // Both systems answered query q1: a ranking over one shared query.
    assert_eq!(single["ranking"][0]["queries"], 1);

    // A second run finds everything done and judges nothing.
    let out = run(autoj()
        .args(["eval", "--addr", "http://127.0.0.1:1", "--input"])
        .arg(&input_path)
        .arg("--output")
        .arg(&output));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("7 of 7 rows already complete, 0 to judge"),
        "{stderr}"
    );
}
