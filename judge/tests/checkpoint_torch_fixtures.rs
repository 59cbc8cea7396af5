//! The committed checkpoints written by torch and transformers themselves
//! (judge/tests/fixtures/checkpoints, rebuilt by scripts/make_checkpoint_fixtures.py) in
//! GAIR's layouts: each loads on the CPU engine and through the device backend on the CPU,
//! tokenizes the Auto-J prompt to exactly the ids transformers gives, matches
//! transformers' f32 logits of the last prompt position, and generates transformers' greedy
//! tokens for as long as each step's top-1 margin is clear.

use std::path::{Path, PathBuf};

use autoj_judge::engine::cpu::BatchModel;
use autoj_judge::engine::device::DeviceModel;
use autoj_judge::engine::generate::argmax;
use autoj_judge::engine::model::{ModelSpec, WeightDType};
use autoj_judge::engine::scheduler::{Ask, Backend, BatchLimits, Row};
use autoj_judge::engine::tokenizer::TextTokenizer;
use candle_core::Device;
use serde_json::Value;

/// A step is compared only where transformers' top-1 logit leads the next by this much
/// (our logits differ from its by ~1e-4).
const CLEAR_MARGIN: f64 = 0.02;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints")
}

fn reference() -> Value {
    let raw = std::fs::read(fixtures().join("reference.json")).unwrap();
    serde_json::from_slice(&raw).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn rel_diff(a: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(a.len(), reference.len(), "rows");
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(reference)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// Prompt logits, then `steps` greedy tokens, through any backend.
fn run<B: Backend>(
    model: &B,
    prompt: &[u32],
    producible: usize,
    steps: usize,
) -> (Vec<f32>, Vec<u32>) {
    let mut kv = model.new_kv().unwrap();
    let mut step = |tokens: &[u32]| {
        let mut rows = [Row {
            kv: &mut kv,
            tokens,
            ask: Ask::Logits,
        }];
        let out = model.step(&mut rows, producible).unwrap();
        out.answers.into_iter().next().unwrap().logits
    };
    let first = step(prompt);
    let mut logits = first.clone();
    let mut out = Vec::new();
    for _ in 0..steps {
        let next = argmax(&logits[..producible]);
        out.push(next);
        logits = step(&[next]);
    }
    (first, out)
}

/// Our greedy tokens equal transformers' up to the first step whose margin is not clear;
/// returns how many steps were compared.
fn check_greedy(name: &str, ours: &[u32], greedy: &Value) -> usize {
    let theirs = ids(&greedy["tokens"]);
    let margins = greedy["margins"].as_array().unwrap();
    let mut compared = 0;
    for (k, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "{name}: greedy step {k} ({ours:?} vs {theirs:?})");
        compared += 1;
        if margins[k].as_f64().unwrap() < CLEAR_MARGIN {
            break;
        }
    }
    compared
}

/// (directory, CPU-engine logit tolerance relative to the largest logit).
const MODELS: [(&str, f32); 5] = [
    ("autoj-13b-layout", 1e-3),
    ("autoj-bilingual-layout", 1e-3),
    ("safetensors-sharded", 1e-3),
    // Q4_1 blocks: each block's offset rounded to f16.
    ("gptq-4bit", 2e-2),
    // Activation order: requantized to Q8_0.
    ("gptq-4bit-desc-act", 5e-2),
];

#[test]
fn torch_written_checkpoints_tokenize_like_transformers() {
    let r = reference();
    for (name, _) in MODELS {
        let m = &r["models"][name];
        let dir = fixtures().join(name);
        let cfg: Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let tok =
            TextTokenizer::from_dir(&dir, &[cfg["eos_token_id"].as_u64().unwrap() as u32]).unwrap();
        for t in m["texts"].as_array().unwrap() {
            let text = t["text"].as_str().unwrap();
            assert_eq!(
                tok.encode(text, true).unwrap(),
                ids(&t["ids"]),
                "{name}: `{text}`"
            );
        }
        for (p, v) in m["prompts"].as_object().unwrap() {
            let text = r["prompts"][p].as_str().unwrap();
            assert_eq!(
                tok.encode(text, true).unwrap(),
                ids(&v["ids"]),
                "{name}: prompt {p}"
            );
        }
    }
}

#[test]
fn torch_written_checkpoints_match_transformers_on_the_cpu_engine() {
    let r = reference();
    for (name, tol) in MODELS {
        let m = &r["models"][name];
        let (model, tok, _) = BatchModel::load(&fixtures().join(name), None).unwrap();
        assert_eq!(
            model.shape.vocab,
            m["vocab_size"].as_u64().unwrap() as usize,
            "{name}"
        );
        // Rows past the tokenizer's pieces and added tokens are padding.
        let producible = tok.producible();
        assert_eq!(
            producible,
            m["tokenizer_len"].as_u64().unwrap() as usize,
            "{name}"
        );
        for (p, v) in m["prompts"].as_object().unwrap() {
            let (logits, greedy) = run(&model, &ids(&v["ids"]), producible, 16);
            let d = rel_diff(&logits, &floats(&v["last_logits"]));
            assert!(d < tol, "{name} {p}: logits differ by {d} of the largest");
            if tol <= 1e-3 {
                let n = check_greedy(name, &greedy, &v["greedy"]);
                assert!(n >= 3, "{name} {p}: only {n} clear steps compared");
            }
        }
    }
}

#[test]
fn torch_written_checkpoints_match_transformers_through_the_device_backend() {
    let r = reference();
    for (name, _) in MODELS {
        let m = &r["models"][name];
        let spec = ModelSpec::new(fixtures().join(name), WeightDType::F32, Device::Cpu);
        let (model, tok, _) = DeviceModel::load(&spec, &BatchLimits::default()).unwrap();
        for (p, v) in m["prompts"].as_object().unwrap() {
            let (logits, greedy) = run(&model, &ids(&v["ids"]), tok.producible(), 16);
            let d = rel_diff(&logits, &floats(&v["last_logits"]));
            // GPTQ is unpacked exactly as the reference unpacked it.
            assert!(
                d < 1e-3,
                "{name} {p}: device logits differ by {d} of the largest"
            );
            let n = check_greedy(name, &greedy, &v["greedy"]);
            assert!(n >= 3, "{name} {p}: only {n} clear steps compared");
        }
    }
}
