//! `autoj metrics --html`: the report has a chart (an `<svg>` with its id) for every part
//! the data allows, its tables hold exactly the lines of the text output, its figures equal
//! the `--json` output, and critiques are escaped, never markup. Right answers of the
//! hand-made files are worked out below (the pairs are those of `cli_metrics.rs`).

mod common;

use std::path::{Path, PathBuf};

use common::{autoj, run};
use scraper::{ElementRef, Html, Selector};
use serde_json::{json, Value};

/// Six pairs in two groups, with their queries (one with markup in it).
const SOURCE: &str = r#"{"scenario": "code_generation", "label": 0, "prompt": "Sort a list <fast>"}
{"scenario": "code_generation", "label": 1, "prompt": "Reverse a string"}
{"scenario": "code_generation", "label": 2, "prompt": "Add two numbers"}
{"scenario": "writing_email", "label": 0, "prompt": "Thank a colleague"}
{"scenario": "writing_email", "label": 1, "prompt": "Decline a meeting"}
{"scenario": "writing_email", "label": 0, "prompt": "Ask for a day off"}
"#;
/// Verdicts 0 1 0 0 none 1 with the judge's probabilities and critiques.
const PRED: &str = r#"{"winner": "response_1", "p_response_1": 0.9, "p_response_2": 0.05, "p_tie": 0.05, "critique": "Fine."}
{"winner": "response_2", "p_response_1": 0.2, "p_response_2": 0.7, "p_tie": 0.1, "critique": "Two is right."}
{"winner": "response_1", "p_response_1": 0.6, "p_response_2": 0.3, "p_tie": 0.1, "critique": "<script>alert('x')</script> & more"}
{"winner": "response_1", "p_response_1": 0.8, "p_response_2": 0.1, "p_tie": 0.1, "critique": "Polite."}
{"winner": null, "critique": "I cannot decide."}
{"winner": "response_2", "p_response_1": 0.15, "p_response_2": 0.75, "p_tie": 0.1, "critique": "Response 2 is <b>better</b>."}
"#;
/// The swapped file in Auto-J's format; mapped back: 0 0 2 0 1 1.
const SWAPPED: &str = "{\"output\": 1}\n{\"output\": 1}\n{\"output\": 2}\n{\"output\": 1}\n{\"output\": 0}\n{\"output\": 0}\n";
// Agreement and consistency as in cli_metrics.rs: overall 33.33 / 50.00, 1 unparsed.
// Confusion (label by first verdict): label 0 (rows 0 3 5): r1 r1 r2 -> [2 1 0 0];
//   label 1 (rows 1 4): r2 none -> [0 1 0 1]; label 2 (row 2): r1 -> [1 0 0 0].
// Swap (first by second): r1 -> r1 r1 tie -> [2 0 1 0]; r2 -> r1 r2 -> [1 1 0 0];
//   tie -> [0 0 0 0]; none -> r2 -> [0 1 0 0].
// Confidence (p of the first verdict): right 0.9 0.7 0.8 (bins 9 7 8), wrong 0.6 0.75 (6 7).
// Disagreements: rows 1 (swap differs, 0.7), 2 (0.6), 4 (none), 5 (0.75) -> 5 1 2 4.

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `autoj metrics ARGS --html PAGE` and returns stdout and the page.
fn metrics(args: &[&std::ffi::OsStr], page: &Path) -> (String, String) {
    let out = run(autoj().arg("metrics").args(args).arg("--html").arg(page));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("report written to"), "{stderr}");
    let html = std::fs::read_to_string(page).unwrap();
    (String::from_utf8(out.stdout).unwrap(), html)
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn cells(row: ElementRef) -> Vec<String> {
    row.select(&sel("td, th"))
        .map(|c| c.text().collect::<String>())
        .collect()
}

/// Checks the page's charts: each id in `present` is one `<svg>` with drawn shapes and
/// text, each in `absent` is missing; and the page has no script nor anything loaded.
fn check_charts(doc: &Html, present: &[&str], absent: &[&str]) {
    for id in present {
        let svgs: Vec<ElementRef> = doc.select(&sel(&format!("svg#{id}"))).collect();
        assert_eq!(svgs.len(), 1, "one <svg id={id}>");
        assert!(svgs[0].select(&sel("rect")).count() > 1, "{id} draws bars");
        assert!(svgs[0].select(&sel("text")).count() > 1, "{id} has labels");
    }
    for id in absent {
        assert_eq!(doc.select(&sel(&format!("#{id}"))).count(), 0, "no {id}");
    }
    let total = doc.select(&sel("svg")).count();
    assert_eq!(total, present.len(), "one <svg> per chart");
    for outside in ["script", "link", "img", "iframe", "[src]", "[href]"] {
        assert_eq!(
            doc.select(&sel(outside)).count(),
            0,
            "{outside} in the page"
        );
    }
}

/// Every row (and heading) of every table of figures is a line of the text output (same
/// cells, spacing aside), and every table of the text is in the page. Returns the tables
/// by id, as cell texts.
fn check_tables(doc: &Html, text: &str) -> Vec<(String, Vec<Vec<String>>)> {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let lines: Vec<String> = text.lines().map(norm).filter(|l| !l.is_empty()).collect();
    let mut tables = Vec::new();
    let mut shown = 0;
    for table in doc.select(&sel("table.figures")) {
        let id = table
            .value()
            .attr("id")
            .unwrap()
            .trim_start_matches("table-")
            .to_string();
        let rows: Vec<Vec<String>> = table.select(&sel("tr")).map(cells).collect();
        assert!(rows.len() > 1, "{id} has rows");
        for row in &rows {
            let line = norm(&row.join(" "));
            assert!(
                lines.contains(&line),
                "{id}: `{line}` not in the text output:\n{text}"
            );
            shown += 1;
        }
        if let Some(c) = table.select(&sel("caption")).next() {
            let caption = c.text().collect::<String>();
            assert!(lines.contains(&norm(&caption)), "caption `{caption}`");
            shown += 1;
        }
        tables.push((id, rows));
    }
    assert_eq!(
        shown,
        lines.len(),
        "every text line is in the page:\n{text}"
    );
    tables
}

fn table<'a>(tables: &'a [(String, Vec<Vec<String>>)], id: &str) -> &'a [Vec<String>] {
    &tables.iter().find(|(t, _)| t == id).unwrap().1
}

/// The counts of a matrix table's body as numbers.
fn counts(rows: &[Vec<String>]) -> Value {
    let body = rows[1..].iter().map(|r| {
        r[1..]
            .iter()
            .map(|c| c.parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    });
    json!(body.collect::<Vec<_>>())
}

#[test]
fn pairwise_report_has_every_chart_and_the_text_figures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (s, p, w) = (
        write(d, "src.jsonl", SOURCE),
        write(d, "pred.jsonl", PRED),
        write(d, "swapped.jsonl", SWAPPED),
    );
    let args = ["--source", "--pred", "--pred-swapped"]
        .iter()
        .zip([&s, &p, &w])
        .flat_map(|(flag, path)| [std::ffi::OsStr::new(flag), path.as_os_str()])
        .collect::<Vec<_>>();
    let page = d.join("report.html");
    let (text, html) = metrics(&args, &page);
    let (json_out, _) = metrics(&[&args[..], &["--json".as_ref()]].concat(), &page);
    let m: Value = serde_json::from_str(&json_out).unwrap();

    let doc = Html::parse_document(&html);
    let charts = [
        "chart-groups",
        "chart-confusion",
        "chart-swap",
        "chart-confidence",
    ];
    check_charts(&doc, &charts, &["chart-ratings"]);
    let tables = check_tables(&doc, &text);

    // The figures equal the JSON output, and the worked-out values.
    let groups = table(&tables, "groups");
    assert_eq!(
        groups.last().unwrap(),
        &["overall", "6", "33.33", "50.00", "1"]
    );
    for row in &groups[1..groups.len() - 1] {
        let g = &m["groups"][&row[0]];
        assert_eq!(row[1], g["n"].to_string());
        assert_eq!(
            row[2].parse::<f64>().unwrap(),
            g["agreement"].as_f64().unwrap()
        );
        assert_eq!(
            row[3].parse::<f64>().unwrap(),
            g["consistency"].as_f64().unwrap()
        );
    }
    assert_eq!(
        groups.len(),
        4,
        "heading, Code, Functional Writing, overall"
    );
    let confusion = counts(table(&tables, "confusion"));
    assert_eq!(confusion, m["confusion"]["counts"]);
    assert_eq!(confusion, json!([[2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0]]));
    let swap = counts(table(&tables, "swap"));
    assert_eq!(swap, m["swap"]["counts"]);
    assert_eq!(
        swap,
        json!([[2, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    );
    let conf = table(&tables, "confidence");
    assert_eq!(
        conf[1][1..],
        ["0", "0", "0", "0", "0", "0", "0", "1", "1", "1", "3"]
    );
    assert_eq!(
        conf[2][1..],
        ["0", "0", "0", "0", "0", "0", "1", "1", "0", "0", "2"]
    );
    assert_eq!(
        m["confidence"]["correct"],
        json!([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    );

    // The worst disagreements, most confident first; markup in critiques stays text.
    let worst: Vec<Vec<String>> = doc
        .select(&sel("#table-worst tbody tr"))
        .map(cells)
        .collect();
    let order: Vec<&str> = worst.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(order, ["5", "1", "2", "4"]);
    assert_eq!(worst[0][5], "0.750");
    assert_eq!(worst[0][7], "Response 2 is <b>better</b>.");
    assert_eq!(worst[2][7], "<script>alert('x')</script> & more");
    assert_eq!(worst[3][3], "none");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"));
    assert_eq!(doc.select(&sel("#table-worst b")).count(), 0);
}

#[test]
fn one_order_without_probabilities_leaves_out_those_charts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = write(d, "src.jsonl", SOURCE);
    let p = write(d, "pred.jsonl", "{\"output\": 0}\n".repeat(6).as_str());
    let page = d.join("report.html");
    let (text, html) = metrics(
        &[
            "--source".as_ref(),
            s.as_os_str(),
            "--pred".as_ref(),
            p.as_os_str(),
        ],
        &page,
    );
    let doc = Html::parse_document(&html);
    check_charts(
        &doc,
        &["chart-groups", "chart-confusion"],
        &["chart-swap", "chart-confidence", "chart-ratings"],
    );
    let tables = check_tables(&doc, &text);
    // Always response 1: right on the three label-0 rows.
    assert_eq!(table(&tables, "groups").last().unwrap()[2], "50.00");
    let notes: String = doc.select(&sel("p.note")).flat_map(|n| n.text()).collect();
    assert!(notes.contains("--pred-swapped"), "{notes}");
    assert!(notes.contains("no probabilities"), "{notes}");
}

/// Ratings of two models (as in cli_metrics_single.rs): alpha 8 6 - 4, beta 7 6 9 -.
#[test]
fn single_report_has_the_rating_chart_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = write(
        d,
        "alpha.jsonl",
        "{\"prompt\": \"q1\", \"rating\": 8, \"expected_rating\": 7.5}\n\
         {\"prompt\": \"q2\", \"rating\": 6, \"expected_rating\": 6.0}\n\
         {\"prompt\": \"q3\", \"rating\": null}\n\
         {\"prompt\": \"q4\", \"rating\": 4, \"expected_rating\": 4.5}\n",
    );
    let b = write(
        d,
        "beta.jsonl",
        "{\"prompt\": \"q1\", \"output\": 7.0}\n{\"prompt\": \"q2\", \"output\": 6.0}\n\
         {\"prompt\": \"q3\", \"output\": 9.0}\n{\"prompt\": \"q4\", \"output\": 0.0}\n",
    );
    let page = d.join("ratings.html");
    let pred = std::ffi::OsStr::new("--pred");
    let (text, html) = metrics(
        &[
            "--single".as_ref(),
            pred,
            a.as_os_str(),
            pred,
            b.as_os_str(),
        ],
        &page,
    );
    let doc = Html::parse_document(&html);
    check_charts(
        &doc,
        &["chart-ratings"],
        &[
            "chart-groups",
            "chart-confusion",
            "chart-swap",
            "chart-confidence",
        ],
    );
    let tables = check_tables(&doc, &text);
    let models = table(&tables, "models");
    let alpha = models.iter().find(|r| r[0] == "alpha").unwrap();
    assert_eq!(alpha[1..7], ["4", "3", "1", "6.00", "1.63", "6.00"]);
    assert_eq!(
        alpha[7..],
        ["0", "0", "0", "1", "0", "1", "0", "1", "0", "0"]
    );
    let ranking = table(&tables, "ranking");
    assert_eq!(
        ranking[1][..3],
        ["1", "alpha", "6.75"],
        "alpha first on q1 q2"
    );
}

#[test]
fn an_unwritable_report_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = write(d, "src.jsonl", SOURCE);
    let p = write(d, "pred.jsonl", PRED);
    let page = d.join("missing-dir").join("report.html");
    let out = run(autoj()
        .args(["metrics", "--source"])
        .arg(&s)
        .arg("--pred")
        .arg(&p)
        .arg("--html")
        .arg(&page));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot write") && stderr.contains("missing-dir"),
        "{stderr}"
    );
}

/// On Auto-J's real pairwise test set (skips where ../shared is absent): a prediction that
/// cycles through the verdicts with made-up probabilities gives a report whose tables are
/// the text output's, with every chart.
#[test]
fn report_on_the_real_test_set() {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/autoj/testdata_pairwise.jsonl");
    if !src.exists() {
        eprintln!(
            "skipping: {} not found (fresh clone without ../shared)",
            src.display()
        );
        return;
    }
    let n = std::fs::read_to_string(&src)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let winners = ["response_1", "response_2", "tie"];
    let pred: String = (0..n)
        .map(|i| {
            let p = 0.34 + (i % 60) as f64 / 100.0;
            let mut probs = [(1.0 - p) / 2.0; 3];
            probs[i % 3] = p;
            let swap = json!({"winner": winners[(i / 3) % 3]});
            let row = json!({
                "winner": winners[i % 3], "p_response_1": probs[0], "p_response_2": probs[1],
                "p_tie": probs[2], "critique": format!("critique {i}"), "swap": swap,
            });
            format!("{row}\n")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "pred.jsonl", &pred);
    let page = dir.path().join("real.html");
    let (text, html) = metrics(
        &[
            "--source".as_ref(),
            src.as_os_str(),
            "--pred".as_ref(),
            p.as_os_str(),
        ],
        &page,
    );
    let doc = Html::parse_document(&html);
    let charts = [
        "chart-groups",
        "chart-confusion",
        "chart-swap",
        "chart-confidence",
    ];
    check_charts(&doc, &charts, &["chart-ratings"]);
    let tables = check_tables(&doc, &text);
    assert_eq!(table(&tables, "groups").last().unwrap()[1], n.to_string());
    let worst = doc.select(&sel("#table-worst tbody tr")).count();
    assert_eq!(worst, 25, "the table stops at 25 rows");
}
