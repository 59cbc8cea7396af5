//! The device backend's key/value slots are a pool: a sequence holds one from admission
//! until it finishes or is cancelled, the lowest free slot is leased first, and with two
//! slots five requests (two of them cancelled, one queued and one running) are all either
//! served or counted cancelled, with every slot back in the pool once the engine is idle.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use autoj_judge::engine::device::DeviceModel;
use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::model::{ModelSpec, WeightDType};
use autoj_judge::engine::scheduler::{Backend, BatchLimits};
use autoj_judge::engine::{Engine, EngineEvent, EngineStats, JudgeRequest, Scheduling};
use autoj_judge::protocol::fit::TruncationPolicy;
use autoj_judge::protocol::prompt::Task;
use autoj_judge::testkit::TinySpec;
use common::{engine_config, test_device, tiny_model, Kind};

fn two_slots() -> BatchLimits {
    BatchLimits {
        max_seqs: 2,
        ..BatchLimits::default()
    }
}

#[test]
fn device_backend_slots_are_leased_lowest_first_and_returned_on_drop() {
    let tiny = tiny_model(Kind::Hf, &TinySpec::default());
    let spec = ModelSpec::new(tiny.path.clone(), WeightDType::F32, test_device());
    let (model, _, _) = DeviceModel::load(&spec, &two_slots()).unwrap();
    assert_eq!(model.slots(), 2);
    assert_eq!(model.slot_len(), 4096, "a slot holds the whole context");
    let a = model.new_kv().unwrap();
    let b = model.new_kv().unwrap();
    assert_eq!((a.slot(), b.slot()), (0, 1));
    assert_eq!(model.caches_in_use(), Some(2));
    assert!(model.new_kv().is_err(), "no third slot");
    drop(a);
    assert_eq!(model.caches_in_use(), Some(1));
    assert_eq!(
        model.new_kv().unwrap().slot(),
        0,
        "the freed slot is reused"
    );
}

/// Polls `done` until it holds or `limit` passes.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !done() {
        if Instant::now() > end {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// A request generating up to `max_new_tokens` (the cancelled ones ask for far more than
/// can be generated before the test drops them).
fn request(query: &str, max_new_tokens: usize) -> JudgeRequest {
    JudgeRequest {
        task: Task::Single {
            query: query.into(),
            response: "An answer.".into(),
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

fn count(stats: &EngineStats) -> (u64, u64, u64) {
    (
        stats.completed.load(Ordering::Relaxed),
        stats.cancelled.load(Ordering::Relaxed),
        stats.kv_slots_in_use.load(Ordering::Relaxed),
    )
}

#[test]
fn device_backend_five_requests_through_two_slots_with_cancellations() {
    let tiny = tiny_model(Kind::Gguf, &TinySpec::default());
    let mut cfg = engine_config(tiny.path.clone(), 8);
    cfg.scheduling = Scheduling::Device(two_slots());
    cfg.model.device = test_device();
    let engine = Engine::start(cfg).unwrap();
    let mut subs: Vec<_> = (0..5)
        .map(|i| {
            let long = if i % 2 == 1 { 2000 } else { 24 };
            engine.submit(request(&format!("Question number {i}?"), long))
        })
        .collect::<Result<_, _>>()
        .expect("admitted");
    // Request 1 is cancelled while it runs (after its first text), request 3 while queued.
    let mut running = subs.remove(1);
    assert!(matches!(
        running.events.blocking_recv(),
        Some(Ok(EngineEvent::Delta(_)))
    ));
    drop(running);
    let queued = subs.remove(2);
    drop(queued);
    for (i, mut sub) in subs.into_iter().enumerate() {
        let mut ended = false;
        while let Some(ev) = sub.events.blocking_recv() {
            if let EngineEvent::Usage(_) = ev.expect("no engine error") {
                ended = true;
                break;
            }
        }
        assert!(ended, "request {i} of the served ones ended without usage");
    }
    let stats = engine.stats();
    assert_eq!(stats.kv_slots.load(Ordering::Relaxed), 2);
    assert!(
        wait_until(Duration::from_secs(30), || count(stats) == (3, 2, 0)),
        "completed, cancelled, slots in use: {:?}",
        count(stats)
    );
}
