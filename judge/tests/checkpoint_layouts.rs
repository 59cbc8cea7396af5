//! One tiny random LLaMA written in every published layout (safetensors and PyTorch `.bin`,
//! single and sharded, f32 / f16 / bf16 on disk, GPTQ 4-bit) loads to the same model: the
//! same logits (exactly where the stored values are the same, within a stated tolerance
//! where they are rounded) on the CPU engine, through the device backend on the CPU, and
//! through the serial engine; and the embedding's padding rows are never generated.

mod common;

use std::path::Path;

use autoj_judge::engine::checkpoint::Checkpoint;
use autoj_judge::engine::cpu::BatchModel;
use autoj_judge::engine::device::DeviceModel;
use autoj_judge::engine::generate::{argmax, GenerationParams};
use autoj_judge::engine::model::{ModelSpec, WeightDType};
use autoj_judge::engine::oracle::JudgeModel;
use autoj_judge::engine::scheduler::{BatchLimits, StepInput, Want};
use autoj_judge::engine::Scheduling;
use autoj_judge::testkit::layouts::{write_layout, write_layout_padded, Layout, PADDING_ROWS};
use autoj_judge::testkit::TinySpec;
use candle_core::{DType, Device};
use common::{engine_config, haiku_request, max_diff, prompt_logits, stream_texts};

const PROMPT: [u32; 7] = [5, 17, 3, 99, 42, 7, 11];

fn cpu_logits(path: &Path) -> Vec<f32> {
    let (model, _, _) = BatchModel::load(path, None).expect("CPU engine loads");
    prompt_logits(&model, &PROMPT)
}

fn device_logits(path: &Path) -> Vec<f32> {
    let spec = ModelSpec::new(path, WeightDType::F32, Device::Cpu);
    let (model, _, _) = DeviceModel::load(&spec, &BatchLimits::default()).expect("device loads");
    prompt_logits(&model, &PROMPT)
}

fn serial_logits(path: &Path) -> Vec<f32> {
    let spec = ModelSpec::new(path, WeightDType::F32, Device::Cpu);
    let mut m = JudgeModel::load(&spec).expect("serial engine loads");
    m.forward(&PROMPT, 0).unwrap().to_vec1::<f32>().unwrap()
}

fn scale(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, x| a.max(x.abs()))
}

#[test]
fn every_dense_layout_gives_the_same_logits_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::default();
    let write = |name: &str, layout| write_layout(dir.path(), name, &spec, layout).unwrap();
    let st = |shards, dtype| Layout::Safetensors { shards, dtype };
    let pt = |shards, dtype| Layout::PyTorch { shards, dtype };
    let reference = cpu_logits(&write("st-f32", st(1, DType::F32)));
    let tokens = autoj_judge::testkit::spm::spm_tokens().len();
    assert_eq!(
        reference.len(),
        tokens + PADDING_ROWS,
        "rows past the tokenizer are kept"
    );
    let s = scale(&reference);
    // The same f32 values on disk: the same logits, bit for bit.
    for (name, layout) in [
        ("st-f32-shards", st(3, DType::F32)),
        ("bin-f32", pt(1, DType::F32)),
        ("bin-f32-shards", pt(3, DType::F32)),
    ] {
        assert_eq!(cpu_logits(&write(name, layout)), reference, "{name}");
    }
    // f16 on disk, in either container: identical to each other, near the f32 model.
    let st16 = cpu_logits(&write("st-f16", st(2, DType::F16)));
    let bin16 = cpu_logits(&write("bin-f16", pt(3, DType::F16)));
    assert_eq!(
        st16, bin16,
        "f16 safetensors and f16 .bin hold the same values"
    );
    let d = max_diff(&st16, &reference);
    assert!(
        d < 1e-2 * s,
        "f16 logits differ from f32 by {d} (scale {s})"
    );
    let bf16 = cpu_logits(&write("st-bf16", st(2, DType::BF16)));
    let d = max_diff(&bf16, &reference);
    assert!(
        d < 5e-2 * s,
        "bf16 logits differ from f32 by {d} (scale {s})"
    );
    // The device backend (on the CPU) and the serial engine read the same directories.
    for name in ["bin-f32-shards", "bin-f16"] {
        let path = dir.path().join(name);
        let cpu = cpu_logits(&path);
        let d = max_diff(&device_logits(&path), &cpu);
        assert!(d < 1e-3 * s, "{name}: device backend differs by {d}");
        let d = max_diff(&serial_logits(&path), &cpu);
        assert!(d < 1e-3 * s, "{name}: serial engine differs by {d}");
    }
}

#[test]
fn gptq_layers_load_to_their_dequantized_weights_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::default();
    for desc_act in [false, true] {
        let name = format!("gptq-{desc_act}");
        let layout = Layout::Gptq {
            group_size: 32,
            desc_act,
        };
        let path = write_layout(dir.path(), &name, &spec, layout).unwrap();
        // The reference: the same model with every layer unpacked to f32, written dense.
        let dense = Checkpoint::open(&path)
            .unwrap()
            .dense(DType::F32, &Device::Cpu)
            .unwrap();
        assert!(dense.contains_key("model.layers.0.self_attn.q_proj.weight"));
        let twin = dir.path().join(format!("dense-{desc_act}"));
        std::fs::create_dir_all(&twin).unwrap();
        candle_core::safetensors::save(&dense, twin.join("model.safetensors")).unwrap();
        for f in ["tokenizer.json", "config.json"] {
            std::fs::copy(path.join(f), twin.join(f)).unwrap();
        }
        let reference = cpu_logits(&twin);
        let s = scale(&reference);
        // Device backend: the same unpacked weights.
        let d = max_diff(&device_logits(&path), &reference);
        assert!(
            d < 1e-3 * s,
            "desc_act {desc_act}: device backend differs by {d}"
        );
        // CPU engine: Q4_1 blocks (offsets rounded to f16; the kernels take activations
        // in 8 bits), or Q8_0 where a block of 32 inputs spans groups (activation order).
        let d = max_diff(&cpu_logits(&path), &reference);
        let tol = if desc_act { 4e-2 } else { 2e-2 };
        assert!(
            d < tol * s,
            "desc_act {desc_act}: CPU engine differs by {d} (scale {s})"
        );
    }
}

#[test]
fn padding_rows_past_the_tokenizer_are_never_generated() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::PyTorch {
        shards: 2,
        dtype: DType::F32,
    };
    let spec = TinySpec::default();
    let padded = write_layout_padded(dir.path(), "padded", &spec, layout, PADDING_ROWS).unwrap();
    let plain = write_layout_padded(dir.path(), "plain", &spec, layout, 0).unwrap();
    // The trap is armed: unmasked, a padding row is the largest logit at most steps of a
    // greedy run, so an engine that let them be chosen would generate other text.
    let (model, _, _) = BatchModel::load(&padded, None).unwrap();
    let tokens = model.shape.vocab - PADDING_ROWS;
    let mut kv = model.new_kv();
    let mut next = PROMPT.to_vec();
    let mut padding_wins = 0;
    for _ in 0..12 {
        let logits = model
            .forward(&mut [StepInput {
                kv: &mut kv,
                tokens: &next,
                want: Want::Last,
            }])
            .unwrap()
            .remove(0);
        padding_wins += usize::from(argmax(&logits) as usize >= tokens);
        next = vec![argmax(&logits[..tokens])];
    }
    assert!(
        padding_wins >= 8,
        "a padding row wins {padding_wins} of 12 steps unmasked"
    );
    let params = GenerationParams {
        max_new_tokens: 12,
        ..GenerationParams::default()
    };
    for scheduling in [
        Scheduling::default(),
        Scheduling::Device(BatchLimits::default()),
        Scheduling::Serial,
    ] {
        let label = format!("{scheduling:?}");
        let text = |path: &Path| {
            let mut cfg = engine_config(path.to_path_buf(), 4);
            cfg.scheduling = scheduling.clone();
            let engine = autoj_judge::engine::Engine::start(cfg).expect("engine starts");
            stream_texts(&engine, vec![haiku_request(params.clone())]).remove(0)
        };
        // The same model without the padding rows: the same greedy text.
        assert_eq!(text(&padded), text(&plain), "{label}");
    }
}
