//! The real scenario classifier (router/classifier) run by the real ONNX Runtime. Runs only
//! where both the model and the runtime library exist (`router/fetch-onnxruntime.sh` fetches
//! the library); otherwise it says what it skipped and why.

use std::path::{Path, PathBuf};

use autoj_router::onnx::{LABELS_FILE, MODEL_FILE, TOKENIZER_FILE};
use autoj_router::{Catalog, Classifier, OnnxClassifier};

/// The model directory and library path, or why the test cannot run.
fn assets() -> Result<(PathBuf, PathBuf), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model_dir = root.join("classifier");
    for file in [MODEL_FILE, TOKENIZER_FILE, LABELS_FILE] {
        if !model_dir.join(file).is_file() {
            return Err(format!("{} is missing", model_dir.join(file).display()));
        }
    }
    let dylib = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => root.join("../models/onnxruntime/libonnxruntime.so"),
    };
    if !dylib.is_file() {
        return Err(format!(
            "{} is missing (run router/fetch-onnxruntime.sh)",
            dylib.display()
        ));
    }
    Ok((model_dir, dylib))
}

#[test]
fn real_model_classifies_queries() {
    let (model_dir, dylib) = match assets() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("SKIPPED real ONNX classifier test: {why}");
            return;
        }
    };
    let mut classifier = OnnxClassifier::load(&model_dir, &dylib).expect("model loads");
    let catalog = Catalog::embedded().unwrap();
    let labels = classifier.labels();
    for label in &labels {
        assert!(
            catalog.get(label).is_some(),
            "label {label} is not in router/data"
        );
    }

    let all = classifier
        .classify(
            "Translate this sentence into French: good morning",
            labels.len(),
        )
        .unwrap();
    assert_eq!(all.len(), labels.len());
    let total: f32 = all.iter().map(|p| p.probability).sum();
    assert!((total - 1.0).abs() < 1e-3, "probabilities sum to {total}");
    assert!(all.windows(2).all(|w| w[0].probability >= w[1].probability));

    let code = classifier
        .classify(
            "Write a Python function that returns the n-th Fibonacci number, with tests.",
            3,
        )
        .unwrap();
    assert_eq!(code.len(), 3);
    let group = catalog.get(&code[0].scenario).and_then(|s| s.group.clone());
    assert_eq!(group.as_deref(), Some("Code"), "top-3: {code:?}");

    // Truncation: a very long query still classifies.
    let long = "please summarize the following text. ".repeat(2000);
    assert_eq!(classifier.classify(&long, 1).unwrap().len(), 1);
}
