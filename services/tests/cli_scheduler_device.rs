//! `autoj serve --scheduler device` runs the batching scheduler over the device backend
//! (on the CPU here): it judges, and the metrics show the key/value slots it preallocated
//! (`--max-seqs 2`) and that none is held once the request has ended.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{compare_json, serve_with_metrics};

/// `GET /metrics` as HTTP/1.0 (so the body is never chunked); the body.
fn scrape(addr: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the metrics port");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(conn, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.contains(" 200 "), "{head}");
    body.to_owned()
}

/// The value of an unlabelled gauge in a Prometheus text body.
fn gauge(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

#[test]
fn device_scheduler_judges_and_reports_its_slots() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let (server, metrics) =
        serve_with_metrics(&model, &["--scheduler", "device", "--max-seqs", "2"]);
    let events = compare_json(&server.addr);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &kinds[kinds.len() - 2..],
        &["verdict", "usage"],
        "{kinds:?}"
    );
    assert!(events[kinds.len() - 2]["winner"].is_string());
    // The slot goes back just after the last event is sent.
    let end = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = scrape(&metrics);
        if gauge(&body, "autoj_judge_kv_slots_in_use") == Some(0.0) || Instant::now() > end {
            break body;
        }
        std::thread::yield_now();
    };
    assert_eq!(gauge(&body, "autoj_judge_kv_slots"), Some(2.0), "{body}");
    assert_eq!(gauge(&body, "autoj_judge_kv_slots_in_use"), Some(0.0));
    // The engine's traffic: steps ran, the verdict (forced: a random model writes none) was
    // scored by step rows, and picks and scores crossed to the host, a few bytes per row.
    let steps = gauge(&body, "autoj_judge_engine_steps_total").expect("steps");
    assert!(steps >= 1.0, "{body}");
    let shared = gauge(&body, "autoj_judge_verdict_rows_total{shared=\"true\"}").unwrap_or(0.0);
    let alone = gauge(&body, "autoj_judge_verdict_rows_total{shared=\"false\"}").unwrap_or(0.0);
    assert!(shared + alone >= 1.0, "{body}");
    let bytes = gauge(&body, "autoj_judge_device_to_host_bytes_total").expect("bytes");
    assert!(
        bytes > 0.0 && bytes <= steps * 2.0 * 64.0,
        "{bytes} bytes in {steps} steps"
    );
    // A greedy judgment samples nothing; the family is there at zero for each pick.
    for pick in ["whole", "nucleus", "rejection", "truncated"] {
        let name = format!("autoj_judge_sampled_tokens_total{{pick=\"{pick}\"}}");
        assert_eq!(gauge(&body, &name), Some(0.0), "{name}: {body}");
    }
}
