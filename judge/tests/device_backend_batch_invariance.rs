//! Through the device backend a sequence's output does not depend on what else runs: rows
//! computed alone and inside a step of mixed lengths (generating sequences around one still
//! reading its prompt) agree, a prompt seeded from the prefix cache agrees, and a greedy
//! request gives the same tokens alone and among concurrent requests of other lengths.

mod common;

use autoj_judge::engine::device::{DeviceKv, DeviceModel};
use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::model::{ModelSpec, WeightDType};
use autoj_judge::engine::scheduler::{Backend, BatchLimits, SeqCache, StepInput, Want};
use autoj_judge::engine::{Engine, JudgeRequest, Scheduling};
use autoj_judge::protocol::fit::TruncationPolicy;
use autoj_judge::protocol::prompt::Task;
use autoj_judge::testkit::TinySpec;
use common::{assert_same_logits, engine_config, test_device, tiny_model, Kind};

fn alone(model: &DeviceModel, kv: &mut DeviceKv, tokens: &[u32]) -> Vec<f32> {
    model
        .forward(&mut [StepInput {
            kv,
            tokens,
            want: Want::Last,
        }])
        .unwrap()
        .remove(0)
}

#[test]
fn device_backend_rows_agree_alone_and_in_a_mixed_step() {
    let tiny = tiny_model(Kind::Hf, &TinySpec::default());
    let spec = ModelSpec::new(tiny.path.clone(), WeightDType::F32, test_device());
    let (model, _, _) = DeviceModel::load(&spec, &BatchLimits::default()).unwrap();
    let prompts: [&[u32]; 3] = [
        &[1, 2, 3, 4, 5, 6, 7, 8, 9],
        &[40, 41, 42],
        &[9, 8, 7, 6, 5],
    ];
    let next = [11u32, 12, 13];
    // Sequences 0 and 2 read their prompts and generate one token; 1 reads its prompt in the
    // same step as their token, so the generating slots (0 and 2) span one that is not.
    let mut kvs: Vec<DeviceKv> = (0..3).map(|_| model.new_kv().unwrap()).collect();
    assert_eq!(
        kvs.iter().map(DeviceKv::slot).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let (first, rest) = kvs.split_at_mut(1);
    let (middle, last) = rest.split_at_mut(1);
    let prefilled = model
        .forward(&mut [
            StepInput {
                kv: &mut first[0],
                tokens: prompts[0],
                want: Want::Last,
            },
            StepInput {
                kv: &mut last[0],
                tokens: prompts[2],
                want: Want::Last,
            },
        ])
        .unwrap();
    let mixed = model
        .forward(&mut [
            StepInput {
                kv: &mut first[0],
                tokens: &next[..1],
                want: Want::Last,
            },
            StepInput {
                kv: &mut middle[0],
                tokens: prompts[1],
                want: Want::Last,
            },
            StepInput {
                kv: &mut last[0],
                tokens: &next[2..],
                want: Want::Last,
            },
        ])
        .unwrap();
    assert_eq!(mixed[1].len(), model.shape.vocab);
    for s in [0, 2] {
        let mut kv = model.new_kv().unwrap();
        let p = alone(&model, &mut kv, prompts[s]);
        assert_same_logits(&prefilled[s / 2], &p, &format!("prompt {s}"));
        let d = alone(&model, &mut kv, &next[s..=s]);
        assert_same_logits(&mixed[s], &d, &format!("decode {s}"));
    }
    let mut kv = model.new_kv().unwrap();
    let p = alone(&model, &mut kv, prompts[1]);
    assert_same_logits(&mixed[1], &p, "chunk beside decodes");

    // A prompt that starts from sequence 0's first four positions, copied from the prefix
    // cache's copy, reads the rest as if it had computed all of it.
    let mut whole = model.new_kv().unwrap();
    let expected = alone(&model, &mut whole, &[1, 2, 3, 4, 70, 71]);
    kvs[0].freeze();
    let prefix = kvs[0].prefix(4).unwrap();
    let mut seeded = model.new_kv().unwrap();
    seeded.seed(prefix).unwrap();
    assert_eq!(seeded.len(), 4);
    assert_same_logits(&alone(&model, &mut seeded, &[70, 71]), &expected, "seeded");
}

fn request(query: &str, response: &str, max_new_tokens: usize) -> JudgeRequest {
    JudgeRequest {
        task: Task::Single {
            query: query.into(),
            response: response.into(),
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

/// Submits every request at once; each one's critique text, in order.

#[test]
fn device_backend_a_request_alone_and_in_a_batch_of_mixed_lengths_gives_the_same_tokens() {
    let tiny = tiny_model(Kind::Gguf, &TinySpec::default());
    let mut cfg = engine_config(tiny.path.clone(), 8);
    cfg.scheduling = Scheduling::Device(BatchLimits::default());
    cfg.model.device = test_device();
    let engine = Engine::start(cfg).unwrap();
    let target = || request("Write a haiku about rain.", "Soft rain on the roof", 20);
    let solo = common::stream_texts(&engine, vec![target()]).remove(0);
    assert!(!solo.is_empty());
    let steps_before = engine
        .stats()
        .steps
        .load(std::sync::atomic::Ordering::Relaxed);
    let others = vec![
        request("Hi", "Hello there, how can I help you today? Ask away.", 5),
        target(),
        request(
            "Explain in detail how a bicycle gear system converts pedalling into motion.",
            "Gears.",
            31,
        ),
        request("2+2?", "4", 12),
    ];
    let got = common::stream_texts(&engine, others);
    assert_eq!(got[1], solo, "the batch changed a greedy request's tokens");
    let steps = engine
        .stats()
        .steps
        .load(std::sync::atomic::Ordering::Relaxed)
        - steps_before;
    assert!(
        steps < 5 + 20 + 31 + 12,
        "the requests did not share steps ({steps})"
    );
}
