//! The judge's Prometheus metrics: names, help texts and the hooks the service calls.
//!
//! Recording goes through the `metrics` facade: until a binary installs a recorder (the
//! `--metrics-listen` endpoint) every hook is a no-op, so library users and tests pay
//! nothing. A judging call is a [`Call`] metered by [`JudgeCall`]; its event stream is watched
//! by `autoj_proto::calls::observe`.

use std::time::Duration;

use autoj_proto::calls::CallRecorder;
use autoj_proto::v1 as pb;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use tonic::Code;

use crate::engine::scheduler::sample::Pick;
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
/// Key/value slots the device backend preallocated (0 on the other engines).
pub const KV_SLOTS: &str = "autoj_judge_kv_slots";
/// Of those, the slots running sequences hold now.
pub const KV_SLOTS_IN_USE: &str = "autoj_judge_kv_slots_in_use";
/// Judging calls the client dropped before their stream ended.
pub const DROPPED: &str = "autoj_judge_dropped_total";
/// Steps the batched engine ran (forward passes over the running batch).
pub const ENGINE_STEPS: &str = "autoj_judge_engine_steps_total";
/// Rows of those steps that scored a verdict, by whether other sequences shared the step.
pub const VERDICT_ROWS: &str = "autoj_judge_verdict_rows_total";
/// Bytes the batched engine's backend copied from the device to the host.
pub const HOST_BYTES: &str = "autoj_judge_device_to_host_bytes_total";
/// Tokens the batched engine sampled with a temperature, by how they were `pick`ed.
pub const SAMPLED_TOKENS: &str = "autoj_judge_sampled_tokens_total";
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
    describe_gauge!(
        KV_SLOTS,
        "Key/value slots the device backend preallocated (0 on the other engines)."
    );
    describe_gauge!(
        KV_SLOTS_IN_USE,
        "Key/value slots of the device backend held by running sequences."
    );
    describe_counter!(
        DROPPED,
        "Judging calls cancelled by the client before their end."
    );
    describe_counter!(
        ENGINE_REQUESTS,
        "Requests the engine finished, by outcome (completed, cancelled, failed)."
    );
    describe_counter!(
        ENGINE_STEPS,
        "Steps (forward passes) the batched engine ran."
    );
    describe_counter!(
        VERDICT_ROWS,
        "Step rows that scored a verdict (forced phrase or continuation tree); `shared` says \
         whether other sequences' rows ran in the same step."
    );
    describe_counter!(
        SAMPLED_TOKENS,
        "Tokens sampled with a temperature, by pick: whole (no nucleus cut), nucleus (among the \
         top ids), rejection (a wider nucleus), truncated (a wider nucleus no draw fell in: \
         picked among the top ids only)."
    );
    describe_counter!(
        HOST_BYTES,
        "Bytes the batched engine copied from the device to the host (0 on the CPU engine)."
    );
    gauge!(IN_FLIGHT).set(0.0);
    gauge!(QUEUED).set(0.0);
    gauge!(BATCH_SIZE).set(0.0);
    gauge!(KV_SLOTS).set(0.0);
    gauge!(KV_SLOTS_IN_USE).set(0.0);
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
    gauge!(KV_SLOTS).set(stats.kv_slots.load(Relaxed) as f64);
    gauge!(KV_SLOTS_IN_USE).set(stats.kv_slots_in_use.load(Relaxed) as f64);
    for (outcome, n) in [
        ("completed", &stats.completed),
        ("cancelled", &stats.cancelled),
        ("failed", &stats.failed),
    ] {
        counter!(ENGINE_REQUESTS, "outcome" => outcome).absolute(n.load(Relaxed));
    }
    counter!(ENGINE_STEPS).absolute(stats.steps.load(Relaxed));
    let (rows, shared) = (
        stats.verdict_rows.load(Relaxed),
        stats.verdict_rows_shared.load(Relaxed),
    );
    counter!(VERDICT_ROWS, "shared" => "true").absolute(shared);
    counter!(VERDICT_ROWS, "shared" => "false").absolute(rows.saturating_sub(shared));
    counter!(HOST_BYTES).absolute(stats.host_bytes.load(Relaxed));
    for (pick, n) in Pick::ALL.iter().zip(&stats.sampled) {
        counter!(SAMPLED_TOKENS, "pick" => pick.name()).absolute(n.load(Relaxed));
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

/// A judging call of the judge service, metered through the shared lifecycle.
pub type Call = autoj_proto::calls::Call<JudgeCall>;

/// What the judge records of one call: in flight while open, queued until its first
/// critique chunk, the chunk timings, and its final status by `rpc` and `code`.
#[derive(Debug)]
pub struct JudgeCall {
    /// The RPC's name (`Compare`, `Critique`, `Score`).
    rpc: &'static str,
    /// Counted in [`QUEUED`] until the first critique text (or the end).
    queued: bool,
}

impl JudgeCall {
    /// A call of `rpc` arriving now.
    pub fn start(rpc: &'static str) -> Call {
        Call::start(Self { rpc, queued: false })
    }

    fn dequeue(&mut self) {
        if std::mem::take(&mut self.queued) {
            gauge!(QUEUED).decrement(1.0);
        }
    }
}

impl CallRecorder for JudgeCall {
    fn open(&mut self) {
        gauge!(IN_FLIGHT).increment(1.0);
    }

    fn watch(&mut self) {
        self.queued = true;
        gauge!(QUEUED).increment(1.0);
    }

    fn event(&mut self, _: &pb::JudgeEvent, first: Option<Duration>, gap: Option<Duration>) {
        if let Some(ttft) = first {
            histogram!(TTFT).record(ttft.as_secs_f64());
            self.dequeue();
        }
        if let Some(gap) = gap {
            histogram!(INTER_TOKEN).record(gap.as_secs_f64());
        }
    }

    fn end(&mut self, code: Code, dropped: bool) {
        self.dequeue();
        if dropped {
            counter!(DROPPED).increment(1);
        }
        counter!(REQUESTS, "rpc" => self.rpc, "code" => autoj_proto::observe::code_name(code))
            .increment(1);
    }

    fn close(&mut self) {
        self.dequeue();
        gauge!(IN_FLIGHT).decrement(1.0);
    }
}
