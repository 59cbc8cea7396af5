//! Command-line and environment configuration, validated once into typed settings.
//!
//! Every flag has an `AUTOJ_*` environment variable. A default the judge library also uses
//! (engine, batching and service limits) is taken from the library's own `Default` or
//! constant, so each number is declared once; `--help` shows it.

use std::net::SocketAddr;
use std::path::PathBuf;

use autoj_judge::engine::checkpoint::quantize::QuantType;
use autoj_judge::engine::handle::{DEFAULT_PREFILL_CHUNK, DEFAULT_QUEUE_CAPACITY};
use autoj_judge::engine::model::{ModelSpec, WeightDType};
use autoj_judge::engine::scheduler::BatchLimits;
use autoj_judge::engine::scheduler::KvType;
use autoj_judge::engine::{EngineConfig, PromptFormatChoice, Scheduling};
use autoj_judge::grpc::validate::ServiceLimits;
use candle_core::Device;
use clap::{Args, ValueEnum};

/// Where setup puts the embedded default model (relative to the working directory).
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Errors in configuration; the binary exits with code 64 (EX_USAGE) on them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The model path does not exist.
    #[error("model not found at {0}: run `scripts/fetch-models.sh` for the default model, or pass --model / AUTOJ_MODEL")]
    ModelMissing(PathBuf),
    /// A device string could not be understood or opened.
    #[error("device `{0}`: {1}")]
    Device(String, String),
    /// A numeric limit is out of range.
    #[error("{0}")]
    Range(String),
    /// An API key, certificate or key file is missing or unusable.
    #[error("{0}")]
    Security(String),
}

/// Prompt wrapper choice on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PromptFormatArg {
    /// The model's chat template when it has one, else LLaMA-2 `[INST]`.
    Auto,
    /// LLaMA-2 `[INST] ... [/INST]`, Auto-J's training format.
    Autoj,
    /// The model's own chat template.
    Chat,
}

/// Weight type on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DTypeArg {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
}

/// Settings of the judge engine and its per-request limits.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Judge model: a .gguf file or a Hugging Face directory as published (config.json;
    /// safetensors or pytorch_model*.bin, sharded or not, or GPTQ 4-bit; tokenizer.json or
    /// tokenizer.model). Defaults to the small SmolLM2 chat model setup fetches (not a trained
    /// judge; see the README for real Auto-J weights).
    #[arg(long, env = "AUTOJ_MODEL", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Prompt wrapper around Auto-J's templates.
    #[arg(long, env = "AUTOJ_PROMPT_FORMAT", value_enum, default_value = "auto")]
    pub prompt_format: PromptFormatArg,
    /// Device: `cpu`, or `cuda:N` in a build with the `cuda` feature.
    #[arg(long, env = "AUTOJ_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Weight type for Hugging Face directories (GGUF keeps its own quantization).
    #[arg(long, env = "AUTOJ_DTYPE", value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// Quantize a Hugging Face directory's matrices at load, in memory, with llama.cpp's
    /// per-tensor mix for the type (q4_k_m, q5_k_m, q8_0, q4_1); CPU engine only. A GGUF
    /// file keeps its own types.
    #[arg(long, env = "AUTOJ_QUANTIZE")]
    pub quantize: Option<QuantType>,
    /// Serve at most this many positions (prompt and completion) instead of the context
    /// the model declares (Auto-J 13B declares 8,192; it was trained from a 4,096 base).
    #[arg(long, env = "AUTOJ_CONTEXT")]
    pub context: Option<usize>,
    /// CPU threads for model compute (0: one per core).
    #[arg(long, env = "AUTOJ_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Requests that may wait for the engine; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "AUTOJ_QUEUE_CAPACITY", default_value_t = DEFAULT_QUEUE_CAPACITY)]
    pub queue_capacity: usize,
    /// Prompt tokens per forward pass during prefill (bounds attention memory).
    #[arg(long, env = "AUTOJ_PREFILL_CHUNK", default_value_t = DEFAULT_PREFILL_CHUNK)]
    pub prefill_chunk: usize,
    /// Largest query or response accepted, in bytes.
    #[arg(long, env = "AUTOJ_MAX_FIELD_BYTES", default_value_t = ServiceLimits::default().max_field_bytes)]
    pub max_field_bytes: usize,
    /// Largest max_new_tokens a client may ask for.
    #[arg(long, env = "AUTOJ_MAX_NEW_TOKENS_LIMIT", default_value_t = ServiceLimits::default().max_new_tokens_limit)]
    pub max_new_tokens_limit: usize,
    /// max_new_tokens when a request leaves it unset (Auto-J uses 1024).
    #[arg(long, env = "AUTOJ_DEFAULT_MAX_NEW_TOKENS", default_value_t = ServiceLimits::default().default_max_new_tokens)]
    pub default_max_new_tokens: usize,
    /// `batched`: continuous batching with per-sequence caches and a prefix cache (our own
    /// kernels on the CPU, the device backend on a GPU); `device`: the same batching through
    /// the device backend on any device, the CPU included; `serial`: one request at a time
    /// (the batching scheduler with one sequence; for measuring what batching gains).
    #[arg(long, env = "AUTOJ_SCHEDULER", value_enum, default_value = "batched")]
    pub scheduler: SchedulerArg,
    /// Sequences that run in one batch.
    #[arg(long, env = "AUTOJ_MAX_SEQS", default_value_t = BatchLimits::default().max_seqs)]
    pub max_seqs: usize,
    /// Tokens in one forward pass (generating sequences' tokens plus prompt chunks).
    #[arg(long, env = "AUTOJ_MAX_BATCH_TOKENS", default_value_t = BatchLimits::default().max_batch_tokens)]
    pub max_batch_tokens: usize,
    /// Key/value cache the running sequences may reserve, in MiB; a request needing more
    /// than all of it is refused with FAILED_PRECONDITION.
    #[arg(long, env = "AUTOJ_KV_BUDGET_MIB", default_value_t = BatchLimits::default().kv_budget_bytes >> 20)]
    pub kv_budget_mib: usize,
    /// Prompt positions the prefix cache keeps for reuse (0 turns it off).
    #[arg(long, env = "AUTOJ_PREFIX_CACHE_TOKENS", default_value_t = BatchLimits::default().prefix_cache_tokens)]
    pub prefix_cache_tokens: usize,
    /// Positions one key/value slot of the device backend holds (0: the model's context);
    /// shorter slots let the budget hold more sequences, and longer requests are truncated
    /// to fit (or refused).
    #[arg(long, env = "AUTOJ_SLOT_TOKENS", default_value_t = BatchLimits::default().slot_tokens)]
    pub slot_tokens: usize,
    /// How the CPU batched engine's key/value caches store keys and values: `f16` (half the
    /// memory per sequence and half the bytes attention reads), `f32` (the same numbers as
    /// candle's stock model) or `q8` (8-bit with a scale per 32 values: 56% of f16, for long
    /// prompts and many sequences). The device backend keeps them in the weights' `--dtype`.
    #[arg(long, env = "AUTOJ_KV_DTYPE", value_enum, default_value_t = KvType::default().into())]
    pub kv_dtype: KvDTypeArg,
}

/// Element type of the key/value caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvDTypeArg {
    /// Half precision.
    F16,
    /// Single precision.
    F32,
    /// 8-bit integers with a scale per 32 values (56% of f16's memory and reads).
    Q8,
}

impl From<KvType> for KvDTypeArg {
    fn from(t: KvType) -> Self {
        match t {
            KvType::F16 => KvDTypeArg::F16,
            KvType::F32 => KvDTypeArg::F32,
            KvType::Q8 => KvDTypeArg::Q8,
        }
    }
}

impl From<KvDTypeArg> for KvType {
    fn from(a: KvDTypeArg) -> Self {
        match a {
            KvDTypeArg::F16 => KvType::F16,
            KvDTypeArg::F32 => KvType::F32,
            KvDTypeArg::Q8 => KvType::Q8,
        }
    }
}

/// How the engine shares the model between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedulerArg {
    /// Continuous batching.
    Batched,
    /// Continuous batching through the device backend (candle tensor ops) on any device.
    Device,
    /// One request at a time: the batching scheduler with one sequence (`--max-seqs` is
    /// ignored), on the device's backend.
    Serial,
}

/// Validated engine settings.
#[derive(Debug, Clone)]
pub struct JudgeSettings {
    /// For `Engine::start`.
    pub engine: EngineConfig,
    /// For `JudgeService::new`.
    pub limits: ServiceLimits,
    /// Compute threads (0: default).
    pub threads: usize,
}

impl EngineArgs {
    /// Checks the settings and turns them into typed configuration.
    pub fn validate(&self) -> Result<JudgeSettings, ConfigError> {
        if !self.model.exists() {
            return Err(ConfigError::ModelMissing(self.model.clone()));
        }
        let device = parse_device(&self.device)?;
        if self.queue_capacity == 0
            || self.prefill_chunk == 0
            || self.max_seqs == 0
            || self.max_batch_tokens == 0
            || self.kv_budget_mib == 0
        {
            return Err(ConfigError::Range(
                "--queue-capacity, --prefill-chunk, --max-seqs, --max-batch-tokens and \
                 --kv-budget-mib must be at least 1"
                    .into(),
            ));
        }
        if self.quantize.is_some()
            && (self.scheduler != SchedulerArg::Batched || !matches!(device, Device::Cpu))
        {
            return Err(ConfigError::Range(
                "--quantize applies to the CPU engine (--device cpu --scheduler batched); on a \
                 GPU the weights run dequantized to --dtype"
                    .into(),
            ));
        }
        if self.context == Some(0) {
            return Err(ConfigError::Range("--context must be at least 1".into()));
        }
        if self.default_max_new_tokens == 0
            || self.default_max_new_tokens > self.max_new_tokens_limit
        {
            return Err(ConfigError::Range(format!(
                "--default-max-new-tokens ({}) must be between 1 and --max-new-tokens-limit ({})",
                self.default_max_new_tokens, self.max_new_tokens_limit
            )));
        }
        Ok(JudgeSettings {
            engine: EngineConfig {
                model: ModelSpec {
                    quantize: self.quantize,
                    context: self.context,
                    ..ModelSpec::new(
                        self.model.clone(),
                        match self.dtype {
                            DTypeArg::F32 => WeightDType::F32,
                            DTypeArg::F16 => WeightDType::F16,
                            DTypeArg::Bf16 => WeightDType::Bf16,
                        },
                        device,
                    )
                },
                prompt_format: match self.prompt_format {
                    PromptFormatArg::Auto => PromptFormatChoice::Auto,
                    PromptFormatArg::Autoj => PromptFormatChoice::AutoJ,
                    PromptFormatArg::Chat => PromptFormatChoice::Chat,
                },
                queue_capacity: self.queue_capacity,
                prefill_chunk: self.prefill_chunk,
                scheduling: self.scheduling(),
            },
            limits: ServiceLimits {
                max_field_bytes: self.max_field_bytes,
                max_new_tokens_limit: self.max_new_tokens_limit,
                default_max_new_tokens: self.default_max_new_tokens,
                ..ServiceLimits::default()
            },
            threads: self.threads,
        })
    }
}

impl EngineArgs {
    /// How the engine shares the model, with the batching limits the flags give.
    fn scheduling(&self) -> Scheduling {
        let limits = BatchLimits {
            max_seqs: self.max_seqs,
            max_batch_tokens: self.max_batch_tokens,
            kv_budget_bytes: self.kv_budget_mib << 20,
            prefix_cache_tokens: self.prefix_cache_tokens,
            kv_type: self.kv_dtype.into(),
            slot_tokens: self.slot_tokens,
        };
        match self.scheduler {
            SchedulerArg::Serial => Scheduling::Batched(BatchLimits {
                max_seqs: 1,
                ..limits
            }),
            SchedulerArg::Batched => Scheduling::Batched(limits),
            SchedulerArg::Device => Scheduling::Device(limits),
        }
    }
}

/// The compute device a `--device` value names: `cpu`, or `cuda:N` (`cuda` is `cuda:0`) in a
/// build with the `cuda` feature; an error says what could not be opened. A CUDA device's
/// memory pool is set to keep what it frees ([`crate::gpu::keep_pool_memory`]).
pub fn parse_device(s: &str) -> Result<Device, ConfigError> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = s
        .strip_prefix("cuda:")
        .or_else(|| (s == "cuda").then_some("0"))
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| ConfigError::Device(s.into(), "expected `cpu` or `cuda:N`".into()))?;
    let device =
        Device::new_cuda(ordinal).map_err(|e| ConfigError::Device(s.into(), device_error(e)))?;
    crate::gpu::keep_pool_memory(&device);
    Ok(device)
}

/// A device error as one line a person can act on: candle's captured backtrace (present when
/// `RUST_BACKTRACE` is set) dropped, and what to check added.
fn device_error(e: candle_core::Error) -> String {
    let inner = match e {
        candle_core::Error::WithBacktrace { inner, .. } => *inner,
        other => other,
    };
    let hint = if cfg!(feature = "cuda") {
        "is an NVIDIA driver installed and the GPU visible? this build needs a driver for CUDA \
         13.0 or later; `--device cpu` runs without one"
    } else {
        "this build has no CUDA support: build with `--features cuda` (docs/gpu.md), or use \
         `--device cpu`"
    };
    format!("{inner} ({hint})")
}

/// Where a server listens.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "AUTOJ_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
}

/// The HTTP door beside gRPC (router and `autoj serve`).
#[derive(Debug, Clone, Default, Args)]
pub struct HttpListenArgs {
    /// Also serve the Judge and Scenarios services as JSON over HTTP, with Server-Sent
    /// Events for streams and a page at `/`, on this address (same API keys; plaintext).
    /// Off unless given (or set as `http_listen` in the router config file).
    #[arg(long, env = "AUTOJ_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
}

/// Sets the compute thread count before any model code runs. candle's CPU kernels size
/// their parallelism from `RAYON_NUM_THREADS`, so both are set.
pub fn apply_threads(threads: usize) {
    if threads == 0 {
        return;
    }
    // Runs before the async runtime or any engine thread exists, so no other thread reads
    // the environment concurrently.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
}
