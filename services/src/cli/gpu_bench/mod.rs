//! `autoj gpu-bench`: the measurements `scripts/gpu-check` runs on a GPU machine, one
//! subcommand a step, each printing one JSON object (its last line) with `passed` and the
//! figures docs/gpu.md names. They run on any device (`--device cpu` for a dry run here);
//! benchmarks are run by hand, never in CI. The model steps size themselves to the device's
//! memory ([`plan`]); `plan` prints those sizes for a card of a given size, with no device.

mod common;
pub mod correctness;
pub mod decode;
pub mod grpc;
pub mod machine;
pub mod memory;
pub mod plan;
pub mod plan_cmd;
mod sampled;
pub mod tokenizer;

use clap::{Args, Subcommand};

/// The model shape the model steps run unless told otherwise: Auto-J's, LLaMA-2 13B.
pub const DEFAULT_SHAPE: &str = "llama2-13b";

/// `autoj gpu-bench` settings.
#[derive(Debug, Clone, Args)]
pub struct GpuBenchArgs {
    /// The measurement to run.
    #[command(subcommand)]
    pub step: GpuStep,
}

/// One step of the GPU check.
#[derive(Debug, Clone, Subcommand)]
pub enum GpuStep {
    /// The machine: device-to-device copy bandwidth and bf16 matrix-multiply throughput.
    Machine(machine::MachineArgs),
    /// A 2-layer random model: device logits batched vs alone, and device vs CPU.
    Correctness(correctness::CorrectnessArgs),
    /// A random model of a named shape made on the device: batch-1 and aggregate decode
    /// tokens/s, time to first token under load.
    Decode(decode::DecodeArgs),
    /// The judge gRPC server on loopback over a random model on the device, hit by
    /// concurrent streaming clients: judgments per minute, time to first token.
    Grpc(grpc::GrpcArgs),
    /// Writes a GGUF model's tokenizer.json, to carry for `grpc`.
    ExportTokenizer(tokenizer::ExportTokenizerArgs),
    /// What `decode` and `grpc` would run on a card of `--gpu-memory-gib`: slots, positions,
    /// sequences and the memory they take (no device needed).
    Plan(plan_cmd::PlanArgs),
}

/// Runs the chosen step and prints its JSON.
pub fn run(args: &GpuBenchArgs) -> anyhow::Result<()> {
    let report = match &args.step {
        GpuStep::Machine(m) => machine::run(m)?,
        GpuStep::Correctness(c) => correctness::run(c)?,
        GpuStep::Decode(d) => decode::run(d)?,
        GpuStep::Grpc(g) => grpc::run(g)?,
        GpuStep::ExportTokenizer(e) => tokenizer::run(e)?,
        GpuStep::Plan(p) => plan_cmd::run(p)?,
    };
    println!("{report}");
    Ok(())
}
