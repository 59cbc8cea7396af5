//! Admission through the device backend: a request whose prompt, answer and verdict reserve
//! need more key/value memory than the whole budget is refused at once by `Engine::submit`
//! (ContextOverflow, FAILED_PRECONDITION at the service), while one that fits is served in
//! the slots that budget pays for; with slots shorter than the context, prompts are fitted
//! (truncated, or refused when truncation is refused) to the slot.

mod common;

use std::sync::atomic::Ordering;

use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::scheduler::BatchLimits;
use autoj_judge::engine::{Engine, EngineEvent, JudgeRequest, Scheduling};
use autoj_judge::protocol::fit::TruncationPolicy;
use autoj_judge::protocol::prompt::Task;
use autoj_judge::testkit::TinySpec;
use autoj_judge::JudgeError;
use common::{engine_config, test_device, tiny_model, Kind};

fn request(max_new_tokens: usize) -> JudgeRequest {
    JudgeRequest {
        task: Task::Pairwise {
            query: "What is the capital of France?".into(),
            response_1: "Paris.".into(),
            response_2: "Lyon.".into(),
        },
        language: None,
        params: GenerationParams {
            max_new_tokens,
            ..GenerationParams::default()
        },
        truncation: TruncationPolicy::Auto,
        deadline: None,
    }
}

#[test]
fn device_backend_what_can_never_fit_is_refused_and_what_fits_is_served() {
    let tiny = tiny_model(Kind::Gguf, &TinySpec::default());
    let mut cfg = engine_config(tiny.path.clone(), 8);
    // The tiny model's f32 keys and values take 512 bytes a position: 1 MiB holds 2048
    // positions, so one slot of 2048 positions instead of the 4096-token context.
    cfg.scheduling = Scheduling::Device(BatchLimits {
        kv_budget_bytes: 1 << 20,
        ..BatchLimits::default()
    });
    cfg.model.device = test_device();
    let engine = Engine::start(cfg).unwrap();
    // Fits the model's 4096-token context, but not the 2048 positions the budget holds, the
    // context this engine serves.
    assert_eq!(engine.info().context, 2048);
    match engine.submit(request(3000)) {
        Err(JudgeError::ContextOverflow(m)) => assert!(m.contains("2048"), "{m}"),
        other => panic!("expected a refusal, got {:?}", other.map(|s| s.admission)),
    }
    let mut sub = engine.submit(request(8)).expect("a small request fits");
    let mut ended = false;
    while let Some(ev) = sub.events.blocking_recv() {
        if let EngineEvent::Usage(_) = ev.expect("no engine error") {
            ended = true;
            break;
        }
    }
    assert!(ended, "the small request was served");
    assert_eq!(engine.stats().kv_slots.load(Ordering::Relaxed), 1);
}

#[test]
fn device_backend_a_shorter_slot_fits_prompts_to_itself() {
    let tiny = tiny_model(Kind::Gguf, &TinySpec::default());
    let mut cfg = engine_config(tiny.path.clone(), 8);
    cfg.scheduling = Scheduling::Device(BatchLimits {
        slot_tokens: 1024,
        ..BatchLimits::default()
    });
    cfg.model.device = test_device();
    let engine = Engine::start(cfg).unwrap();
    assert_eq!(
        engine.info().context,
        1024,
        "the slot is the context served"
    );
    let long = |truncation| JudgeRequest {
        task: Task::Single {
            query: "Summarise this.".into(),
            response: "The rain falls softly on the quiet town. ".repeat(60),
        },
        truncation,
        ..request(16)
    };
    match engine.submit(long(TruncationPolicy::Refuse)) {
        Err(JudgeError::ContextOverflow(_)) => {}
        other => panic!("expected a refusal, got {:?}", other.map(|s| s.admission)),
    }
    let mut sub = engine
        .submit(long(TruncationPolicy::Auto))
        .expect("truncated to fit");
    let a = &sub.admission;
    assert!(a.truncated_tokens > 0, "{a:?}");
    assert!(a.prompt_tokens + 16 + 32 <= 1024, "{a:?}");
    let mut ended = false;
    while let Some(ev) = sub.events.blocking_recv() {
        if let EngineEvent::Usage(_) = ev.expect("no engine error") {
            ended = true;
            break;
        }
    }
    assert!(ended, "the truncated request was served");
}
