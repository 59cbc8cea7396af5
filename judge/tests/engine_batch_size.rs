//! `EngineStats::batch_size` (the `autoj_judge_batch_size` gauge) shows the sequences in the
//! step just run: one on the serial engine while it generates, and 0 once an engine is idle,
//! including after its clients left mid-generation.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::{Engine, EngineEvent, JudgeRequest, Scheduling, Submission};
use autoj_judge::protocol::fit::TruncationPolicy;
use autoj_judge::protocol::prompt::Task;
use autoj_judge::testkit::TinySpec;
use common::{engine_config, tiny_model, Kind};

fn request() -> JudgeRequest {
    JudgeRequest {
        task: Task::Single {
            query: "Write a haiku about rain.".into(),
            response: "Soft rain on the roof".into(),
        },
        language: None,
        params: GenerationParams {
            max_new_tokens: 2000,
            ..GenerationParams::default()
        },
        truncation: TruncationPolicy::Auto,
        deadline: None,
    }
}

/// Blocks until `sub` has streamed its first critique text.
fn first_delta(sub: &mut Submission) {
    loop {
        match sub
            .events
            .blocking_recv()
            .expect("events")
            .expect("no error")
        {
            EngineEvent::Delta(_) => return,
            _ => continue,
        }
    }
}

/// Waits (bounded) until `check` holds.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}

fn start(scheduling: Scheduling) -> (Engine, common::TinyModel) {
    let tiny = tiny_model(Kind::Gguf, &TinySpec::default());
    let mut cfg = engine_config(tiny.path.clone(), 8);
    cfg.scheduling = scheduling;
    (Engine::start(cfg).expect("engine starts"), tiny)
}

#[test]
fn serial_engine_shows_its_one_sequence_then_zero() {
    let (engine, _tiny) = start(Scheduling::Serial);
    let mut sub = engine.submit(request()).expect("admitted");
    first_delta(&mut sub);
    assert_eq!(engine.stats().batch_size.load(Relaxed), 1, "generating");
    drop(sub);
    eventually("the cancellation", || {
        engine.stats().cancelled.load(Relaxed) == 1
    });
    eventually("an idle gauge", || {
        engine.stats().batch_size.load(Relaxed) == 0
    });
}

#[test]
fn batched_engine_shows_zero_after_its_clients_left() {
    let (engine, _tiny) = start(Scheduling::default());
    let mut subs: Vec<Submission> = (0..2).map(|_| engine.submit(request()).unwrap()).collect();
    for sub in &mut subs {
        first_delta(sub);
    }
    eventually("both in one step", || {
        engine.stats().batch_size.load(Relaxed) == 2
    });
    drop(subs);
    eventually("both cancellations", || {
        engine.stats().cancelled.load(Relaxed) == 2
    });
    eventually("an idle gauge", || {
        engine.stats().batch_size.load(Relaxed) == 0
    });
}
