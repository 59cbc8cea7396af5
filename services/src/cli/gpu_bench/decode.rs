//! Decode speed of the device backend on a random-weight model of a named shape, created on
//! the device in the serving dtype (no file, no download): batch-1 tokens/s against the
//! memory-bandwidth limit, aggregate tokens/s at several numbers of concurrent sequences with
//! long contexts, and the time to first token of prompts that arrive while the batch decodes.
//! Every step goes through [`autoj_judge::engine::scheduler::Backend::step`] with the
//! scheduler's kind of rows (greedy picks on the device, a few bytes back per row). The run
//! is sized to the device's memory first ([`size`]): on a card too small for what is asked,
//! the contexts shrink (down to half), then the number of sequences.

use std::time::Instant;

use anyhow::Context;
use autoj_judge::engine::device::{DeviceKv, DeviceModel, DeviceShape, SlotLayout};
use autoj_judge::engine::handle::DEFAULT_PREFILL_CHUNK;
use autoj_judge::engine::scheduler::Backend;
use candle_core::DType;
use clap::Args;
use serde_json::{json, Map, Value};

use super::common::{pick, quantile, tokens};
use super::machine::{copy_gbps, serving_dtype};
use super::memory::MemoryTrack;
use super::plan::{plan, plan_json, MemoryArgs, MemoryPlan, Wanted};
use super::DEFAULT_SHAPE;
use crate::config::{parse_device, ConfigError};

/// `gpu-bench decode` settings; the defaults fit gpu-check's 180 s on an H200 with the
/// 13B shape.
#[derive(Debug, Clone, Args)]
pub struct DecodeArgs {
    /// Device to measure: `cuda:N` or `cpu`.
    #[arg(long, env = "AUTOJ_DEVICE", default_value = "cuda:0")]
    pub device: String,
    /// Model shape: `llama2-13b`, `llama2-7b` or `tiny`.
    #[arg(long, env = "AUTOJ_GPU_SHAPE", default_value = DEFAULT_SHAPE)]
    pub shape: String,
    /// Vocabulary of the random model (LLaMA-2's by default).
    #[arg(long, env = "AUTOJ_GPU_VOCAB", default_value_t = 32_000)]
    pub vocab: usize,
    /// Prompt positions each sequence holds before its decode is timed (fewer, down to
    /// half, where the device's memory does not hold them).
    #[arg(long, env = "AUTOJ_GPU_DECODE_CONTEXTS", default_value_t = 1000)]
    pub contexts: usize,
    /// Timed decode steps per measurement (after one untimed step).
    #[arg(long, env = "AUTOJ_GPU_DECODE_STEPS", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// Numbers of sequences decoding together, comma-separated (those above what the
    /// device's memory holds become that many).
    #[arg(
        long,
        env = "AUTOJ_GPU_DECODE_CONCURRENCY",
        value_delimiter = ',',
        default_value = "8,32,64"
    )]
    pub concurrency: Vec<usize>,
    /// Prompts timed for the time to first token.
    #[arg(long, env = "AUTOJ_GPU_DECODE_TTFT_SAMPLES", default_value_t = 5)]
    pub ttft_samples: usize,
    /// Tokens in one step (decode tokens plus a prompt chunk), as the scheduler's
    /// `--max-batch-tokens`.
    #[arg(long, env = "AUTOJ_GPU_MAX_BATCH_TOKENS", default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Bytes copied to measure the device's bandwidth, in MiB.
    #[arg(long, env = "AUTOJ_GPU_COPY_MIB", default_value_t = 1024)]
    pub copy_mib: usize,
    /// Seed of the weights and tokens.
    #[arg(long, env = "AUTOJ_GPU_SEED", default_value_t = 1)]
    pub seed: u64,
    /// The memory the run is sized to.
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Print only the JSON object (gpu-check reads the last line either way).
    #[arg(long, env = "AUTOJ_GPU_JSON")]
    pub json: bool,
}

/// What a run is sized to: the memory plan, and the contexts and levels it leaves.
#[derive(Debug, Clone)]
pub struct DecodeSize {
    /// Slots, positions and bytes.
    pub plan: MemoryPlan,
    /// Prompt positions of each sequence.
    pub contexts: usize,
    /// Numbers of sequences decoding together, ascending.
    pub levels: Vec<usize>,
    /// Tokens in one step.
    pub max_batch_tokens: usize,
}

impl DecodeSize {
    /// The sizes as JSON (`gpu-bench plan` and the step's report).
    pub fn describe(&self) -> Value {
        let mut v = plan_json(&self.plan);
        v["contexts"] = json!(self.contexts);
        v["concurrency"] = json!(self.levels);
        v["max_batch_tokens"] = json!(self.max_batch_tokens);
        v
    }
}

/// The random model's shape for `args` in `dtype`.
pub fn shape(args: &DecodeArgs, dtype: DType) -> anyhow::Result<DeviceShape> {
    let mut shape = DeviceShape::named(&args.shape, args.vocab)
        .with_context(|| format!("unknown shape `{}`", args.shape))?;
    shape.dtype = dtype;
    Ok(shape)
}

/// Sizes the run to `memory` bytes ([`plan`]): one slot per sequence of the largest level
/// and one for the arriving prompts, each of the contexts plus every step the first
/// sequence takes; a step's rows are at most a whole prompt (the prefill) or the batch.
/// Levels above the sequences that fit become that many.
pub fn size(
    args: &DecodeArgs,
    shape: &DeviceShape,
    memory: Option<u64>,
) -> Result<DecodeSize, ConfigError> {
    let levels = sorted_levels(&args.concurrency);
    let most = levels.last().copied().unwrap_or(1);
    let wanted_layout = layout(args, most, levels.len());
    let wanted = Wanted {
        sequences: most,
        spare_slots: 1,
        context: args.contexts,
        min_context: args.contexts.div_ceil(2),
        tail: wanted_layout.slot_len - args.contexts,
        prefix_positions: 0,
        step_rows: args.max_batch_tokens.max(args.contexts),
        chunk: args.contexts.max(chunk(args, most)),
    };
    let plan = plan(shape, memory, &wanted)?;
    let clamped: Vec<usize> = levels.iter().map(|&l| l.min(plan.sequences)).collect();
    Ok(DecodeSize {
        contexts: plan.context,
        levels: sorted_levels(&clamped),
        max_batch_tokens: args.max_batch_tokens,
        plan,
    })
}

/// Runs the measurements, sized to the device's memory; `passed` when every rate is finite
/// and positive.
pub fn run(args: &DecodeArgs) -> anyhow::Result<Value> {
    let device = parse_device(&args.device)?;
    let shape = shape(args, serving_dtype(&device))?;
    let mut memory = MemoryTrack::default();
    memory.sample(&device)?;
    let sized = size(args, &shape, args.memory.budget(&device)?)?;
    let args = &DecodeArgs {
        contexts: sized.contexts,
        concurrency: sized.levels.clone(),
        ..args.clone()
    };
    let most = sized.levels.last().copied().unwrap_or(1);
    let layout = SlotLayout {
        slots: sized.plan.slots,
        slot_len: sized.plan.slot_len,
    };
    let copy = copy_gbps(&device, args.copy_mib << 20, 5)?;
    let start = Instant::now();
    let model = DeviceModel::random(&shape, layout, args.seed, &device)
        .context("creating the random model on the device")?;
    device.synchronize()?;
    memory.sample(&device)?;
    let setup_s = start.elapsed().as_secs_f64();
    let mut kvs = (0..most)
        .map(|_| model.new_kv())
        .collect::<Result<Vec<DeviceKv>, _>>()?;
    let mut bench = Bench {
        model: &model,
        args,
    };
    let mut prefill_s = bench.prefill(&mut kvs[..1], 0)?;
    let batch1 = bench.decode_rate(&mut kvs[..1])?;
    prefill_s += bench.prefill(&mut kvs[1..], 1)?;
    memory.sample(&device)?;
    let mut aggregate = Map::new();
    for &c in &sized.levels {
        aggregate.insert(c.to_string(), json!(bench.decode_rate(&mut kvs[..c])?));
        memory.sample(&device)?;
    }
    let ttft = bench.ttft(&mut kvs)?;
    memory.sample(&device)?;
    let weight_bytes = shape.weight_bytes();
    let limit = copy * 1e9 / weight_bytes as f64;
    let rates_ok = batch1.is_finite()
        && batch1 > 0.0
        && aggregate
            .values()
            .all(|v| v.as_f64().is_some_and(|r| r > 0.0));
    let plan = sized.describe();
    let report = json!({
        "passed": rates_ok,
        "device": args.device,
        "dtype": shape.dtype.as_str(),
        "shape": args.shape,
        "weight_bytes": weight_bytes,
        "kv_store_mib": sized.plan.kv_store_bytes >> 20,
        "slots": layout.slots,
        "slot_len": layout.slot_len,
        "contexts": args.contexts,
        "planned_gib": plan["planned_gib"],
        "plan": plan,
        "steps": args.steps,
        "d2d_copy_gbps": copy,
        "setup_s": setup_s,
        "prefill_s": prefill_s,
        "batch1_tok_s": batch1,
        "bandwidth_limit_tok_s": limit,
        "batch1_ratio": batch1 / limit,
        "aggregate_tok_s": aggregate,
        "ttft_ms_p50": quantile(&ttft, 0.5),
        "ttft_ms_max": quantile(&ttft, 1.0),
        "peak_gpu_mem_mib": memory.peak_mib(),
        "gpu_mem_mib": memory.summary(),
    });
    if !args.json {
        eprintln!("{report:#}");
    }
    Ok(report)
}

/// The concurrency levels, ascending, without zeros or repeats (at least one).
fn sorted_levels(levels: &[usize]) -> Vec<usize> {
    let mut v: Vec<usize> = levels.iter().copied().filter(|&c| c > 0).collect();
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        v.push(1);
    }
    v
}

/// Slots for the largest level plus one for the arriving prompts; each slot holds the
/// prompt plus every decode step the first sequence takes (batch 1, then each level with
/// its untimed step, then the steps that carry the arriving prompts' chunks).
fn layout(args: &DecodeArgs, most: usize, levels: usize) -> SlotLayout {
    let steps = args.steps as usize + 1;
    let per_step = chunk(args, most);
    let ttft_steps = args.ttft_samples * (args.contexts.div_ceil(per_step) + 1);
    SlotLayout {
        slots: most + 1,
        slot_len: args.contexts + (levels + 1) * steps + ttft_steps + 1,
    }
}

/// Prompt tokens a step carries beside `decoding` decode tokens, as the scheduler plans:
/// what the step's token budget leaves, at most one prefill chunk (and at least one token).
fn chunk(args: &DecodeArgs, decoding: usize) -> usize {
    args.max_batch_tokens
        .saturating_sub(decoding)
        .clamp(1, DEFAULT_PREFILL_CHUNK)
}

/// A model and the settings it is measured with.
struct Bench<'a> {
    model: &'a DeviceModel,
    args: &'a DecodeArgs,
}

impl Bench<'_> {
    /// Fills each cache with a prompt of `contexts` seeded tokens, one prompt a step (the
    /// streams are numbered from `first`); the seconds it took.
    fn prefill(&mut self, kvs: &mut [DeviceKv], first: usize) -> anyhow::Result<f64> {
        let start = Instant::now();
        for (i, kv) in kvs.iter_mut().enumerate() {
            let seed = self.args.seed.wrapping_add((first + i) as u64 * 7919);
            let prompt = tokens(seed, self.args.contexts, self.model.vocab());
            pick(self.model, &mut [(kv, prompt.as_slice())])?;
        }
        Ok(start.elapsed().as_secs_f64())
    }

    /// Decode tokens/s of the sequences of `kvs` stepping together: one untimed step, then
    /// `steps` timed ones, each feeding back the greedy tokens (picked on the device, as
    /// the scheduler does, which also waits for the device).
    fn decode_rate(&mut self, kvs: &mut [DeviceKv]) -> anyhow::Result<f64> {
        let mut next: Vec<[u32; 1]> = vec![[1]; kvs.len()];
        self.decode_steps(kvs, &mut next, 1)?;
        let start = Instant::now();
        let steps = self.args.steps as usize;
        self.decode_steps(kvs, &mut next, steps)?;
        Ok((kvs.len() * steps) as f64 / start.elapsed().as_secs_f64())
    }

    /// `n` decode steps of every sequence of `kvs`, `next` holding each one's next token.
    fn decode_steps(
        &mut self,
        kvs: &mut [DeviceKv],
        next: &mut [[u32; 1]],
        n: usize,
    ) -> anyhow::Result<()> {
        for _ in 0..n {
            let mut batch: Vec<(&mut DeviceKv, &[u32])> = kvs
                .iter_mut()
                .zip(next.iter())
                .map(|(kv, t)| (kv, &t[..]))
                .collect();
            let picked = pick(self.model, &mut batch)?;
            for (t, p) in next.iter_mut().zip(picked) {
                t[0] = p;
            }
        }
        Ok(())
    }

    /// Time to first token, in ms, of `ttft_samples` prompts of `contexts` tokens arriving
    /// one after another while every sequence of `kvs` decodes: each arrival is prefilled
    /// in chunks carried by the batch's decode steps (the chunk is what the step's token
    /// budget leaves, as the scheduler plans it), and its time runs from arrival to the end
    /// of the step that reads its last chunk and returns its first token's logits.
    fn ttft(&mut self, kvs: &mut [DeviceKv]) -> anyhow::Result<Vec<f64>> {
        let mut next: Vec<[u32; 1]> = vec![[1]; kvs.len()];
        let per_step = chunk(self.args, kvs.len());
        let mut times = Vec::with_capacity(self.args.ttft_samples);
        for sample in 0..self.args.ttft_samples {
            let seed = self.args.seed.wrapping_add(1_000_003 * (sample as u64 + 1));
            let prompt = tokens(seed, self.args.contexts, self.model.vocab());
            let mut arrival = self.model.new_kv()?;
            let start = Instant::now();
            for piece in prompt.chunks(per_step) {
                let mut batch: Vec<(&mut DeviceKv, &[u32])> = kvs
                    .iter_mut()
                    .zip(next.iter())
                    .map(|(kv, t)| (kv, &t[..]))
                    .collect();
                batch.push((&mut arrival, piece));
                let picked = pick(self.model, &mut batch)?;
                for (t, p) in next.iter_mut().zip(picked) {
                    t[0] = p;
                }
            }
            times.push(start.elapsed().as_secs_f64() * 1e3);
            // The arrival's slot goes back; the batch decodes one step alone before the next.
            drop(arrival);
            self.decode_steps(kvs, &mut next, 1)?;
        }
        Ok(times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> DecodeArgs {
        DecodeArgs {
            device: "cpu".into(),
            shape: "tiny".into(),
            vocab: 256,
            contexts: 24,
            steps: 2,
            concurrency: vec![3, 2, 3],
            ttft_samples: 2,
            max_batch_tokens: 10,
            copy_mib: 1,
            seed: 1,
            memory: MemoryArgs {
                gpu_memory_gib: None,
            },
            json: true,
        }
    }

    /// gpu-check's run: the defaults, with the 13B shape in bf16.
    fn gpu_check() -> DecodeArgs {
        DecodeArgs {
            shape: "llama2-13b".into(),
            vocab: 32_000,
            contexts: 1000,
            steps: 32,
            concurrency: vec![8, 32, 64],
            ttft_samples: 5,
            max_batch_tokens: 512,
            ..tiny()
        }
    }

    #[test]
    fn decode_on_the_cpu_reports_the_fields_gpu_check_reads() {
        let report = run(&tiny()).unwrap();
        assert_eq!(report["passed"], true, "{report}");
        for field in [
            "batch1_tok_s",
            "bandwidth_limit_tok_s",
            "batch1_ratio",
            "ttft_ms_p50",
            "ttft_ms_max",
            "d2d_copy_gbps",
        ] {
            assert!(report[field].as_f64().unwrap() > 0.0, "{field}: {report}");
        }
        let levels: Vec<&String> = report["aggregate_tok_s"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(levels, ["2", "3"]);
        assert_eq!(report["shape"], "tiny");
        assert_eq!(
            report["weight_bytes"],
            DeviceShape::tiny(256).weight_bytes()
        );
        assert_eq!(report["slots"], 4);
    }

    #[test]
    fn on_80_gb_the_13b_run_keeps_its_levels_with_shorter_contexts() {
        let args = gpu_check();
        let shape = shape(&args, DType::BF16).unwrap();
        let big = size(&args, &shape, Some(141 << 30)).unwrap();
        assert_eq!((big.contexts, big.plan.slot_len), (1000, 1153));
        assert_eq!(big.levels, [8, 32, 64]);
        let small = size(&args, &shape, Some(80 << 30)).unwrap();
        assert_eq!(small.levels, [8, 32, 64]);
        assert_eq!(small.plan.slots, 65);
        assert!((500..1000).contains(&small.contexts), "{small:?}");
        assert!(small.plan.planned_bytes < big.plan.planned_bytes);
        // What the run then takes fits the slots planned for it.
        let run = DecodeArgs {
            contexts: small.contexts,
            ..args
        };
        assert!(layout(&run, 64, 3).slot_len <= small.plan.slot_len);
    }

    #[test]
    fn levels_above_what_fits_become_what_fits() {
        let args = gpu_check();
        let shape = shape(&args, DType::BF16).unwrap();
        // 40 GiB: weights, and fewer slots of half contexts.
        let sized = size(&args, &shape, Some(40 << 30)).unwrap();
        let most = sized.plan.sequences;
        assert!(most < 64, "{sized:?}");
        assert_eq!(sized.contexts, 500);
        assert_eq!(sized.levels.last(), Some(&most));
        assert!(sized.levels.iter().all(|&l| l <= most));
        let e = size(&args, &shape, Some(20 << 30)).unwrap_err();
        assert!(e.to_string().contains("too little"), "{e}");
    }

    #[test]
    fn the_slot_holds_every_step_the_first_sequence_takes() {
        let args = tiny();
        // 3 decoding leave 7 prompt tokens a step: 24 tokens take 4 steps, plus 1 after
        // each of the 2 arrivals; batch 1 and 2 levels take 3 steps each.
        let l = layout(&args, 3, 2);
        assert_eq!(l.slots, 4);
        assert_eq!(l.slot_len, 24 + 3 * 3 + 2 * 5 + 1);
        assert_eq!(chunk(&args, 64), 1);
    }
}
