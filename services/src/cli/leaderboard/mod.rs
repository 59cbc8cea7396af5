//! `autoj metrics`: Auto-J's leaderboard metrics from files alone.
//!
//! - Pairwise (`--source` with labels): agreement and consistency overall and per scenario
//!   group ([`pairwise`]).
//! - Single (`--single`): rating statistics per model and, with several models rated on the
//!   same queries, a system-level ranking ([`single`]).
//! - Both print [`table`]s of figures; `--html` also writes them, with charts and the worst
//!   disagreements, as one self-contained page ([`report`]).

pub mod pairwise;
pub mod report;
pub mod single;
pub mod table;

use std::path::{Path, PathBuf};

use anyhow::Context;
use autoj_router::Catalog;
use clap::Args;
use serde_json::Value;

/// Metrics settings.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Auto-J pairwise test file: rows with `scenario` and `label` (0 = response 1, 1 =
    /// response 2, 2 = tie). Required for pairwise metrics.
    #[arg(long, env = "AUTOJ_METRICS_SOURCE")]
    pub source: Option<PathBuf>,
    /// Prediction file. Pairwise: one file in source order, `{"output": 0|1|2}` (Auto-J; -1
    /// = no verdict) or `{"winner": "response_1"|"response_2"|"tie"|null}` (autoj, e.g.
    /// `autoj eval` output). Single (`--single`): repeat it, one file per model, rows
    /// `{"rating": 1-10|null, "expected_rating": x}` (autoj) or `{"output": r}` (Auto-J,
    /// 0 = no rating); a row's `model` field overrides the file's model name.
    #[arg(long, required = true)]
    pub pred: Vec<PathBuf>,
    /// Predictions for the swapped pairs (response 1 and 2 exchanged), same formats; their
    /// verdicts are mapped back before comparing. Not needed for `autoj eval --swap` output,
    /// which carries both orders.
    #[arg(long, env = "AUTOJ_METRICS_PRED_SWAPPED")]
    pub pred_swapped: Option<PathBuf>,
    /// Single-rating files: rating statistics per model and a ranking of the models.
    #[arg(long, env = "AUTOJ_METRICS_SINGLE")]
    pub single: bool,
    /// Model name of each `--pred` file, in the same order (default: the file's stem).
    #[arg(long)]
    pub model_name: Vec<String>,
    /// Print one JSON object instead of a table.
    #[arg(long, env = "AUTOJ_METRICS_JSON")]
    pub json: bool,
    /// Also write the metrics as a self-contained HTML report to this file: charts, the same
    /// tables, and the worst disagreements with their critiques.
    #[arg(long, env = "AUTOJ_METRICS_HTML")]
    pub html: Option<PathBuf>,
}

/// Reads a JSONL file into values, naming the file and line on errors.
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))
        })
        .collect()
}

/// `k` of `n` in percent, rounded to 2 decimals as Auto-J's leaderboard prints it.
pub fn pct(k: usize, n: usize) -> f64 {
    round2(k as f64 * 100.0 / n.max(1) as f64)
}

/// Rounds to 2 decimals.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The single-rating metrics of the `--pred` files (see [`single::metrics`]).
pub fn single_from_files(args: &MetricsArgs) -> anyhow::Result<Value> {
    anyhow::ensure!(
        args.model_name.is_empty() || args.model_name.len() == args.pred.len(),
        "{} --model-name for {} --pred files: give one per file or none",
        args.model_name.len(),
        args.pred.len()
    );
    let mut models = Vec::new();
    for (i, path) in args.pred.iter().enumerate() {
        let name = match args.model_name.get(i) {
            Some(n) => n.clone(),
            None => path.file_stem().map_or_else(
                || path.display().to_string(),
                |s| s.to_string_lossy().into(),
            ),
        };
        single::by_model(&read_jsonl(path)?, &name, &mut models)
            .with_context(|| path.display().to_string())?;
    }
    Ok(single::metrics(&models))
}

/// The pairwise metrics of the files `args` names, with the report's part when `html`.
fn pairwise_from_files(
    args: &MetricsArgs,
    html: bool,
) -> anyhow::Result<(Value, Option<report::Pairwise>)> {
    let source = args.source.as_deref().context(
        "pairwise metrics need --source (the labelled test file); pass --single for rating files",
    )?;
    anyhow::ensure!(
        args.pred.len() == 1 && args.model_name.is_empty(),
        "pairwise metrics take one --pred file"
    );
    let source = read_jsonl(source)?;
    let pred = read_jsonl(&args.pred[0])?;
    let swapped = args.pred_swapped.as_deref().map(read_jsonl).transpose()?;
    let catalog = Catalog::embedded()?;
    let samples = pairwise::samples(&source, &pred, swapped.as_deref())?;
    let m = pairwise::metrics(&samples, &catalog);
    let part = html.then(|| {
        let worst = report::worst(&samples, report::WORST_ROWS, |s| {
            let rows = [&pred[s.index], &source[s.index]];
            (
                report::text_field(&rows, "prompt"),
                report::text_field(&rows[..1], "critique"),
            )
        });
        report::Pairwise {
            metrics: m.clone(),
            worst,
        }
    });
    Ok((m, part))
}

/// Runs the command.
pub fn run(args: &MetricsArgs) -> anyhow::Result<()> {
    let single = args.single;
    let html = args.html.is_some();
    let (m, part) = if single {
        anyhow::ensure!(
            args.source.is_none() && args.pred_swapped.is_none(),
            "--single takes only --pred files (and --model-name)"
        );
        (single_from_files(args)?, None)
    } else {
        pairwise_from_files(args, html)?
    };
    if args.json {
        println!("{m}");
    } else if single {
        single::print_table(&m);
    } else {
        pairwise::print_table(&m);
    }
    if let Some(path) = &args.html {
        let files = args
            .source
            .iter()
            .chain(&args.pred)
            .chain(&args.pred_swapped);
        let page = report::Report {
            inputs: files.map(|p| p.display().to_string()).collect(),
            notes: Vec::new(),
            single: single.then(|| m.clone()),
            pairwise: part,
        };
        report::write(path, &page)?;
    }
    Ok(())
}
