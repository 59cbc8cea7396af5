//! An HTTP client that goes away cancels its judgment, as a gRPC client that cancels does:
//! closing the connection in the middle of a Server-Sent Events stream, or while a whole
//! JSON answer is being gathered, stops the generation (the engine counts it cancelled and
//! the router counts a dropped call), and the next request is served.

mod common;
#[path = "common/http.rs"]
mod http;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::serve_with_metrics;
use http::{base, post, wait_healthy};
use prometheus_parse::{Scrape, Value};

/// Every wait is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

/// A compare request too long to finish while the test runs (the tiny model never writes
/// an end-of-sequence token).
const LONG: &str = r#"{"query": "Explain sorting.", "response_1": "Use sort().",
    "response_2": "Write a loop.", "options": {"generation": {"max_new_tokens": 3000}}}"#;

#[test]
fn closing_the_connection_cancels_the_judgment() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let (mut server, metrics) = serve_with_metrics(&model, &["--http-listen", "127.0.0.1:0"]);
    let base = base(&mut server);
    wait_healthy(&base);
    let door = base.trim_start_matches("http://").to_owned();

    // Mid-stream: hang up after the first critique text has arrived.
    let mut events = BufReader::new(open(&door, LONG, true));
    let mut line = String::new();
    while line.trim_end() != "event: critique_delta" {
        line.clear();
        assert!(
            events.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
    }
    drop(events);
    wait_for(&metrics, "the streamed judgment is cancelled", |s| {
        cancelled(s) >= 1.0 && dropped(s) >= 1.0
    });

    // Gathering a JSON answer: hang up once its first critique text has been relayed.
    let before = first_chunks(&scrape(&metrics));
    let conn = open(&door, LONG, false);
    wait_for(&metrics, "the gathered judgment is generating", |s| {
        first_chunks(s) > before
    });
    drop(conn);
    wait_for(&metrics, "the gathered judgment is cancelled", |s| {
        cancelled(s) >= 2.0 && dropped(s) >= 2.0
    });

    // The engine is free: the next request is judged.
    let short = LONG.replace("3000", "4");
    let answer = post(&format!("{base}/v1/judge/compare"), &short, &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_for(&metrics, "nothing left in flight", |s| {
        value(s, "autoj_router_in_flight", &[]) == 0.0 && cancelled(s) == 2.0
    });
}

/// A `POST /v1/judge/compare` of `body` on a connection of its own, as SSE when `sse`;
/// the open connection (read timeout set).
fn open(door: &str, body: &str, sse: bool) -> TcpStream {
    let mut conn = TcpStream::connect(door).expect("connect to the HTTP door");
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    let accept = if sse {
        "text/event-stream"
    } else {
        "application/json"
    };
    write!(
        conn,
        "POST /v1/judge/compare HTTP/1.1\r\nHost: {door}\r\nAccept: {accept}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    conn.flush().unwrap();
    conn
}

/// Scrapes `metrics` until `done` holds, failing after [`LIMIT`] with `what`.
fn wait_for(metrics: &str, what: &str, done: impl Fn(&Scrape) -> bool) {
    let until = Instant::now() + LIMIT;
    loop {
        if done(&scrape(metrics)) {
            return;
        }
        if Instant::now() >= until {
            let s = scrape(metrics);
            panic!(
                "{what}: not within {LIMIT:?} (cancelled {}, dropped {}, first chunks {}, completed {})",
                cancelled(&s),
                dropped(&s),
                first_chunks(&s),
                value(&s, "autoj_judge_engine_requests_total", &[("outcome", "completed")])
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Judgments the engine finished as cancelled.
fn cancelled(s: &Scrape) -> f64 {
    value(
        s,
        "autoj_judge_engine_requests_total",
        &[("outcome", "cancelled")],
    )
}

/// Compare calls the router saw dropped by their client.
fn dropped(s: &Scrape) -> f64 {
    value(s, "autoj_router_dropped_total", &[("rpc", "Compare")])
}

/// Calls whose first critique text the router has relayed (the count of its time-to-first-
/// token histogram).
fn first_chunks(s: &Scrape) -> f64 {
    value(s, "autoj_router_time_to_first_token_seconds", &[])
}

/// `GET /metrics`, parsed.
fn scrape(addr: &str) -> Scrape {
    let mut conn = TcpStream::connect(addr).expect("connect to the metrics port");
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        conn,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The sum of the samples of `metric` whose labels include `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}
