//! The HTML evaluation report (`autoj metrics --html`, `autoj eval --html`): one
//! self-contained page (inline CSS and SVG, no script, nothing loaded from elsewhere) with
//! the charts of [`charts`], the same tables the text output prints ([`super::table`]) and
//! the worst disagreements with their critiques.
//!
//! Every figure comes from the metrics object `--json` prints: the page is rendered from
//! it, not computed again.

pub mod charts;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use super::pairwise::{self, breakdown::VERDICTS, Sample};
use super::single;
use super::table::Table;

/// How many disagreements the report lists.
pub const WORST_ROWS: usize = 25;
/// Characters of a query shown in the table of disagreements.
const QUERY_CHARS: usize = 400;
/// Characters of a critique shown in the table of disagreements.
const CRITIQUE_CHARS: usize = 3000;

/// What one report shows.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The input files, named in the page's header.
    pub inputs: Vec<String>,
    /// Lines of context under the header (e.g. `autoj eval`'s row and failure counts).
    pub notes: Vec<String>,
    /// Pairwise metrics and disagreements, when there are labelled pairs.
    pub pairwise: Option<Pairwise>,
    /// Single-rating metrics (the object `--single --json` prints), when there are ratings.
    pub single: Option<Value>,
}

/// The pairwise part of a report.
#[derive(Debug, Clone)]
pub struct Pairwise {
    /// The metrics object (as `--json` prints it).
    pub metrics: Value,
    /// The worst disagreements, worst first (see [`worst`]).
    pub worst: Vec<Disagreement>,
}

/// One sample whose verdict did not match its label, with what the judge wrote.
#[derive(Debug, Clone)]
pub struct Disagreement {
    /// The sample's verdicts and label.
    pub sample: Sample,
    /// The query, when the files carry it.
    pub prompt: Option<String>,
    /// The critique (original order), when the prediction carries it.
    pub critique: Option<String>,
}

/// The samples that disagree with their label, worst first: the most confident wrong
/// verdicts (the probability the judge gave its verdict), then those without a
/// probability, then the unresolved ones; ties in input order. At most `limit`; `text`
/// gives a sample's query and critique.
pub fn worst(
    samples: &[Sample],
    limit: usize,
    text: impl Fn(&Sample) -> (Option<String>, Option<String>),
) -> Vec<Disagreement> {
    let rank = |s: &Sample| match (s.first, s.confidence()) {
        (None, _) => -2.0,
        (Some(_), None) => -1.0,
        (Some(_), Some(p)) => p,
    };
    let mut wrong: Vec<&Sample> = samples.iter().filter(|s| !s.agrees()).collect();
    wrong.sort_by(|a, b| rank(b).total_cmp(&rank(a)).then(a.index.cmp(&b.index)));
    wrong
        .into_iter()
        .take(limit)
        .map(|s| {
            let (prompt, critique) = text(s);
            Disagreement {
                sample: s.clone(),
                prompt,
                critique,
            }
        })
        .collect()
}

/// The first of `rows` whose `key` is a string.
pub fn text_field(rows: &[&Value], key: &str) -> Option<String> {
    rows.iter()
        .find_map(|r| r.get(key).and_then(Value::as_str))
        .map(str::to_owned)
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `n` characters of `text`, with an ellipsis when cut.
fn clip(text: &str, n: usize) -> String {
    match text.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// A table of figures as HTML: `id` `table-<id>`, class `figures`, the title as caption.
fn table_html(t: &Table) -> String {
    let mut h = format!("<table class=\"figures\" id=\"table-{}\">", t.id);
    if let Some(title) = &t.title {
        let _ = write!(h, "<caption>{}</caption>", escape(title));
    }
    let cell = |tag: &str, text: &str, left: bool| {
        let class = if left { "" } else { " class=\"num\"" };
        format!("<{tag}{class}>{}</{tag}>", escape(text))
    };
    h.push_str("<thead><tr>");
    for c in &t.columns {
        h.push_str(&cell("th", &c.name, c.left));
    }
    h.push_str("</tr></thead><tbody>");
    for row in &t.rows {
        h.push_str("<tr>");
        for (text, c) in row.iter().zip(&t.columns) {
            h.push_str(&cell("td", text, c.left));
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table>\n");
    h
}

/// A section: heading, explanation, then its charts and tables.
fn section(id: &str, heading: &str, about: &str, body: &[String]) -> String {
    format!(
        "<section id=\"{id}\">\n<h2>{}</h2>\n<p class=\"about\">{}</p>\n{}</section>\n",
        escape(heading),
        escape(about),
        body.concat()
    )
}

fn figure(svg: String) -> String {
    format!("<figure>{svg}</figure>\n")
}

fn note(text: &str) -> String {
    format!("<p class=\"note\">{}</p>\n", escape(text))
}

/// The pairwise sections: groups, confusion, swap, confidence and disagreements.
fn pairwise_html(p: &Pairwise) -> anyhow::Result<String> {
    let m = &p.metrics;
    let tables = pairwise::tables(m);
    let table = |id: &str| tables.iter().find(|t| t.id == id).map(table_html);
    let mut out = section(
        "agreement",
        "Agreement and consistency by scenario group",
        "Agreement: the verdict matches the human label (in both orders when judged swapped). \
         Consistency: the two orders give the same verdict. Percent of the group's samples.",
        &[
            figure(charts::groups(m)?),
            table("groups").unwrap_or_default(),
        ],
    );
    out += &section(
        "confusion",
        "Gold label against verdict",
        "How many samples of each human label got each verdict in the original order.",
        &[
            figure(charts::matrix(
                "chart-confusion",
                "Gold label (rows) by verdict (columns)",
                &m["confusion"],
                ("gold", "predicted"),
            )?),
            table("confusion").unwrap_or_default(),
        ],
    );
    let swap = match table("swap") {
        Some(t) => vec![
            figure(charts::matrix(
                "chart-swap",
                "Original order (rows) by swapped order, mapped back (columns)",
                &m["swap"],
                ("original", "swapped"),
            )?),
            t,
        ],
        None => vec![note(
            "Judged in one order only: pass --pred-swapped (or run autoj eval --swap) to see it.",
        )],
    };
    out += &section(
        "swap",
        "Swap consistency",
        "Each pair judged with the responses in both orders: off the diagonal, the verdict \
         changed with the position of the responses.",
        &swap,
    );
    let confidence = match table("confidence") {
        Some(t) => vec![figure(charts::confidence(&m["confidence"])?), t],
        None => vec![note(
            "The predictions carry no probabilities (p_response_1, p_response_2, p_tie).",
        )],
    };
    out += &section(
        "probabilities",
        "Verdict probabilities",
        "The probability the judge gave its own verdict, for right and wrong verdicts.",
        &confidence,
    );
    out += &disagreements_html(&p.worst);
    Ok(out)
}

fn verdict_name(v: Option<u8>) -> &'static str {
    VERDICTS[v.map_or(3, usize::from)]
}

/// The table of the worst disagreements, critiques escaped.
fn disagreements_html(worst: &[Disagreement]) -> String {
    let mut rows = String::new();
    for d in worst {
        let s = &d.sample;
        let swapped = s.second.map_or("-", verdict_name);
        let p = s.confidence().map_or("-".into(), |p| format!("{p:.3}"));
        let _ = writeln!(
            rows,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"num\">{p}</td><td class=\"text\">{}</td><td class=\"text critique\">{}</td></tr>",
            s.index,
            escape(&s.scenario),
            verdict_name(Some(s.label)),
            verdict_name(s.first),
            swapped,
            escape(&clip(d.prompt.as_deref().unwrap_or("-"), QUERY_CHARS)),
            escape(&clip(d.critique.as_deref().unwrap_or("-"), CRITIQUE_CHARS)),
        );
    }
    let body = if worst.is_empty() {
        note("Every verdict matches its label.")
    } else {
        format!(
            "<table id=\"table-worst\"><thead><tr><th>row</th><th>scenario</th><th>gold</th>\
             <th>verdict</th><th>swapped</th><th>p(verdict)</th><th>query</th><th>critique</th>\
             </tr></thead><tbody>\n{rows}</tbody></table>\n"
        )
    };
    section(
        "disagreements",
        "Worst disagreements",
        &format!(
            "Up to {WORST_ROWS} samples whose verdict does not match the label: the most \
             confident first, unresolved verdicts last. Rows count from 0 in the input."
        ),
        &[body],
    )
}

/// The single-rating section: the chart of ratings and the tables.
fn single_html(m: &Value) -> anyhow::Result<String> {
    let mut body = vec![figure(charts::ratings(m)?)];
    body.extend(single::tables(m).iter().map(table_html));
    Ok(section(
        "ratings",
        "Ratings",
        "How many rows of each model got each rating 1-10, then the statistics and, with \
         several models, their ranking.",
        &body,
    ))
}

const STYLE: &str = include_str!("report.css");

/// The page.
pub fn render(report: &Report) -> anyhow::Result<String> {
    let mut body = String::new();
    if let Some(p) = &report.pairwise {
        body += &pairwise_html(p)?;
    }
    if let Some(s) = &report.single {
        body += &single_html(s)?;
    }
    if body.is_empty() {
        body = note("No labelled pairs and no ratings: nothing to report.");
    }
    let inputs: Vec<String> = report.inputs.iter().map(|i| escape(i)).collect();
    let notes: String = report.notes.iter().map(|n| note(n)).collect();
    Ok(format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>autoj evaluation report</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <header><h1>Evaluation report</h1><p class=\"about\">{} · autoj {}</p>\n{notes}</header>\n\
         <main>\n{body}</main>\n</body>\n</html>\n",
        inputs.join(" · "),
        env!("CARGO_PKG_VERSION"),
    ))
}

/// Renders the report and writes it to `path`.
pub fn write(path: &Path, report: &Report) -> anyhow::Result<()> {
    let page = render(report)?;
    std::fs::write(path, page).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("report written to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(index: usize, label: u8, first: Option<u8>, p: Option<[f64; 3]>) -> Sample {
        Sample {
            index,
            label,
            scenario: "s".into(),
            first,
            second: None,
            p,
        }
    }

    #[test]
    fn worst_puts_confident_mistakes_first_and_unresolved_last() {
        let samples = [
            sample(0, 0, None, None),
            sample(1, 0, Some(1), Some([0.4, 0.6, 0.0])),
            sample(2, 0, Some(0), Some([0.9, 0.1, 0.0])),
            sample(3, 1, Some(0), Some([0.8, 0.2, 0.0])),
            sample(4, 2, Some(1), None),
        ];
        let w = worst(&samples, 10, |_| (None, None));
        let order: Vec<usize> = w.iter().map(|d| d.sample.index).collect();
        assert_eq!(order, [3, 1, 4, 0]);
        assert_eq!(worst(&samples, 2, |_| (None, None)).len(), 2);
    }

    #[test]
    fn escape_and_clip() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(clip("héllo", 2), "hé…");
        assert_eq!(clip("hé", 2), "hé");
    }
}
