//! `autoj bench-classifier`: the scenario classifier's cross-validated accuracy (from the
//! training run's `metrics.json`) and its latency per query in Rust on one thread, measured
//! here on real queries.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use autoj_router::{Classifier, OnnxClassifier};
use clap::Args;
use serde_json::{json, Value};

/// Classifier benchmark settings.
#[derive(Debug, Clone, Args)]
pub struct BenchClassifierArgs {
    /// Directory with the classifier (model, tokenizer, labels, metrics.json).
    #[arg(long, default_value = "router/classifier")]
    pub model_dir: PathBuf,
    /// ONNX Runtime library.
    #[arg(
        long,
        env = "ORT_DYLIB_PATH",
        default_value = "models/onnxruntime/libonnxruntime.so"
    )]
    pub ort_dylib: PathBuf,
    /// JSONL queries (`instruction` + `input`, or `query`) to time.
    #[arg(
        long,
        default_value = "../shared/autoj/scenario_classifier_train.jsonl"
    )]
    pub queries: PathBuf,
    /// How many queries to time (after 20 warm-up ones).
    #[arg(long, default_value_t = 500)]
    pub count: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Prints one JSON object: CV figures, latency percentiles, model size.
pub fn run(args: &BenchClassifierArgs) -> anyhow::Result<()> {
    let mut classifier = OnnxClassifier::load(&args.model_dir, &args.ort_dylib)?;
    let text = std::fs::read_to_string(&args.queries)
        .with_context(|| format!("{} (pass --queries FILE.jsonl)", args.queries.display()))?;
    let queries: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| crate::cli::classify::row_query(&r))
        .collect();
    anyhow::ensure!(
        queries.len() > 20,
        "need more than 20 queries in {}",
        args.queries.display()
    );
    for q in queries.iter().take(20) {
        classifier.classify(q, 3)?;
    }
    let mut ms: Vec<f64> = Vec::new();
    for q in queries.iter().cycle().skip(20).take(args.count) {
        let t = Instant::now();
        classifier.classify(q, 3)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let metrics: Value = std::fs::read_to_string(args.model_dir.join("metrics.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let size = std::fs::metadata(args.model_dir.join(autoj_router::onnx::MODEL_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "{}",
        json!({
            "queries_timed": ms.len(),
            "latency_ms": {"p50": percentile(&ms, 0.5), "p95": percentile(&ms, 0.95), "max": percentile(&ms, 1.0)},
            "model_mb": size as f64 / 1e6,
            "cross_validated": metrics.get("cv").cloned().unwrap_or(Value::Null),
        })
    );
    Ok(())
}
