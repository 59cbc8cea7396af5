//! The throughput half of `autoj bench`: aggregate decode speed of the batched forward pass
//! at several concurrency levels, key/value memory per sequence, and judgments per minute
//! end to end through gRPC on Auto-J's pairwise test set with and without the prefix cache.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use autoj_judge::engine::cpu::kv::SeqKv;
use autoj_judge::engine::cpu::BatchModel;
use autoj_judge::engine::model::{ModelSpec, WeightDType};
use autoj_judge::engine::scheduler::KvType;
use autoj_judge::engine::scheduler::{BatchLimits, StepInput, Want};
use autoj_judge::engine::{Engine, EngineConfig, PromptFormatChoice, Scheduling};
use autoj_judge::grpc::{service::JudgeService, validate::ServiceLimits};
use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_client::JudgeClient;
use candle_core::Device;
use futures::StreamExt;
use serde_json::{json, Value};

pub use autoj_judge::engine::generate::argmax;

/// Decode tokens per second summed over `b` sequences stepping together, for each level,
/// plus each level's ratio to one sequence. Every sequence starts from the same prefilled
/// prompt (forked caches) and then owns its cache. The levels take turns `repeat` times
/// (1, 4, 8, 16, 1, 4, ...) and each reports its median, so a change in the machine's load
/// during the run moves every level alike instead of skewing the ratios. The prompt is
/// prefilled `chunk` tokens per pass (0: in one pass).
pub fn concurrency(
    model: &BatchModel,
    (prompt, chunk): (&[u32], usize),
    levels: &[usize],
    n_predict: usize,
    repeat: usize,
) -> anyhow::Result<Vec<Value>> {
    let mut base = model.new_kv();
    let first = prefill(model, &mut base, prompt, chunk)?;
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); levels.len()];
    let mut kv_bytes = vec![0; levels.len()];
    for _ in 0..repeat.max(1) {
        for (level, &b) in levels.iter().enumerate() {
            let mut kvs: Vec<SeqKv> = (0..b).map(|_| base.fork(prompt.len())).collect();
            let mut next = vec![argmax(&first); b];
            let t = Instant::now();
            for _ in 0..n_predict {
                let tokens: Vec<[u32; 1]> = next.iter().map(|&n| [n]).collect();
                let mut inputs: Vec<StepInput<'_, _>> = kvs
                    .iter_mut()
                    .zip(&tokens)
                    .map(|(kv, t)| StepInput {
                        kv,
                        tokens: t,
                        want: Want::Last,
                    })
                    .collect();
                let logits = model.forward(&mut inputs)?;
                next = logits.iter().map(|l| argmax(l)).collect();
            }
            runs[level].push((b * n_predict) as f64 / t.elapsed().as_secs_f64());
            kv_bytes[level] = kvs.iter().map(|kv| kv.own_bytes()).sum::<usize>() / b.max(1);
        }
    }
    let medians: Vec<f64> = runs.into_iter().map(median).collect();
    let single = levels
        .iter()
        .position(|&b| b == 1)
        .map_or(medians[0], |i| medians[i]);
    Ok(levels
        .iter()
        .zip(&medians)
        .zip(kv_bytes)
        .map(|((&b, &tok_s), kv)| {
            json!({
                "concurrent_sequences": b,
                "aggregate_decode_tok_s": tok_s,
                "ratio_to_one_sequence": tok_s / single,
                "runs": repeat.max(1),
                "kv_bytes_per_sequence_generated": kv,
            })
        })
        .collect())
}

/// The middle value (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Judgments per minute through a real gRPC server on loopback: `rows` pairwise inputs of
/// `file` sent `concurrency` at a time, `max_new_tokens` each, once with the prefix cache and
/// once without.
pub async fn grpc_judgments(
    model: &Path,
    file: &Path,
    rows: usize,
    concurrency: usize,
    max_new_tokens: u32,
    kv_type: KvType,
) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let requests: Vec<pb::CompareRequest> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(rows)
        .map(|l| -> anyhow::Result<pb::CompareRequest> {
            let v: Value = serde_json::from_str(l)?;
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            Ok(pb::CompareRequest {
                query: field("prompt"),
                response_1: field("response 1"),
                response_2: field("response 2"),
                options: Some(pb::JudgeOptions {
                    generation: Some(pb::GenerationOptions {
                        max_new_tokens: Some(max_new_tokens),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut results = Vec::new();
    for prefix_cache_tokens in [16_384usize, 0] {
        let config = EngineConfig {
            model: ModelSpec::new(model.to_path_buf(), WeightDType::F32, Device::Cpu),
            prompt_format: PromptFormatChoice::Auto,
            queue_capacity: rows.max(1),
            prefill_chunk: autoj_judge::engine::handle::DEFAULT_PREFILL_CHUNK,
            scheduling: Scheduling::Batched(BatchLimits {
                max_seqs: concurrency,
                prefix_cache_tokens,
                kv_type,
                ..BatchLimits::default()
            }),
        };
        let engine = tokio::task::spawn_blocking(move || Engine::start(config)).await??;
        let stats_engine = engine.clone();
        let service = JudgeService::new(engine, ServiceLimits::default(), "bench");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(autoj_judge::grpc::server::serve(listener, service, async {
            let _ = stopped.await;
        }));
        let client = JudgeClient::connect(addr).await?;
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let t = Instant::now();
        let outcomes: Vec<anyhow::Result<usize>> = futures::stream::iter(requests.clone())
            .map(|req| {
                let mut client = client.clone();
                async move {
                    let mut stream = client.compare(req).await?.into_inner();
                    let mut completion = 0;
                    let mut verdicts = 0;
                    while let Some(ev) = stream.next().await {
                        match ev?.event {
                            Some(pb::judge_event::Event::Verdict(_)) => verdicts += 1,
                            Some(pb::judge_event::Event::Usage(u)) => {
                                completion = u.completion_tokens as usize
                            }
                            _ => {}
                        }
                    }
                    anyhow::ensure!(verdicts == 1, "a judgment ended with {verdicts} verdicts");
                    Ok(completion)
                }
            })
            .buffer_unordered(concurrency)
            .inspect(|_| {
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .collect()
            .await;
        let secs = t.elapsed().as_secs_f64();
        let _ = stop.send(());
        let _ = server.await;
        let ok = outcomes.iter().filter(|o| o.is_ok()).count();
        let generated: usize = outcomes.iter().filter_map(|o| o.as_ref().ok()).sum();
        if let Some(Err(e)) = outcomes.iter().find(|o| o.is_err()) {
            eprintln!("a judgment failed: {e:#}");
        }
        let stats = stats_engine.stats();
        results.push(json!({
            "prefix_cache": prefix_cache_tokens > 0,
            "judgments": ok,
            "failed": outcomes.len() - ok,
            "concurrency": concurrency,
            "max_new_tokens": max_new_tokens,
            "seconds": secs,
            "judgments_per_minute": ok as f64 * 60.0 / secs,
            "generated_tokens": generated,
            "prefix_hit_tokens": stats.prefix_hit_tokens.load(std::sync::atomic::Ordering::Relaxed),
            "forward_steps": stats.steps.load(std::sync::atomic::Ordering::Relaxed),
        }));
    }
    if let [with, without] = results.as_slice() {
        let r = with["judgments_per_minute"].as_f64().unwrap_or(0.0)
            / without["judgments_per_minute"].as_f64().unwrap_or(f64::NAN);
        results.push(json!({ "prefix_cache_speedup": r }));
    }
    Ok(results)
}

/// Runs `prompt` through `kv` `chunk` tokens per forward pass (0: all at once), as the
/// server's `--prefill-chunk` does; the last position's logits.
pub fn prefill(
    model: &BatchModel,
    kv: &mut SeqKv,
    prompt: &[u32],
    chunk: usize,
) -> anyhow::Result<Vec<f32>> {
    let chunk = if chunk == 0 {
        prompt.len().max(1)
    } else {
        chunk
    };
    let mut logits = Vec::new();
    for tokens in prompt.chunks(chunk) {
        logits = model
            .forward(&mut [StepInput {
                kv: &mut *kv,
                tokens,
                want: Want::Last,
            }])?
            .remove(0);
    }
    Ok(logits)
}
