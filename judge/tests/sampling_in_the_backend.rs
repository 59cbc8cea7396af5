//! Sampling with a temperature runs in the backend's step: the device backend sends a few
//! candidates per sampled row (not a logits row), both backends sample the same text for the
//! same seed, asking for log-probabilities does not change what is sampled, and the engine
//! counts how each token was picked.

mod common;

use std::sync::atomic::Ordering;

use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::scheduler::sample::{Pick, DRAWS, TOP_K};
use autoj_judge::engine::scheduler::BatchLimits;
use autoj_judge::engine::{ChatRequest, Engine, EngineEvent, EngineStats, Scheduling};
use autoj_judge::protocol::chat::{ChatMessage, ChatRole};
use autoj_judge::testkit::TinySpec;
use candle_core::Device;
use common::{engine_config, tiny_model, Kind};

/// A chat's text, its generated tokens and whether it ended by the length limit.
#[derive(Debug, PartialEq)]
struct Said {
    text: String,
    completion: usize,
}

fn chat(seed: u64, top_p: f64, logprobs: Option<usize>) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage {
            role: ChatRole::User,
            content: format!("Tell me something, number {seed}."),
        }],
        params: GenerationParams {
            max_new_tokens: 12,
            temperature: 1.1,
            top_p,
            seed,
            ..GenerationParams::default()
        },
        logprobs,
        deadline: None,
    }
}

fn say(engine: &Engine, req: ChatRequest) -> Said {
    let mut events = engine.submit_chat(req).expect("admitted").events;
    let mut said = Said {
        text: String::new(),
        completion: 0,
    };
    while let Some(ev) = events.blocking_recv() {
        match ev.expect("no engine error") {
            EngineEvent::Delta(t) => said.text.push_str(&t),
            EngineEvent::Usage(u) => said.completion = u.completion_tokens,
            _ => {}
        }
    }
    said
}

fn start(scheduling: Scheduling) -> (Engine, common::TinyModel) {
    let tiny = tiny_model(Kind::Gguf, &TinySpec::default());
    let mut cfg = engine_config(tiny.path.clone(), 8);
    cfg.scheduling = scheduling;
    cfg.model.device = Device::Cpu;
    (Engine::start(cfg).expect("engine starts"), tiny)
}

fn limits() -> BatchLimits {
    BatchLimits {
        max_seqs: 4,
        ..BatchLimits::default()
    }
}

fn picks(stats: &EngineStats) -> [u64; 4] {
    std::array::from_fn(|i| stats.sampled[i].load(Ordering::Relaxed))
}

#[test]
fn the_device_backend_sends_candidates_not_rows_for_sampled_tokens() {
    let (engine, _model) = start(Scheduling::Device(limits()));
    // The tiny model's tokenizer produces more than TOP_K ids (its 256 byte symbols).
    let record = 4 * (2 * TOP_K + 2 * DRAWS) as u64;
    for seed in 1..4 {
        let before = engine.stats().host_bytes.load(Ordering::Relaxed);
        let said = say(&engine, chat(seed, 1.0, None));
        let bytes = engine.stats().host_bytes.load(Ordering::Relaxed) - before;
        // One sampled row per token, and one more when the last one drawn was the end.
        let rows = said.completion as u64;
        assert!(
            bytes == rows * record || bytes == (rows + 1) * record,
            "{bytes} bytes for {rows} sampled tokens ({record} per row)"
        );
    }
}

#[test]
fn both_backends_sample_the_same_text_for_the_same_seed() {
    let (device, _a) = start(Scheduling::Device(limits()));
    let (cpu, _b) = start(Scheduling::Batched(limits()));
    let mut texts = Vec::new();
    for (seed, top_p) in [(1, 1.0), (2, 1.0), (3, 0.6), (4, 0.95)] {
        let on_device = say(&device, chat(seed, top_p, None));
        let on_cpu = say(&cpu, chat(seed, top_p, None));
        assert_eq!(on_device, on_cpu, "seed {seed}, top_p {top_p}");
        texts.push(on_cpu.text);
    }
    texts.dedup();
    assert!(texts.len() > 1, "every seed wrote the same text: {texts:?}");
}

#[test]
fn asking_for_log_probabilities_does_not_change_what_is_sampled() {
    for scheduling in [Scheduling::Batched(limits()), Scheduling::Device(limits())] {
        let (engine, _model) = start(scheduling);
        for seed in [5, 6] {
            let plain = say(&engine, chat(seed, 0.9, None));
            let asked = say(&engine, chat(seed, 0.9, Some(3)));
            assert_eq!(plain, asked, "seed {seed}");
        }
    }
}

#[test]
fn each_sampled_token_is_counted_by_how_it_was_picked() {
    let (engine, _model) = start(Scheduling::Device(limits()));
    let whole = say(&engine, chat(7, 1.0, None));
    let after_whole = picks(engine.stats());
    assert!(
        after_whole[Pick::Whole as usize] >= whole.completion as u64,
        "{after_whole:?} for {} tokens",
        whole.completion
    );
    assert_eq!(after_whole[1..], [0, 0, 0], "no nucleus cut was asked");
    let cut = say(&engine, chat(8, 0.5, None));
    let after_cut = picks(engine.stats());
    assert_eq!(after_cut[Pick::Whole as usize], after_whole[0]);
    let counted: u64 = after_cut[1..].iter().sum();
    assert!(
        counted >= cut.completion as u64 && counted <= cut.completion as u64 + 1,
        "{after_cut:?} for {} tokens",
        cut.completion
    );
}
