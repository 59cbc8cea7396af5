//! Decode attention on the device backend reads the generating slots only when their range
//! is mostly other slots: two sequences generating in slots 0 and 7 (six slots between them
//! holding other sequences, one of them reading a prompt in the same step) are attended over
//! their own slots, gathered, and give the logits each gives alone.

mod common;

use autoj_judge::engine::device::{DeviceKv, DeviceModel};
use autoj_judge::engine::model::{ModelSpec, WeightDType};
use autoj_judge::engine::scheduler::{Backend, BatchLimits, StepInput, Want};
use autoj_judge::testkit::TinySpec;
use common::{assert_same_logits, test_device, tiny_model, Kind};

const SLOTS: usize = 8;

fn load(path: &std::path::Path) -> DeviceModel {
    let spec = ModelSpec::new(path.to_path_buf(), WeightDType::F32, test_device());
    let limits = BatchLimits {
        max_seqs: SLOTS,
        ..BatchLimits::default()
    };
    let (model, _, _) = DeviceModel::load(&spec, &limits).unwrap();
    assert_eq!(model.slots(), SLOTS);
    model
}

/// Eight sequences with prompts of different lengths, each read alone.
fn prefilled(model: &DeviceModel) -> Vec<DeviceKv> {
    (0..SLOTS)
        .map(|s| {
            let mut kv = model.new_kv().unwrap();
            assert_eq!(kv.slot(), s);
            let prompt: Vec<u32> = (0..3 + 2 * s as u32).map(|t| 5 + t * 7 % 50).collect();
            let input = StepInput {
                kv: &mut kv,
                tokens: &prompt,
                want: Want::Nothing,
            };
            model.forward(&mut [input]).unwrap();
            kv
        })
        .collect()
}

fn step(model: &DeviceModel, inputs: Vec<(&mut DeviceKv, &[u32])>) -> Vec<Vec<f32>> {
    let mut inputs: Vec<StepInput<'_, DeviceKv>> = inputs
        .into_iter()
        .map(|(kv, tokens)| StepInput {
            kv,
            tokens,
            want: Want::Last,
        })
        .collect();
    model.forward(&mut inputs).unwrap()
}

/// Slot 0 and slot 7 run `tokens[0]` and `tokens[1]` in one step (beside slot 3's `chunk`
/// when given); their logits (and the chunk's).
fn far_apart(
    model: &DeviceModel,
    kvs: &mut [DeviceKv],
    tokens: [u32; 2],
    chunk: Option<&[u32]>,
) -> Vec<Vec<f32>> {
    let (head, tail) = kvs.split_at_mut(1);
    let (middle, last) = tail.split_at_mut(SLOTS - 2);
    let (zeroth, seventh) = ([tokens[0]], [tokens[1]]);
    let mut inputs = vec![(&mut head[0], &zeroth[..])];
    if let Some(chunk) = chunk {
        inputs.push((&mut middle[2], chunk));
    }
    inputs.push((&mut last[0], &seventh[..]));
    step(model, inputs)
}

#[test]
fn generating_slots_far_apart_are_gathered_and_agree_with_each_alone() {
    let tiny = tiny_model(Kind::Hf, &TinySpec::default());
    let chunk: &[u32] = &[60, 61, 62];

    let together = load(&tiny.path);
    let mut kv_t = prefilled(&together);
    let mixed = far_apart(&together, &mut kv_t, [11, 12], Some(chunk));
    assert_eq!(
        together.gathered_steps(),
        1,
        "two generating rows over eight slots are gathered"
    );

    let apart = load(&tiny.path);
    let mut kv_a = prefilled(&apart);
    let first = step(&apart, vec![(&mut kv_a[0], &[11][..])]);
    let chunk_alone = step(&apart, vec![(&mut kv_a[3], chunk)]);
    let seventh = step(&apart, vec![(&mut kv_a[7], &[12][..])]);
    assert_eq!(apart.gathered_steps(), 0, "a single slot is its own range");

    assert_same_logits(&mixed[0], &first[0], "slot 0");
    assert_same_logits(&mixed[1], &chunk_alone[0], "the prompt chunk beside them");
    assert_same_logits(&mixed[2], &seventh[0], "slot 7");

    // Both go on: what the gathered step wrote is where the next step reads.
    let again = far_apart(&together, &mut kv_t, [13, 14], None);
    assert_eq!(together.gathered_steps(), 2);
    let first = step(&apart, vec![(&mut kv_a[0], &[13][..])]);
    let seventh = step(&apart, vec![(&mut kv_a[7], &[14][..])]);
    assert_same_logits(&again[0], &first[0], "slot 0, next step");
    assert_same_logits(&again[1], &seventh[0], "slot 7, next step");
}
