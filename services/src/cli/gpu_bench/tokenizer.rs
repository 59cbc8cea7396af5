//! `gpu-bench export-tokenizer`: writes a GGUF model's tokenizer as a `tokenizer.json`, small
//! enough to carry to a GPU machine, where `gpu-bench grpc` serves a random-weight model
//! with its vocabulary (the model file itself is not carried).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use autoj_judge::engine::tokenizer::TextTokenizer;
use candle_core::quantized::gguf_file;
use clap::Args;
use serde_json::{json, Value};

/// `gpu-bench export-tokenizer` settings.
#[derive(Debug, Clone, Args)]
pub struct ExportTokenizerArgs {
    /// The GGUF file whose tokenizer is written.
    #[arg(long, env = "AUTOJ_MODEL", default_value = crate::config::DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Where to write the tokenizer.json.
    #[arg(
        long,
        env = "AUTOJ_GPU_TOKENIZER",
        default_value = "carry/tokenizer.json"
    )]
    pub out: PathBuf,
}

/// Writes the tokenizer; the report names the file and the vocabulary size.
pub fn run(args: &ExportTokenizerArgs) -> anyhow::Result<Value> {
    let vocab = export(&args.model, &args.out)?;
    Ok(json!({
        "passed": true,
        "model": args.model.display().to_string(),
        "out": args.out.display().to_string(),
        "vocab": vocab,
    }))
}

/// Reads the tokenizer of the GGUF file `model` and writes it to `out` (creating its
/// folder); the vocabulary size.
pub fn export(model: &Path, out: &Path) -> anyhow::Result<usize> {
    let mut file = File::open(model).with_context(|| format!("opening {}", model.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .with_context(|| format!("reading {}", model.display()))?;
    let tokenizer = TextTokenizer::from_gguf(&content)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    tokenizer.save(out)?;
    Ok(tokenizer.vocab_size())
}
