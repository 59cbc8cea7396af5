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
//!
//! The engine's slots are sized to the device's memory ([`size`]): every client's prompt
//! and new tokens fit a slot, and where the memory holds fewer slots than clients, the
//! clients beyond them wait in the engine's queue as they would on a server.

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
use super::memory::{mib, sample_until, MemoryTrack};
use super::plan::{plan, plan_json, MemoryArgs, MemoryPlan, Wanted};
use super::DEFAULT_SHAPE;
use crate::config::{parse_device, ConfigError};

/// Positions a slot keeps beyond the prompt and the new tokens, for the prompt template.
const TEMPLATE_ROOM: usize = 256;

/// `gpu-bench grpc` settings.
#[derive(Debug, Clone, Args)]
pub struct GrpcArgs {
    /// Device to run the model on: `cuda:N` or `cpu`.
    #[arg(long, env = "AUTOJ_DEVICE", default_value = "cuda:0")]
    pub device: String,
    /// Model shape: `llama2-13b`, `llama2-7b` or `tiny`.
    #[arg(long, env = "AUTOJ_GPU_SHAPE", default_value = DEFAULT_SHAPE)]
    pub shape: String,
    /// tokenizer.json to serve with (default: `$AUTOJ_CARRY_DIR/tokenizer.json`, else
    /// `carry/tokenizer.json`).
    #[arg(long, env = "AUTOJ_GPU_TOKENIZER")]
    pub tokenizer: Option<PathBuf>,
    /// Streaming clients at once (also the engine's sequences and key/value slots, as many
    /// as the device's memory holds).
    #[arg(long, env = "AUTOJ_GPU_GRPC_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// Tokens of each judgment's response text (the prompt is this plus the template).
    #[arg(long, env = "AUTOJ_GPU_GRPC_PROMPT_TOKENS", default_value_t = 1000)]
    pub prompt_tokens: usize,
    /// Tokens every judgment generates (`max_new_tokens`; EOS never stops it).
    #[arg(long, env = "AUTOJ_GPU_GRPC_NEW_TOKENS", default_value_t = 400)]
    pub new_tokens: usize,
    /// Clients start no judgment after this many seconds; those running finish (45 s plus
    /// one round of judgments fits gpu-check's 150 s with the 13B shape on an H200).
    #[arg(long, env = "AUTOJ_GPU_GRPC_DURATION_S", default_value_t = 45)]
    pub duration_s: u64,
    /// Stop after this many judgments have started (0: only the duration bounds them).
    #[arg(long, env = "AUTOJ_GPU_GRPC_JUDGMENTS", default_value_t = 0)]
    pub judgments: usize,
    /// Tokens in one engine step, as `--max-batch-tokens`.
    #[arg(long, env = "AUTOJ_GPU_MAX_BATCH_TOKENS", default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Positions of the prefix cache's device copies, beside the slots (13B: ~3.4 GB for
    /// 4096, a few prompts' worth).
    #[arg(
        long,
        env = "AUTOJ_GPU_GRPC_PREFIX_CACHE_TOKENS",
        default_value_t = 4096
    )]
    pub prefix_cache_tokens: usize,
    /// Seed of the weights.
    #[arg(long, env = "AUTOJ_GPU_SEED", default_value_t = 1)]
    pub seed: u64,
    /// The memory the engine's slots are sized to.
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Print only the JSON object (gpu-check reads the last line either way).
    #[arg(long, env = "AUTOJ_GPU_JSON")]
    pub json: bool,
}

/// What the run is sized to: the memory plan (its sequences are the engine's slots) and
/// the clients.
#[derive(Debug, Clone)]
pub struct GrpcSize {
    /// Slots, positions and bytes.
    pub plan: MemoryPlan,
    /// Streaming clients at once.
    pub clients: usize,
    /// The settings the plan was made for.
    args: GrpcArgs,
}

impl GrpcSize {
    /// The sizes as JSON (`gpu-bench plan` and the step's report).
    pub fn describe(&self) -> Value {
        let mut v = plan_json(&self.plan);
        v["clients"] = json!(self.clients);
        v["prompt_tokens"] = json!(self.args.prompt_tokens);
        v["new_tokens"] = json!(self.args.new_tokens);
        v["prefix_cache_tokens"] = json!(self.args.prefix_cache_tokens);
        v["max_batch_tokens"] = json!(self.args.max_batch_tokens);
        v
    }
}

/// Sizes the engine to `memory` bytes ([`plan`]): a slot holds a client's prompt, its new
/// tokens, the verdict's reserve and the template, and never shrinks; the slots are as many
/// as the clients, or as the memory holds; the prefix cache's device copies come beside
/// them, and a step carries at most `--max-batch-tokens` rows and a prefill chunk.
pub fn size(
    args: &GrpcArgs,
    shape: &DeviceShape,
    memory: Option<u64>,
) -> Result<GrpcSize, ConfigError> {
    let wanted = Wanted {
        sequences: args.concurrency.max(1),
        spare_slots: 0,
        context: args.prompt_tokens.max(1),
        min_context: args.prompt_tokens.max(1),
        tail: args.new_tokens + VERDICT_RESERVE + TEMPLATE_ROOM,
        prefix_positions: args.prefix_cache_tokens,
        step_rows: args.max_batch_tokens,
        chunk: DEFAULT_PREFILL_CHUNK.min(args.max_batch_tokens).max(1),
    };
    Ok(GrpcSize {
        plan: plan(shape, memory, &wanted)?,
        clients: args.concurrency.max(1),
        args: args.clone(),
    })
}

/// The model's shape for a plan made without running: the vocabulary of the tokenizer the
/// step would read when it is there (gpu-check's carried one), else `vocab`; with where the
/// vocabulary came from.
pub fn planning_shape(
    args: &GrpcArgs,
    vocab: usize,
    dtype: candle_core::DType,
) -> anyhow::Result<(DeviceShape, String)> {
    let path = tokenizer_path(args);
    let (vocab, from) = if path.exists() {
        let tokenizer = TextTokenizer::from_file(&path, &[])
            .with_context(|| format!("reading the tokenizer {}", path.display()))?;
        (tokenizer.vocab_size(), path.display().to_string())
    } else {
        (
            vocab,
            format!("{vocab} (no tokenizer at {})", path.display()),
        )
    };
    let mut shape = DeviceShape::named(&args.shape, vocab)
        .with_context(|| format!("unknown shape `{}`", args.shape))?;
    shape.dtype = dtype;
    Ok((shape, from))
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    completed: usize,
    failed: usize,
    /// Milliseconds from the call to its first critique text (or verdict).
    ttft_ms: Vec<f64>,
    completion_tokens: u64,
    /// When the first judgment completed: the engine has run full batches by then.
    first_done: Option<Instant>,
}

/// What a run measured besides the clients: seconds, and device memory.
struct Run {
    seen: Seen,
    elapsed: f64,
    /// Memory in use after the warm-up judgment, bytes (`None` off CUDA).
    after_warmup: Option<u64>,
    /// Readings while the clients ran, and one at the end.
    memory: MemoryTrack,
}

/// Runs the server and the clients, the engine sized to the device's memory; `passed` when
/// every judgment completed and at least one did.
pub fn run(args: &GrpcArgs) -> anyhow::Result<Value> {
    let device = parse_device(&args.device)?;
    let path = tokenizer_path(args);
    let tokenizer = TextTokenizer::from_file(&path, &[])
        .with_context(|| format!("reading the tokenizer {}", path.display()))?;
    let mut shape = DeviceShape::named(&args.shape, tokenizer.vocab_size())
        .with_context(|| format!("unknown shape `{}`", args.shape))?;
    shape.dtype = serving_dtype(&device);
    let text = response_text(&tokenizer, args.prompt_tokens)?;
    let sized = size(args, &shape, args.memory.budget(&device)?)?;
    let setup = Instant::now();
    let engine = start_engine(args, &shape, &sized.plan, tokenizer, &device)?;
    let setup_s = setup.elapsed().as_secs_f64();
    let run = block_on(drive(engine, args.clone(), text, device))??;
    let (seen, elapsed) = (&run.seen, run.elapsed);
    let steady = seen.first_done.and_then(|t| run.memory.first_after_mib(t));
    let growth = steady.zip(run.memory.last_mib()).map(|(s, e)| e - s);
    let plan = sized.describe();
    let report = json!({
        "passed": seen.failed == 0 && seen.completed > 0,
        "device": args.device,
        "dtype": shape.dtype.as_str(),
        "shape": args.shape,
        "vocab": shape.vocab,
        "concurrency": sized.clients,
        "slots": sized.plan.slots,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "planned_gib": plan["planned_gib"],
        "plan": plan,
        "setup_s": setup_s,
        "elapsed_s": elapsed,
        "completed": seen.completed,
        "failed": seen.failed,
        "judgments_per_min": seen.completed as f64 * 60.0 / elapsed,
        "completion_tok_s": seen.completion_tokens as f64 / elapsed,
        "ttft_ms_p50": quantile(&seen.ttft_ms, 0.5),
        "ttft_ms_max": quantile(&seen.ttft_ms, 1.0),
        "peak_gpu_mem_mib": run.memory.peak_mib(),
        "gpu_mem_after_warmup_mib": run.after_warmup.map(mib),
        "gpu_mem_steady_mib": steady,
        "gpu_mem_end_mib": run.memory.last_mib(),
        "gpu_mem_growth_mib": growth,
    });
    if !args.json {
        eprintln!("{report:#}");
    }
    Ok(report)
}

/// A random model of `shape` with the slots of `plan` on `device`, under the engine's
/// batching scheduler. The model is made on this thread and runs on the engine's: CUDA
/// work queued here (the weights' generator, the store's zeroing) goes to this thread's
/// stream, so the device is synchronized before the model changes threads.
fn start_engine(
    args: &GrpcArgs,
    shape: &DeviceShape,
    plan: &MemoryPlan,
    tokenizer: TextTokenizer,
    device: &candle_core::Device,
) -> anyhow::Result<Engine> {
    let layout = SlotLayout {
        slots: plan.slots,
        slot_len: plan.slot_len,
    };
    let model = DeviceModel::random(shape, layout, args.seed, device)
        .context("creating the random model on the device")?;
    device.synchronize()?;
    let limits = BatchLimits {
        max_seqs: layout.slots,
        max_batch_tokens: args.max_batch_tokens,
        kv_budget_bytes: plan.kv_store_bytes as usize,
        slot_tokens: layout.slot_len,
        // The store above holds the slots alone; the prefix cache's device copies come
        // beside it, planned for.
        prefix_cache_tokens: args.prefix_cache_tokens,
        ..BatchLimits::default()
    };
    let name = format!("random-{}", args.shape);
    let config = EngineConfig {
        model: ModelSpec::new(name.clone(), WeightDType::F32, device.clone()),
        prompt_format: PromptFormatChoice::AutoJ,
        // Clients beyond the slots wait in the queue.
        queue_capacity: 2 * layout.slots.max(args.concurrency),
        prefill_chunk: DEFAULT_PREFILL_CHUNK,
        scheduling: Scheduling::Device(limits.clone()),
    };
    let info = ModelInfo {
        name,
        context: layout.slot_len,
        chat_template: None,
    };
    Ok(Engine::start_with(model, tokenizer, info, limits, &config)?)
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

/// Serves `engine` on loopback, warms it with one short judgment, then runs the clients
/// while a task reads `device`'s memory; what they saw, the seconds they took and the
/// memory readings (one after the warm-up, one at the end).
async fn drive(
    engine: Engine,
    args: GrpcArgs,
    text: String,
    device: candle_core::Device,
) -> anyhow::Result<Run> {
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
    let after_warmup = MemoryTrack::default().sample(&device)?;
    let (stop_sampling, sampling_stopped) = tokio::sync::oneshot::channel();
    let sampler = tokio::spawn(sample_until(device.clone(), sampling_stopped));
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
    let _ = stop_sampling.send(());
    let mut memory = sampler.await?;
    memory.sample(&device)?;
    let _ = stop.send(());
    server.await??;
    let seen = std::mem::take(&mut *seen.lock().await);
    Ok(Run {
        seen,
        elapsed,
        after_warmup,
        memory,
    })
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
        s.first_done.get_or_insert_with(Instant::now);
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

    /// Tiny settings on the CPU serving the default model's tokenizer, written into `dir`.
    fn tiny(dir: &std::path::Path) -> GrpcArgs {
        let path = dir.join("tokenizer.json");
        let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(crate::config::DEFAULT_MODEL);
        super::super::tokenizer::export(&model, &path).unwrap();
        GrpcArgs {
            device: "cpu".into(),
            shape: "tiny".into(),
            tokenizer: Some(path),
            concurrency: 2,
            prompt_tokens: 48,
            new_tokens: 6,
            duration_s: 60,
            judgments: 4,
            max_batch_tokens: 64,
            prefix_cache_tokens: 4096,
            seed: 1,
            memory: MemoryArgs {
                gpu_memory_gib: None,
            },
            json: true,
        }
    }

    #[test]
    fn grpc_on_the_cpu_completes_every_judgment_at_full_length() {
        let dir = tempfile::tempdir().unwrap();
        let report = run(&tiny(dir.path())).unwrap();
        assert_eq!(report["passed"], true, "{report}");
        assert_eq!(report["completed"], 4);
        assert_eq!(report["slots"], 2);
        assert!(report["judgments_per_min"].as_f64().unwrap() > 0.0);
        assert!(report["ttft_ms_max"].as_f64().unwrap() >= report["ttft_ms_p50"].as_f64().unwrap());
        // EOS never stops a judgment: 4 judgments of 6 tokens each.
        let tok_s = report["completion_tok_s"].as_f64().unwrap();
        let elapsed = report["elapsed_s"].as_f64().unwrap();
        assert_eq!((tok_s * elapsed).round(), 24.0);
        // No device memory to read on the CPU.
        assert_eq!(report["gpu_mem_growth_mib"], Value::Null);
    }

    #[test]
    fn clients_beyond_the_slots_the_memory_holds_wait_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = GrpcArgs {
            concurrency: 3,
            judgments: 5,
            ..tiny(dir.path())
        };
        let tokenizer = TextTokenizer::from_file(args.tokenizer.as_ref().unwrap(), &[]).unwrap();
        let shape = DeviceShape::named("tiny", tokenizer.vocab_size()).unwrap();
        // Memory for the fixed part and one and a half slots, with the margin.
        let full = size(&args, &shape, None).unwrap().plan;
        let slot = full.kv_store_bytes / 3;
        let need = full.planned_bytes - full.kv_store_bytes + slot + slot / 2;
        let gib = need as f64 * 1000.0 / (1000 - super::super::plan::MARGIN_PER_MILLE) as f64;
        args.memory.gpu_memory_gib = Some(gib / (1u64 << 30) as f64);
        let report = run(&args).unwrap();
        assert_eq!(report["passed"], true, "{report}");
        assert_eq!(
            (report["slots"].as_u64(), report["concurrency"].as_u64()),
            (Some(1), Some(3))
        );
        assert_eq!(report["plan"]["shrunk"], true);
        assert_eq!(report["completed"], 5);
    }
}
