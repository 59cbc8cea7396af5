//! Rating statistics for single-response judgments, and a system-level ranking when several
//! models' responses to the same queries were rated (Auto-J's "rank the systems by their
//! mean rating" use).
//!
//! A row's rating is autoj's `rating` (1-10, null when unresolved) with its optional
//! `expected_rating`, or Auto-J's `{"output": r}` where anything outside 1-10 (Auto-J writes
//! 0.0 or -1) means no rating. A row's *score* is its expected rating when it has one, else
//! its rating: the ranking uses scores, which tie far less often than integer ratings.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::table::{count, real, Column, Table};
use super::{pct, round2};

/// One rated row of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Rated {
    /// Which query it answers (see [`query_key`]).
    pub key: String,
    /// Integer-valued rating 1-10; `None` when unresolved.
    pub rating: Option<f64>,
    /// Expectation of the rating under the judge's distribution, when reported.
    pub expected: Option<f64>,
}

impl Rated {
    /// The value the ranking compares: expected rating, else rating.
    fn score(&self) -> Option<f64> {
        self.expected.or(self.rating)
    }
}

/// A rating row as [`Rated`]; `ordinal` is its position among its model's rows.
pub fn rated(row: &Value, ordinal: usize) -> Rated {
    let in_range = |v: f64| (1.0..=10.0).contains(&v).then_some(v);
    let rating = match row.get("rating") {
        Some(r) => r.as_f64().and_then(in_range),
        None => row.get("output").and_then(Value::as_f64).and_then(in_range),
    };
    let expected = row
        .get("expected_rating")
        .and_then(Value::as_f64)
        .filter(|e| e.is_finite());
    Rated {
        key: query_key(row, ordinal),
        rating,
        expected,
    }
}

/// Identifies the query a row answers, for matching models' rows: its `id`, else its
/// `prompt` (or `query`) text, else its position among its model's rows.
pub fn query_key(row: &Value, ordinal: usize) -> String {
    match row.get("id") {
        Some(Value::String(s)) => return format!("id:{s}"),
        Some(Value::Number(n)) => return format!("id:{n}"),
        _ => {}
    }
    match row.get("prompt").or_else(|| row.get("query")) {
        Some(Value::String(s)) => format!("text:{s}"),
        _ => format!("line:{ordinal}"),
    }
}

/// Count, mean, std (population), distribution over 1-10 and unresolved count of a model.
pub fn stats(rows: &[Rated]) -> Value {
    let ratings: Vec<f64> = rows.iter().filter_map(|r| r.rating).collect();
    let expected: Vec<f64> = rows.iter().filter_map(|r| r.expected).collect();
    let mut distribution = serde_json::Map::new();
    for bucket in 1..=10u32 {
        let n = ratings
            .iter()
            .filter(|r| r.round() as u32 == bucket)
            .count();
        distribution.insert(bucket.to_string(), json!(n));
    }
    let (mean, std) = mean_std(&ratings);
    json!({
        "n": rows.len(),
        "rated": ratings.len(),
        "unresolved": rows.len() - ratings.len(),
        "mean": mean.map(round2),
        "std": std.map(round2),
        "mean_expected": mean_std(&expected).0.map(round2),
        "distribution": distribution,
    })
}

fn mean_std(xs: &[f64]) -> (Option<f64>, Option<f64>) {
    if xs.is_empty() {
        return (None, None);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (Some(mean), Some(var.sqrt()))
}

/// One model's head-to-head record against another over their shared scored queries.
#[derive(Default, Clone, Copy)]
struct Record {
    wins: usize,
    losses: usize,
    ties: usize,
}

impl Record {
    fn queries(&self) -> usize {
        self.wins + self.losses + self.ties
    }
}

fn head_to_head(a: &HashMap<&str, f64>, b: &HashMap<&str, f64>) -> Record {
    let mut r = Record::default();
    for (key, sa) in a {
        let Some(sb) = b.get(key) else { continue };
        match sa.partial_cmp(sb) {
            Some(std::cmp::Ordering::Greater) => r.wins += 1,
            Some(std::cmp::Ordering::Less) => r.losses += 1,
            _ => r.ties += 1,
        }
    }
    r
}

/// The single-rating metrics of `models` (name -> rows, in the order given):
/// `{"models": {name: stats}, "ranking": [...], "head_to_head": [...]}`.
///
/// With two or more models, `ranking` orders them by mean score over the queries every
/// model scored (`mean_score`, `queries`), then by win rate; `win_rate` is the share of
/// head-to-head comparisons won (a tie counts half) over each opponent's shared queries, in
/// percent. `head_to_head` lists each pair once, from the first-named model's side.
pub fn metrics(models: &[(String, Vec<Rated>)]) -> Value {
    let per_model: serde_json::Map<String, Value> = models
        .iter()
        .map(|(name, rows)| (name.clone(), stats(rows)))
        .collect();
    if models.len() < 2 {
        return json!({"models": per_model, "ranking": [], "head_to_head": []});
    }
    let scores: Vec<HashMap<&str, f64>> = models
        .iter()
        .map(|(_, rows)| {
            rows.iter()
                .filter_map(|r| r.score().map(|s| (r.key.as_str(), s)))
                .collect()
        })
        .collect();
    let shared: Vec<&str> = scores[0]
        .keys()
        .copied()
        .filter(|k| scores.iter().all(|s| s.contains_key(k)))
        .collect();
    let mut pairs = Vec::new();
    let mut totals = vec![Record::default(); models.len()];
    for i in 0..models.len() {
        for j in i + 1..models.len() {
            let r = head_to_head(&scores[i], &scores[j]);
            totals[i].wins += r.wins;
            totals[i].losses += r.losses;
            totals[i].ties += r.ties;
            totals[j].wins += r.losses;
            totals[j].losses += r.wins;
            totals[j].ties += r.ties;
            pairs.push(json!({
                "model": models[i].0, "opponent": models[j].0, "queries": r.queries(),
                "wins": r.wins, "losses": r.losses, "ties": r.ties,
                "win_rate": win_rate(&r),
            }));
        }
    }
    let mut ranking: Vec<(usize, Option<f64>, Option<f64>)> = (0..models.len())
        .map(|i| {
            let mean = (!shared.is_empty())
                .then(|| shared.iter().map(|k| scores[i][k]).sum::<f64>() / shared.len() as f64);
            (i, mean, win_rate(&totals[i]))
        })
        .collect();
    let key = |x: Option<f64>| x.unwrap_or(f64::NEG_INFINITY);
    ranking.sort_by(|a, b| {
        key(b.1)
            .total_cmp(&key(a.1))
            .then(key(b.2).total_cmp(&key(a.2)))
            .then(a.0.cmp(&b.0))
    });
    let ranking: Vec<Value> = ranking
        .iter()
        .enumerate()
        .map(|(rank, (i, mean, rate))| {
            json!({
                "rank": rank + 1, "model": models[*i].0, "mean_score": mean.map(round2),
                "queries": shared.len(), "win_rate": rate,
            })
        })
        .collect();
    json!({"models": per_model, "ranking": ranking, "head_to_head": pairs})
}

fn win_rate(r: &Record) -> Option<f64> {
    // Wins count 2, ties 1, out of 2 per comparison: a tie is half a win.
    (r.queries() > 0).then(|| pct(2 * r.wins + r.ties, 2 * r.queries()))
}

/// Splits rows into models: a row's `model` field names its model, else `default_name`.
/// Models keep the order they first appear in; ordinals count per model.
pub fn by_model(
    rows: &[Value],
    default_name: &str,
    into: &mut Vec<(String, Vec<Rated>)>,
) -> anyhow::Result<()> {
    let mut index: BTreeMap<String, usize> = into
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), i))
        .collect();
    let mut fresh: HashMap<String, usize> = HashMap::new();
    for row in rows {
        let name = row
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(default_name)
            .to_string();
        let slot = *index.entry(name.clone()).or_insert_with(|| {
            into.push((name.clone(), Vec::new()));
            into.len() - 1
        });
        let ordinal = fresh.entry(name).or_insert(0);
        // A model named by two files would mix two runs: refuse rather than guess.
        anyhow::ensure!(
            *ordinal > 0 || into[slot].1.is_empty(),
            "model `{}` appears in more than one prediction file",
            into[slot].0
        );
        into[slot].1.push(rated(row, *ordinal));
        *ordinal += 1;
    }
    Ok(())
}

/// The tables of the single-rating metrics: statistics per model (with how many rows got
/// each rating 1-10), then the ranking when there is one.
pub fn tables(m: &Value) -> Vec<Table> {
    let mut columns = vec![
        Column::name("model", 24),
        Column::number("n", 6),
        Column::number("rated", 6),
        Column::number("unresolved", 10),
        Column::number("mean", 6),
        Column::number("std", 6),
        Column::number("expected", 9),
    ];
    columns.extend((1..=10).map(|b| Column::number(&b.to_string(), 3)));
    let rows = m["models"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, s)| {
            let figures = [
                count(&s["n"]),
                count(&s["rated"]),
                count(&s["unresolved"]),
                real(&s["mean"]),
                real(&s["std"]),
                real(&s["mean_expected"]),
            ];
            let dist = (1..=10).map(|b| count(&s["distribution"][b.to_string()]));
            std::iter::once(name.clone())
                .chain(figures)
                .chain(dist)
                .collect()
        })
        .collect();
    let mut out = vec![Table {
        id: "models",
        title: Some("ratings per model (columns 1-10: rows rated so)".into()),
        columns,
        rows,
    }];
    let ranking = m["ranking"].as_array().map_or(&[][..], Vec::as_slice);
    if !ranking.is_empty() {
        let columns = vec![
            Column::number("rank", 4),
            Column::name("model", 24),
            Column::number("mean_score", 10),
            Column::number("queries", 8),
            Column::number("win_rate", 9),
        ];
        let rows = ranking
            .iter()
            .map(|r| {
                vec![
                    count(&r["rank"]),
                    r["model"].as_str().unwrap_or_default().to_string(),
                    real(&r["mean_score"]),
                    count(&r["queries"]),
                    real(&r["win_rate"]),
                ]
            })
            .collect();
        out.push(Table {
            id: "ranking",
            title: None,
            columns,
            rows,
        });
    }
    out
}

/// Prints the single-rating metrics as tables: statistics per model, then the ranking.
pub fn print_table(m: &Value) {
    for (i, t) in tables(m).iter().enumerate() {
        if i > 0 {
            println!();
        }
        t.print();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_j_zero_is_unresolved_and_ours_wins_over_output() {
        assert_eq!(rated(&json!({"output": 0.0}), 0).rating, None);
        assert_eq!(rated(&json!({"output": 7.0}), 0).rating, Some(7.0));
        assert_eq!(rated(&json!({"rating": null, "output": 7}), 0).rating, None);
        assert_eq!(rated(&json!({"id": 3}), 5).key, "id:3");
        assert_eq!(rated(&json!({"prompt": "q"}), 5).key, "text:q");
        assert_eq!(rated(&json!({}), 5).key, "line:5");
    }
}
