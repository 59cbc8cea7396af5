//! `autoj eval --swap --html` against a running `autoj serve` (tiny model): the report has
//! every chart (labelled pairs judged both ways with probabilities, and ratings), its
//! tables' lines are those `autoj eval` printed, its figures are the metrics file's, and its
//! table of disagreements quotes the output rows' critiques.

mod common;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, run, Server};
use scraper::{Html, Selector};
use serde_json::{json, Value};

fn input() -> String {
    let pair = |scenario: &str, label: u8, r2: &str| {
        json!({"prompt": format!("Question about {scenario}?"),
               "response 1": "A careful, correct answer.", "response 2": r2,
               "scenario": scenario, "label": label})
    };
    let rows = [
        pair("code_generation", 0, "wrong"),
        pair("code_generation", 1, "better"),
        pair("writing_email", 2, "same"),
        pair("writing_email", 0, "worse"),
        json!({"prompt": "Say hi.", "response": "Hello!", "model": "sys-a", "id": "q1"}),
        json!({"prompt": "Say hi.", "response": "hi", "model": "sys-b", "id": "q1"}),
    ];
    rows.iter().map(|r| format!("{r}\n")).collect()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

#[test]
fn eval_writes_a_report_with_every_chart() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let server = Server::start(&model, &["--no-classifier"]);
    let d = dir.path();
    let (input_path, output, page) = (d.join("in.jsonl"), d.join("out.jsonl"), d.join("r.html"));
    std::fs::write(&input_path, input()).unwrap();

    let out = run(autoj()
        .args(["eval", "--swap", "--addr", &server.addr])
        .args(["--max-new-tokens", "6", "--concurrency", "2", "--input"])
        .arg(&input_path)
        .arg("--output")
        .arg(&output)
        .arg("--html")
        .arg(&page));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("report written to"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let html = std::fs::read_to_string(&page).unwrap();
    let doc = Html::parse_document(&html);

    for id in [
        "chart-groups",
        "chart-confusion",
        "chart-swap",
        "chart-confidence",
        "chart-ratings",
    ] {
        let svg = doc.select(&sel(&format!("svg#{id}"))).next();
        let svg = svg.unwrap_or_else(|| panic!("no <svg id={id}> in {html}"));
        assert!(svg.select(&sel("rect")).count() > 1, "{id} draws bars");
    }
    assert_eq!(doc.select(&sel("script")).count(), 0);

    // Every table row of the page is a line eval printed.
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let lines: Vec<String> = stdout.lines().map(norm).collect();
    let mut rows = 0;
    for tr in doc.select(&sel("table.figures tr")) {
        let cells: Vec<String> = tr
            .select(&sel("td, th"))
            .map(|c| c.text().collect())
            .collect();
        let line = norm(&cells.join(" "));
        assert!(lines.contains(&line), "`{line}` not printed:\n{stdout}");
        rows += 1;
    }
    assert!(
        rows >= 12,
        "groups, confusion, swap, confidence, models and ranking"
    );

    // The figures are the metrics file's; the confusion covers the 4 labelled rows.
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out.metrics.json")).unwrap())
            .unwrap();
    let total: u64 = m["pairwise"]["confusion"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 4);
    let overall = doc
        .select(&sel("#table-groups tbody tr"))
        .next_back()
        .map(|tr| {
            tr.select(&sel("td"))
                .map(|c| c.text().collect())
                .collect::<Vec<String>>()
        })
        .unwrap();
    let agreement = m["pairwise"]["overall"]["agreement"].as_f64().unwrap();
    assert_eq!(overall[2], format!("{agreement:.2}"));
    assert!(html.contains("rows: 6, failed: 0"));

    // Each listed disagreement quotes its output row's critique.
    let out_rows: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for tr in doc.select(&sel("#table-worst tbody tr")) {
        let cells: Vec<String> = tr.select(&sel("td")).map(|c| c.text().collect()).collect();
        let row = &out_rows[cells[0].parse::<usize>().unwrap()];
        assert_eq!(cells[7], row["critique"].as_str().unwrap());
    }
}
