//! `autoj serve` with the committed ONNX scenario classifier + `autoj classify`: one query
//! and a JSONL file. Skips with a message when the classifier model or the ONNX Runtime
//! library (fetched by `router/fetch-onnxruntime.sh`) is absent.

mod common;

use std::path::PathBuf;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, run, Server};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

#[test]
fn classify_one_query_and_a_file() {
    let root = repo();
    let model_dir = root.join("router/classifier");
    let dylib = root.join("models/onnxruntime/libonnxruntime.so");
    for needed in [model_dir.join("scenario_classifier.onnx"), dylib.clone()] {
        if !needed.exists() {
            eprintln!(
                "skipping: {} not found (run router/fetch-onnxruntime.sh)",
                needed.display()
            );
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let config = dir.path().join("router.toml");
    std::fs::write(
        &config,
        format!(
            "[classifier]\nmodel_dir = {:?}\nort_dylib = {:?}\n[routing]\ndefault_pool = \"local\"\n[[routing.pool]]\nname = \"local\"\nlocal = true\n",
            model_dir.display().to_string(),
            dylib.display().to_string()
        ),
    )
    .unwrap();
    let server = Server::start(&model, &["--router-config", config.to_str().unwrap()]);

    let out = run(autoj().args([
        "classify",
        "--addr",
        &server.addr,
        "--query",
        "write a python function that reverses a list",
        "--json",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["top"][0]["scenario"], "code_generation", "{v}");
    assert_eq!(v["top"][0]["group"], "Code");
    assert_eq!(v["top"].as_array().unwrap().len(), 3);

    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    std::fs::write(
        &input,
        "{\"query\": \"Translate 'good morning' into French.\"}\n\
         {\"instruction\": \"Write a SQL query that counts users by country.\", \"input\": \"\", \"id\": 7}\n",
    )
    .unwrap();
    let out = run(autoj()
        .args(["classify", "--addr", &server.addr, "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output));
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
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["id"], 7, "input fields are kept");
    for r in &rows {
        assert!(
            r["scenario"].is_string() && r["probability"].as_f64().unwrap() > 0.0,
            "{r}"
        );
        assert_eq!(r["top3"].as_array().unwrap().len(), 3);
    }
    assert_eq!(rows[1]["group"], "Code", "{}", rows[1]);
}
