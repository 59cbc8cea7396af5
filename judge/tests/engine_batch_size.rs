//! `EngineStats::batch_size` (the `autoj_judge_batch_size` gauge) shows the sequences in the
//! step just run: one on the serial engine while it generates, and 0 once an engine is idle,
//! including after its clients left mid-generation.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::{Engine, EngineEvent, Scheduling, Submission};
use autoj_judge::testkit::TinySpec;
use common::{engine_config, haiku_request, tiny_model, Kind};

fn long_request() -> autoj_judge::engine::JudgeRequest {
    haiku_request(GenerationParams {
        max_new_tokens: 2000,
        ..GenerationParams::default()
    })
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
    let mut sub = engine.submit(long_request()).expect("admitted");
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
    let mut subs: Vec<Submission> = (0..2)
        .map(|_| engine.submit(long_request()).unwrap())
        .collect();
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
