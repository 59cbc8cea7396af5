//! A judgment whose next token cannot be sampled (every logit NaN, as from a corrupt model)
//! fails with an error the client sees and is counted as failed, not cancelled; the engine
//! keeps serving.

mod common;

use std::sync::atomic::Ordering::Relaxed;

use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::{Engine, EngineEvent, JudgeRequest};
use autoj_judge::testkit::TinySpec;
use autoj_judge::JudgeError;
use common::{engine_config, haiku_request, tiny_model, Kind};

fn request(temperature: f64) -> JudgeRequest {
    haiku_request(GenerationParams {
        max_new_tokens: 4,
        temperature,
        ..GenerationParams::default()
    })
}

/// Every event of a submission until its channel closes.
fn drain(engine: &Engine, req: JudgeRequest) -> Vec<Result<EngineEvent, JudgeError>> {
    let mut sub = engine.submit(req).expect("admitted");
    std::iter::from_fn(|| sub.events.blocking_recv()).collect()
}

#[test]
fn unsamplable_logits_fail_the_request_and_count_as_failed() {
    let spec = TinySpec {
        output_scale: f32::NAN,
        ..TinySpec::default()
    };
    let tiny = tiny_model(Kind::Gguf, &spec);
    let engine = Engine::start(engine_config(tiny.path.clone(), 8)).expect("engine starts");
    let events = drain(&engine, request(0.8));
    let last = events.last().expect("at least one event");
    assert!(
        matches!(last, Err(JudgeError::Compute(_))),
        "the request ends with the sampling error: {last:?}"
    );
    let stats = engine.stats();
    assert_eq!(stats.failed.load(Relaxed), 1);
    assert_eq!(stats.cancelled.load(Relaxed), 0);
    // Greedy decoding still picks a token from NaN logits, so the engine serves on.
    let events = drain(&engine, request(0.0));
    assert!(events.iter().all(Result::is_ok), "{events:?}");
    assert_eq!(stats.completed.load(Relaxed), 1);
}
