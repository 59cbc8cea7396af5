//! `autoj metrics`: Auto-J's leaderboard metrics for pairwise judgments, from files alone.
//!
//! - agreement: share of samples whose verdict equals the human label in the original order
//!   AND in the swapped order (mapped back); with no swapped file, plain accuracy.
//! - consistency: share of samples whose original verdict equals the mapped-back swapped one.
//!
//! Reported overall and per scenario group, in percent rounded to 2 decimals as Auto-J's
//! leaderboard prints them. A missing or unparseable verdict counts as wrong (and is counted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use autoj_router::Catalog;
use clap::Args;
use serde_json::{json, Value};

/// Metrics settings.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Auto-J pairwise test file: rows with `scenario` and `label` (0 = response 1, 1 =
    /// response 2, 2 = tie).
    #[arg(long)]
    pub source: PathBuf,
    /// Predictions in source order: `{"output": 0|1|2}` (Auto-J; -1 = no verdict) or
    /// `{"winner": "response_1"|"response_2"|"tie"|null}` (autoj).
    #[arg(long)]
    pub pred: PathBuf,
    /// Predictions for the swapped pairs (response 1 and 2 exchanged), same formats; their
    /// verdicts are mapped back before comparing.
    #[arg(long)]
    pub pred_swapped: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Reads a JSONL file into values, naming the file and line on errors.
fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Value>> {
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

/// A verdict as Auto-J's label: 0 = response 1, 1 = response 2, 2 = tie; `None` when absent.
pub fn verdict_label(row: &Value) -> Option<u8> {
    if let Some(o) = row.get("output").and_then(Value::as_i64) {
        return (0..=2).contains(&o).then_some(o as u8);
    }
    match row.get("winner").and_then(Value::as_str) {
        Some("response_1") => Some(0),
        Some("response_2") => Some(1),
        Some("tie") => Some(2),
        _ => None,
    }
}

/// Maps a verdict on the swapped pair back to the original order.
fn unswap(v: Option<u8>) -> Option<u8> {
    v.map(|l| match l {
        0 => 1,
        1 => 0,
        t => t,
    })
}

#[derive(Default)]
struct Tally {
    n: usize,
    agree: usize,
    consistent: usize,
    unparsed: usize,
}

impl Tally {
    fn json(&self, swapped: bool) -> Value {
        let pct = |k: usize| (k as f64 * 10000.0 / self.n.max(1) as f64).round() / 100.0;
        json!({
            "agreement": pct(self.agree),
            "consistency": if swapped { json!(pct(self.consistent)) } else { Value::Null },
            "n": self.n,
            "unparsed": self.unparsed,
        })
    }
}

/// Computes the metrics object: `{"overall": {...}, "groups": {"Code": {...}, ...}}`.
pub fn compute(
    source: &[Value],
    pred: &[Value],
    swapped: Option<&[Value]>,
    catalog: &Catalog,
) -> anyhow::Result<Value> {
    anyhow::ensure!(
        pred.len() == source.len(),
        "the prediction file has {} rows, the source {}",
        pred.len(),
        source.len()
    );
    if let Some(s) = swapped {
        anyhow::ensure!(
            s.len() == source.len(),
            "the swapped file has {} rows, the source {}",
            s.len(),
            source.len()
        );
    }
    let mut overall = Tally::default();
    let mut groups: BTreeMap<String, Tally> = BTreeMap::new();
    for (i, row) in source.iter().enumerate() {
        let label = row
            .get("label")
            .and_then(Value::as_u64)
            .filter(|l| *l <= 2)
            .with_context(|| format!("source row {}: `label` must be 0, 1 or 2", i + 1))?
            as u8;
        let scenario = row
            .get("scenario")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let group = catalog
            .get(scenario)
            .and_then(|s| s.group.clone())
            .unwrap_or_else(|| scenario.to_string());
        let first = verdict_label(&pred[i]);
        let second = swapped.map(|s| unswap(verdict_label(&s[i])));
        let unparsed =
            usize::from(first.is_none()) + usize::from(second.is_some_and(|v| v.is_none()));
        let agree = first == Some(label) && second.is_none_or(|v| v == Some(label));
        let consistent = second.is_some_and(|v| first.is_some() && v == first);
        for t in [&mut overall, groups.entry(group).or_default()] {
            t.n += 1;
            t.agree += usize::from(agree);
            t.consistent += usize::from(consistent);
            t.unparsed += unparsed;
        }
    }
    let has_swap = swapped.is_some();
    Ok(json!({
        "overall": overall.json(has_swap),
        "groups": groups.iter().map(|(g, t)| (g.clone(), t.json(has_swap))).collect::<serde_json::Map<_, _>>(),
    }))
}

/// Runs the command.
pub fn run(args: &MetricsArgs) -> anyhow::Result<()> {
    let source = read_jsonl(&args.source)?;
    let pred = read_jsonl(&args.pred)?;
    let swapped = args.pred_swapped.as_deref().map(read_jsonl).transpose()?;
    let catalog = Catalog::embedded()?;
    let m = compute(&source, &pred, swapped.as_deref(), &catalog)?;
    if args.json {
        println!("{m}");
        return Ok(());
    }
    let cell = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
    println!(
        "{:<24} {:>6} {:>10} {:>12} {:>9}",
        "group", "n", "agreement", "consistency", "unparsed"
    );
    let rows = m["groups"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(g, v)| (g.as_str(), v));
    for (name, v) in rows.chain(std::iter::once(("overall", &m["overall"]))) {
        println!(
            "{:<24} {:>6} {:>10} {:>12} {:>9}",
            name,
            v["n"],
            cell(&v["agreement"]),
            cell(&v["consistency"]),
            v["unparsed"]
        );
    }
    Ok(())
}
