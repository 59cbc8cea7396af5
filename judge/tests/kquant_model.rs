//! A K-quant file (llama.cpp's Q4_K_M mix) in the batched engine: every matrix runs on our
//! kernels and the embedding stays quantized, the logits agree with candle's quantized
//! model on the same file, and greedy output does not depend on what else is in the batch.

mod common;

use autoj_judge::engine::cpu::BatchModel;
use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::{Engine, JudgeRequest};
use autoj_judge::protocol::fit::TruncationPolicy;
use autoj_judge::protocol::prompt::Task;
use autoj_judge::testkit::{self, TinySpec};
use candle_core::quantized::GgmlDType;
use common::engine_config;

/// A model 256 wide (K-quant super-blocks need multiples of 256).
fn spec() -> TinySpec {
    TinySpec {
        hidden: 256,
        heads: 4,
        kv_heads: 2,
        ..TinySpec::default()
    }
}

fn q4_k_m_file(dir: &std::path::Path) -> std::path::PathBuf {
    testkit::write_gguf_mix(dir, &spec(), testkit::q4_k_m).expect("tiny Q4_K_M file")
}

#[test]
fn a_q4_k_m_file_runs_entirely_on_our_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _, _) = BatchModel::load(&q4_k_m_file(dir.path()), None).unwrap();
    let census = model.kernel_census();
    assert_eq!(census.get("candle"), None, "{census:?}");
    assert_eq!(census.get("embed:q4_k"), Some(&1), "{census:?}");
    // Per layer: q, k, v, o, gate, up, down; plus the output matrix. Layer 0's v and down
    // and the output are Q6_K.
    let layers = model.shape.layers;
    // Q4_K and Q6_K run repacked with rows in the lanes where the AVX-512 or AVX2 kernels
    // run, on the standard kernels elsewhere or with AUTOJ_KQUANT_LANES=0 (scripts/test runs
    // this file both ways); never a mix of the two layouts.
    let lanes = census.contains_key("q4_k_lanes");
    let (q4k, q6k) = if lanes {
        ("q4_k_lanes", "q6_k_lanes")
    } else {
        ("q4_k", "q6_k")
    };
    assert_eq!(census.get(q6k), Some(&3), "{census:?}");
    assert_eq!(census.get(q4k), Some(&(7 * layers - 2)), "{census:?}");
    let lanes_wanted = std::env::var("AUTOJ_KQUANT_LANES").map_or(true, |v| v != "0");
    if !lanes_wanted {
        assert!(
            !lanes,
            "AUTOJ_KQUANT_LANES=0 keeps the standard layout: {census:?}"
        );
    }
}

#[test]
fn k_quant_logits_match_candle_on_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    for (i, mix) in [
        testkit::q4_k_m as fn(&str) -> GgmlDType,
        |_: &str| GgmlDType::Q5K,
        |_: &str| GgmlDType::Q6K,
    ]
    .into_iter()
    .enumerate()
    {
        let sub = dir.path().join(i.to_string());
        std::fs::create_dir_all(&sub).unwrap();
        let path = testkit::write_gguf_mix(&sub, &spec(), mix).unwrap();
        // Both quantize activations to 8 bits per 256 values for these types; the f16
        // cache and the order of sums differ.
        let (diff, scale) = common::logits_vs_candle(&path);
        assert!(
            diff < 0.02 * scale.max(1.0),
            "mix {i}: logits differ by {diff} (scale {scale})"
        );
    }
}

fn request(query: &str) -> JudgeRequest {
    JudgeRequest {
        task: Task::Single {
            query: query.into(),
            response: "It rains, and the streets shine.".into(),
        },
        language: None,
        params: GenerationParams {
            max_new_tokens: 10,
            ..GenerationParams::default()
        },
        truncation: TruncationPolicy::Auto,
        deadline: None,
    }
}

fn texts(engine: &Engine, queries: &[&str]) -> Vec<String> {
    common::stream_texts(engine, queries.iter().map(|q| request(q)).collect())
}

#[test]
fn greedy_tokens_are_the_same_alone_and_among_eight() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(engine_config(q4_k_m_file(dir.path()), 16)).unwrap();
    let eight = [
        "Write a haiku about rain.",
        "What is the capital of France?",
        "Name a prime number larger than ten.",
        "Summarize the plot of Hamlet.",
        "Is a tomato a fruit?",
        "Explain recursion to a child.",
        "Translate 'good morning' to Spanish.",
        "Give three uses for a brick.",
    ];
    let together = texts(&engine, &eight);
    for (i, q) in eight.iter().enumerate().step_by(3) {
        let alone = texts(&engine, &[q]).remove(0);
        assert_eq!(alone, together[i], "request {i} alone vs among eight");
    }
}
