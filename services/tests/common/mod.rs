//! Running the real `autoj` binary in tests: server child processes killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The binary under test.
pub fn autoj() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autoj"))
}

/// A running `autoj` server process, killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// Lines it printed before its address, then the rest as they come.
    early: Vec<String>,
    lines: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The server's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded by `limit`) for the process to exit by itself and returns its status;
    /// `None` if it is still running then.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `autoj serve --listen 127.0.0.1:0 --model MODEL EXTRA...`.
    pub fn start(model: &Path, extra: &[&str]) -> Self {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--model",
            model.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    /// Starts `autoj ARGS` and waits (bounded) for its `listening on ADDR` line.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with(autoj(), args)
    }

    /// Like [`Server::spawn`], from a prepared `autoj` command (environment set).
    pub fn spawn_with(mut cmd: Command, args: &[&str]) -> Self {
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn autoj");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut early = Vec::new();
        let addr = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(120))
                .expect("server printed its address within 120 s");
            match line.strip_prefix("listening on ") {
                Some(addr) => break addr.to_string(),
                None => early.push(line),
            }
        };
        Self {
            child,
            addr: format!("http://{addr}"),
            early,
            lines,
        }
    }

    /// The rest of the first line the server printed that starts with `prefix` (such as
    /// `metrics on `), waiting up to 120 s for it.
    pub fn announced(&mut self, prefix: &str) -> String {
        if let Some(rest) = self.early.iter().find_map(|l| l.strip_prefix(prefix)) {
            return rest.to_owned();
        }
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("server printed `{prefix}...` within 120 s"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// `autoj router` in front of the one judge at `judge_addr` (no classifier), its
    /// configuration written in `dir`.
    pub fn router_for(dir: &Path, judge_addr: &str) -> Self {
        let config = dir.join("router.toml");
        std::fs::write(
            &config,
            format!(
                "[classifier]\nenabled = false\n[routing]\ndefault_pool = \"general\"\n[[routing.pool]]\nname = \"general\"\nendpoints = [\"{judge_addr}\"]\n"
            ),
        )
        .unwrap();
        Self::spawn(&[
            "router",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
    }
}

/// A short pairwise judgment (`code_generation`, 8 new tokens) through `autoj compare
/// --json` against `addr`; its events.
pub fn compare_json(addr: &str) -> Vec<Value> {
    json_lines(&run(autoj().args([
        "compare",
        "--addr",
        addr,
        "--query",
        "Sort a list in Rust",
        "--response-1",
        "v.sort()",
        "--response-2",
        "use a loop",
        "--scenario",
        "code_generation",
        "--max-new-tokens",
        "8",
        "--json",
    ])))
}

/// Runs a command to completion and returns its output, failing on spawn errors.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run command")
}

/// The JSON objects a `--json` client command printed, one per line; fails the test with
/// the command's stderr when it did not succeed.
pub fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// Auto-J's label (0: response 1, 1: response 2, 2: tie) of an `eval` row's `winner`.
pub fn label_of(winner: &Value) -> Option<u64> {
    match winner.as_str() {
        Some("response_1") => Some(0),
        Some("response_2") => Some(1),
        Some("tie") => Some(2),
        _ => None,
    }
}

/// Starts `autoj serve` (no classifier, no trace export) on `model` with metrics on a free
/// port and `extra` arguments; the server and its metrics address (`host:port`).
pub fn serve_with_metrics(model: &Path, extra: &[&str]) -> (Server, String) {
    let mut cmd = autoj();
    cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--no-classifier",
        "--model",
        model.to_str().expect("a UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    let mut server = Server::spawn_with(cmd, &args);
    let metrics = server
        .announced("metrics on http://")
        .trim_end_matches("/metrics")
        .to_owned();
    (server, metrics)
}
