//! Where pairwise verdicts go right and wrong, beyond the two leaderboard figures:
//!
//! - `confusion`: human label (rows) by the verdict in the original order (columns);
//! - `swap`: the verdict in the original order (rows) by the swapped one mapped back
//!   (columns), when every sample was judged in both orders; its diagonal is consistency;
//! - `confidence`: how many verdicts fall in each tenth of the probability the judge gave
//!   its own verdict, right and wrong apart, when the predictions carry probabilities.
//!
//! Each is a part of the metrics object (`--json`), a table of the text output and a chart
//! of the HTML report.

use serde_json::{json, Value};

use super::Sample;
use crate::cli::leaderboard::table::{count, Column, Table};

/// Names of the verdicts as the tables show them: Auto-J's labels 0, 1, 2, then none.
pub const VERDICTS: [&str; 4] = ["response_1", "response_2", "tie", "none"];

/// Bins of the confidence histogram: tenths of 0..1.
pub const BINS: usize = 10;

fn column(v: Option<u8>) -> usize {
    v.map_or(3, usize::from)
}

/// `{"gold": [3 names], "predicted": [4 names], "counts": [[4 counts] per gold label]}`.
pub fn confusion(samples: &[Sample]) -> Value {
    let mut counts = [[0usize; 4]; 3];
    for s in samples {
        counts[usize::from(s.label)][column(s.first)] += 1;
    }
    json!({"gold": VERDICTS[..3], "predicted": VERDICTS, "counts": counts})
}

/// `{"original": [4 names], "swapped": [4 names], "counts": [[4 counts] per original
/// verdict]}` over the samples judged in both orders.
pub fn swap(samples: &[Sample]) -> Value {
    let mut counts = [[0usize; 4]; 4];
    for s in samples {
        if let Some(second) = s.second {
            counts[column(s.first)][column(second)] += 1;
        }
    }
    json!({"original": VERDICTS, "swapped": VERDICTS, "counts": counts})
}

/// The name of confidence bin `i`, e.g. `0.3-0.4`.
pub fn bin_name(i: usize) -> String {
    format!(
        "{:.1}-{:.1}",
        i as f64 / BINS as f64,
        (i + 1) as f64 / BINS as f64
    )
}

/// `{"bins": [names], "correct": [counts], "wrong": [counts], "n": k}` over the samples with
/// a verdict and probabilities; "correct" is the original-order verdict equal to the label.
/// `None` when no sample has probabilities.
pub fn confidence(samples: &[Sample]) -> Option<Value> {
    let mut correct = [0usize; BINS];
    let mut wrong = [0usize; BINS];
    let mut n = 0;
    for s in samples {
        let Some(p) = s.confidence() else { continue };
        let bin = ((p.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
        match s.first == Some(s.label) {
            true => correct[bin] += 1,
            false => wrong[bin] += 1,
        }
        n += 1;
    }
    let bins: Vec<String> = (0..BINS).map(bin_name).collect();
    (n > 0).then(|| json!({"bins": bins, "correct": correct, "wrong": wrong, "n": n}))
}

/// A matrix of counts as a table: `rows_key` names the row labels in `m`, `cols_key` the
/// column labels.
fn matrix(
    id: &'static str,
    title: &str,
    m: &Value,
    (corner, rows_key, cols_key): (&str, &str, &str),
) -> Table {
    let names = |k: &str| -> Vec<String> {
        m[k].as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let mut columns = vec![Column::name(corner, 12)];
    columns.extend(names(cols_key).iter().map(|n| Column::number(n, 10)));
    let rows = names(rows_key)
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let cells = m["counts"][i].as_array().into_iter().flatten().map(count);
            std::iter::once(name).chain(cells).collect()
        })
        .collect();
    Table {
        id,
        title: Some(title.into()),
        columns,
        rows,
    }
}

/// The breakdown tables present in the metrics object `m`.
pub fn tables(m: &Value) -> Vec<Table> {
    let mut out = Vec::new();
    if m["confusion"].is_object() {
        out.push(matrix(
            "confusion",
            "confusion: gold label (rows) by the verdict in the original order (columns)",
            &m["confusion"],
            ("gold", "gold", "predicted"),
        ));
    }
    if m["swap"].is_object() {
        out.push(matrix(
            "swap",
            "swap: verdict in the original order (rows) by the swapped verdict mapped back (columns)",
            &m["swap"],
            ("original", "original", "swapped"),
        ));
    }
    let c = &m["confidence"];
    if c.is_object() {
        let mut columns = vec![Column::name("verdict", 10)];
        columns.extend((0..BINS).map(|i| Column::number(&bin_name(i), 7)));
        columns.push(Column::number("n", 6));
        let row = |key: &str| -> Vec<String> {
            let cells: Vec<String> = c[key].as_array().into_iter().flatten().map(count).collect();
            let total: u64 = c[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .sum();
            std::iter::once(key.to_string())
                .chain(cells)
                .chain([total.to_string()])
                .collect()
        };
        out.push(Table {
            id: "confidence",
            title: Some(format!(
                "probability of the verdict in the original order: {} verdicts per bin",
                count(&c["n"])
            )),
            columns,
            rows: vec![row("correct"), row("wrong")],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(label: u8, first: Option<u8>, p: Option<[f64; 3]>) -> Sample {
        Sample {
            index: 0,
            label,
            scenario: "default".into(),
            first,
            second: Some(first),
            p,
        }
    }

    #[test]
    fn counts_land_in_their_cells_and_bins() {
        let samples = [
            sample(0, Some(0), Some([0.95, 0.03, 0.02])),
            sample(0, Some(1), Some([0.3, 0.35, 0.35])),
            sample(2, None, None),
            sample(1, Some(1), Some([0.0, 1.0, 0.0])),
        ];
        let c = confusion(&samples);
        assert_eq!(
            c["counts"],
            json!([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
        );
        let s = swap(&samples);
        assert_eq!(s["counts"][3][3], 1);
        assert_eq!(s["counts"][0][0], 1);
        let h = confidence(&samples).unwrap();
        assert_eq!(h["n"], 3);
        assert_eq!(h["correct"][9], 2, "0.95 and 1.0 both land in the last bin");
        assert_eq!(h["wrong"][3], 1);
        assert_eq!(bin_name(3), "0.3-0.4");
        assert!(confidence(&samples[2..3]).is_none());
    }
}
