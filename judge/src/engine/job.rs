//! What flows between the engine's callers and its thread: the request, what admission
//! decided, the events of a request, and the counters the thread keeps. Both schedulers
//! (batched and serial) and the handle import this; none of them imports another.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::generate::GenerationParams;
use crate::error::Result;
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
}

/// Sends an event; false when the client has gone.
pub(crate) fn emit(job: &Job, event: EngineEvent) -> bool {
    job.events.blocking_send(Ok(event)).is_ok()
}
