//! Auto-J's leaderboard metrics for pairwise judgments.
//!
//! - agreement: share of samples whose verdict equals the human label in the original order
//!   AND in the swapped order (mapped back); with no swapped verdicts, plain accuracy.
//! - consistency: share of samples whose original verdict equals the mapped-back swapped one.
//!
//! Reported overall and per scenario group, in percent rounded to 2 decimals as Auto-J's
//! leaderboard prints them. A missing or unparseable verdict counts as wrong (and is counted).

use std::collections::BTreeMap;

use anyhow::Context;
use autoj_router::Catalog;
use serde_json::{json, Value};

use super::pct;
use super::table::{count, real, Column, Table};

pub mod breakdown;

/// A verdict as Auto-J's label: 0 = response 1, 1 = response 2, 2 = tie; `None` when absent.
/// Reads Auto-J's `{"output": 0|1|2}` (-1 = no verdict) or autoj's `{"winner": ...}`.
pub fn verdict_label(row: &Value) -> Option<u8> {
    if let Some(o) = row.get("output").and_then(Value::as_i64) {
        return (0..=2).contains(&o).then_some(o as u8);
    }
    winner_label(row.get("winner"))
}

/// autoj's winner name (`"response_1"`, `"response_2"`, `"tie"`) as Auto-J's label.
pub fn winner_label(winner: Option<&Value>) -> Option<u8> {
    match winner.and_then(Value::as_str) {
        Some("response_1") => Some(0),
        Some("response_2") => Some(1),
        Some("tie") => Some(2),
        _ => None,
    }
}

/// Maps a verdict on the swapped pair back to the original order.
pub fn unswap(v: Option<u8>) -> Option<u8> {
    v.map(|l| match l {
        0 => 1,
        1 => 0,
        t => t,
    })
}

/// The judge's probabilities of response 1, response 2 and tie (`p_response_1`,
/// `p_response_2`, `p_tie` of autoj's rows); `None` when the row lacks any of them.
pub fn verdict_probs(row: &Value) -> Option<[f64; 3]> {
    let p = |k: &str| row.get(k).and_then(Value::as_f64).filter(|p| p.is_finite());
    Some([p("p_response_1")?, p("p_response_2")?, p("p_tie")?])
}

/// One judged sample, both verdicts in the original order.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Its row in the input (0-based), for the report's table of disagreements.
    pub index: usize,
    /// Human label: 0 = response 1, 1 = response 2, 2 = tie.
    pub label: u8,
    /// Auto-J scenario name (its group is looked up in the catalog).
    pub scenario: String,
    /// Verdict in the original order; `None` when there is none.
    pub first: Option<u8>,
    /// Verdict in the swapped order, mapped back; outer `None` when not judged swapped.
    pub second: Option<Option<u8>>,
    /// The judge's probabilities in the original order, when the prediction has them.
    pub p: Option<[f64; 3]>,
}

impl Sample {
    /// Whether the verdicts match the label: the original one, and the swapped one when
    /// judged.
    pub fn agrees(&self) -> bool {
        self.first == Some(self.label) && self.second.is_none_or(|v| v == Some(self.label))
    }

    /// The probability the judge gave its own verdict in the original order.
    pub fn confidence(&self) -> Option<f64> {
        Some(self.p?[usize::from(self.first?)])
    }
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
        json!({
            "agreement": pct(self.agree, self.n),
            "consistency": if swapped { json!(pct(self.consistent, self.n)) } else { Value::Null },
            "n": self.n,
            "unparsed": self.unparsed,
        })
    }
}

/// The metrics object of judged samples: `{"overall": {...}, "groups": {"Code": {...}}}`.
/// Consistency is reported (not null) when every sample was judged in both orders.
pub fn metrics(samples: &[Sample], catalog: &Catalog) -> Value {
    let mut overall = Tally::default();
    let mut groups: BTreeMap<String, Tally> = BTreeMap::new();
    for s in samples {
        let group = catalog
            .get(&s.scenario)
            .and_then(|c| c.group.clone())
            .unwrap_or_else(|| s.scenario.clone());
        let unparsed =
            usize::from(s.first.is_none()) + usize::from(s.second.is_some_and(|v| v.is_none()));
        let agree = s.agrees();
        let consistent = s.second.is_some_and(|v| s.first.is_some() && v == s.first);
        for t in [&mut overall, groups.entry(group).or_default()] {
            t.n += 1;
            t.agree += usize::from(agree);
            t.consistent += usize::from(consistent);
            t.unparsed += unparsed;
        }
    }
    let has_swap = !samples.is_empty() && samples.iter().all(|s| s.second.is_some());
    let mut m = json!({
        "overall": overall.json(has_swap),
        "groups": groups.iter().map(|(g, t)| (g.clone(), t.json(has_swap))).collect::<serde_json::Map<_, _>>(),
        "confusion": breakdown::confusion(samples),
    });
    if has_swap {
        m["swap"] = breakdown::swap(samples);
    }
    if let Some(c) = breakdown::confidence(samples) {
        m["confidence"] = c;
    }
    m
}

/// The label and scenario of a source row (`scenario` defaults to `default`).
pub fn source_label(row: &Value, line: usize) -> anyhow::Result<(u8, String)> {
    let label = row
        .get("label")
        .and_then(Value::as_u64)
        .filter(|l| *l <= 2)
        .with_context(|| format!("source row {line}: `label` must be 0, 1 or 2"))?
        as u8;
    let scenario = row
        .get("scenario")
        .and_then(Value::as_str)
        .unwrap_or("default");
    Ok((label, scenario.to_string()))
}

/// The swapped verdict autoj's eval output carries, already mapped back
/// (`{"swap": {"winner": ...}}`); outer `None` when the row has no swapped judgment.
pub fn embedded_swap(row: &Value) -> Option<Option<u8>> {
    row.get("swap")
        .filter(|s| s.is_object())
        .map(|s| winner_label(s.get("winner")))
}

/// Computes the metrics from files' rows: `source` (labels), `pred` in source order and
/// optionally `swapped` (verdicts on the swapped pairs, in swapped order). Without
/// `swapped`, the swapped verdicts autoj's eval output embeds are used when every row has one.
pub fn compute(
    source: &[Value],
    pred: &[Value],
    swapped: Option<&[Value]>,
    catalog: &Catalog,
) -> anyhow::Result<Value> {
    Ok(metrics(&samples(source, pred, swapped)?, catalog))
}

/// The samples of files' rows, as [`compute`] reads them.
pub fn samples(
    source: &[Value],
    pred: &[Value],
    swapped: Option<&[Value]>,
) -> anyhow::Result<Vec<Sample>> {
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
    let embedded = swapped.is_none() && pred.iter().all(|p| embedded_swap(p).is_some());
    let mut samples = Vec::with_capacity(source.len());
    for (i, row) in source.iter().enumerate() {
        let (label, scenario) = source_label(row, i + 1)?;
        let second = match swapped {
            Some(s) => Some(unswap(verdict_label(&s[i]))),
            None if embedded => embedded_swap(&pred[i]),
            None => None,
        };
        samples.push(Sample {
            index: i,
            label,
            scenario,
            first: verdict_label(&pred[i]),
            second,
            p: verdict_probs(&pred[i]),
        });
    }
    Ok(samples)
}

/// The tables of the metrics object: agreement and consistency per group and overall, then
/// the confusion, the swap breakdown and the confidence histogram where present.
pub fn tables(m: &Value) -> Vec<Table> {
    let columns = vec![
        Column::name("group", 24),
        Column::number("n", 6),
        Column::number("agreement", 10),
        Column::number("consistency", 12),
        Column::number("unparsed", 9),
    ];
    let groups = m["groups"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(g, v)| (g.as_str(), v));
    let rows = groups
        .chain(std::iter::once(("overall", &m["overall"])))
        .map(|(name, v)| {
            vec![
                name.to_string(),
                count(&v["n"]),
                real(&v["agreement"]),
                real(&v["consistency"]),
                count(&v["unparsed"]),
            ]
        })
        .collect();
    let mut out = vec![Table {
        id: "groups",
        title: None,
        columns,
        rows,
    }];
    out.extend(breakdown::tables(m));
    out
}

/// Prints the metrics object as tables: one line per group, then `overall`, then the
/// breakdowns ([`tables`]).
pub fn print_table(m: &Value) {
    for (i, t) in tables(m).iter().enumerate() {
        if i > 0 {
            println!();
        }
        t.print();
    }
}
