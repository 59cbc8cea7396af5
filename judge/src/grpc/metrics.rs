//! The judge's Prometheus metrics: names, help texts and the hooks the service calls.
//!
//! Recording goes through the `metrics` facade: until a binary installs a recorder (the
//! `--metrics-listen` endpoint) every hook is a no-op, so library users and tests pay
//! nothing. A judging call is watched by [`observe`], which wraps its event stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use autoj_proto::observe::ChunkClock;
use autoj_proto::v1 as pb;
use futures::Stream;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use tonic::{Code, Status};

use crate::engine::{EngineStats, UsageStats};

/// Final status of judging calls, by `rpc` and `code`.
pub const REQUESTS: &str = "autoj_judge_requests_total";
/// Judging calls open now (their stream not yet ended).
pub const IN_FLIGHT: &str = "autoj_judge_in_flight";
/// Judgments admitted whose first event has not come yet (queued, or in prefill).
pub const QUEUED: &str = "autoj_judge_queued";
/// Seconds from the call's arrival to its first critique text.
pub const TTFT: &str = "autoj_judge_time_to_first_token_seconds";
/// Seconds between successive critique chunks of one judgment.
pub const INTER_TOKEN: &str = "autoj_judge_inter_token_seconds";
/// Tokens the model generated (critiques and verdicts).
pub const GENERATED_TOKENS: &str = "autoj_judge_generated_tokens_total";
/// Prompt tokens processed.
pub const PROMPT_TOKENS: &str = "autoj_judge_prompt_tokens_total";
/// The engine's per-judgment phases, in seconds, by `phase` (queue, prefill, decode).
pub const PHASE: &str = "autoj_judge_phase_seconds";
/// Sequences in the engine's batch now.
pub const BATCH_SIZE: &str = "autoj_judge_batch_size";
/// Judging calls the client dropped before their stream ended.
pub const DROPPED: &str = "autoj_judge_dropped_total";
/// Requests the engine finished, by `outcome` (completed, cancelled, failed).
pub const ENGINE_REQUESTS: &str = "autoj_judge_engine_requests_total";

/// Gives every family its help text and creates the label-free ones at zero, so a scrape
/// shows them before the first request. Call once after installing a recorder.
pub fn describe() {
    describe_counter!(REQUESTS, "Judging calls by RPC and final gRPC status code.");
    describe_gauge!(IN_FLIGHT, "Judging calls whose stream is open.");
    describe_gauge!(
        QUEUED,
        "Judgments admitted to the engine that have not produced their first event (queued or in prefill)."
    );
    describe_histogram!(
        TTFT,
        metrics::Unit::Seconds,
        "Time from a call's arrival to its first critique text."
    );
    describe_histogram!(
        INTER_TOKEN,
        metrics::Unit::Seconds,
        "Time between successive critique chunks (one token each) of a judgment."
    );
    describe_counter!(GENERATED_TOKENS, "Tokens generated (critique and verdict).");
    describe_counter!(PROMPT_TOKENS, "Prompt tokens processed.");
    describe_histogram!(
        PHASE,
        metrics::Unit::Seconds,
        "Engine time per judgment by phase: queue wait, prefill, decode."
    );
    describe_gauge!(BATCH_SIZE, "Sequences in the engine's running batch.");
    describe_counter!(
        DROPPED,
        "Judging calls cancelled by the client before their end."
    );
    describe_counter!(
        ENGINE_REQUESTS,
        "Requests the engine finished, by outcome (completed, cancelled, failed)."
    );
    gauge!(IN_FLIGHT).set(0.0);
    gauge!(QUEUED).set(0.0);
    gauge!(BATCH_SIZE).set(0.0);
    counter!(GENERATED_TOKENS).absolute(0);
    counter!(PROMPT_TOKENS).absolute(0);
    counter!(DROPPED).absolute(0);
}

/// Sets the batch-size gauge. The engine may call this after each step; until it does,
/// [`sample_engine`] copies `EngineStats::batch_size` at every scrape.
pub fn set_batch_size(n: usize) {
    gauge!(BATCH_SIZE).set(n as f64);
}

/// Copies the engine's own counters into the metrics (called before each scrape).
pub fn sample_engine(stats: &EngineStats) {
    use std::sync::atomic::Ordering::Relaxed;
    set_batch_size(stats.batch_size.load(Relaxed) as usize);
    for (outcome, n) in [
        ("completed", &stats.completed),
        ("cancelled", &stats.cancelled),
        ("failed", &stats.failed),
    ] {
        counter!(ENGINE_REQUESTS, "outcome" => outcome).absolute(n.load(Relaxed));
    }
}

/// Records the engine's timings of one judgment (from its `Usage` event).
pub fn record_usage(u: &UsageStats) {
    histogram!(PHASE, "phase" => "queue").record(u.queue.as_secs_f64());
    histogram!(PHASE, "phase" => "prefill").record(u.prefill.as_secs_f64());
    histogram!(PHASE, "phase" => "decode").record(u.decode.as_secs_f64());
    counter!(GENERATED_TOKENS).increment(u.completion_tokens as u64);
    counter!(PROMPT_TOKENS).increment(u.prompt_tokens as u64);
}

/// One judging call from arrival to end: counts it in flight, and records its status once.
#[derive(Debug)]
pub struct Call {
    /// The RPC's name (`Compare`, `Critique`, `Score`).
    rpc: &'static str,
    /// When it arrived.
    started: Instant,
    /// Whether its final status has been recorded.
    finished: bool,
}

impl Call {
    /// A call of `rpc` arriving now.
    pub fn start(rpc: &'static str) -> Self {
        gauge!(IN_FLIGHT).increment(1.0);
        Self {
            rpc,
            started: Instant::now(),
            finished: false,
        }
    }

    /// Records the call's final status.
    pub fn finish(&mut self, code: Code) {
        if !self.finished {
            self.finished = true;
            counter!(REQUESTS, "rpc" => self.rpc, "code" => autoj_proto::observe::code_name(code))
                .increment(1);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.finished {
            // Dropped before its end: the client cancelled or went away.
            counter!(DROPPED).increment(1);
            self.finish(Code::Cancelled);
        }
        gauge!(IN_FLIGHT).decrement(1.0);
    }
}

/// A judgment's event stream as watched for metrics: time to first critique text, the gaps
/// between chunks, the final status; the `span` stays open until the stream ends.
pub struct Observed<S> {
    /// The judge's events.
    inner: S,
    /// The call's accounting.
    call: Call,
    /// Counted in [`QUEUED`] until the first critique text (or the end).
    queued: bool,
    /// Times the critique chunks.
    clock: ChunkClock,
    /// The call's trace span, closed when the stream is dropped.
    span: tracing::Span,
}

/// Wraps `inner`, the stream of a judging call started as `call`, keeping `span` open.
pub fn observe<S>(inner: S, call: Call, span: tracing::Span) -> Observed<S> {
    gauge!(QUEUED).increment(1.0);
    Observed {
        inner,
        clock: ChunkClock::new(call.started),
        call,
        queued: true,
        span,
    }
}

impl<S> Observed<S> {
    fn dequeue(&mut self) {
        if std::mem::take(&mut self.queued) {
            gauge!(QUEUED).decrement(1.0);
        }
    }

    fn see(&mut self, ev: &pb::JudgeEvent) {
        use pb::judge_event::Event;
        if let Some(Event::CritiqueDelta(d)) = &ev.event {
            let (first, gap) = self.clock.chunk(d.order, Instant::now());
            if let Some(ttft) = first {
                histogram!(TTFT).record(ttft.as_secs_f64());
                self.dequeue();
            }
            if let Some(gap) = gap {
                histogram!(INTER_TOKEN).record(gap.as_secs_f64());
            }
        }
    }
}

impl<S> Drop for Observed<S> {
    fn drop(&mut self) {
        self.dequeue();
    }
}

impl<S> Stream for Observed<S>
where
    S: Stream<Item = Result<pb::JudgeEvent, Status>> + Unpin,
{
    type Item = Result<pb::JudgeEvent, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.inner).poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(ev))) => this.see(ev),
            Poll::Ready(Some(Err(status))) => {
                this.dequeue();
                autoj_proto::observe::record_status(&this.span, status);
                this.call.finish(status.code());
            }
            Poll::Ready(None) => {
                this.dequeue();
                this.call.finish(Code::Ok);
            }
            Poll::Pending => {}
        }
        next
    }
}
