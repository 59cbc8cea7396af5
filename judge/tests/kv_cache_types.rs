//! Key/value cache types of the batched engine: an 8-bit cache stays close to full
//! precision at a bit over half of f16's memory, a sequence's logits never depend on how
//! its prompt was split into steps or on its neighbours (whatever the cache type), and a
//! model whose heads cannot be stored in 8-bit blocks is refused with a message.

mod common;

use autoj_judge::engine::cpu::kv::SeqKv;
use autoj_judge::engine::cpu::BatchModel;
use autoj_judge::engine::scheduler::KvType;
use autoj_judge::engine::scheduler::{StepInput, Want};
use autoj_judge::testkit::{self, TinySpec};
use autoj_judge::JudgeError;
use candle_core::quantized::GgmlDType;
use common::max_diff;

/// Two query heads of 64 values per key/value head (the SIMD attention kernels' shape),
/// Q4_1 like the default model.
fn model() -> (tempfile::TempDir, BatchModel) {
    let spec = TinySpec {
        hidden: 128,
        heads: 2,
        kv_heads: 1,
        ..TinySpec::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = testkit::write_gguf_as(dir.path(), &spec, GgmlDType::Q4_1).unwrap();
    let (model, _, _) = BatchModel::load(&path, None).unwrap();
    (dir, model)
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 200 + 3).collect()
}

/// Runs `pieces` of one sequence's tokens as consecutive steps; the last step's logits.
fn run(model: &BatchModel, kv: &mut SeqKv, pieces: &[&[u32]]) -> Vec<f32> {
    let mut last = Vec::new();
    for tokens in pieces {
        last = model
            .forward(&mut [StepInput {
                kv,
                tokens,
                want: Want::Last,
            }])
            .unwrap()
            .remove(0);
    }
    last
}

#[test]
fn an_8_bit_cache_stays_close_to_f32_at_56_percent_of_f16() {
    let (_dir, mut model) = model();
    let tokens = prompt(40);
    let mut logits = Vec::new();
    let mut bytes = Vec::new();
    for kind in [KvType::F32, KvType::F16, KvType::Q8] {
        model.shape.set_kv(kind).unwrap();
        let mut kv = model.new_kv();
        // The prompt, then three decode steps.
        let out = run(&model, &mut kv, &[&tokens, &[5], &[9], &[14]]);
        logits.push(out);
        bytes.push(kv.own_bytes());
    }
    let (full, half, q8) = (&logits[0], &logits[1], &logits[2]);
    let spread = full.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (d_half, d_q8) = (max_diff(full, half), max_diff(full, q8));
    assert!(
        d_q8 > 0.0,
        "an 8-bit cache cannot give the f32 logits exactly"
    );
    assert!(
        d_q8 < 0.05 * spread,
        "q8 logits differ from f32 by {d_q8} (f16: {d_half}, largest logit {spread})"
    );
    // 43 positions × 2 layers × keys and values × 64 values: f16 2 bytes per value, q8 36
    // bytes per 32.
    assert_eq!(bytes[1], 43 * 2 * 2 * 64 * 2);
    assert_eq!(bytes[2], 43 * 2 * 2 * 64 / 32 * 36);
    assert_eq!(
        model.shape.kv_bytes_per_token() * 43,
        bytes[2],
        "the admission budget counts what the cache holds"
    );
}

#[test]
fn logits_do_not_depend_on_prompt_chunks_or_neighbours() {
    let (_dir, mut model) = model();
    let tokens = prompt(45);
    for kind in [KvType::F16, KvType::Q8] {
        model.shape.set_kv(kind).unwrap();
        let whole = run(&model, &mut model.new_kv(), &[&tokens]);
        // Chunk boundaries inside and across attention blocks of two rows.
        for cuts in [vec![1, 17, 30], vec![7, 8, 9, 44], vec![2, 3, 40]] {
            let mut pieces = Vec::new();
            let mut at = 0;
            for &c in cuts.iter().chain([&tokens.len()]) {
                pieces.push(&tokens[at..c]);
                at = c;
            }
            let chunked = run(&model, &mut model.new_kv(), &pieces);
            assert_eq!(chunked, whole, "{kind:?}: prompt cut at {cuts:?}");
        }
        // The same prompt beside another sequence's prompt and a decoding sequence.
        let mut decoding = model.new_kv();
        run(&model, &mut decoding, &[&tokens[..10]]);
        let (mut mine, mut other) = (model.new_kv(), model.new_kv());
        let other_tokens = prompt(23);
        let together = model
            .forward(&mut [
                StepInput {
                    kv: &mut other,
                    tokens: &other_tokens,
                    want: Want::Last,
                },
                StepInput {
                    kv: &mut decoding,
                    tokens: &[4],
                    want: Want::Last,
                },
                StepInput {
                    kv: &mut mine,
                    tokens: &tokens,
                    want: Want::Last,
                },
            ])
            .unwrap();
        assert_eq!(together[2], whole, "{kind:?}: beside other sequences");
    }
}

#[test]
fn heads_that_are_not_whole_8_bit_blocks_are_refused() {
    // The default tiny model has heads of 16 values.
    let dir = tempfile::tempdir().unwrap();
    let path = testkit::write_gguf_as(dir.path(), &TinySpec::default(), GgmlDType::Q4_1).unwrap();
    let (mut model, _, _) = BatchModel::load(&path, None).unwrap();
    match model.shape.set_kv(KvType::Q8) {
        Err(JudgeError::InvalidArgument(msg)) => {
            assert!(msg.contains("--kv-dtype") && msg.contains("16"), "{msg}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(model.shape.kv, KvType::F16, "the type is unchanged");
    model.shape.set_kv(KvType::F32).unwrap();
}
