//! Calling the HTTP door of a running `autoj` with Debian's `curl`, and reading its answers
//! (JSON documents and Server-Sent Events).
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::{autoj, Server};

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The body as JSON (fails the test when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The error body's `(code, message)`, after checking the status is `status`.
    pub fn error(&self, status: u16) -> (String, String) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(
            self.content_type.starts_with("application/json"),
            "{self:?}"
        );
        let json = self.json();
        let code = json["error"]["code"]
            .as_str()
            .expect("error.code")
            .to_owned();
        let message = json["error"]["message"]
            .as_str()
            .expect("error.message")
            .to_owned();
        (code, message)
    }

    /// The Server-Sent Events of the body, as (event name, data as JSON).
    pub fn events(&self) -> Vec<(String, Value)> {
        assert!(
            self.content_type.starts_with("text/event-stream"),
            "{self:?}"
        );
        self.body
            .split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .filter_map(|block| {
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                let data = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {block}"));
                name.map(|n| (n, data))
            })
            .collect()
    }
}

/// The HTTP door's base address of `server` (`http://127.0.0.1:PORT`), from its
/// `http on http://ADDR/` line.
pub fn base(server: &mut Server) -> String {
    let addr = server.announced("http on http://");
    format!("http://{}", addr.trim_end_matches('/'))
}

/// Runs `curl ARGS URL` (120 s at most) and returns its answer.
pub fn curl(url: &str, args: &[&str]) -> Answer {
    curl_with_input(url, args, "")
}

/// [`curl`] with `input` on its standard input (for `--data-binary @-`).
fn curl_with_input(url: &str, args: &[&str], input: &str) -> Answer {
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "120", "-o", "-"])
        .args(["-w", "\n%{http_code} %{content_type}"])
        .args(args)
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl (Debian's curl package)");
    let mut stdin = child.stdin.take().expect("curl's stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("curl ran");
    // curl may stop reading a body the server refused early: a broken pipe is expected then.
    let _ = writer.join();
    assert!(
        out.status.success(),
        "curl {args:?} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("a UTF-8 answer");
    let (body, last) = text.rsplit_once('\n').expect("curl's -w line");
    let (status, content_type) = last.split_once(' ').unwrap_or((last, ""));
    Answer {
        status: status.parse().expect("an HTTP status"),
        content_type: content_type.to_owned(),
        body: body.to_owned(),
    }
}

/// `POST`s the JSON `body` to `url` with `args` (headers and so on) added.
pub fn post(url: &str, body: &str, args: &[&str]) -> Answer {
    let mut all = vec!["-X", "POST", "-H", "Content-Type: application/json"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--data-binary", "@-"]);
    curl_with_input(url, &all, body)
}

/// Waits (bounded) until `GET /healthz` answers 200.
pub fn wait_healthy(base: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if curl(&format!("{base}/healthz"), &[]).status == 200 {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "/healthz answered 200 within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `autoj serve` of the tiny model at `model` on loopback with its HTTP door, accepting the
/// API key `key`, with `extra` arguments (a router config, TLS files, ...).
pub fn serve_door(model: &std::path::Path, key: &str, extra: &[&str]) -> Server {
    let mut cmd = autoj();
    cmd.env("AUTOJ_API_KEYS", key);
    let model = model.to_str().expect("a UTF-8 path");
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--model",
        model,
    ];
    args.extend_from_slice(extra);
    Server::spawn_with(cmd, &args)
}
