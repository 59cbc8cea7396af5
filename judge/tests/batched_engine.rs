//! The batched engine: its forward pass agrees with candle's stock models, a sequence's
//! output does not depend on what else is in the batch or on the prefix cache, concurrent
//! requests share forward passes, and a request that can never fit is refused.

mod common;

use autoj_judge::engine::cpu::kv::SeqKv;
use autoj_judge::engine::cpu::BatchModel;
use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::model::{ModelSpec, WeightDType};
use autoj_judge::engine::oracle::JudgeModel;
use autoj_judge::engine::scheduler::KvType;
use autoj_judge::engine::scheduler::{BatchLimits, StepInput, Want};
use autoj_judge::engine::{Engine, JudgeRequest, Scheduling};
use autoj_judge::protocol::fit::TruncationPolicy;
use autoj_judge::protocol::prompt::Task;
use autoj_judge::testkit::{self, TinySpec};
use autoj_judge::JudgeError;
use candle_core::quantized::GgmlDType;
use candle_core::Device;
use common::{engine_config, max_diff, tiny_model, Kind};

fn new_kv(m: &BatchModel) -> SeqKv {
    m.new_kv()
}

/// A single-precision cache: the same numbers as candle's stock models keep.
fn f32_kv(m: &BatchModel) -> SeqKv {
    SeqKv::new(
        m.shape.layers,
        m.shape.kv_heads * m.shape.head_dim,
        KvType::F32,
    )
}

#[test]
fn forward_matches_candle_for_gguf_and_hf() {
    for kind in [Kind::Gguf, Kind::Hf] {
        let tiny = tiny_model(kind, &TinySpec::default());
        let (model, _, _) = BatchModel::load(&tiny.path, None).expect("batched load");
        let mut stock = JudgeModel::load(&ModelSpec::new(
            tiny.path.clone(),
            WeightDType::F32,
            Device::Cpu,
        ))
        .expect("candle load");
        let prompt = [5u32, 17, 3, 99, 42, 7, 11];
        let reference = stock.forward(&prompt, 0).unwrap().to_vec1::<f32>().unwrap();
        let mut kv = f32_kv(&model);
        let mut half = new_kv(&model);
        assert_eq!(
            model.shape.kv,
            KvType::F16,
            "half-precision caches by default"
        );
        let step = |kv: &mut SeqKv, tokens: &[u32]| {
            model
                .forward(&mut [StepInput {
                    kv,
                    tokens,
                    want: Want::Last,
                }])
                .unwrap()
                .remove(0)
        };
        let ours = step(&mut kv, &prompt);
        let d = max_diff(&ours, &reference);
        assert!(d < 1e-3, "{kind:?}: prompt logits differ by {d}");
        step(&mut half, &prompt);
        // One more token through each cache.
        let reference = stock
            .forward(&[23], prompt.len())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let ours = step(&mut kv, &[23]);
        let d = max_diff(&ours, &reference);
        assert!(d < 1e-3, "{kind:?}: decode logits differ by {d}");
        // A half-precision cache holds keys and values to 11 significant bits: close, and
        // half the bytes.
        let from_half = step(&mut half, &[23]);
        let d = max_diff(&from_half, &reference);
        assert!(
            d < 2e-2,
            "{kind:?}: decode logits from an f16 cache differ by {d}"
        );
        assert_eq!(2 * half.own_bytes(), kv.own_bytes());
    }
}

#[test]
fn rows_are_the_same_alone_batched_and_from_a_shared_prefix() {
    // Quantized like the default model (Q4_1 projections, Q8_0 embeddings): those kernels
    // compute each row the same way whatever the batch, so equality is exact.
    let dir = tempfile::tempdir().unwrap();
    let path = testkit::write_gguf_as(dir.path(), &TinySpec::default(), GgmlDType::Q4_1).unwrap();
    let (model, _, _) = BatchModel::load(&path, None).unwrap();
    let prompts: [&[u32]; 3] = [&[1, 2, 3, 4, 5], &[9, 8, 7], &[1, 2, 3, 6, 6, 6, 6]];
    let alone: Vec<Vec<f32>> = prompts
        .iter()
        .map(|p| {
            let mut kv = new_kv(&model);
            model
                .forward(&mut [StepInput {
                    kv: &mut kv,
                    tokens: p,
                    want: Want::Last,
                }])
                .unwrap()
                .remove(0)
        })
        .collect();
    let mut kvs: Vec<SeqKv> = prompts.iter().map(|_| new_kv(&model)).collect();
    let mut inputs: Vec<StepInput<'_, _>> = kvs
        .iter_mut()
        .zip(prompts)
        .map(|(kv, tokens)| StepInput {
            kv,
            tokens,
            want: Want::Last,
        })
        .collect();
    let together = model.forward(&mut inputs).unwrap();
    assert_eq!(
        together, alone,
        "a row must not depend on the rest of the batch"
    );
    // The third prompt again, starting from the first one's cache of [1, 2, 3].
    let mut first = new_kv(&model);
    model
        .forward(&mut [StepInput {
            kv: &mut first,
            tokens: prompts[0],
            want: Want::Last,
        }])
        .unwrap();
    let mut shared = first.fork(3);
    let from_prefix = model
        .forward(&mut [StepInput {
            kv: &mut shared,
            tokens: &prompts[2][3..],
            want: Want::Last,
        }])
        .unwrap()
        .remove(0);
    assert_eq!(
        from_prefix, alone[2],
        "a shared prefix must give the same logits"
    );
}

fn request(query: &str, max_new_tokens: usize) -> JudgeRequest {
    JudgeRequest {
        task: Task::Pairwise {
            query: query.into(),
            response_1: "Paris is the capital.".into(),
            response_2: "Lyon, I believe.".into(),
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
fn concurrent_requests_share_steps_and_match_serial_output() {
    let tiny = tiny_model(Kind::Gguf, &TinySpec::default());
    let queries = [
        "What is the capital of France?",
        "Name a prime number larger than ten.",
        "Write a haiku about rain.",
        "What is the capital of France?",
    ];
    let reqs = || queries.iter().map(|q| request(q, 12)).collect::<Vec<_>>();
    let mut serial_cfg = engine_config(tiny.path.clone(), 8);
    serial_cfg.scheduling = Scheduling::Serial;
    let serial = Engine::start(serial_cfg).unwrap();
    let expected = common::stream_results(&serial, reqs());
    let batched = Engine::start(engine_config(tiny.path.clone(), 8)).unwrap();
    let got = common::stream_results(&batched, reqs());
    assert_eq!(got, expected, "greedy output must not depend on batching");
    let stats = batched.stats();
    let steps = stats.steps.load(std::sync::atomic::Ordering::Relaxed);
    // Alone, each request needs at least one prompt step and 11 decode steps.
    assert!(
        steps < 4 * 12,
        "requests did not share forward passes ({steps} steps)"
    );
    assert!(
        stats
            .prefix_hit_tokens
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the template prefix was not reused"
    );
    // The counter moves just after the last event is sent; give the engine thread a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stats.completed.load(std::sync::atomic::Ordering::Relaxed) < 4
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        stats.completed.load(std::sync::atomic::Ordering::Relaxed),
        4
    );
}

#[test]
fn a_request_larger_than_the_whole_kv_budget_is_refused() {
    let tiny = tiny_model(Kind::Gguf, &TinySpec::default());
    let mut cfg = engine_config(tiny.path.clone(), 8);
    cfg.scheduling = Scheduling::Batched(BatchLimits {
        kv_budget_bytes: 64 * 1024,
        ..BatchLimits::default()
    });
    let engine = Engine::start(cfg).unwrap();
    match engine.submit(request("What is the capital of France?", 64)) {
        Err(JudgeError::ContextOverflow(m)) => assert!(m.contains("key/value cache"), "{m}"),
        other => panic!("expected a refusal, got {:?}", other.map(|s| s.admission)),
    }
}
