//! `autoj load --transport http`: Server-Sent Events streams through the HTTP door, every
//! stream accounted for. Against a live `autoj serve` with an API key, streams complete,
//! and streams without the key or over a limit fail, counted by their gRPC code; with a
//! replica killed mid-run, nothing is lost. Against a fake door that answers each way a
//! stream can end, every answer lands in its own count, a cut-short stream as lost.

mod common;
#[path = "common/http.rs"]
mod http;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, run};
use serde_json::{json, Value};

/// The key the live server accepts.
const KEY: &str = "load-test-key";

/// `autoj load --transport http --json` at `door` with `extra` arguments, started (the
/// client's own key variable removed, so only `--api-key` gives one).
fn start_load(door: &str, extra: &[&str]) -> Child {
    autoj()
        .env_remove("AUTOJ_API_KEY")
        .args(["load", "--transport", "http", "--addr", door, "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start autoj load")
}

/// The JSON report of a finished run; `ok` says whether it must have exited 0.
fn report(child: Child, ok: bool) -> Value {
    let out = child.wait_with_output().expect("autoj load ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.success(), ok, "exit status: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not a JSON report ({e}): {stdout}\nstderr: {stderr}"));
    assert_eq!(r["transport"], "http", "{r}");
    r
}

/// A count of a report.
fn count(r: &Value, field: &str) -> u64 {
    r[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field}: {r}"))
}

/// Checks nothing was lost or duplicated and every started stream completed or failed;
/// returns the failures by code.
fn accounted(r: &Value) -> serde_json::Map<String, Value> {
    assert_eq!(count(r, "lost"), 0, "{r}");
    assert_eq!(count(r, "duplicated"), 0, "{r}");
    let failed = r["failed"].as_object().expect("failed by code").clone();
    let failed_total: u64 = failed.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(
        count(r, "started"),
        count(r, "completed") + failed_total,
        "every started stream completed or failed: {r}"
    );
    failed
}

/// Checks every stream of `r` failed, all with `code`.
fn all_failed_with(r: &Value, code: &str) {
    let failed = accounted(r);
    assert_eq!(count(r, "completed"), 0, "{r}");
    assert!(count(r, "started") > 0, "{r}");
    assert_eq!(
        Value::Object(failed),
        json!({ code: count(r, "started") }),
        "every stream failed with {code}: {r}"
    );
}

#[test]
fn streams_complete_or_fail_by_code_through_the_door() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let mut server = http::serve_door(&model, KEY, &["--no-classifier"]);
    let door = http::base(&mut server);
    http::wait_healthy(&door);

    // Three runs at once on one server: with the key, without it, and asking for more new
    // tokens than the server allows (its default limit is 4,096).
    let with_key = ["--api-key", KEY, "--max-new-tokens", "8"];
    let good = start_load(
        &door,
        &[&with_key[..], &["--streams", "4", "--duration", "3s"]].concat(),
    );
    let keyless = start_load(&door, &["--streams", "2", "--duration", "1s"]);
    let too_long = start_load(
        &door,
        &[
            "--api-key",
            KEY,
            "--max-new-tokens",
            "5000",
            "--streams",
            "2",
            "--duration",
            "1s",
        ],
    );

    let r = report(good, true);
    assert!(
        accounted(&r).is_empty(),
        "a healthy server fails nothing: {r}"
    );
    assert!(count(&r, "completed") >= 4, "{r}");
    assert!(r["verdict_p50_s"].as_f64().unwrap() > 0.0, "{r}");
    all_failed_with(&report(keyless, true), "Unauthenticated");
    all_failed_with(&report(too_long, true), "InvalidArgument");
}

#[test]
fn killing_a_replica_loses_no_http_stream() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let out = run(autoj().args([
        "load",
        "--transport",
        "http",
        "--fault",
        "kill-replica",
        "--model",
        model.to_str().unwrap(),
        "--streams",
        "6",
        "--duration",
        "4s",
        "--max-new-tokens",
        "8",
        "--json",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(r["transport"], "http", "{r}");
    let failed = accounted(&r);
    assert!(
        r["fault"].as_str().unwrap().contains("killed replica-a"),
        "{r}"
    );
    assert!(count(&r, "completed") > 0, "{r}");
    for code in failed.keys() {
        assert_eq!(
            code, "Unavailable",
            "only streams on the killed replica fail: {r}"
        );
    }
}

#[test]
fn refuses_what_the_http_mode_cannot_do() {
    for (args, needle) in [
        (vec!["--addr", "http://10.11.12.13:8080"], "loopback"),
        (vec!["--addr", "https://127.0.0.1:8443"], "--tls-ca"),
        (
            vec![
                "--addr",
                "http://127.0.0.1:8080",
                "--tls-ca",
                "no-such-ca.pem",
            ],
            "cannot read --tls-ca",
        ),
    ] {
        let out = run(autoj()
            .args(["load", "--transport", "http", "--duration", "1s"])
            .args(&args));
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// The ways a fake door answers, in turn, one per connection.
const ANSWERS: [&str; 5] = [
    // Completed.
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len}\r\n\r\n\
     event: accepted\ndata: {}\n\n: keep-alive\n\nevent: critique_delta\ndata: {\"text\":\"ok\"}\n\n\
     event: verdict\ndata: {}\n\nevent: usage\ndata: {}\n\n",
    // Failed part-way: an error event with a code.
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len}\r\n\r\n\
     event: accepted\ndata: {}\n\nevent: error\n\
     data: {\"error\":{\"code\":\"DEADLINE_EXCEEDED\",\"message\":\"late\"}}\n\n",
    // Failed before the stream: an error answer.
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n\
     {\"error\":{\"code\":\"UNAVAILABLE\",\"message\":\"no replica\"}}",
    // Lost: the body ends after the verdict, without usage and without an error.
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len}\r\n\r\n\
     event: accepted\ndata: {}\n\nevent: verdict\ndata: {}\n\n",
    // Completed, with the verdict duplicated.
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len}\r\n\r\n\
     event: accepted\ndata: {}\n\nevent: verdict\ndata: {}\n\nevent: verdict\ndata: {}\n\n\
     event: usage\ndata: {}\n\n",
];

/// Reads one request (head and `Content-Length` body) from `conn`; false at end of input.
fn read_request(conn: &mut BufReader<TcpStream>) -> bool {
    let mut length = 0;
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).is_ok()
}

/// A door on 127.0.0.1 that answers every request with the next of [`ANSWERS`]; its
/// address and how many times each answer was given.
fn fake_door() -> (String, Arc<[AtomicU64; 5]>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let given = Arc::new([const { AtomicU64::new(0) }; 5]);
    let next = Arc::new(AtomicU64::new(0));
    let counts = given.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let (given, next) = (given.clone(), next.clone());
            std::thread::spawn(move || {
                let mut conn = BufReader::new(conn);
                while read_request(&mut conn) {
                    let i = (next.fetch_add(1, Ordering::Relaxed) % 5) as usize;
                    given[i].fetch_add(1, Ordering::Relaxed);
                    let (head, body) = ANSWERS[i].split_once("\r\n\r\n").unwrap();
                    let head = head.replace("{len}", &body.len().to_string());
                    let answer = format!("{head}\r\n\r\n{body}");
                    if conn.get_mut().write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, counts)
}

#[test]
fn every_way_a_stream_ends_has_its_count() {
    let (door, given) = fake_door();
    let out = Command::new(env!("CARGO_BIN_EXE_autoj"))
        .env_remove("AUTOJ_API_KEY")
        .args(["load", "--transport", "http", "--addr", &door, "--json"])
        .args(["--streams", "3", "--duration", "1s"])
        .output()
        .expect("run autoj load");
    assert!(!out.status.success(), "a lost stream makes the run fail");
    let r: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let given: Vec<u64> = given.iter().map(|g| g.load(Ordering::Relaxed)).collect();
    assert!(
        given.iter().all(|&n| n > 0),
        "every answer was given: {given:?}"
    );
    assert_eq!(count(&r, "started"), given.iter().sum::<u64>(), "{r}");
    assert_eq!(count(&r, "completed"), given[0] + given[4], "{r}");
    assert_eq!(
        r["failed"],
        json!({"DeadlineExceeded": given[1], "Unavailable": given[2]}),
        "{r}"
    );
    assert_eq!(count(&r, "lost"), given[3], "{r}");
    assert_eq!(count(&r, "duplicated"), given[4], "{r}");
}
