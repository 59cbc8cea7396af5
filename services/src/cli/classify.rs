//! `autoj classify`: scenario classification through a running server's `Scenarios`
//! service, for one query or a JSONL file.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use autoj_proto::v1 as pb;
use autoj_proto::v1::scenarios_client::ScenariosClient;
use clap::Args;
use serde_json::{json, Value};

/// Queries per Classify call in file mode (the server's batch limit).
const BATCH: usize = autoj_router::MAX_CLASSIFY_BATCH;

/// Classification settings.
#[derive(Debug, Clone, Args)]
pub struct ClassifyArgs {
    /// Server address.
    #[arg(long, env = "AUTOJ_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// One query to classify.
    #[arg(long, conflicts_with = "input")]
    pub query: Option<String>,
    /// JSONL file with `query` (or `instruction` + `input`) per row.
    #[arg(long, requires = "output")]
    pub input: Option<PathBuf>,
    /// Where to write each input row with `scenario`, `group`, `probability`, `top3` added.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print JSON instead of text (one-query mode).
    #[arg(long)]
    pub json: bool,
}

fn score_json(s: &pb::ScenarioScore) -> Value {
    json!({"scenario": s.scenario, "group": s.group, "probability": s.probability})
}

/// The query text of a row: `query`, else Auto-J's `instruction + " " + input`.
pub fn row_query(row: &Value) -> Option<String> {
    if let Some(q) = row.get("query").and_then(Value::as_str) {
        return Some(q.to_string());
    }
    let inst = row.get("instruction").and_then(Value::as_str)?;
    let input = row.get("input").and_then(Value::as_str).unwrap_or("");
    Some(format!("{inst} {input}"))
}

/// Runs the command.
pub async fn run(args: &ClassifyArgs) -> anyhow::Result<()> {
    let mut client = ScenariosClient::connect(args.addr.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", args.addr))?;
    if let Some(q) = &args.query {
        let resp = client
            .classify(pb::ClassifyRequest {
                queries: vec![q.clone()],
                top_k: 3,
            })
            .await?
            .into_inner();
        let top = resp
            .results
            .into_iter()
            .next()
            .map(|r| r.top)
            .unwrap_or_default();
        if args.json {
            println!(
                "{}",
                json!({"query": q, "top": top.iter().map(score_json).collect::<Vec<_>>()})
            );
        } else {
            for s in &top {
                println!("{:<40} {:<22} {:.3}", s.scenario, s.group, s.probability);
            }
        }
        return Ok(());
    }
    let (Some(input), Some(output)) = (&args.input, &args.output) else {
        anyhow::bail!("give --query, or --input FILE.jsonl with --output FILE.jsonl");
    };
    let rows: Vec<Value> = std::io::BufReader::new(
        std::fs::File::open(input).with_context(|| format!("{}", input.display()))?,
    )
    .lines()
    .enumerate()
    .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
    .map(|(i, l)| {
        let l = l?;
        serde_json::from_str(&l)
            .with_context(|| format!("{} line {}: not JSON", input.display(), i + 1))
    })
    .collect::<anyhow::Result<_>>()?;
    let queries = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            row_query(r)
                .with_context(|| format!("row {}: no `query` or `instruction` field", i + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bar = indicatif::ProgressBar::new(rows.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} queries, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut out = BufWriter::new(
        std::fs::File::create(output).with_context(|| format!("{}", output.display()))?,
    );
    for (rows, queries) in rows.chunks(BATCH).zip(queries.chunks(BATCH)) {
        let resp = client
            .classify(pb::ClassifyRequest {
                queries: queries.to_vec(),
                top_k: 3,
            })
            .await?
            .into_inner();
        anyhow::ensure!(
            resp.results.len() == rows.len(),
            "the server returned {} results for {} queries",
            resp.results.len(),
            rows.len()
        );
        for (row, result) in rows.iter().zip(resp.results) {
            let mut row = row.clone();
            if let (Some(obj), Some(best)) = (row.as_object_mut(), result.top.first()) {
                obj.insert("scenario".into(), json!(best.scenario));
                obj.insert("group".into(), json!(best.group));
                obj.insert("probability".into(), json!(best.probability));
                obj.insert(
                    "top3".into(),
                    json!(result.top.iter().map(score_json).collect::<Vec<_>>()),
                );
            }
            writeln!(out, "{row}")?;
        }
        bar.inc(rows.len() as u64);
    }
    out.flush()?;
    bar.finish();
    Ok(())
}
