//! Shared set-up for the judge's behaviour tests: a tiny model written to a temp dir and a
//! judge server on a loopback port.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::model::{ModelSpec, WeightDType};
use autoj_judge::engine::{
    Engine, EngineConfig, EngineEvent, JudgeRequest, PromptFormatChoice, Scheduling,
};
use autoj_judge::grpc::{service::JudgeService, validate::ServiceLimits};
use autoj_judge::protocol::fit::TruncationPolicy;
use autoj_judge::protocol::prompt::Task;
use autoj_judge::testkit::{self, TinySpec};
use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_client::JudgeClient;
use candle_core::Device;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// Every await in these tests is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Awaits `f`, failing the test if it takes longer than [`TIMEOUT`].
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f).await.expect("timed out")
}

/// Which tiny model file to build.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// GGUF file with a gpt2 tokenizer in metadata and a chat template.
    Gguf,
    /// Hugging Face directory (safetensors + tokenizer.json), no chat template.
    Hf,
}

/// A tiny model on disk; the temp dir lives as long as this value.
pub struct TinyModel {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn tiny_model(kind: Kind, spec: &TinySpec) -> TinyModel {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = match kind {
        Kind::Gguf => testkit::write_gguf(dir.path(), spec),
        Kind::Hf => testkit::write_hf_dir(dir.path(), spec),
    }
    .expect("write tiny model");
    TinyModel { dir, path }
}

/// Where the device backend's tests run: the first CUDA device in a build with the `cuda`
/// feature that can open one (a GPU machine), else the CPU (CI, and CUDA builds linked
/// against stub libraries).
pub fn test_device() -> Device {
    if candle_core::utils::cuda_is_available() {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
    }
    Device::Cpu
}

pub fn engine_config(path: PathBuf, queue_capacity: usize) -> EngineConfig {
    EngineConfig {
        model: ModelSpec::new(path, WeightDType::F32, Device::Cpu),
        prompt_format: PromptFormatChoice::Auto,
        queue_capacity,
        prefill_chunk: 64,
        scheduling: Scheduling::default(),
    }
}

/// A judge server on 127.0.0.1 with its engine and a way to stop it.
pub struct TestServer {
    pub engine: Engine,
    pub client: JudgeClient<Channel>,
    pub addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _model: TinyModel,
}

impl TestServer {
    pub async fn start(
        kind: Kind,
        spec: TinySpec,
        limits: ServiceLimits,
        queue_capacity: usize,
    ) -> Self {
        Self::start_with(kind, spec, limits, queue_capacity, |_| {}).await
    }

    /// Like [`TestServer::start`], with the engine's settings changed by `tweak` (its
    /// scheduling, its device).
    pub async fn start_with(
        kind: Kind,
        spec: TinySpec,
        limits: ServiceLimits,
        queue_capacity: usize,
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Self {
        let model = tiny_model(kind, &spec);
        let mut cfg = engine_config(model.path.clone(), queue_capacity);
        tweak(&mut cfg);
        let engine = within(tokio::task::spawn_blocking(move || Engine::start(cfg)))
            .await
            .unwrap()
            .expect("engine starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let service = JudgeService::new(engine.clone(), limits, "test-replica");
        let task = tokio::spawn(async move {
            autoj_judge::grpc::server::serve(listener, service, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        let client = within(JudgeClient::connect(addr.clone()))
            .await
            .expect("connect");
        Self {
            engine,
            client,
            addr,
            stop: Some(stop),
            task,
            _model: model,
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        within(&mut self.task).await.unwrap();
    }
}

pub fn options(max_new_tokens: u32) -> Option<pb::JudgeOptions> {
    Some(pb::JudgeOptions {
        generation: Some(pb::GenerationOptions {
            max_new_tokens: Some(max_new_tokens),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub fn compare(max_new_tokens: u32) -> pb::CompareRequest {
    pb::CompareRequest {
        query: "What is the capital of France?".into(),
        response_1: "The capital of France is Paris.".into(),
        response_2: "I think it is Lyon, the second city.".into(),
        options: options(max_new_tokens),
    }
}

pub fn critique(max_new_tokens: u32) -> pb::CritiqueRequest {
    pb::CritiqueRequest {
        query: "Write a haiku about rain.".into(),
        response: "Soft rain on the roof / the garden drinks in silence / puddles hold the sky"
            .into(),
        options: options(max_new_tokens),
    }
}

/// Reads a whole stream into its events.
pub async fn collect(
    mut stream: tonic::Streaming<pb::JudgeEvent>,
) -> Result<Vec<pb::judge_event::Event>, tonic::Status> {
    let mut out = Vec::new();
    while let Some(ev) = within(stream.message()).await? {
        out.push(ev.event.expect("event set"));
    }
    Ok(out)
}

/// An engine request critiquing a short haiku with `params` (greedy unless they say
/// otherwise), for tests that call the engine directly.
pub fn haiku_request(params: GenerationParams) -> JudgeRequest {
    JudgeRequest {
        task: Task::Single {
            query: "Write a haiku about rain.".into(),
            response: "Soft rain on the roof".into(),
        },
        language: None,
        params,
        truncation: TruncationPolicy::Auto,
        deadline: None,
    }
}

/// Submits every request at once and collects each stream's text (deltas until usage) and
/// verdict outcome (empty when none came), in submission order: what batch-invariance tests
/// compare.
pub fn stream_results(engine: &Engine, reqs: Vec<JudgeRequest>) -> Vec<(String, String)> {
    let subs: Vec<_> = reqs
        .into_iter()
        .map(|r| engine.submit(r).expect("admitted"))
        .collect();
    subs.into_iter()
        .map(|mut s| {
            let (mut text, mut verdict) = (String::new(), String::new());
            while let Some(ev) = s.events.blocking_recv() {
                match ev.expect("no engine error") {
                    EngineEvent::Delta(d) => text.push_str(&d),
                    EngineEvent::Verdict(v) => verdict = format!("{:?}", v.outcome),
                    EngineEvent::Usage(_) => break,
                    EngineEvent::Token(t) => panic!("a judgment sent a chat token: {t:?}"),
                }
            }
            (text, verdict)
        })
        .collect()
}

/// [`stream_results`]' texts alone.
pub fn stream_texts(engine: &Engine, reqs: Vec<JudgeRequest>) -> Vec<String> {
    stream_results(engine, reqs)
        .into_iter()
        .map(|(text, _)| text)
        .collect()
}

/// The batched engine's and candle's stock model's last-position logits for one prompt on
/// the same file: the largest difference and the largest reference logit.
pub fn logits_vs_candle(path: &std::path::Path) -> (f32, f32) {
    use autoj_judge::engine::cpu::BatchModel;
    use autoj_judge::engine::oracle::JudgeModel;
    use autoj_judge::engine::scheduler::{StepInput, Want};
    let (model, _, _) = BatchModel::load(path, None).expect("batched load");
    let mut stock = JudgeModel::load(&ModelSpec::new(
        path.to_path_buf(),
        WeightDType::F32,
        Device::Cpu,
    ))
    .expect("candle load");
    let prompt = [5u32, 17, 3, 99, 42, 7, 11];
    let reference = stock.forward(&prompt, 0).unwrap().to_vec1::<f32>().unwrap();
    let mut kv = model.new_kv();
    let ours = model
        .forward(&mut [StepInput {
            kv: &mut kv,
            tokens: &prompt,
            want: Want::Last,
        }])
        .unwrap()
        .remove(0);
    let scale = reference.iter().fold(0f32, |a, v| a.max(v.abs()));
    (max_diff(&ours, &reference), scale)
}

/// The largest absolute difference between two equally long vectors of logits.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The last position's logits of `tokens` run from an empty cache of any backend, through
/// the scheduler's step contract (a whole row asked for).
pub fn prompt_logits<B: autoj_judge::engine::scheduler::Backend>(
    model: &B,
    tokens: &[u32],
) -> Vec<f32> {
    use autoj_judge::engine::scheduler::{Ask, Row};
    let mut kv = model.new_kv().expect("a cache");
    let mut rows = [Row {
        kv: &mut kv,
        tokens,
        ask: Ask::Logits,
    }];
    let vocab = model.vocab();
    let out = model.step(&mut rows, vocab).expect("step");
    out.answers.into_iter().next().expect("an answer").logits
}

/// Two logits rows of one position from different steps (alone, batched, gathered): f32
/// products of a different row count round differently, never by more than 1e-4, and the
/// greedy choice is the same.
pub fn assert_same_logits(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(d < 1e-4, "{what}: logits differ by {d}");
    assert_eq!(
        autoj_judge::engine::generate::argmax(a),
        autoj_judge::engine::generate::argmax(b),
        "{what}: greedy choice"
    );
}
