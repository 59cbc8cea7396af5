//! `autoj gpu-bench plan`: what the `decode` and `grpc` steps would run on a card of a given
//! memory, each sized by [`super::plan`] from its own defaults, printed for a person and as
//! JSON (`scripts/gpu-check --dry-run`). Kept apart from the pure sizing in `plan.rs`, which
//! the steps import, so nothing imports back.

use candle_core::DType;
use clap::{Args, FromArgMatches};
use serde_json::{json, Value};

use super::decode::{self, DecodeArgs};
use super::grpc::{self, GrpcArgs};
use super::plan::{gib, parse_gib, round1, GIB, MARGIN_PER_MILLE};
use super::DEFAULT_SHAPE;

/// `gpu-bench plan` settings.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Device memory to plan for, in GiB: a card's (80: H100, 141: H200) or its free part.
    #[arg(long, env = "AUTOJ_GPU_MEMORY_GIB", value_parser = parse_gib)]
    pub gpu_memory_gib: f64,
    /// Model shape the steps run: `llama2-13b`, `llama2-7b` or `tiny`.
    #[arg(long, env = "AUTOJ_GPU_SHAPE", default_value = DEFAULT_SHAPE)]
    pub shape: String,
    /// The serving dtype (bf16 on CUDA, as the steps run).
    #[arg(long, env = "AUTOJ_GPU_DTYPE", default_value = "bf16",
          value_parser = ["bf16", "f16", "f32"])]
    pub dtype: String,
    /// Print only the JSON object (else the plan's lines go to stderr first).
    #[arg(long, env = "AUTOJ_GPU_JSON")]
    pub json: bool,
}

/// What `decode` and `grpc` would run on a device of `--gpu-memory-gib`, each with its
/// defaults (as `scripts/gpu-check` runs them, environment included), and the most either
/// takes (they run one after the other, each in its own process).
pub fn run(args: &PlanArgs) -> anyhow::Result<Value> {
    let memory = Some((args.gpu_memory_gib * GIB as f64) as u64);
    let dtype: DType = args.dtype.parse()?;
    let shape_args = ["--shape", args.shape.as_str()];
    let decode_args: DecodeArgs = step_args("decode", &shape_args)?;
    let grpc_args: GrpcArgs = step_args("grpc", &shape_args)?;
    let decode = decode::size(&decode_args, &decode::shape(&decode_args, dtype)?, memory)?;
    let (grpc_shape, vocab_from) = grpc::planning_shape(&grpc_args, decode_args.vocab, dtype)?;
    let grpc = grpc::size(&grpc_args, &grpc_shape, memory)?;
    let planned = decode.plan.planned_bytes.max(grpc.plan.planned_bytes);
    let report = json!({
        "passed": true,
        "gpu_memory_gib": args.gpu_memory_gib,
        "shape": args.shape,
        "dtype": args.dtype,
        "margin_per_mille": MARGIN_PER_MILLE,
        "decode": decode.describe(),
        "grpc": grpc.describe(),
        "grpc_vocab_from": vocab_from,
        "planned_bytes": planned,
        "planned_gib": round1(gib(planned)),
    });
    if !args.json {
        for line in lines(&report) {
            eprintln!("{line}");
        }
    }
    Ok(report)
}

/// A step's settings as its command line makes them from `argv` alone: its own defaults
/// and environment, declared once in its clap attributes.
fn step_args<T: Args + FromArgMatches>(name: &'static str, argv: &[&str]) -> anyhow::Result<T> {
    let command = T::augment_args(clap::Command::new(name));
    let matches =
        command.try_get_matches_from(std::iter::once(name).chain(argv.iter().copied()))?;
    Ok(T::from_arg_matches(&matches)?)
}

/// The plan as lines for a person: each step's sizes, then the line gpu-check's readers
/// look for, `planned device memory: X GiB of N GiB`.
pub fn lines(report: &Value) -> Vec<String> {
    let d = &report["decode"];
    let g = &report["grpc"];
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    vec![
        format!(
            "  {} {}: weights {:.1} GiB, {} KiB of keys/values a position; {}% of {} GiB kept \
             free",
            report["shape"].as_str().unwrap_or("?"),
            report["dtype"].as_str().unwrap_or("?"),
            f(&d["weight_gib"]),
            d["kv_bytes_per_position"].as_u64().unwrap_or(0) >> 10,
            f(&report["margin_per_mille"]) / 10.0,
            number(f(&report["gpu_memory_gib"])),
        ),
        format!(
            "  decode: {} slots x {} positions (contexts {}), sequences {}, {} tokens a step: \
             {:.1} GiB{}",
            d["slots"],
            d["slot_len"],
            d["contexts"],
            levels(&d["concurrency"]),
            d["max_batch_tokens"],
            f(&d["planned_gib"]),
            shrunk(d),
        ),
        format!(
            "  grpc: {} clients on {} slots x {} positions ({} prompt + {} new tokens), prefix \
             cache {} positions, {} tokens a step: {:.1} GiB{}",
            g["clients"],
            g["slots"],
            g["slot_len"],
            g["prompt_tokens"],
            g["new_tokens"],
            g["prefix_cache_tokens"],
            g["max_batch_tokens"],
            f(&g["planned_gib"]),
            shrunk(g),
        ),
        format!(
            "planned device memory: {:.1} GiB of {} GiB",
            f(&report["planned_gib"]),
            number(f(&report["gpu_memory_gib"]))
        ),
    ]
}

/// `80` for 80.0, `79.5` for 79.5.
fn number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// `8/32/64` for `[8, 32, 64]`.
fn levels(v: &Value) -> String {
    let all: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(Value::to_string)
        .collect();
    all.join("/")
}

/// " (shrunk to fit)" for a plan smaller than its step wanted.
fn shrunk(step: &Value) -> &'static str {
    if step["shrunk"].as_bool() == Some(true) {
        " (shrunk to fit)"
    } else {
        ""
    }
}
