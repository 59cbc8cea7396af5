//! Our engine's greedy tokens for a fixed token prompt, as JSON, for comparing with
//! llama.cpp on the same GGUF file (scripts/llamacpp_interop.py) and for measuring what
//! loading a checkpoint costs (run it under `/usr/bin/time -v`). By hand, not CI.
//!
//! The model is a GGUF file or a Hugging Face directory (`--quantize TYPE` quantizes a
//! directory's matrices as they are read, as `autoj serve --quantize` does). The next token
//! is the argmax over the ids the tokenizer can produce (padding rows past it are never
//! chosen, as in the engine); each step's margin is the top-1 logit minus the top-2. The
//! cache stores keys and values in f16 (the engine's default; llama.cpp's too) unless
//! `--kv f32|q8` says otherwise.
//!
//! ```sh
//! cargo run --release -p autoj-judge --example greedy_tokens -- \
//!     model.gguf 1,450,26,300 16
//! cargo run --release -p autoj-judge --example greedy_tokens -- \
//!     models/rand-7b 1,2,3 1 --quantize q4_k_m
//! cargo run --release -p autoj-judge --example greedy_tokens -- \
//!     model.gguf --tokenize "Hello world" "[INST] Hi [/INST]"
//! ```
//!
//! Output (one line): `{"tokens": [...], "margins": [...], "top1": [...], "producible": P,
//! "vocab_size": V, "rows": R, "load_s": .., "forward_s": .., "peak_rss_kb_after_load": ..,
//! "peak_rss_kb": .., "census": {..}, "first_logits": [...]}` (the prompt's last logits
//! over the producible ids with `--logits`, else empty), or with `--tokenize`, `{"texts": [{"text": ..,
//! "ids": [...]}, ...]}` (BOS first when the model wants one).

use std::path::PathBuf;
use std::time::Instant;

use autoj_judge::engine::checkpoint::quantize::QuantType;
use autoj_judge::engine::cpu::BatchModel;
use autoj_judge::engine::generate::argmax;
use autoj_judge::engine::scheduler::KvType;
use autoj_judge::engine::scheduler::{StepInput, Want};

/// How to call this example.
const USAGE: &str =
    "usage: greedy_tokens MODEL PROMPT_IDS N [--quantize q4_k_m|q5_k_m|q8_0|q4_1]\n       \
                     greedy_tokens MODEL --tokenize TEXT [TEXT ...]\n\
                     (MODEL a GGUF file or a model directory; PROMPT_IDS comma-separated)";

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2);
}

/// The process's peak resident set so far (`VmHWM`), in kB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Top-1 minus top-2 logit.
fn margin(logits: &[f32], top: usize) -> f32 {
    let second = logits
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != top)
        .map(|(_, &v)| v)
        .fold(f32::NEG_INFINITY, f32::max);
    logits[top] - second
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(model) = args.first().map(PathBuf::from) else {
        usage()
    };
    let tokenize = args.get(1).is_some_and(|a| a == "--tokenize");
    let quantize = match args.iter().position(|a| a == "--quantize") {
        Some(i) if !tokenize => match args.get(i + 1).map(|t| t.parse::<QuantType>()) {
            Some(Ok(q)) => Some(q),
            Some(Err(e)) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
            None => usage(),
        },
        _ => None,
    };
    let kv_type = match args.iter().position(|a| a == "--kv") {
        None => KvType::F16,
        Some(i) => match args.get(i + 1).map(String::as_str) {
            Some("f16") => KvType::F16,
            Some("f32") => KvType::F32,
            Some("q8") => KvType::Q8,
            _ => usage(),
        },
    };
    let started = Instant::now();
    let (mut m, tok, _info) = BatchModel::load(&model, quantize).unwrap_or_else(|e| {
        eprintln!("{}: {e}", model.display());
        std::process::exit(1);
    });
    let load_s = started.elapsed().as_secs_f64();
    if tokenize {
        let texts: Vec<serde_json::Value> = args[2..]
            .iter()
            .map(|t| {
                let ids = tok.encode(t, true).unwrap_or_else(|e| {
                    eprintln!("tokenize {t:?}: {e}");
                    std::process::exit(1);
                });
                serde_json::json!({ "text": t, "ids": ids })
            })
            .collect();
        println!("{}", serde_json::json!({ "texts": texts }));
        return;
    }
    let (Some(prompt), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        usage()
    };
    let prompt: Vec<u32> = prompt
        .split(',')
        .map(|t| t.trim().parse().unwrap_or_else(|_| usage()))
        .collect();
    if prompt.is_empty() {
        usage()
    }
    let peak_after_load = peak_rss_kb();
    m.shape.set_kv(kv_type).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let producible = tok.producible().min(m.shape.vocab);
    let mut kv = m.new_kv();
    let mut step = |tokens: &[u32]| -> Vec<f32> {
        m.forward(&mut [StepInput {
            kv: &mut kv,
            tokens,
            want: Want::Last,
        }])
        .unwrap_or_else(|e| {
            eprintln!("forward: {e}");
            std::process::exit(1);
        })
        .remove(0)
    };
    let started = Instant::now();
    let mut logits = step(&prompt);
    let first: Vec<f32> = if args.iter().any(|a| a == "--logits") {
        logits[..producible].to_vec()
    } else {
        Vec::new()
    };
    let (mut tokens, mut margins, mut top1) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let next = argmax(&logits[..producible]);
        tokens.push(next);
        margins.push(margin(&logits[..producible], next as usize));
        top1.push(logits[next as usize]);
        if i + 1 < n {
            logits = step(&[next]);
        }
    }
    let forward_s = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "model": model.display().to_string(),
            "quantize": quantize.map(|q| q.name()),
            "prompt": prompt,
            "tokens": tokens,
            "margins": margins,
            "top1": top1,
            "producible": producible,
            "vocab_size": tok.vocab_size(),
            "rows": m.shape.vocab,
            "load_s": load_s,
            "forward_s": forward_s,
            "peak_rss_kb_after_load": peak_after_load,
            "peak_rss_kb": peak_rss_kb(),
            "census": m.kernel_census(),
            "first_logits": first,
        })
    );
}
