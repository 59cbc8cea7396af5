//! Whether the device backend computes on the device what it computes on the CPU, and the
//! same batched as alone: a 2-layer random LLaMA built on the CPU in f32 (the reference) is
//! copied to the device in the serving dtype and in f32; a few sequences of mixed lengths
//! run the scheduler's kind of steps (prompt chunks beside decode tokens, then decode only)
//! batched and each alone, and the logits are compared; batched again in slots far apart,
//! so decode attention gathers them; and sampled rows' candidates are reduced on the device
//! and compared with the host's ([`super::sampled`]).

use anyhow::Context;
use autoj_judge::engine::device::{DeviceKv, DeviceModel, DeviceShape, SlotLayout};
use autoj_judge::engine::generate::argmax;
use autoj_judge::engine::scheduler::Backend;
use candle_core::{DType, Device};
use clap::Args;
use serde_json::{json, Value};

use super::common::{step, tokens};
use super::machine::serving_dtype;
use crate::config::parse_device;

/// Prompt lengths of the compared sequences (mixed, so the batch has ragged lengths).
const PROMPT_LENS: [usize; 4] = [3, 11, 29, 64];

/// Tokens each sequence decodes after its prompt (fixed ids, so a greedy choice that
/// differs does not make the compared runs diverge).
const DECODE_TOKENS: usize = 2;

/// Slots per sequence in the spread run: sequences this far apart leave the range of
/// generating slots mostly idle, so decode attention gathers them.
const SPREAD: usize = 5;

/// `gpu-bench correctness` settings.
#[derive(Debug, Clone, Args)]
pub struct CorrectnessArgs {
    /// Device to check against the CPU: `cuda:N` or `cpu`.
    #[arg(long, env = "AUTOJ_DEVICE", default_value = "cuda:0")]
    pub device: String,
    /// Vocabulary of the random model.
    #[arg(long, env = "AUTOJ_GPU_VOCAB", default_value_t = 4096)]
    pub vocab: usize,
    /// Seed of the weights and tokens.
    #[arg(long, env = "AUTOJ_GPU_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Print only the JSON object (gpu-check reads the last line either way).
    #[arg(long, env = "AUTOJ_GPU_JSON")]
    pub json: bool,
}

/// One sequence: its prompt then single decode tokens; `start` is the step its prompt runs.
struct Seq {
    pieces: Vec<Vec<u32>>,
    start: usize,
}

/// Logits rows of every sequence, in order: after its prompt, then after each decode token.
type Rows = Vec<Vec<Vec<f32>>>;

/// Runs the check; `passed` when both differences are within the dtype's tolerance and the
/// greedy next tokens agree wherever the reference's choice is not a near tie.
pub fn run(args: &CorrectnessArgs) -> anyhow::Result<Value> {
    let device = parse_device(&args.device)?;
    let dtype = serving_dtype(&device);
    let seqs = sequences(args.seed, args.vocab);
    let layout = SlotLayout {
        slots: seqs.len() * SPREAD,
        slot_len: 128,
    };
    let shape = DeviceShape::tiny(args.vocab);
    let cpu = DeviceModel::random(&shape, layout, args.seed, &Device::Cpu)
        .context("building the reference model on the CPU")?;
    let reference = batched(&cpu, &seqs, 1)?;
    let mut report = json!({ "device": args.device, "dtype": dtype.as_str(), "vocab": args.vocab });
    let mut passed = true;
    for (dt, suffix) in [(dtype, ""), (DType::F32, "_f32")] {
        if suffix == "_f32" && dtype == DType::F32 {
            continue;
        }
        let model = cpu
            .copy_to(&device, dt, layout)
            .with_context(|| format!("copying the model to {} in {dt:?}", args.device))?;
        let together = batched(&model, &seqs, 1)?;
        let alone = single(&model, &seqs)?;
        let gathered_before = model.gathered_steps();
        let spread = batched(&model, &seqs, SPREAD)?;
        let gathered = model.gathered_steps() - gathered_before;
        let tol = tolerance(dt) * scale(&reference);
        let vs_single = compare(&together, &alone, tol);
        let vs_cpu = compare(&together, &reference, tol);
        let spread_vs_single = compare(&spread, &alone, tol);
        passed &= vs_single.ok(tol) && vs_cpu.ok(tol) && spread_vs_single.ok(tol) && gathered > 0;
        report[format!("max_abs_diff_batched_vs_single{suffix}")] = json!(vs_single.max_diff);
        report[format!("max_abs_diff_gathered_vs_single{suffix}")] =
            json!(spread_vs_single.max_diff);
        report[format!("gathered_steps{suffix}")] = json!(gathered);
        report[format!("max_abs_diff_gpu_vs_cpu{suffix}")] = json!(vs_cpu.max_diff);
        report[format!("tolerance{suffix}")] = json!(tol);
        report[format!("greedy_disagreements{suffix}")] =
            json!(vs_single.disagree + vs_cpu.disagree);
        report[format!("greedy_near_ties{suffix}")] = json!(vs_cpu.near_ties);
    }
    report["rows_compared"] = json!(reference.iter().map(Vec::len).sum::<usize>());
    let sampling = super::sampled::check(&device, args.seed)?;
    passed &= sampling["sampling_passed"] == true;
    if let (Some(all), Some(fields)) = (report.as_object_mut(), sampling.as_object()) {
        all.extend(fields.clone());
    }
    report["passed"] = json!(passed);
    if !args.json {
        eprintln!("{report:#}");
    }
    Ok(report)
}

/// The sequences: prompts of [`PROMPT_LENS`]; the longest starts one step late, so its
/// prompt chunk shares a step with the others' decode tokens.
fn sequences(seed: u64, vocab: usize) -> Vec<Seq> {
    let last = PROMPT_LENS.len() - 1;
    PROMPT_LENS
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let all = tokens(seed.wrapping_add(i as u64 + 1), len + DECODE_TOKENS, vocab);
            let mut pieces = vec![all[..len].to_vec()];
            pieces.extend(all[len..].iter().map(|&t| vec![t]));
            Seq {
                pieces,
                start: usize::from(i == last),
            }
        })
        .collect()
}

/// Every sequence in one batch: at step `t` each runs its piece `t - start`, if any;
/// sequence `i` in slot `i x spread` (the slots between held, idle).
fn batched(model: &DeviceModel, seqs: &[Seq], spread: usize) -> anyhow::Result<Rows> {
    let held = (0..seqs.len() * spread)
        .map(|_| model.new_kv())
        .collect::<Result<Vec<DeviceKv>, _>>()?;
    let mut kvs: Vec<DeviceKv> = held.into_iter().step_by(spread).collect();
    let mut rows: Rows = vec![Vec::new(); seqs.len()];
    let steps = seqs
        .iter()
        .map(|s| s.start + s.pieces.len())
        .max()
        .unwrap_or(0);
    for t in 0..steps {
        let active: Vec<usize> = (0..seqs.len())
            .filter(|&i| t >= seqs[i].start && t - seqs[i].start < seqs[i].pieces.len())
            .collect();
        let mut batch: Vec<(&mut DeviceKv, &[u32])> = kvs
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| active.contains(i))
            .map(|(i, kv)| (kv, seqs[i].pieces[t - seqs[i].start].as_slice()))
            .collect();
        for (i, logits) in active.iter().zip(step(model, &mut batch)?) {
            rows[*i].push(logits);
        }
    }
    Ok(rows)
}

/// Each sequence alone, one piece a step, in a fresh cache.
fn single(model: &DeviceModel, seqs: &[Seq]) -> anyhow::Result<Rows> {
    seqs.iter()
        .map(|s| {
            let mut kv = model.new_kv()?;
            s.pieces
                .iter()
                .map(|p| Ok(step(model, &mut [(&mut kv, p.as_slice())])?.remove(0)))
                .collect()
        })
        .collect()
}

/// Allowed difference per unit of logit scale: f32 differs only by summation order; the
/// 16-bit types round every activation (8 or 11 significant bits).
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 0.06,
        DType::F16 => 0.02,
        _ => 1e-3,
    }
}

/// The logits' scale: the largest magnitude in the reference, at least 1.
fn scale(rows: &Rows) -> f64 {
    rows.iter()
        .flatten()
        .flatten()
        .fold(1f64, |m, &v| m.max(f64::from(v.abs())))
}

/// How two runs' logits differ.
struct Diff {
    max_diff: f64,
    /// Rows whose greedy tokens differ although the reference prefers its own by more than
    /// twice the tolerance.
    disagree: usize,
    /// Rows whose greedy tokens differ within that margin (not counted as failures).
    near_ties: usize,
}

impl Diff {
    /// Within tolerance with no real disagreement.
    fn ok(&self, tol: f64) -> bool {
        self.max_diff.is_finite() && self.max_diff <= tol && self.disagree == 0
    }
}

/// Compares `got` with `want` row by row.
fn compare(got: &Rows, want: &Rows, tol: f64) -> Diff {
    let mut d = Diff {
        max_diff: 0.0,
        disagree: 0,
        near_ties: 0,
    };
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        if g.len() != w.len() {
            d.max_diff = f64::INFINITY;
            continue;
        }
        for (a, b) in g.iter().zip(w) {
            let diff = f64::from((a - b).abs());
            // NaN counts as an infinite difference.
            d.max_diff = if diff.is_nan() {
                f64::INFINITY
            } else {
                d.max_diff.max(diff)
            };
        }
        let (gi, wi) = (argmax(g) as usize, argmax(w) as usize);
        if gi != wi {
            if f64::from(w[wi] - w[gi]) > 2.0 * tol {
                d.disagree += 1;
            } else {
                d.near_ties += 1;
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correctness_on_the_cpu_passes_with_the_fields_gpu_check_reads() {
        let args = CorrectnessArgs {
            device: "cpu".into(),
            vocab: 512,
            seed: 3,
            json: true,
        };
        let report = run(&args).unwrap();
        assert_eq!(report["passed"], true, "{report}");
        assert_eq!(report["dtype"], "f32");
        let batched = report["max_abs_diff_batched_vs_single"].as_f64().unwrap();
        let cpu = report["max_abs_diff_gpu_vs_cpu"].as_f64().unwrap();
        assert!(batched <= report["tolerance"].as_f64().unwrap());
        // The device is the CPU here: the same model and the same steps, the same numbers.
        assert_eq!(cpu, 0.0);
        assert_eq!(report["greedy_disagreements"], 0);
        // 4 sequences: a prompt row and two decode rows each.
        assert_eq!(report["rows_compared"], 12);
        // The spread run's decode steps gathered their slots, and agree with each alone.
        assert!(report["gathered_steps"].as_u64().unwrap() >= DECODE_TOKENS as u64);
        let gathered = report["max_abs_diff_gathered_vs_single"].as_f64().unwrap();
        assert!(gathered <= report["tolerance"].as_f64().unwrap());
        // Sampled rows' candidates on the device are the host's.
        assert_eq!(report["sampling_passed"], true, "{report}");
        assert_eq!(report["sampling_top_id_mismatches"], 0);
    }

    #[test]
    fn a_real_disagreement_fails_and_a_near_tie_does_not() {
        let want: Rows = vec![vec![vec![0.0, 5.0, 4.99]]];
        let tie: Rows = vec![vec![vec![0.0, 4.99, 5.0]]];
        let far: Rows = vec![vec![vec![9.0, 5.0, 4.99]]];
        let d = compare(&tie, &want, 0.05);
        assert_eq!((d.disagree, d.near_ties), (0, 1));
        assert!(d.ok(0.05));
        let d = compare(&far, &want, 0.05);
        assert_eq!(d.disagree, 1);
        assert!(!d.ok(0.05));
    }
}
