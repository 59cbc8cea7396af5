//! `autoj quantize`: a Hugging Face model directory as published (safetensors or PyTorch
//! `.bin`, sharded or not, GPTQ) written as a GGUF file of llama.cpp's type mix, tensor by
//! tensor, without llama.cpp's tools.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use autoj_judge::engine::checkpoint::export::quantize_to_gguf;
use autoj_judge::engine::checkpoint::quantize::QuantType;
use clap::Args;

/// Arguments of `autoj quantize`.
#[derive(Debug, Clone, Args)]
pub struct QuantizeArgs {
    /// The model directory (config.json and weights).
    #[arg(long, env = "AUTOJ_MODEL")]
    pub model: PathBuf,
    /// Quantization: q4_k_m, q5_k_m (llama.cpp's mixes), q8_0 or q4_1.
    #[arg(long = "type", env = "AUTOJ_QUANTIZE")]
    pub kind: QuantType,
    /// The GGUF file to write (replaced only once it is complete).
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes the file, with a progress bar on a terminal, and prints what was written.
pub fn run(args: &QuantizeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tensors  ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let report = quantize_to_gguf(&args.model, args.kind, &args.out, |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    })
    .with_context(|| format!("cannot quantize {}", args.model.display()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let types: Vec<String> = report
        .types
        .iter()
        .map(|(t, n)| format!("{t}: {n}"))
        .collect();
    println!(
        "wrote {} ({} tensors, {:.1} MB, {}) in {:.1} s",
        args.out.display(),
        report.tensors,
        report.bytes as f64 / 1e6,
        types.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
