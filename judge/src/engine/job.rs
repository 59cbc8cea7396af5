//! What flows between the engine's callers and its thread: the request, what admission
//! decided, the events of a request, and the counters the thread keeps. Both schedulers
//! (batched and serial) and the handle import this; none of them imports another.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::generate::GenerationParams;
use crate::error::Result;
use crate::protocol::chat::ChatMessage;
use crate::protocol::fit::TruncationPolicy;
use crate::protocol::outcome::JudgeVerdict;
use crate::protocol::prompt::{Lang, Task};

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

/// One chat request: free-form generation with the model's chat template, no verdict.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Sampling, length and stop strings.
    pub params: GenerationParams,
    /// `Some(n)`: a [`EngineEvent::Token`] for every generated token with its `n` most
    /// likely alternatives (0 to [`MAX_TOP_LOGPROBS`]).
    pub logprobs: Option<usize>,
    /// When the client stops waiting.
    pub deadline: Option<Instant>,
}

/// The most alternatives a chat request may ask for per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

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
    /// Prompt tokens the prefix cache served instead of the model computing them (0 on
    /// the serial engine, which has no prefix cache).
    pub cached_prompt_tokens: usize,
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

/// A token with its log-probability (natural log, before temperature and top-p).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenProb {
    /// Token id.
    pub id: u32,
    /// Its text where it stands (after the token before it).
    pub text: String,
    /// Its exact bytes (differs from `text` for a part of a UTF-8 character).
    pub bytes: Vec<u8>,
    /// Log-probability.
    pub logprob: f32,
}

/// A generated token and the most likely tokens at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The token generated.
    pub chosen: TokenProb,
    /// The most likely tokens, most likely first (as many as asked).
    pub top: Vec<TokenProb>,
}

/// Events after admission, in order: `Delta*`, `Verdict`, `Usage` for a judgment;
/// `Token` and `Delta` interleaved, then `Usage`, for a chat.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A chunk of critique (or chat) text.
    Delta(String),
    /// A chat token's log-probabilities, sent before the text it completes.
    Token(TokenLogprobs),
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

/// What a queued request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobKind {
    /// A judgment: critique, then a verdict found or forced and scored.
    Judge {
        /// Pairwise (else single-response).
        pairwise: bool,
    },
    /// A chat: text only, with `Some(n)` token log-probabilities and `n` alternatives.
    Chat { logprobs: Option<usize> },
}

/// A queued request as the engine thread sees it.
pub(crate) struct Job {
    pub(crate) prompt_ids: Vec<u32>,
    pub(crate) kind: JobKind,
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
    /// Sequences in the step just run; 0 while the engine is idle (the serial engine runs
    /// one sequence per step).
    pub batch_size: AtomicU64,
    /// Forward passes run by the batched engine.
    pub steps: AtomicU64,
    /// Prompt tokens served from the prefix cache instead of computed.
    pub prefix_hit_tokens: AtomicU64,
    /// Key/value slots the device backend has preallocated (0 on the other engines, whose
    /// caches grow per sequence).
    pub kv_slots: AtomicU64,
    /// Of those, the slots held by running sequences; a finished or cancelled sequence gives
    /// its slot back before the next step.
    pub kv_slots_in_use: AtomicU64,
    /// Bytes the batched engine's backend copied from the device to the host (0 on the CPU
    /// engine, which computes on the host).
    pub host_bytes: AtomicU64,
    /// Rows of the batched engine's steps that scored a verdict (a forced verdict phrase or
    /// a tree of continuations).
    pub verdict_rows: AtomicU64,
    /// Of those, the rows that ran in a step beside other sequences' rows.
    pub verdict_rows_shared: AtomicU64,
    /// Tokens the batched engine sampled with a temperature, by how they were picked
    /// (indexed by [`crate::engine::scheduler::sample::Pick`] as `usize`).
    pub sampled: [AtomicU64; 4],
}

impl Job {
    /// Whether a verdict ends it, and of which protocol: `Some(pairwise)` for a judgment.
    pub(crate) fn verdict(&self) -> Option<bool> {
        match self.kind {
            JobKind::Judge { pairwise } => Some(pairwise),
            JobKind::Chat { .. } => None,
        }
    }

    /// The alternatives asked for per token, when log-probabilities are.
    pub(crate) fn logprobs(&self) -> Option<usize> {
        match self.kind {
            JobKind::Chat { logprobs } => logprobs,
            JobKind::Judge { .. } => None,
        }
    }
}

/// Sends an event; false when the client has gone.
pub(crate) fn emit(job: &Job, event: EngineEvent) -> bool {
    job.events.blocking_send(Ok(event)).is_ok()
}
