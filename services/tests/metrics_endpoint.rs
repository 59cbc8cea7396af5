//! `autoj serve --metrics-listen` serves Prometheus text on its own HTTP port: the scrape
//! parses with a real Prometheus text-format parser, carries the router's and the judge's
//! families, and its counters move when a request is judged.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, compare_json, run, serve_with_metrics, Server};
use prometheus_parse::{Sample, Scrape, Value};

/// Starts `autoj serve` with metrics on a free port; its gRPC and metrics addresses.
fn serve(model: &std::path::Path) -> (Server, String, String) {
    let (server, metrics) = serve_with_metrics(model, &[]);
    let grpc = server.addr.clone();
    (server, grpc, metrics)
}

/// `GET /metrics` over plain HTTP/1.1; the parsed body.
fn scrape(addr: &str) -> Scrape {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the metrics port");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text format")
}

/// Joins an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// The value of the sample of `metric` whose labels include `labels` (0 when absent).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && matches(s, labels))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => f64::NAN,
        })
        .sum()
}

fn matches(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v))
}

#[test]
fn metrics_endpoint_parses_and_counts_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let (_server, grpc, metrics) = serve(&model);

    let before = scrape(&metrics);
    let families: HashMap<&str, &str> = before
        .docs
        .iter()
        .map(|(name, help)| (name.as_str(), help.as_str()))
        .collect();
    for family in [
        "autoj_router_in_flight",
        "autoj_judge_in_flight",
        "autoj_judge_queued",
        "autoj_judge_batch_size",
        "autoj_judge_generated_tokens_total",
        "autoj_judge_dropped_total",
    ] {
        assert!(
            families.contains_key(family),
            "{family} is described before any request; have {:?}",
            families.keys().collect::<Vec<_>>()
        );
    }
    let ok = [("rpc", "Compare"), ("code", "OK"), ("pool", "local")];
    assert_eq!(value(&before, "autoj_router_requests_total", &ok), 0.0);
    assert_eq!(
        value(&before, "autoj_judge_generated_tokens_total", &[]),
        0.0
    );

    let events = compare_json(&grpc);
    assert_eq!(events.last().unwrap()["type"], "usage");

    let after = scrape(&metrics);
    assert_eq!(
        value(
            &after,
            "autoj_router_requests_total",
            &[
                ("rpc", "Compare"),
                ("code", "OK"),
                ("pool", "local"),
                ("scenario_group", "Code")
            ]
        ),
        1.0,
        "one Compare counted with its code, scenario group and pool"
    );
    assert_eq!(
        value(
            &after,
            "autoj_judge_requests_total",
            &[("rpc", "Compare"), ("code", "OK")]
        ),
        1.0
    );
    let generated = value(&after, "autoj_judge_generated_tokens_total", &[]);
    assert!(generated >= 8.0, "tokens counted: {generated}");
    assert_eq!(
        value(
            &after,
            "autoj_router_generated_tokens_total",
            &[("pool", "local")]
        ),
        generated,
        "the router counts what the judge generated"
    );
    // Histograms are real Prometheus histograms with one observation per judgment.
    for (metric, labels) in [
        ("autoj_judge_time_to_first_token_seconds", &[][..]),
        (
            "autoj_router_time_to_first_token_seconds",
            &[("pool", "local")][..],
        ),
        ("autoj_judge_phase_seconds", &[("phase", "prefill")][..]),
    ] {
        let sample = after
            .samples
            .iter()
            .find(|s| s.metric == metric && matches(s, labels))
            .unwrap_or_else(|| panic!("{metric} is in the scrape"));
        assert!(
            matches!(sample.value, Value::Histogram(_)),
            "{metric} is a histogram"
        );
        assert_eq!(value(&after, metric, labels), 1.0, "{metric} observed once");
    }
    assert!(
        value(&after, "autoj_judge_inter_token_seconds", &[]) >= 1.0,
        "gaps between critique chunks observed"
    );
    assert_eq!(
        value(
            &after,
            "autoj_judge_engine_requests_total",
            &[("outcome", "completed")]
        ),
        1.0,
        "the engine's own counters are read at scrape time"
    );
    assert_eq!(value(&after, "autoj_router_in_flight", &[]), 0.0);
    assert_eq!(value(&after, "autoj_judge_queued", &[]), 0.0);

    // A refused request is counted under its status code.
    let out = run(autoj().args([
        "critique",
        "--addr",
        &grpc,
        "--query",
        "q",
        "--response",
        "r",
        "--scenario",
        "no_such_scenario",
    ]));
    assert!(!out.status.success());
    let refused = scrape(&metrics);
    assert_eq!(
        value(
            &refused,
            "autoj_router_requests_total",
            &[
                ("rpc", "Critique"),
                ("code", "INVALID_ARGUMENT"),
                ("pool", "none")
            ]
        ),
        1.0
    );
}
