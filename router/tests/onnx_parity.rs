//! Rust (tokenizers + ONNX Runtime through `ort`) predicts the same scenario as the Python
//! side (tokenizers + onnxruntime, `router/classifier/python_predictions.jsonl`) for every
//! query of Auto-J's classifier training file. Skips with a message where the model, the
//! runtime library or `../shared` is absent.

use std::path::{Path, PathBuf};

use autoj_router::{Classifier, OnnxClassifier};
use serde_json::Value;

fn need(p: PathBuf) -> Option<PathBuf> {
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} not found", p.display());
        None
    }
}

#[test]
fn rust_predictions_equal_python_on_the_training_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(train) = need(root.join("../../shared/autoj/scenario_classifier_train.jsonl")) else {
        return;
    };
    let Some(preds) = need(root.join("classifier/python_predictions.jsonl")) else {
        return;
    };
    let Some(_) = need(root.join("classifier/scenario_classifier.onnx")) else {
        return;
    };
    let Some(dylib) = need(root.join("../models/onnxruntime/libonnxruntime.so")) else {
        return;
    };
    let mut classifier =
        OnnxClassifier::load(&root.join("classifier"), &dylib).expect("model loads");
    let train = std::fs::read_to_string(train).unwrap();
    let preds = std::fs::read_to_string(preds).unwrap();
    let (mut rows, mut same, mut max_dp) = (0usize, 0usize, 0f64);
    let mut differ = Vec::new();
    for (line, pred) in train
        .lines()
        .filter(|l| !l.trim().is_empty())
        .zip(preds.lines())
    {
        let r: Value = serde_json::from_str(line).unwrap();
        let p: Value = serde_json::from_str(pred).unwrap();
        let query = format!(
            "{} {}",
            r["instruction"].as_str().unwrap(),
            r["input"].as_str().unwrap()
        );
        let got = classifier.classify(&query, 1).unwrap();
        rows += 1;
        if got[0].scenario == p["label"].as_str().unwrap() {
            same += 1;
            max_dp = max_dp
                .max((f64::from(got[0].probability) - p["probability"].as_f64().unwrap()).abs());
        } else if differ.len() < 5 {
            differ.push(format!(
                "row {}: rust {} python {}",
                rows - 1,
                got[0].scenario,
                p["label"]
            ));
        }
    }
    assert_eq!(rows, 2383, "every training row was compared");
    assert_eq!(same, rows, "{} of {rows} differ: {differ:?}", rows - same);
    assert!(
        max_dp < 1e-3,
        "top-1 probabilities agree within 1e-3 (max difference {max_dp})"
    );
}
