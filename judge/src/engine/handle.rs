//! The engine: one dedicated thread owns the model and serves requests from a bounded
//! queue (batched on the CPU, `crate::batch`; one at a time elsewhere, `crate::serial`).
//! Callers get events through a channel; a caller that drops its receiver stops its
//! generation before the next decode step.
//!
//! No gRPC types here: the service translates, and the one-process mode and benchmarks call
//! the engine directly.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio::sync::mpsc;

use crate::batch::{BatchLimits, BatchModel};
use crate::error::{JudgeError, Result};
use crate::fit::{prepare, TruncationPolicy};
use crate::generate::GenerationParams;
use crate::model::{JudgeModel, ModelInfo, ModelSpec};
use crate::prompt::{detect_language, Lang, PromptFormat, Task};
use crate::scoring::{forced_prefix, ChoiceScores, VERDICT_RESERVE};
use crate::tokenizer::TextTokenizer;
use crate::verdict::{parse_pairwise, parse_single, PairwiseParse, SingleParse, Winner};

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
    /// Continuous batching with per-sequence caches and a prefix cache (CPU); other devices
    /// fall back to `Serial`.
    Batched(BatchLimits),
    /// One request at a time through candle's stock models (any device; the baseline the
    /// benchmark compares against).
    Serial,
}

impl Default for Scheduling {
    fn default() -> Self {
        Self::Batched(BatchLimits::default())
    }
}

/// One judging request.
#[derive(Debug, Clone)]
pub struct JudgeRequest {
    /// The task and its input.
    pub task: Task,
    /// Template language; `None` detects it from the query.
    pub language: Option<Lang>,
    /// Sampling and length.
    pub params: GenerationParams,
    /// What to do when the input does not fit.
    pub truncation: TruncationPolicy,
    /// When the client stops waiting (from `grpc-timeout`); a request still queued at that
    /// moment is never started and fails with `DeadlineExceeded`.
    pub deadline: Option<Instant>,
}

/// What the engine knew when it admitted a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Prompt tokens after truncation.
    pub prompt_tokens: usize,
    /// Input tokens cut to fit (0 when none).
    pub truncated_tokens: usize,
    /// Template language used.
    pub language: Lang,
}

/// How a verdict was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictSource {
    /// Parsed from the text.
    Parsed,
    /// The text had no verdict; the verdict phrase was appended and the most probable legal
    /// continuation chosen.
    Forced,
    /// The text had no verdict and none could be forced.
    Unresolved,
}

/// The protocol-specific verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Pairwise.
    Pairwise(PairwiseParse),
    /// Single.
    Single(SingleParse),
}

/// The verdict event.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeVerdict {
    /// The result.
    pub outcome: Outcome,
    /// Parsed or unresolved.
    pub source: VerdictSource,
    /// The verdict sentence, or the whole text when unresolved.
    pub raw_text: String,
    /// Probabilities of the legal verdicts at the verdict position.
    pub scores: Option<ChoiceScores>,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-sequence token.
    Eos,
    /// `max_new_tokens` reached.
    Length,
    /// A stop string appeared.
    Stop,
}

/// Token counts and timings.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageStats {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Time in the queue.
    pub queue: Duration,
    /// Prompt processing time.
    pub prefill: Duration,
    /// Generation time.
    pub decode: Duration,
    /// Why it stopped.
    pub finish: FinishReason,
}

/// Events after admission, in order: `Delta*`, `Verdict`, `Usage`.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A chunk of critique text.
    Delta(String),
    /// The verdict.
    Verdict(JudgeVerdict),
    /// Counts and timings; the last event.
    Usage(UsageStats),
}

/// The receiving end of a request's events; drop it to cancel the request.
pub type EventReceiver = mpsc::Receiver<Result<EngineEvent>>;

/// An admitted request: what was admitted and its event stream.
#[derive(Debug)]
pub struct Submission {
    /// Admission facts, for the `Accepted` event.
    pub admission: Admission,
    /// The events.
    pub events: EventReceiver,
}

/// A queued request as the engine thread sees it.
pub(crate) struct Job {
    pub(crate) prompt_ids: Vec<u32>,
    pub(crate) pairwise: bool,
    pub(crate) lang: Lang,
    pub(crate) params: GenerationParams,
    pub(crate) enqueued: Instant,
    pub(crate) deadline: Option<Instant>,
    pub(crate) events: mpsc::Sender<Result<EngineEvent>>,
}

/// Counts of finished requests, for tests, metrics and the load command.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Requests that produced their last event.
    pub completed: AtomicU64,
    /// Requests stopped because the client went away (queued or generating).
    pub cancelled: AtomicU64,
    /// Requests that failed with an error.
    pub failed: AtomicU64,
    /// Sequences in the batch now (batched engine; 0 or 1 for the serial one).
    pub batch_size: AtomicU64,
    /// Forward passes run by the batched engine.
    pub steps: AtomicU64,
    /// Prompt tokens served from the prefix cache instead of computed.
    pub prefix_hit_tokens: AtomicU64,
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
        let spec = config.model.clone();
        let chunk = config.prefill_chunk.max(1);
        let stats = Arc::new(EngineStats::default());
        let thread_stats = stats.clone();
        let limits = match (&config.scheduling, &spec.device) {
            (Scheduling::Batched(l), Device::Cpu) => Some(l.clone()),
            _ => None,
        };
        let thread_limits = limits.clone();
        thread::Builder::new()
            .name("autoj-engine".into())
            .spawn(move || match thread_limits {
                Some(limits) => match BatchModel::load(&spec.path) {
                    Ok((mut model, tokenizer, info)) => {
                        model.shape.kv = limits.kv_type;
                        let per_token = model.shape.kv_bytes_per_token();
                        let _ = ready_tx.send(Ok((tokenizer.clone(), info, per_token)));
                        crate::batch::run(model, tokenizer, rx, &limits, chunk, &thread_stats);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                },
                None => match JudgeModel::load(&spec) {
                    Ok(model) => {
                        let _ = ready_tx.send(Ok((model.tokenizer.clone(), model.info.clone(), 0)));
                        crate::serial::run(model, rx, chunk, &thread_stats);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                },
            })
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
        let prepared = prepare(
            &req.task,
            language,
            &s.format,
            &s.tokenizer,
            s.info.context,
            req.params.max_new_tokens + VERDICT_RESERVE,
            req.truncation,
        )?;
        let (tx, events) = mpsc::channel(req.params.max_new_tokens + 8);
        let admission = Admission {
            prompt_tokens: prepared.prompt_ids.len(),
            truncated_tokens: prepared.truncated_tokens,
            language,
        };
        if let Some((per_token, budget)) = s.kv_limit {
            let tokens = prepared.prompt_ids.len() + req.params.max_new_tokens + VERDICT_RESERVE;
            if tokens * per_token > budget {
                return Err(JudgeError::ContextOverflow(format!(
                    "this request needs {} MiB of key/value cache ({tokens} tokens: prompt, \
                     max_new_tokens and the verdict reserve) but the judge's whole budget is \
                     {} MiB; lower max_new_tokens or shorten the input",
                    (tokens * per_token) >> 20,
                    budget >> 20
                )));
            }
        }
        let job = Job {
            prompt_ids: prepared.prompt_ids,
            pairwise: req.task.is_pairwise(),
            lang: language,
            params: req.params,
            enqueued: Instant::now(),
            deadline: req.deadline,
            events: tx,
        };
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => JudgeError::QueueFull {
                capacity: s.capacity,
            },
            mpsc::error::TrySendError::Closed(_) => JudgeError::EngineStopped,
        })?;
        Ok(Submission { admission, events })
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
            crate::prompt::render(
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

/// Sends an event; false when the client has gone.
pub(crate) fn emit(job: &Job, event: EngineEvent) -> bool {
    job.events.blocking_send(Ok(event)).is_ok()
}

/// Parses the verdict from the whole generated text.
pub fn verdict_of(text: &str, pairwise: bool) -> JudgeVerdict {
    let (outcome, sentence, resolved) = if pairwise {
        let p = parse_pairwise(text);
        let (sentence, resolved) = (p.verdict_sentence.clone(), p.winner.is_some());
        (Outcome::Pairwise(p), sentence, resolved)
    } else {
        let s = parse_single(text);
        let (sentence, resolved) = (s.verdict_sentence.clone(), s.rating.is_some());
        (Outcome::Single(s), sentence, resolved)
    };
    // An unresolved verdict carries the whole text, so the client sees what the model wrote.
    let (raw_text, source) = if resolved {
        (sentence.unwrap_or_default(), VerdictSource::Parsed)
    } else {
        (text.to_string(), VerdictSource::Unresolved)
    };
    JudgeVerdict {
        outcome,
        source,
        raw_text,
        scores: None,
    }
}

/// Turns an unresolved verdict into the forced one: the most probable legal choice.
pub(crate) fn force(verdict: &mut JudgeVerdict, scores: &ChoiceScores, pairwise: bool, lang: Lang) {
    let prefix = forced_prefix(pairwise, lang).trim_start();
    let choice = match (&mut verdict.outcome, pairwise) {
        (Outcome::Pairwise(p), true) => {
            p.winner = scores.winner();
            let zh = lang == Lang::Zh;
            match p.winner {
                Some(Winner::Response1) => {
                    if zh {
                        "回应1"
                    } else {
                        " Response 1"
                    }
                }
                Some(Winner::Response2) => {
                    if zh {
                        "回应2"
                    } else {
                        " Response 2"
                    }
                }
                _ => {
                    if zh {
                        "平局"
                    } else {
                        " Tie"
                    }
                }
            }
            .to_string()
        }
        (Outcome::Single(s), _) => {
            s.rating = scores.rating();
            format!("{}]]", s.rating.unwrap_or_default())
        }
        _ => return,
    };
    verdict.raw_text = format!("{prefix}{choice}");
    verdict.source = VerdictSource::Forced;
}
