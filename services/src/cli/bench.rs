//! `autoj bench`: prefill and decode speed of a GGUF judge in our engine and, in the same
//! run on the same file, prompt and thread count, in llama.cpp (through llama-cpp-python,
//! installed by `scripts/bench-setup.sh`), with the ratio. Absolute numbers on a shared
//! machine are noise; the ratio measured in one run is the figure to read.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use super::bench_batch::median;
use crate::config::KvDTypeArg;
use anyhow::Context;
use autoj_judge::engine::cpu::BatchModel;
use autoj_judge::engine::cpu::{attention, kernels};
use autoj_judge::engine::tokenizer::TextTokenizer;
use autoj_judge::engine::{choose_format, PromptFormatChoice};
use autoj_judge::protocol::prompt::PromptFormat;
use autoj_judge::protocol::prompt::{render, Lang, Task};
use clap::Args;
use serde_json::{json, Value};

use super::{bench_batch, bench_roofline};

/// Benchmark settings.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The GGUF (or Hugging Face directory) to measure.
    #[arg(long, env = "AUTOJ_MODEL", default_value = crate::config::DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Compute threads, for both engines.
    #[arg(long, env = "AUTOJ_BENCH_THREADS", default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub threads: usize,
    /// Tokens to generate per run (EOS ignored, so every run decodes exactly this many).
    #[arg(long, env = "AUTOJ_BENCH_N_PREDICT", default_value_t = 64)]
    pub n_predict: usize,
    /// Timed runs per engine (after one warm-up run), and rounds of the concurrency levels
    /// (taking turns); medians are reported.
    #[arg(long, env = "AUTOJ_BENCH_REPEAT", default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub repeat: usize,
    /// Python with llama-cpp-python; skip the comparison when it is missing.
    #[arg(
        long,
        env = "AUTOJ_BENCH_LLAMACPP_PYTHON",
        default_value = ".venv-bench/bin/python"
    )]
    pub llamacpp_python: PathBuf,
    /// The llama.cpp side of the benchmark.
    #[arg(
        long,
        env = "AUTOJ_BENCH_LLAMACPP_SCRIPT",
        default_value = "scripts/bench_llamacpp.py"
    )]
    pub llamacpp_script: PathBuf,
    /// Key/value cache element type of the batched engine (llama.cpp gets the same kind:
    /// f16, f32, or q8_0 for q8; always with flash attention, as its own tools run).
    #[arg(long, env = "AUTOJ_BENCH_KV_DTYPE", value_enum, default_value_t = autoj_judge::engine::scheduler::KvType::default().into())]
    pub kv_dtype: KvDTypeArg,
    /// Concurrency levels for aggregate decode speed (`--concurrency` with no value: skip).
    #[arg(
        long,
        env = "AUTOJ_BENCH_CONCURRENCY",
        value_delimiter = ',',
        num_args = 0..,
        default_value = "1,4,8,16"
    )]
    pub concurrency: Vec<usize>,
    /// Auto-J pairwise test file for judgments per minute through gRPC (skipped with a
    /// message when absent).
    #[arg(
        long,
        env = "AUTOJ_BENCH_PAIRWISE_FILE",
        default_value = "../shared/autoj/testdata_pairwise.jsonl"
    )]
    pub pairwise_file: PathBuf,
    /// Prompt length in tokens (0: the sample pairwise task as it is, ~200 tokens; more:
    /// its second response grows paragraph by paragraph until the prompt has at least this
    /// many tokens, as long judge inputs do).
    #[arg(long, env = "AUTOJ_BENCH_PROMPT_TOKENS", default_value_t = 0)]
    pub prompt_tokens: usize,
    /// Prompt tokens per forward pass of our prefill, as the server's `--prefill-chunk` cuts
    /// prompts (0: the whole prompt in one pass). llama.cpp takes the prompt in one batch.
    #[arg(long, env = "AUTOJ_BENCH_PREFILL_CHUNK", default_value_t = autoj_judge::engine::handle::DEFAULT_PREFILL_CHUNK)]
    pub prefill_chunk: usize,
    /// Rows of that file to judge per setting (0: skip the gRPC part).
    #[arg(long, env = "AUTOJ_BENCH_GRPC_ROWS", default_value_t = 16)]
    pub grpc_rows: usize,
    /// Concurrent gRPC streams.
    #[arg(long, env = "AUTOJ_BENCH_GRPC_CONCURRENCY", default_value_t = 8)]
    pub grpc_concurrency: usize,
    /// max_new_tokens of each gRPC judgment.
    #[arg(long, env = "AUTOJ_BENCH_GRPC_MAX_NEW_TOKENS", default_value_t = 256)]
    pub grpc_max_new_tokens: u32,
}

/// A realistic Auto-J pairwise input (a few hundred tokens with the template).
fn sample_task() -> Task {
    Task::Pairwise {
        query: "Write a Python function that returns the n-th Fibonacci number, and explain its time complexity.".into(),
        response_1: "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\nThis runs in O(n) time and O(1) memory because it keeps only the last two values.".into(),
        response_2: "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\nThe recursion is simple and elegant; its time complexity is O(n).".into(),
    }
}

/// The sample task's prompt, its second response grown until the prompt has at least
/// `min_tokens` tokens; the text and its ids.
fn prompt(
    tokenizer: &TextTokenizer,
    format: &PromptFormat,
    min_tokens: usize,
) -> anyhow::Result<(String, Vec<u32>)> {
    const PARAGRAPH: &str = "\n\nTo check this, compare the two answers line by line: the loop keeps two running values and updates them n times, while the recursive version calls itself twice for every n above one, so the number of calls grows like the Fibonacci numbers themselves.";
    let mut task = sample_task();
    loop {
        let text = render(&task, Lang::En, format)?;
        let ids = tokenizer.encode(&text, true)?;
        if ids.len() >= min_tokens {
            return Ok((text, ids));
        }
        if let Task::Pairwise { response_2, .. } = &mut task {
            response_2.push_str(PARAGRAPH);
        }
    }
}

/// Seconds since the running executable was written (`None` where the system cannot
/// say): a comparison run on a build older than the code it is meant to measure shows it.
fn binary_age_s() -> Option<f64> {
    let written = std::fs::metadata(std::env::current_exe().ok()?)
        .ok()?
        .modified()
        .ok()?;
    Some(written.elapsed().ok()?.as_secs_f64())
}

/// Runs both engines and prints one JSON object per engine plus the ratios.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut model, tokenizer, info) = BatchModel::load(&args.model, None)?;
    let load_s = started.elapsed().as_secs_f64();
    model.shape.set_kv(args.kv_dtype.into())?;
    let format = choose_format(PromptFormatChoice::Auto, &info, &tokenizer)?;
    let (text, ids) = prompt(&tokenizer, &format, args.prompt_tokens)?;
    let n = ids.len();
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    let new_kv = || model.new_kv();
    for run in 0..=args.repeat {
        let mut kv = new_kv();
        let t = Instant::now();
        let mut logits = bench_batch::prefill(&model, &mut kv, &ids, args.prefill_chunk)?;
        let p = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..args.n_predict {
            let next = bench_batch::argmax(&logits);
            logits = bench_batch::prefill(&model, &mut kv, &[next], 0)?;
        }
        let d = t.elapsed().as_secs_f64();
        if run > 0 {
            // Run 0 warms caches and is not counted, as on the llama.cpp side.
            prefill.push(n as f64 / p);
            decode.push(args.n_predict as f64 / d);
        }
    }
    let ours = json!({
        "engine": "autoj (batched engine, one sequence)", "threads": args.threads,
        "q4_1_kernel": kernels::kernel_name(), "kquant_kernel": kernels::kquant_kernel_name(),
        "attention_kernel": attention::kernel_name(
            model.shape.heads / model.shape.kv_heads,
            model.shape.head_dim,
        ),
        "kernels": model.kernel_census(), "load_s": load_s, "prompt_tokens": n,
        "prefill_chunk": args.prefill_chunk,
        "kv_dtype": format!("{:?}", model.shape.kv).to_lowercase(),
        "prefill_tok_s": median(prefill), "decode_tok_s": median(decode), "runs": args.repeat,
        "binary_age_s": binary_age_s(),
    });
    println!("{ours}");
    let mut levels = Vec::new();
    if !args.concurrency.is_empty() {
        let c = &args.concurrency;
        let prompt = (&ids[..], args.prefill_chunk);
        levels = bench_batch::concurrency(&model, prompt, c, args.n_predict, args.repeat)?;
        for line in &levels {
            println!("{line}");
        }
        println!(
            "{}",
            json!({
                "kv_bytes_per_token": model.shape.kv_bytes_per_token(),
                "kv_bytes_per_sequence_at_prompt_plus_n_predict":
                    model.shape.kv_bytes_per_token() * (n + args.n_predict),
                "model_file_bytes": std::fs::metadata(&args.model).map(|m| m.len()).ok(),
                "peak_rss_bytes": bench_batch::peak_rss_bytes(),
            })
        );
    }
    // After the peak-memory line: the roofline's own buffers would count in it.
    let decode_tok_s = ours["decode_tok_s"].as_f64().unwrap_or(f64::NAN);
    let step_bytes = model.streamed_weight_bytes();
    println!(
        "{}",
        bench_roofline::report(args.threads, step_bytes, decode_tok_s)
    );
    llamacpp(args, &text, &ours, &levels)?;
    drop(model);
    if args.grpc_rows == 0 {
        return Ok(());
    }
    if !args.pairwise_file.exists() {
        eprintln!(
            "judgments per minute skipped: {} not found (it comes with ../shared)",
            args.pairwise_file.display()
        );
        return Ok(());
    }
    let lines = tokio::runtime::Handle::current().block_on(bench_batch::grpc_judgments(
        &args.model,
        &args.pairwise_file,
        args.grpc_rows,
        args.grpc_concurrency,
        args.grpc_max_new_tokens,
        args.kv_dtype.into(),
    ))?;
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// The llama.cpp side on the same file, prompt and threads, and the ratios.
fn llamacpp(args: &BenchArgs, text: &str, ours: &Value, levels: &[Value]) -> anyhow::Result<()> {
    if !args.llamacpp_python.exists() {
        eprintln!(
            "llama.cpp comparison skipped: {} not found (run scripts/bench-setup.sh)",
            args.llamacpp_python.display()
        );
        return Ok(());
    }
    let prompt_file = tempfile_with(text)?;
    let out = Command::new(&args.llamacpp_python)
        .arg(&args.llamacpp_script)
        .arg("--model")
        .arg(&args.model)
        .args(["--threads", &args.threads.to_string()])
        .arg("--prompt-file")
        .arg(&prompt_file)
        .args([
            "--n-predict",
            &args.n_predict.to_string(),
            "--repeat",
            &args.repeat.to_string(),
            "--concurrency",
            &args
                .concurrency
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ])
        .args(["--kv-type", llamacpp_kv_type(args.kv_dtype)])
        .output()
        .context("running the llama.cpp benchmark")?;
    let _ = std::fs::remove_file(&prompt_file);
    anyhow::ensure!(
        out.status.success(),
        "llama.cpp benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Value =
        serde_json::from_slice(&out.stdout).context("llama.cpp benchmark output")?;
    println!("{theirs}");
    let ratio = |k: &str| ours[k].as_f64().unwrap_or(0.0) / theirs[k].as_f64().unwrap_or(f64::NAN);
    let tok_s = |v: &Value| v["aggregate_decode_tok_s"].as_f64().unwrap_or(f64::NAN);
    let batched: Vec<Value> = levels
        .iter()
        .filter_map(|ours| {
            let b = &ours["concurrent_sequences"];
            let theirs = theirs["batched_decode"]
                .as_array()?
                .iter()
                .find(|t| &t["concurrent_sequences"] == b)?;
            Some(
                json!({"concurrent_sequences": b, "aggregate_decode": tok_s(ours) / tok_s(theirs)}),
            )
        })
        .collect();
    println!(
        "{}",
        json!({
            "ratio_autoj_over_llamacpp": {
                "prefill": ratio("prefill_tok_s"), "decode": ratio("decode_tok_s"),
                "batched": batched,
            },
            "same_prompt_tokens": theirs["prompt_tokens"] == ours["prompt_tokens"],
        })
    );
    Ok(())
}

fn tempfile_with(text: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("autoj-bench-prompt-{}.txt", std::process::id()));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// llama.cpp's cache type for ours, so both engines read caches of the same kind.
fn llamacpp_kv_type(ours: KvDTypeArg) -> &'static str {
    match ours {
        KvDTypeArg::F16 => "f16",
        KvDTypeArg::F32 => "f32",
        KvDTypeArg::Q8 => "q8_0",
    }
}
