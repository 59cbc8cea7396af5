//! The shipped classifier with its own threshold: it can answer `others` and
//! `post_summarization` (labels Auto-J's judging data uses), it ships a
//! `recommended_min_confidence`, and under it a vague query is a [`Decision::Unsure`] (routed on
//! its language to the default pool) while a clear one is confident. Runs only where the model
//! and the ONNX Runtime library exist; otherwise it says what it skipped and why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use autoj_router::classifier::Decision;
use autoj_router::onnx::MODEL_FILE;
use autoj_router::{Catalog, Classifier, ClassifierHandle, OnnxClassifier};

/// The loaded model, or why the test cannot run.
fn model() -> Result<OnnxClassifier, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model_dir = root.join("classifier");
    if !model_dir.join(MODEL_FILE).is_file() {
        return Err(format!(
            "{} is missing",
            model_dir.join(MODEL_FILE).display()
        ));
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
    OnnxClassifier::load(&model_dir, &dylib).map_err(|e| e.to_string())
}

/// The handle's decision for `query`, with a timeout around the wait.
async fn decide(
    handle: &ClassifierHandle,
    query: &str,
    group_of: impl Fn(&str) -> Option<String>,
) -> Decision {
    tokio::time::timeout(Duration::from_secs(30), handle.decide(query, group_of))
        .await
        .expect("the classifier answers within 30 s")
        .expect("classification succeeds")
}

#[tokio::test]
async fn new_labels_and_the_shipped_threshold() {
    let classifier = match model() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("SKIPPED shipped-threshold classifier test: {why}");
            return;
        }
    };
    let labels = classifier.labels();
    for label in ["others", "post_summarization"] {
        assert!(labels.iter().any(|l| l == label), "{label} is not a label");
    }
    let threshold = classifier
        .recommended_min_confidence()
        .expect("labels.json carries recommended_min_confidence");
    assert!(
        threshold > 0.0 && threshold < 1.0,
        "recommended threshold {threshold}"
    );
    let catalog = Catalog::embedded().unwrap();
    let group_of = |name: &str| catalog.get(name).and_then(|s| s.group.clone());
    let handle = ClassifierHandle::spawn(Box::new(classifier), 4, threshold).unwrap();

    let post = "Summarize the following post\n\nTitle: My roommate keeps eating my food and \
                says it is fine because we share the fridge\n\nPost: We have lived together \
                for a year and lately my groceries keep disappearing.";
    let decision = decide(&handle, post, group_of).await;
    let Decision::Confident { scenario, .. } = decision else {
        panic!("a reddit post to summarize was unsure: {decision:?}");
    };
    assert_eq!(scenario, "post_summarization");

    let vague = "ok";
    let decision = decide(&handle, vague, group_of).await;
    assert!(
        matches!(decision, Decision::Unsure { group_probability } if group_probability < threshold),
        "{vague:?}: {decision:?} (threshold {threshold})"
    );
}
