//! Judgments per minute through the real judge gRPC server on loopback, over an engine that
//! runs a random-weight model of a named shape on the device (the device backend under the
//! batching scheduler), hit by concurrent streaming clients. The tokenizer is a carried
//! `tokenizer.json` (`gpu-bench export-tokenizer` writes the default model's); the random
//! model's vocabulary is the tokenizer's.
//!
//! Random weights rarely emit EOS, but to make every judgment generate exactly
//! `--new-tokens` tokens the tokenizer is loaded with no EOS ids, so generation never stops
//! early (the engine has no "ignore EOS" option); each judgment then ends with the verdict
//! forced and scored as usual.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use autoj_judge::engine::device::{DeviceModel, DeviceShape, SlotLayout};
use autoj_judge::engine::handle::DEFAULT_PREFILL_CHUNK;
use autoj_judge::engine::model::{ModelInfo, ModelSpec, WeightDType};
use autoj_judge::engine::scheduler::BatchLimits;
use autoj_judge::engine::tokenizer::TextTokenizer;
use autoj_judge::engine::{Engine, EngineConfig, PromptFormatChoice, Scheduling};
use autoj_judge::grpc::service::JudgeService;
use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::protocol::scoring::VERDICT_RESERVE;
use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_client::JudgeClient;
use autoj_proto::v1::judge_event::Event;
use clap::Args;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tonic::transport::Channel;

use super::common::quantile;
use super::machine::serving_dtype;
use crate::config::parse_device;

/// Positions a slot keeps beyond the prompt and the new tokens, for the prompt template.
const TEMPLATE_ROOM: usize = 256;

/// `gpu-bench grpc` settings.
#[derive(Debug, Clone, Args)]
pub struct GrpcArgs {
    /// Device to run the model on: `cuda:N` or `cpu`.
    #[arg(long, env = "AUTOJ_DEVICE", default_value = "cuda:0")]
    pub device: String,
    /// Model shape: `llama2-13b`, `llama2-7b` or `tiny`.
    #[arg(long, default_value = "llama2-13b")]
    pub shape: String,
    /// tokenizer.json to serve with (default: `$AUTOJ_CARRY_DIR/tokenizer.json`, else
    /// `carry/tokenizer.json`).
    #[arg(long, env = "AUTOJ_GPU_TOKENIZER")]
    pub tokenizer: Option<PathBuf>,
    /// Streaming clients at once (also the engine's sequences and key/value slots).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Tokens of each judgment's response text (the prompt is this plus the template).
    #[arg(long, default_value_t = 1000)]
    pub prompt_tokens: usize,
    /// Tokens every judgment generates (`max_new_tokens`; EOS never stops it).
    #[arg(long, default_value_t = 400)]
    pub new_tokens: usize,
    /// Clients start no judgment after this many seconds; those running finish (45 s plus
    /// one round of judgments fits gpu-check's 150 s with the 13B shape on an H200).
    #[arg(long, default_value_t = 45)]
    pub duration_s: u64,
    /// Stop after this many judgments have started (0: only the duration bounds them).
    #[arg(long, default_value_t = 0)]
    pub judgments: usize,
    /// Tokens in one engine step, as `--max-batch-tokens`.
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Seed of the weights.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print only the JSON object (gpu-check reads the last line either way).
    #[arg(long)]
    pub json: bool,
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    completed: usize,
    failed: usize,
    /// Milliseconds from the call to its first critique text (or verdict).
    ttft_ms: Vec<f64>,
    completion_tokens: u64,
}

/// Runs the server and the clients; `passed` when every judgment completed and at least one
/// did.
pub fn run(args: &GrpcArgs) -> anyhow::Result<Value> {
    let device = parse_device(&args.device)?;
    let path = tokenizer_path(args);
    let tokenizer = TextTokenizer::from_file(&path, &[])
        .with_context(|| format!("reading the tokenizer {}", path.display()))?;
    let mut shape = DeviceShape::named(&args.shape, tokenizer.vocab_size())
        .with_context(|| format!("unknown shape `{}`", args.shape))?;
    shape.dtype = serving_dtype(&device);
    let text = response_text(&tokenizer, args.prompt_tokens)?;
    let layout = SlotLayout {
        slots: args.concurrency.max(1),
        slot_len: args.prompt_tokens + args.new_tokens + VERDICT_RESERVE + TEMPLATE_ROOM,
    };
    let setup = Instant::now();
    let model = DeviceModel::random(&shape, layout, args.seed, &device)
        .context("creating the random model on the device")?;
    let limits = BatchLimits {
        max_seqs: layout.slots,
        max_batch_tokens: args.max_batch_tokens,
        kv_budget_bytes: layout.slots * layout.slot_len * shape.kv_bytes_per_token(),
        slot_tokens: layout.slot_len,
        // The store above is sized for the clients alone; the prefix cache's device copies
        // come on top of it, so keep them to a few prompts' worth (13B: ~3.4 GB).
        prefix_cache_tokens: 4096,
        ..BatchLimits::default()
    };
    let config = EngineConfig {
        model: ModelSpec::new(
            format!("random-{}", args.shape),
            WeightDType::F32,
            device.clone(),
        ),
        prompt_format: PromptFormatChoice::AutoJ,
        queue_capacity: 2 * layout.slots,
        prefill_chunk: DEFAULT_PREFILL_CHUNK,
        scheduling: Scheduling::Device(limits.clone()),
    };
    let info = ModelInfo {
        name: format!("random-{}", args.shape),
        context: layout.slot_len,
        chat_template: None,
    };
    let engine = Engine::start_with(model, tokenizer, info, limits, &config)?;
    let setup_s = setup.elapsed().as_secs_f64();
    let (seen, elapsed) = block_on(drive(engine, args.clone(), text))??;
    let report = json!({
        "passed": seen.failed == 0 && seen.completed > 0,
        "device": args.device,
        "dtype": shape.dtype.as_str(),
        "shape": args.shape,
        "vocab": shape.vocab,
        "concurrency": args.concurrency,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "setup_s": setup_s,
        "elapsed_s": elapsed,
        "completed": seen.completed,
        "failed": seen.failed,
        "judgments_per_min": seen.completed as f64 * 60.0 / elapsed,
        "completion_tok_s": seen.completion_tokens as f64 / elapsed,
        "ttft_ms_p50": quantile(&seen.ttft_ms, 0.5),
        "ttft_ms_max": quantile(&seen.ttft_ms, 1.0),
    });
    if !args.json {
        eprintln!("{report:#}");
    }
    Ok(report)
}

/// `--tokenizer`, else the carried one.
fn tokenizer_path(args: &GrpcArgs) -> PathBuf {
    args.tokenizer.clone().unwrap_or_else(|| {
        std::env::var_os("AUTOJ_CARRY_DIR")
            .map_or_else(|| PathBuf::from("carry"), PathBuf::from)
            .join("tokenizer.json")
    })
}

/// Text of about `tokens` tokens: numbered words, so the prompt is not one repeated token.
fn response_text(tokenizer: &TextTokenizer, tokens: usize) -> anyhow::Result<String> {
    let mut text = String::new();
    let mut n = 0usize;
    while tokenizer.encode(&text, false)?.len() < tokens {
        for _ in 0..32 {
            text.push_str(&format!("point {} is {} ", n, n * 7 % 13));
            n += 1;
        }
    }
    let ids = tokenizer.encode(&text, false)?;
    Ok(tokenizer.decode(&ids[..tokens.min(ids.len())])?)
}

/// Runs `fut` to completion from this (blocking) thread: on the caller's runtime when there
/// is one (the `autoj` binary), else on a new one (tests).
fn block_on<F: std::future::Future>(fut: F) -> anyhow::Result<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(fut)),
        Err(_) => Ok(tokio::runtime::Runtime::new()?.block_on(fut)),
    }
}

/// Serves `engine` on loopback, warms it with one short judgment, then runs the clients;
/// what they saw and the seconds they took.
async fn drive(engine: Engine, args: GrpcArgs, text: String) -> anyhow::Result<(Seen, f64)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let limits = ServiceLimits {
        max_new_tokens_limit: ServiceLimits::default()
            .max_new_tokens_limit
            .max(args.new_tokens),
        ..ServiceLimits::default()
    };
    let service = JudgeService::new(engine, limits, "gpu-bench");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(autoj_judge::grpc::server::serve(listener, service, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let text = Arc::new(text);
    let warm = Mutex::new(Seen::default());
    judge_once(&channel, &text, 0, 4, &warm).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration_s);
    let clients: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (channel, text, seen, started) =
                (channel.clone(), text.clone(), seen.clone(), started.clone());
            let (cap, new_tokens) = (args.judgments, args.new_tokens);
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let n = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if cap > 0 && n >= cap {
                        break;
                    }
                    judge_once(&channel, &text, n + 1, new_tokens, &seen).await;
                }
            })
        })
        .collect();
    for c in clients {
        c.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = stop.send(());
    server.await??;
    let seen = std::mem::take(&mut *seen.lock().await);
    Ok((seen, elapsed))
}

/// One Critique stream to its end, recorded in `seen`.
async fn judge_once(
    channel: &Channel,
    text: &str,
    n: usize,
    new_tokens: usize,
    seen: &Mutex<Seen>,
) {
    let request = pb::CritiqueRequest {
        query: format!("Judgment {n}: summarise the points below."),
        response: text.to_owned(),
        options: Some(pb::JudgeOptions {
            generation: Some(pb::GenerationOptions {
                max_new_tokens: Some(new_tokens as u32),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let start = Instant::now();
    let mut first = None;
    let mut tokens = 0;
    let mut ok = false;
    if let Ok(response) = JudgeClient::new(channel.clone()).critique(request).await {
        let mut stream = response.into_inner();
        while let Ok(Some(event)) = stream.message().await {
            match event.event {
                Some(Event::CritiqueDelta(_) | Event::Verdict(_)) => {
                    first.get_or_insert(start.elapsed());
                }
                Some(Event::Usage(u)) => {
                    tokens = u.completion_tokens;
                    ok = true;
                }
                _ => {}
            }
        }
    }
    let mut s = seen.lock().await;
    if ok {
        s.completed += 1;
        s.completion_tokens += u64::from(tokens);
        s.ttft_ms.extend(first.map(|d| d.as_secs_f64() * 1e3));
    } else {
        s.failed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_on_the_cpu_completes_every_judgment_at_full_length() {
        let dir = std::env::temp_dir().join(format!("autoj-gpu-grpc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(crate::config::DEFAULT_MODEL);
        super::super::tokenizer::export(&model, &path).unwrap();
        let args = GrpcArgs {
            device: "cpu".into(),
            shape: "tiny".into(),
            tokenizer: Some(path),
            concurrency: 2,
            prompt_tokens: 48,
            new_tokens: 6,
            duration_s: 60,
            judgments: 4,
            max_batch_tokens: 64,
            seed: 1,
            json: true,
        };
        let report = run(&args).unwrap();
        assert_eq!(report["passed"], true, "{report}");
        assert_eq!(report["completed"], 4);
        assert!(report["judgments_per_min"].as_f64().unwrap() > 0.0);
        assert!(report["ttft_ms_max"].as_f64().unwrap() >= report["ttft_ms_p50"].as_f64().unwrap());
        // EOS never stops a judgment: 4 judgments of 6 tokens each.
        let tok_s = report["completion_tok_s"].as_f64().unwrap();
        let elapsed = report["elapsed_s"].as_f64().unwrap();
        assert_eq!((tok_s * elapsed).round(), 24.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
