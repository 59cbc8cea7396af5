//! Verdicts are scored by rows of the ordinary steps, not by passes that stop the batch, and
//! the device backend sends the host a few values per row, not logits: eight judgments of
//! different lengths, all with forced verdicts (a random model writes none), run on the
//! device backend (on the CPU) and on the CPU engine; the verdict rows share their steps with
//! the other sequences' tokens, and the bytes copied to the host per step stay O(rows) unless
//! a chat asks for log-probabilities.

mod common;

use std::sync::atomic::Ordering;
use std::thread;

use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::scheduler::BatchLimits;
use autoj_judge::engine::{
    ChatRequest, Engine, EngineEvent, EngineStats, JudgeRequest, Scheduling, Submission,
    VerdictSource,
};
use autoj_judge::protocol::chat::{ChatMessage, ChatRole};
use autoj_judge::protocol::fit::TruncationPolicy;
use autoj_judge::protocol::prompt::Task;
use autoj_judge::protocol::scoring::ChoiceScores;
use autoj_judge::testkit::TinySpec;
use candle_core::Device;
use common::{engine_config, tiny_model, Kind};

/// Judgments in the batch, and the shortest critique (each next one is 2 tokens longer).
const SEQS: usize = 8;
const SHORTEST: usize = 3;

/// What came back for one request.
#[derive(Debug, Default)]
struct Seen {
    source: Option<VerdictSource>,
    probability_sum: f32,
    completion: usize,
    tokens: usize,
}

/// Reads a submission's events to the end on a thread of its own (the engine's event
/// channels are bounded: every stream must be drained at once).
fn drain(sub: Submission) -> thread::JoinHandle<Seen> {
    let mut events = sub.events;
    thread::spawn(move || {
        let mut seen = Seen::default();
        while let Some(ev) = events.blocking_recv() {
            match ev.expect("no engine error") {
                EngineEvent::Verdict(v) => {
                    seen.source = Some(v.source);
                    seen.probability_sum = match v.scores.expect("scored") {
                        ChoiceScores::Pairwise {
                            p_response_1,
                            p_response_2,
                            p_tie,
                        } => p_response_1 + p_response_2 + p_tie,
                        ChoiceScores::Single { distribution, .. } => distribution.iter().sum(),
                    };
                }
                EngineEvent::Usage(u) => {
                    seen.completion = u.completion_tokens;
                    break;
                }
                EngineEvent::Token(_) => seen.tokens += 1,
                EngineEvent::Delta(_) => {}
            }
        }
        seen
    })
}

fn judgment(k: usize) -> JudgeRequest {
    let task = if k.is_multiple_of(2) {
        Task::Pairwise {
            query: format!("Which answer to question {k} is better?"),
            response_1: "The first answer, short.".into(),
            response_2: "The second answer, a little longer than the first.".into(),
        }
    } else {
        Task::Single {
            query: format!("Rate this answer to question {k}."),
            response: "An answer of some kind.".into(),
        }
    };
    JudgeRequest {
        task,
        language: None,
        params: GenerationParams {
            max_new_tokens: SHORTEST + 2 * k,
            ..GenerationParams::default()
        },
        truncation: TruncationPolicy::Auto,
        deadline: None,
    }
}

fn chat(logprobs: Option<usize>) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage {
            role: ChatRole::User,
            content: "Say something.".into(),
        }],
        params: GenerationParams {
            max_new_tokens: 6,
            ..GenerationParams::default()
        },
        logprobs,
        deadline: None,
    }
}

fn start(scheduling: Scheduling) -> (Engine, common::TinyModel) {
    let tiny = tiny_model(Kind::Gguf, &TinySpec::default());
    let mut cfg = engine_config(tiny.path.clone(), 2 * SEQS);
    cfg.scheduling = scheduling;
    cfg.model.device = Device::Cpu;
    (Engine::start(cfg).expect("engine starts"), tiny)
}

fn read(stats: &EngineStats) -> (u64, u64, u64, u64) {
    (
        stats.steps.load(Ordering::Relaxed),
        stats.verdict_rows.load(Ordering::Relaxed),
        stats.verdict_rows_shared.load(Ordering::Relaxed),
        stats.host_bytes.load(Ordering::Relaxed),
    )
}

/// Runs the eight judgments at once; returns the engine's counters after them.
fn eight_forced_verdicts(engine: &Engine) -> (u64, u64, u64, u64) {
    let readers: Vec<_> = (0..SEQS)
        .map(|k| drain(engine.submit(judgment(k)).expect("admitted")))
        .collect();
    for (k, r) in readers.into_iter().enumerate() {
        let seen = r.join().expect("reader");
        assert_eq!(seen.source, Some(VerdictSource::Forced), "judgment {k}");
        assert!(
            (seen.probability_sum - 1.0).abs() < 1e-4,
            "judgment {k}: {seen:?}"
        );
        assert_eq!(
            seen.completion,
            SHORTEST + 2 * k,
            "judgment {k} ran to its length"
        );
    }
    read(engine.stats())
}

fn limits() -> BatchLimits {
    BatchLimits {
        max_seqs: SEQS,
        ..BatchLimits::default()
    }
}

#[test]
fn forced_verdicts_share_their_steps_with_the_rest_of_the_batch() {
    for scheduling in [Scheduling::Device(limits()), Scheduling::Batched(limits())] {
        let what = format!("{scheduling:?}");
        let (engine, _model) = start(scheduling);
        let (steps, rows, shared, _) = eight_forced_verdicts(&engine);
        // Each forced verdict is one row for its phrase, plus a row for the continuations
        // longer than a token where there are any.
        assert!(rows >= SEQS as u64, "{what}: {rows} verdict rows");
        // Every judgment but the longest ends while a longer one is still generating, so
        // only the longest one's rows (its phrase and at most two trees) may run alone.
        assert!(
            shared + 3 >= rows,
            "{what}: {shared} of {rows} verdict rows shared a step"
        );
        // No step ran for a verdict alone before the last text ended: the steps are the
        // prompts', the longest critique's tokens and the last verdict's rows.
        let longest = (SHORTEST + 2 * (SEQS - 1)) as u64;
        assert!(steps >= longest, "{what}: {steps} steps");
        assert!(
            steps <= longest + 3 + 16,
            "{what}: {steps} steps for a {longest}-token critique: verdicts stopped the batch"
        );
    }
}

#[test]
fn the_device_backend_sends_the_host_a_few_values_per_row() {
    let (engine, _model) = start(Scheduling::Device(limits()));
    let (steps, _, _, bytes) = eight_forced_verdicts(&engine);
    let vocab = 259; // at least: specials and the 256 byte symbols
    assert!(bytes > 0, "the copies are counted");
    // O(rows): a pick per row, a few log-probabilities per verdict row.
    let per_row = 4 * 12;
    assert!(
        bytes <= steps * SEQS as u64 * per_row,
        "{bytes} bytes in {steps} steps"
    );
    assert!(
        bytes * 10 < steps * vocab * 4,
        "{bytes} bytes in {steps} steps: as much as whole logits rows"
    );
    // A greedy chat without log-probabilities: one pick per step.
    let before = read(engine.stats()).3;
    let plain = drain(engine.submit_chat(chat(None)).expect("admitted"))
        .join()
        .expect("reader");
    let plain_bytes = read(engine.stats()).3 - before;
    assert!(plain.completion >= 1);
    assert!(
        plain_bytes <= 4 * (plain.completion as u64 + 1),
        "{plain_bytes} bytes for {} tokens",
        plain.completion
    );
    // A chat asking for log-probabilities gets whole rows: the caller asked.
    let before = read(engine.stats()).3;
    let asked = drain(engine.submit_chat(chat(Some(2))).expect("admitted"))
        .join()
        .expect("reader");
    let asked_bytes = read(engine.stats()).3 - before;
    assert_eq!(asked.tokens, asked.completion, "a Token event per token");
    assert!(
        asked_bytes >= asked.completion as u64 * vocab * 4,
        "{asked_bytes} bytes for {} tokens with log-probabilities",
        asked.completion
    );
}

#[test]
fn the_cpu_engine_copies_nothing() {
    let (engine, _model) = start(Scheduling::Batched(limits()));
    let (_, _, _, bytes) = eight_forced_verdicts(&engine);
    assert_eq!(bytes, 0);
}
