//! `autoj eval`: judges every row of a JSONL file (Auto-J's test formats) against a running
//! server, writes one JSON row per input row, and ends with the leaderboard metrics.
//!
//! - Input rows: pairwise `{"prompt", "response 1", "response 2", "label"?, "scenario"?}` or
//!   single `{"prompt", "response", "scenario"?, "model"?}`; `id` and `model` are copied
//!   through (a single row's `model` names the system whose response is rated).
//! - Rows go to the server's bulk `Evaluate` RPC over `--concurrency` bidirectional streams,
//!   so the server's own admission and backpressure pace the run; results are appended to
//!   `--output` as they finish, and at the end the file is rewritten in input order, one row
//!   per input row.
//! - Resume: rerunning with the same `--output` keeps the rows already complete there and
//!   judges the rest; failed rows are retried and a torn last line (an interrupted write) is
//!   dropped.
//! - `--swap` asks the server for both orders (`swap_check`): each pairwise row carries the
//!   swapped judgment (mapped back) and whether the two agree.
//! - A row that fails records `{"error": {"code", "message"}}`; the exit status is non-zero
//!   when any row failed.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_client::JudgeClient;
use clap::Args;
use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::client::{truncation, LangArg, SecureClientArgs};
use super::leaderboard::{pairwise, read_jsonl, report, single};

mod rpc;

use rpc::judge_rows;

/// Eval settings.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Input JSONL: Auto-J pairwise rows (`prompt`, `response 1`, `response 2`, optional
    /// `label` 0/1/2 and `scenario`) or single rows (`prompt`, `response`).
    #[arg(long, env = "AUTOJ_EVAL_INPUT")]
    pub input: PathBuf,
    /// Output JSONL, one row per input row; an existing file is resumed.
    #[arg(long, env = "AUTOJ_EVAL_OUTPUT")]
    pub output: PathBuf,
    /// Where the metrics JSON goes (default: the output's name with `.metrics.json`).
    #[arg(long, env = "AUTOJ_EVAL_METRICS_OUT")]
    pub metrics_out: Option<PathBuf>,
    /// Also write the metrics as a self-contained HTML report to this file (as
    /// `autoj metrics --html`).
    #[arg(long, env = "AUTOJ_EVAL_HTML")]
    pub html: Option<PathBuf>,
    /// Server address (`https://` with --tls-ca).
    #[arg(long, env = "AUTOJ_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// API key and TLS trust for a secured server.
    #[command(flatten)]
    pub secure: SecureClientArgs,
    /// `Evaluate` streams open at once; each keeps the server's window of judgments in
    /// flight (8 on a judge or router), so rows judged at once are up to 8 times this.
    #[arg(long, env = "AUTOJ_EVAL_CONCURRENCY", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Judge each pair in both orders and report whether the verdicts agree.
    #[arg(long, env = "AUTOJ_EVAL_SWAP")]
    pub swap: bool,
    /// Ignore the rows' `scenario` and let the server classify each query.
    #[arg(long, env = "AUTOJ_EVAL_CLASSIFY")]
    pub classify: bool,
    /// Judge only the first N rows of the input.
    #[arg(long, env = "AUTOJ_EVAL_LIMIT")]
    pub limit: Option<usize>,
    /// Template language.
    #[arg(long, env = "AUTOJ_EVAL_LANGUAGE", value_enum, default_value = "auto")]
    pub language: LangArg,
    /// Generated-token limit (server default 1024).
    #[arg(long, env = "AUTOJ_EVAL_MAX_NEW_TOKENS")]
    pub max_new_tokens: Option<u32>,
    /// Sampling temperature (default greedy).
    #[arg(long, env = "AUTOJ_EVAL_TEMPERATURE")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[arg(long, env = "AUTOJ_EVAL_TOP_P")]
    pub top_p: Option<f32>,
    /// Sampling seed.
    #[arg(long, env = "AUTOJ_EVAL_SEED")]
    pub seed: Option<u64>,
    /// Refuse (FAILED_PRECONDITION) instead of truncating input that does not fit.
    #[arg(long, env = "AUTOJ_EVAL_NO_TRUNCATE")]
    pub no_truncate: bool,
}

/// One input row, as the request it becomes.
#[derive(Debug, Clone)]
enum Task {
    Pairwise {
        prompt: String,
        response_1: String,
        response_2: String,
    },
    Single {
        prompt: String,
        response: String,
    },
    /// The row cannot be judged; why.
    Invalid(String),
}

/// An input row: what to judge and what is copied into the output row.
#[derive(Debug, Clone)]
struct Row {
    task: Task,
    /// `label`, `scenario`, `id`, `model` and `prompt` of the input.
    carried: Map<String, Value>,
}

fn text(row: &Value, key: &str) -> Option<String> {
    row.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn parse_row(row: &Value) -> Row {
    let mut carried = Map::new();
    for key in ["id", "model", "scenario", "label", "prompt"] {
        if let Some(v) = row.get(key).filter(|v| !v.is_null()) {
            carried.insert(key.into(), v.clone());
        }
    }
    let prompt = text(row, "prompt").or_else(|| text(row, "query"));
    let bad_label = row
        .get("label")
        .is_some_and(|l| !l.is_null() && l.as_u64().is_none_or(|l| l > 2));
    let task = match (
        prompt,
        text(row, "response 1"),
        text(row, "response 2"),
        text(row, "response"),
    ) {
        _ if bad_label => Task::Invalid("`label` must be 0, 1 or 2".into()),
        (Some(prompt), Some(response_1), Some(response_2), _) => Task::Pairwise {
            prompt,
            response_1,
            response_2,
        },
        (Some(prompt), None, None, Some(response)) => Task::Single { prompt, response },
        (None, ..) => Task::Invalid("the row has no `prompt` string".into()),
        _ => Task::Invalid(
            "the row needs `response 1` and `response 2` (pairwise) or `response` (single)".into(),
        ),
    };
    Row { task, carried }
}

impl EvalArgs {
    fn options(&self, row: &Row) -> pb::JudgeOptions {
        let scenario = match (self.classify, row.carried.get("scenario")) {
            (false, Some(Value::String(s))) => s.clone(),
            _ => String::new(),
        };
        pb::JudgeOptions {
            language: self.language.proto() as i32,
            scenario,
            swap_check: self.swap && matches!(row.task, Task::Pairwise { .. }),
            generation: Some(pb::GenerationOptions {
                max_new_tokens: self.max_new_tokens,
                temperature: self.temperature,
                top_p: self.top_p,
                seed: self.seed,
                stop: Vec::new(),
            }),
            truncation: truncation(self.no_truncate) as i32,
        }
    }

    fn metrics_path(&self) -> PathBuf {
        self.metrics_out
            .clone()
            .unwrap_or_else(|| self.output.with_extension("metrics.json"))
    }
}

/// Whether an output row is finished for this run: no error, and with `--swap` a pairwise
/// row carries its swapped judgment.
fn complete(row: &Value, swap: bool) -> bool {
    row.get("error").is_none_or(Value::is_null)
        && row.get("source").is_some()
        && (!swap || row["kind"] != "pairwise" || row.get("swap").is_some())
}

/// The complete rows of an earlier run's output, by index. Failed rows are left out (they
/// are retried) and so are lines that are not JSON (a torn last write). Refuses an output
/// whose rows were judged from a different input.
fn resume(path: &Path, rows: &[Row], swap: bool) -> anyhow::Result<BTreeMap<usize, Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut done = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(row) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(index) = row.get("index").and_then(Value::as_u64).map(|i| i as usize) else {
            continue;
        };
        if index >= rows.len() || !complete(&row, swap) {
            continue;
        }
        anyhow::ensure!(
            row.get("prompt") == rows[index].carried.get("prompt"),
            "{} row {index} was judged from a different input than {}; use another --output",
            path.display(),
            "this one"
        );
        done.insert(index, row);
    }
    Ok(done)
}

/// Writes `rows` to `path` in index order, through a temporary file renamed over it.
fn rewrite(path: &Path, rows: &BTreeMap<usize, Value>) -> anyhow::Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut body = String::new();
    for row in rows.values() {
        body.push_str(&row.to_string());
        body.push('\n');
    }
    std::fs::write(&tmp, body).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Reports progress: an indicatif bar on a terminal, else a plain line at most every second
/// (and the last one), so logs and tests see it too.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    done: usize,
    failed: usize,
    ran: usize,
    started: Instant,
    last_line: Option<Instant>,
}

impl Progress {
    fn new(total: usize, done: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64).with_position(done as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} rows  {per_sec}  ETA {eta}  {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.reset_eta();
            bar
        });
        Self {
            bar,
            total,
            done,
            failed: 0,
            ran: 0,
            started: Instant::now(),
            last_line: None,
        }
    }

    fn row(&mut self, ok: bool) {
        self.done += 1;
        self.ran += 1;
        self.failed += usize::from(!ok);
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if self.failed > 0 {
                bar.set_message(format!("{} failed", self.failed));
            }
            return;
        }
        let now = Instant::now();
        let due = self
            .last_line
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due || self.done == self.total {
            self.last_line = Some(now);
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            let rate = self.ran as f64 / secs;
            let eta = (self.total - self.done) as f64 / rate.max(1e-9);
            eprintln!(
                "progress: {}/{} rows, {} failed, {rate:.2} rows/s, ETA {eta:.0} s",
                self.done, self.total, self.failed
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// Runs the command.
pub async fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let mut input = read_jsonl(&args.input)?;
    if let Some(n) = args.limit {
        input.truncate(n);
    }
    let rows: Vec<Row> = input.iter().map(parse_row).collect();
    let mut done = resume(&args.output, &rows, args.swap)?;
    if args.output.exists() {
        // Keep only the complete rows, so each index appears once when the rest is appended.
        rewrite(&args.output, &done)?;
    }
    let todo: Vec<usize> = (0..rows.len()).filter(|i| !done.contains_key(i)).collect();
    if !done.is_empty() {
        eprintln!(
            "resuming {}: {} of {} rows already complete, {} to judge",
            args.output.display(),
            done.len(),
            rows.len(),
            todo.len()
        );
    }
    if !todo.is_empty() {
        // A key a header cannot carry is a usage error, not a failure of every row.
        args.secure.request(())?;
        let client = JudgeClient::new(args.secure.connect(&args.addr).await?);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.output)
            .with_context(|| format!("cannot open {}", args.output.display()))?;
        let mut progress = Progress::new(rows.len(), done.len());
        let results = judge_rows(client, args, &rows, todo);
        let mut results = std::pin::pin!(results);
        while let Some(row) = results.next().await {
            // One write per row: an interrupted run leaves at most one torn line.
            file.write_all(format!("{row}\n").as_bytes())
                .with_context(|| format!("cannot write {}", args.output.display()))?;
            progress.row(row.get("error").is_none_or(Value::is_null));
            let index = row["index"].as_u64().unwrap_or_default() as usize;
            done.insert(index, row);
        }
        progress.finish();
        rewrite(&args.output, &done)?;
    }
    let (m, samples) = metrics(&rows, &done, args)?;
    let path = args.metrics_path();
    std::fs::write(&path, format!("{m:#}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    print_metrics(&m);
    eprintln!("metrics written to {}", path.display());
    if let Some(html) = &args.html {
        report::write(html, &eval_report(args, &m, &samples, &done))?;
    }
    let failed = m["failed"].as_u64().unwrap_or_default();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} rows failed (see their `error`); rerun the same command to retry them",
        rows.len()
    );
    Ok(())
}

/// The metrics of a finished run: `{"rows", "failed", "pairwise", "unlabelled", "single"}`.
/// `pairwise` is Auto-J's agreement/consistency over labelled pairwise rows (a failed row
/// counts as unparsed); `unlabelled` counts the winners of pairwise rows without a label;
/// `single` holds rating statistics per model (the rows' `model`, else the input's name).
/// Also returns the labelled pairwise samples (for the report).
fn metrics(
    rows: &[Row],
    out: &BTreeMap<usize, Value>,
    args: &EvalArgs,
) -> anyhow::Result<(Value, Vec<pairwise::Sample>)> {
    let mut samples = Vec::new();
    let mut winners: BTreeMap<&str, usize> = BTreeMap::new();
    let mut single_rows = Vec::new();
    let mut failed = 0;
    for (i, row) in rows.iter().enumerate() {
        let o = out.get(&i).cloned().unwrap_or(Value::Null);
        failed += usize::from(o.is_null() || !o.get("error").is_none_or(Value::is_null));
        match &row.task {
            Task::Pairwise { .. } => {
                let first = pairwise::winner_label(o.get("winner"));
                match row.carried.get("label") {
                    Some(_) => {
                        // The input's scenario, else the one the server chose.
                        let mut source = row.carried.clone();
                        if let Some(s) = o
                            .get("scenario")
                            .filter(|_| !source.contains_key("scenario"))
                        {
                            source.insert("scenario".into(), s.clone());
                        }
                        let (label, scenario) =
                            pairwise::source_label(&Value::Object(source), i + 1)?;
                        samples.push(pairwise::Sample {
                            index: i,
                            label,
                            scenario,
                            first,
                            second: args.swap.then(|| pairwise::embedded_swap(&o).flatten()),
                            p: pairwise::verdict_probs(&o),
                        });
                    }
                    None => {
                        let name = match first {
                            Some(0) => "response_1",
                            Some(1) => "response_2",
                            Some(_) => "tie",
                            None => "unresolved",
                        };
                        *winners.entry(name).or_default() += 1;
                    }
                }
            }
            Task::Single { .. } => single_rows.push(o),
            Task::Invalid(_) => {}
        }
    }
    let pairwise_m = (!samples.is_empty())
        .then(|| -> anyhow::Result<Value> {
            Ok(pairwise::metrics(
                &samples,
                &autoj_router::Catalog::embedded()?,
            ))
        })
        .transpose()?;
    let single_m = if single_rows.is_empty() {
        None
    } else {
        let name = args
            .input
            .file_stem()
            .map_or("input".into(), |s| s.to_string_lossy().into_owned());
        let mut models = Vec::new();
        single::by_model(&single_rows, &name, &mut models)?;
        Some(single::metrics(&models))
    };
    let m = json!({
        "rows": rows.len(),
        "failed": failed,
        "pairwise": pairwise_m,
        "unlabelled": if winners.is_empty() { Value::Null } else { json!(winners) },
        "single": single_m,
    });
    Ok((m, samples))
}

/// The HTML report of a finished run: its metrics `m`, and the worst disagreements among
/// the labelled `samples` with the query and critique of their output rows.
fn eval_report(
    args: &EvalArgs,
    m: &Value,
    samples: &[pairwise::Sample],
    out: &BTreeMap<usize, Value>,
) -> report::Report {
    let pairwise = (!m["pairwise"].is_null()).then(|| report::Pairwise {
        metrics: m["pairwise"].clone(),
        worst: report::worst(samples, report::WORST_ROWS, |s| {
            let row = out.get(&s.index).unwrap_or(&Value::Null);
            (
                report::text_field(&[row], "prompt"),
                report::text_field(&[row], "critique"),
            )
        }),
    });
    let mut notes = vec![format!("rows: {}, failed: {}", m["rows"], m["failed"])];
    if let Some(w) = m["unlabelled"].as_object() {
        let counts: Vec<String> = w.iter().map(|(k, v)| format!("{k} {v}")).collect();
        notes.push(format!(
            "pairwise rows without a label: {}",
            counts.join(", ")
        ));
    }
    report::Report {
        inputs: vec![
            args.input.display().to_string(),
            args.output.display().to_string(),
        ],
        notes,
        pairwise,
        single: (!m["single"].is_null()).then(|| m["single"].clone()),
    }
}

fn print_metrics(m: &Value) {
    if !m["pairwise"].is_null() {
        println!("pairwise (labelled rows):");
        pairwise::print_table(&m["pairwise"]);
    }
    if let Some(w) = m["unlabelled"].as_object() {
        let counts: Vec<String> = w.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("pairwise (no label): {}", counts.join(", "));
    }
    if !m["single"].is_null() {
        println!("single ratings:");
        single::print_table(&m["single"]);
    }
    println!("rows: {}, failed: {}", m["rows"], m["failed"]);
}
