//! The engine handle: [`Engine::start`] loads the model on a dedicated thread that then
//! serves requests from a bounded queue (batched: on the CPU through our own kernels,
//! [`super::batch`], on other devices through candle tensor ops, [`super::device`]; or one
//! at a time, [`super::serial`]); [`Engine::submit`] builds the prompt, refuses what can
//! never fit, and queues the request without waiting.

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use candle_core::Device;
use tokio::sync::mpsc;

use super::cpu::BatchModel;
use super::device::DeviceModel;
use super::job::{
    Admission, ChatRequest, EngineStats, Job, JobKind, JudgeRequest, Submission, MAX_TOP_LOGPROBS,
};
use super::model::{ModelInfo, ModelSpec};
use super::scheduler::BatchLimits;
use super::tokenizer::TextTokenizer;
use crate::error::{JudgeError, Result};
use crate::protocol::chat;
use crate::protocol::fit::{prepare, Room};
use crate::protocol::prompt::{detect_language, Lang, PromptFormat, Task};
use crate::protocol::scoring::VERDICT_RESERVE;

/// Requests that may wait in the engine's queue unless configured otherwise.
pub const DEFAULT_QUEUE_CAPACITY: usize = 64;

/// Prompt tokens per forward pass during prefill unless configured otherwise.
pub const DEFAULT_PREFILL_CHUNK: usize = 512;

/// Which prompt wrapper to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptFormatChoice {
    /// The model's chat template when it has one, else LLaMA-2 `[INST]` (Auto-J).
    Auto,
    /// Always LLaMA-2 `[INST]`, Auto-J's training format.
    AutoJ,
    /// Always the model's chat template (an error when it has none).
    Chat,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The model to load.
    pub model: ModelSpec,
    /// Prompt wrapper.
    pub prompt_format: PromptFormatChoice,
    /// Requests that may wait in the queue; more are refused with `QueueFull`.
    pub queue_capacity: usize,
    /// Prompt tokens per forward pass during prefill (bounds attention memory).
    pub prefill_chunk: usize,
    /// How requests share the model.
    pub scheduling: Scheduling,
}

/// How the engine thread serves requests.
#[derive(Debug, Clone)]
pub enum Scheduling {
    /// Continuous batching with per-sequence caches and a prefix cache: our own kernels on
    /// the CPU, the device backend (candle tensor ops, slotted caches) on other devices.
    Batched(BatchLimits),
    /// Continuous batching through the device backend on any device, the CPU included (how
    /// tests without a GPU run the code a GPU runs).
    Device(BatchLimits),
    /// One request at a time through candle's stock models (any device): the reference
    /// engine of tests ([`super::oracle`]), not built into the server.
    #[cfg(any(test, feature = "testkit"))]
    Serial,
}

impl Default for Scheduling {
    fn default() -> Self {
        Self::Batched(BatchLimits::default())
    }
}

struct Shared {
    stats: Arc<EngineStats>,
    tokenizer: TextTokenizer,
    info: ModelInfo,
    format: PromptFormat,
    capacity: usize,
    /// Batched engine: key/value bytes per token and the budget, to refuse what never fits.
    kv_limit: Option<(usize, usize)>,
}

/// Handle to the engine thread. Cheap to clone; the thread stops when every handle is gone.
#[derive(Clone)]
pub struct Engine {
    queue: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.shared.info.name)
            .finish()
    }
}

impl Engine {
    /// Starts the engine thread, loads the model on it and returns once the model is ready
    /// (or with the load error). Blocking: call from a blocking context.
    pub fn start(config: EngineConfig) -> Result<Self> {
        let (queue, rx) = mpsc::channel::<Job>(config.queue_capacity.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let thread = Loop {
            path: Path::choose(&config.scheduling, &config.model.device),
            spec: config.model.clone(),
            chunk: config.prefill_chunk.max(1),
            stats: stats.clone(),
        };
        let limits = thread.path.limits().cloned();
        thread::Builder::new()
            .name("autoj-engine".into())
            .spawn(move || thread.serve(rx, ready_tx))
            .map_err(|e| JudgeError::ModelLoad {
                path: config.model.path.clone(),
                reason: format!("cannot start the engine thread: {e}"),
            })?;
        let (tokenizer, info, per_token) =
            ready_rx.recv().map_err(|_| JudgeError::EngineStopped)??;
        let kv_limit = limits.map(|l| (per_token, l.kv_budget_bytes));
        let format = choose_format(config.prompt_format, &info, &tokenizer)?;
        tracing::info!(model = %info.name, context = info.context, format = ?format_name(&format), "judge model ready");
        Ok(Self {
            queue,
            shared: Arc::new(Shared {
                stats,
                tokenizer,
                info,
                format,
                capacity: config.queue_capacity,
                kv_limit,
            }),
        })
    }

    /// Starts the engine thread over an already-built device model (e.g. a random-weight one
    /// made for a benchmark, where there is no file to load) under the batching scheduler
    /// with `limits`; `config.model` is not read, `config.scheduling` is replaced. Requests
    /// are fitted to `info.context`, at most the model's slot length.
    pub fn start_with(
        model: DeviceModel,
        tokenizer: TextTokenizer,
        mut info: ModelInfo,
        limits: BatchLimits,
        config: &EngineConfig,
    ) -> Result<Self> {
        let (queue, rx) = mpsc::channel::<Job>(config.queue_capacity.max(1));
        let stats = Arc::new(EngineStats::default());
        info.context = info.context.min(model.slot_len());
        let format = choose_format(config.prompt_format, &info, &tokenizer)?;
        let per_token = model.shape.kv_bytes_per_token();
        let shared = Shared {
            stats: stats.clone(),
            tokenizer: tokenizer.clone(),
            info,
            format,
            capacity: config.queue_capacity,
            kv_limit: Some((per_token, limits.kv_budget_bytes)),
        };
        let chunk = config.prefill_chunk.max(1);
        thread::Builder::new()
            .name("autoj-engine".into())
            .spawn(move || super::scheduler::run(model, tokenizer, rx, &limits, chunk, &stats))
            .map_err(|e| JudgeError::ModelLoad {
                path: config.model.path.clone(),
                reason: format!("cannot start the engine thread: {e}"),
            })?;
        Ok(Self {
            queue,
            shared: Arc::new(shared),
        })
    }

    /// Facts about the loaded model.
    pub fn info(&self) -> &ModelInfo {
        &self.shared.info
    }

    /// Counters of finished requests.
    pub fn stats(&self) -> &EngineStats {
        &self.shared.stats
    }

    /// The model's tokenizer (for benchmarks and tools).
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.shared.tokenizer
    }

    /// Builds the prompt (truncating if allowed) and queues the request. Fails at once with
    /// `ContextOverflow` or `QueueFull`; never waits for queue space. Tokenizes: run it off
    /// the async reactor for long inputs.
    pub fn submit(&self, req: JudgeRequest) -> Result<Submission> {
        let s = &self.shared;
        if req.params.max_new_tokens == 0 {
            return Err(JudgeError::InvalidArgument(
                "max_new_tokens must be at least 1".into(),
            ));
        }
        let language = req
            .language
            .unwrap_or_else(|| detect_language(req.task.query()));
        let room = Room {
            context: s.info.context,
            max_new_tokens: req.params.max_new_tokens + VERDICT_RESERVE,
            policy: req.truncation,
        };
        let prepared = prepare(&req.task, (language, &s.format), &s.tokenizer, room)?;
        let (tx, events) = mpsc::channel(req.params.max_new_tokens + 8);
        let admission = Admission {
            prompt_tokens: prepared.prompt_ids.len(),
            truncated_tokens: prepared.truncated_tokens,
            language,
        };
        self.check_kv(prepared.prompt_ids.len() + req.params.max_new_tokens + VERDICT_RESERVE)?;
        let job = Job {
            prompt_ids: prepared.prompt_ids,
            kind: JobKind::Judge {
                pairwise: req.task.is_pairwise(),
            },
            lang: language,
            params: req.params,
            enqueued: Instant::now(),
            deadline: req.deadline,
            events: tx,
        };
        self.enqueue(job)?;
        Ok(Submission { admission, events })
    }

    /// Renders a chat with the model's chat template and queues it: text and, when asked,
    /// token log-probabilities, no verdict. Input that does not fit is refused with
    /// `ContextOverflow` (a conversation is never cut).
    pub fn submit_chat(&self, req: ChatRequest) -> Result<Submission> {
        let s = &self.shared;
        let max = req.params.max_new_tokens;
        if max == 0 {
            return Err(JudgeError::InvalidArgument(
                "max_tokens must be at least 1".into(),
            ));
        }
        if let Some(n) = req.logprobs.filter(|&n| n > MAX_TOP_LOGPROBS) {
            return Err(JudgeError::InvalidArgument(format!(
                "top_logprobs is {n}; at most {MAX_TOP_LOGPROBS}"
            )));
        }
        let eos = s.tokenizer.eos_ids().first().copied();
        let prompt_ids = chat::prompt_ids(&req.messages, &s.format, &s.tokenizer, eos)?;
        let tokens = prompt_ids.len() + max;
        if tokens > s.info.context {
            return Err(JudgeError::ContextOverflow(format!(
                "the messages are {} tokens and max_tokens is {max}: {tokens} tokens, more than \
                 the model's context of {}; shorten the messages or lower max_tokens",
                prompt_ids.len(),
                s.info.context
            )));
        }
        self.check_kv(tokens)?;
        // A token's log-probabilities and its text are two events.
        let per_token = if req.logprobs.is_some() { 2 } else { 1 };
        let (tx, events) = mpsc::channel(max * per_token + 8);
        let admission = Admission {
            prompt_tokens: prompt_ids.len(),
            truncated_tokens: 0,
            language: detect_language(last_user(&req.messages)),
        };
        let job = Job {
            prompt_ids,
            kind: JobKind::Chat {
                logprobs: req.logprobs,
            },
            lang: admission.language,
            params: req.params,
            enqueued: Instant::now(),
            deadline: req.deadline,
            events: tx,
        };
        self.enqueue(job)?;
        Ok(Submission { admission, events })
    }

    /// Refuses a request whose `tokens` could never fit the batched engine's key/value
    /// budget.
    fn check_kv(&self, tokens: usize) -> Result<()> {
        match self.shared.kv_limit {
            Some((per_token, budget)) if tokens * per_token > budget => {
                Err(JudgeError::ContextOverflow(format!(
                    "this request needs {} MiB of key/value cache ({tokens} tokens: the prompt \
                     and all it may generate) but the judge's whole budget is {} MiB; lower \
                     the token limit or shorten the input",
                    (tokens * per_token) >> 20,
                    budget >> 20
                )))
            }
            _ => Ok(()),
        }
    }

    /// Puts `job` on the queue, or refuses it at once when the queue is full.
    fn enqueue(&self, job: Job) -> Result<()> {
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => JudgeError::QueueFull {
                capacity: self.shared.capacity,
            },
            mpsc::error::TrySendError::Closed(_) => JudgeError::EngineStopped,
        })
    }
}

/// The last user message's text (the language a chat is answered in).
fn last_user(messages: &[chat::ChatMessage]) -> &str {
    messages
        .iter()
        .rev()
        .find(|m| m.role == chat::ChatRole::User)
        .map_or("", |m| m.content.as_str())
}

/// Which loop the engine thread runs.
enum Path {
    /// Our CPU kernels under the batching scheduler.
    Cpu(BatchLimits),
    /// The device backend under the batching scheduler.
    Device(BatchLimits),
    /// candle's stock models, one request at a time (tests only).
    #[cfg(any(test, feature = "testkit"))]
    Serial,
}

impl Path {
    fn choose(scheduling: &Scheduling, device: &Device) -> Self {
        match (scheduling, device) {
            (Scheduling::Batched(l), Device::Cpu) => Self::Cpu(l.clone()),
            (Scheduling::Batched(l) | Scheduling::Device(l), _) => Self::Device(l.clone()),
            #[cfg(any(test, feature = "testkit"))]
            (Scheduling::Serial, _) => Self::Serial,
        }
    }

    fn limits(&self) -> Option<&BatchLimits> {
        match self {
            Self::Cpu(l) | Self::Device(l) => Some(l),
            #[cfg(any(test, feature = "testkit"))]
            Self::Serial => None,
        }
    }
}

/// What the engine thread reports once its model is loaded: the tokenizer, the model's
/// facts and the key/value bytes per token (0 on the serial path, which refuses nothing).
type Ready = Result<(TextTokenizer, ModelInfo, usize)>;

/// The engine thread's work: load the model the path needs, report, then serve.
struct Loop {
    path: Path,
    spec: ModelSpec,
    chunk: usize,
    stats: Arc<EngineStats>,
}

impl Loop {
    fn serve(self, rx: mpsc::Receiver<Job>, ready: std::sync::mpsc::Sender<Ready>) {
        let (spec, chunk, stats) = (&self.spec, self.chunk, &*self.stats);
        match &self.path {
            Path::Cpu(limits) => {
                match BatchModel::load(&spec.path, spec.quantize).and_then(|(m, t, mut info)| {
                    info.context = spec.served_context(info.context)?;
                    Ok((m, t, info))
                }) {
                    Ok((mut model, tokenizer, info)) => {
                        if let Err(e) = model.shape.set_kv(limits.kv_type) {
                            let _ = ready.send(Err(e));
                            return;
                        }
                        let per_token = model.shape.kv_bytes_per_token();
                        let _ = ready.send(Ok((tokenizer.clone(), info, per_token)));
                        super::scheduler::run(model, tokenizer, rx, limits, chunk, stats);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            }
            Path::Device(limits) => match DeviceModel::load(spec, limits) {
                Ok((model, tokenizer, mut info)) => {
                    // A request must fit one slot: prompts are fitted (truncated or refused)
                    // to it as to the context.
                    info.context = info.context.min(model.slot_len());
                    let per_token = model.shape.kv_bytes_per_token();
                    let _ = ready.send(Ok((tokenizer.clone(), info, per_token)));
                    super::scheduler::run(model, tokenizer, rx, limits, chunk, stats);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            },
            #[cfg(any(test, feature = "testkit"))]
            Path::Serial => match super::oracle::JudgeModel::load(spec).and_then(|mut m| {
                m.info.context = spec.served_context(m.info.context)?;
                Ok(m)
            }) {
                Ok(model) => {
                    let _ = ready.send(Ok((model.tokenizer.clone(), model.info.clone(), 0)));
                    super::oracle::serial::run(model, rx, chunk, stats);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            },
        }
    }
}

fn format_name(f: &PromptFormat) -> &'static str {
    match f {
        PromptFormat::AutoJ => "llama2-inst",
        PromptFormat::Chat { .. } => "chat-template",
    }
}

/// The prompt wrapper for a model: what `choice` asks for, given whether the model has a
/// chat template; a chat template is test-rendered so a broken one fails at start-up.
pub fn choose_format(
    choice: PromptFormatChoice,
    info: &ModelInfo,
    tok: &TextTokenizer,
) -> Result<PromptFormat> {
    let chat = |template: &String| PromptFormat::Chat {
        template: template.clone(),
        bos_token: tok
            .bos_id()
            .and_then(|id| tok.id_to_token(id))
            .unwrap_or_default(),
        eos_token: tok
            .eos_ids()
            .first()
            .and_then(|&id| tok.id_to_token(id))
            .unwrap_or_default(),
    };
    match (choice, &info.chat_template) {
        (PromptFormatChoice::AutoJ, _) | (PromptFormatChoice::Auto, None) => {
            Ok(PromptFormat::AutoJ)
        }
        (PromptFormatChoice::Chat | PromptFormatChoice::Auto, Some(t)) => {
            let format = chat(t);
            // Fail at start-up, not on the first request, when the template does not render.
            crate::protocol::prompt::render(
                &Task::Single {
                    query: "q".into(),
                    response: "r".into(),
                },
                Lang::En,
                &format,
            )?;
            Ok(format)
        }
        (PromptFormatChoice::Chat, None) => Err(JudgeError::Template(format!(
            "prompt format `chat` was asked for but {} has no chat template",
            info.name
        ))),
    }
}
