//! The device backend computes what the other engines compute: its logits agree with candle's
//! stock LLaMA for a prompt and the next token (Hugging Face and GGUF models), and a greedy
//! request gives the same critique and verdict as the serial engine and the CPU batched
//! engine.

mod common;

use autoj_judge::engine::device::{DeviceKv, DeviceModel};
use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::model::{ModelSpec, WeightDType};
use autoj_judge::engine::oracle::JudgeModel;
use autoj_judge::engine::scheduler::{Backend, BatchLimits, StepInput, Want};
use autoj_judge::engine::{Engine, EngineEvent, JudgeRequest, Scheduling};
use autoj_judge::protocol::fit::TruncationPolicy;
use autoj_judge::protocol::prompt::Task;
use autoj_judge::protocol::scoring::ChoiceScores;
use autoj_judge::testkit::TinySpec;
use candle_core::Device;
use common::{engine_config, test_device, tiny_model, Kind};

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn spec(path: std::path::PathBuf) -> ModelSpec {
    ModelSpec::new(path, WeightDType::F32, test_device())
}

fn step(model: &DeviceModel, kv: &mut DeviceKv, tokens: &[u32]) -> Vec<f32> {
    model
        .forward(&mut [StepInput {
            kv,
            tokens,
            want: Want::Last,
        }])
        .expect("device step")
        .remove(0)
}

#[test]
fn device_backend_logits_match_candles_stock_model() {
    for kind in [Kind::Hf, Kind::Gguf] {
        let tiny = tiny_model(kind, &TinySpec::default());
        let (model, _, _) =
            DeviceModel::load(&spec(tiny.path.clone()), &BatchLimits::default()).unwrap();
        let mut stock = JudgeModel::load(&spec(tiny.path.clone())).expect("candle load");
        let prompt = [5u32, 17, 3, 99, 42, 7, 11];
        let reference = stock.forward(&prompt, 0).unwrap().to_vec1::<f32>().unwrap();
        let mut kv = model.new_kv().unwrap();
        let ours = step(&model, &mut kv, &prompt);
        let d = max_diff(&ours, &reference);
        assert!(d < 1e-3, "{kind:?}: prompt logits differ by {d}");
        // The next token goes through the batched decode path.
        let reference = stock
            .forward(&[23], prompt.len())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let ours = step(&model, &mut kv, &[23]);
        let d = max_diff(&ours, &reference);
        assert!(d < 1e-3, "{kind:?}: decode logits differ by {d}");
    }
}

fn request(task: Task) -> JudgeRequest {
    JudgeRequest {
        task,
        language: None,
        params: GenerationParams {
            max_new_tokens: 16,
            ..GenerationParams::default()
        },
        truncation: TruncationPolicy::Auto,
        deadline: None,
    }
}

fn tasks() -> [Task; 2] {
    [
        Task::Pairwise {
            query: "What is the capital of France?".into(),
            response_1: "Paris is the capital.".into(),
            response_2: "Lyon, I believe.".into(),
        },
        Task::Single {
            query: "Write a haiku about rain.".into(),
            response: "Soft rain on the roof".into(),
        },
    ]
}

/// What one engine made of a request.
#[derive(Debug)]
struct Judged {
    text: String,
    /// The outcome and where it came from.
    verdict: String,
    /// The verdict's probabilities.
    probs: Vec<f32>,
}

fn judge(engine: &Engine, task: Task) -> Judged {
    let mut sub = engine.submit(request(task)).expect("admitted");
    let mut out = Judged {
        text: String::new(),
        verdict: String::new(),
        probs: Vec::new(),
    };
    while let Some(ev) = sub.events.blocking_recv() {
        match ev.expect("no engine error") {
            EngineEvent::Delta(d) => out.text.push_str(&d),
            EngineEvent::Verdict(v) => {
                out.verdict = format!("{:?} {:?}", v.outcome, v.source);
                out.probs = match v.scores.expect("scored") {
                    ChoiceScores::Pairwise {
                        p_response_1,
                        p_response_2,
                        p_tie,
                    } => vec![p_response_1, p_response_2, p_tie],
                    ChoiceScores::Single { distribution, .. } => distribution,
                };
            }
            EngineEvent::Usage(_) => break,
            EngineEvent::Token(t) => panic!("a judgment sent a chat token: {t:?}"),
        }
    }
    out
}

fn assert_same(a: &Judged, b: &Judged, what: &str) {
    assert_eq!(a.text, b.text, "{what}: critique");
    assert_eq!(a.verdict, b.verdict, "{what}: verdict");
    let d = max_diff(&a.probs, &b.probs);
    assert!(d < 1e-3, "{what}: probabilities differ by {d}");
}

#[test]
fn device_backend_greedy_output_equals_the_serial_and_cpu_batched_engines() {
    let tiny = tiny_model(Kind::Gguf, &TinySpec::default());
    let start = |scheduling: Scheduling, device: Device| {
        let mut cfg = engine_config(tiny.path.clone(), 4);
        cfg.scheduling = scheduling;
        cfg.model.device = device;
        Engine::start(cfg).expect("engine starts")
    };
    let device = start(Scheduling::Device(BatchLimits::default()), test_device());
    let serial = start(Scheduling::Serial, test_device());
    let cpu = start(Scheduling::Batched(BatchLimits::default()), Device::Cpu);
    for task in tasks() {
        let ours = judge(&device, task.clone());
        assert!(!ours.text.is_empty(), "the device engine generated text");
        assert_same(&ours, &judge(&serial, task.clone()), "device vs serial");
        assert_same(&ours, &judge(&cpu, task), "device vs CPU batched");
    }
}
