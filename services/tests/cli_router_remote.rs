//! The deployable split: `autoj judge` as a separate process, `autoj router --config` in
//! front of it, and a client talking to the router. The judge's stream comes back through
//! the router with the scenario stamped into `Accepted` and the judge's replica name.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, run};
use serde_json::Value;

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `autoj ARGS`, waits for `listening on ADDR`, returns the process and its URL.
fn spawn(args: &[&str]) -> (Proc, String) {
    let mut child = autoj()
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("listening on ") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("process listens within 120 s");
    (Proc(child), format!("http://{addr}"))
}

#[test]
fn router_relays_a_remote_judge() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let (_judge, judge_addr) = spawn(&[
        "judge",
        "--listen",
        "127.0.0.1:0",
        "--replica",
        "judge-a",
        "--model",
        model.to_str().unwrap(),
    ]);
    let config = dir.path().join("router.toml");
    std::fs::write(
        &config,
        format!(
            "[classifier]\nenabled = false\n[routing]\ndefault_pool = \"general\"\n[[routing.pool]]\nname = \"general\"\nendpoints = [\"{judge_addr}\"]\n"
        ),
    )
    .unwrap();
    let (_router, router_addr) = spawn(&[
        "router",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);

    let out = run(autoj().args([
        "compare",
        "--addr",
        &router_addr,
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
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "accepted");
    assert_eq!(events[0]["scenario"], "code_generation");
    assert_eq!(
        events[0]["replica"], "judge-a",
        "the judge process served it"
    );
    assert_eq!(events.last().unwrap()["type"], "usage");
    assert_eq!(events.last().unwrap()["completion_tokens"], 8);

    // An unknown scenario is the client's mistake, refused by the router.
    let out = run(autoj().args([
        "critique",
        "--addr",
        &router_addr,
        "--query",
        "q",
        "--response",
        "r",
        "--scenario",
        "no_such_scenario",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("no_such_scenario"),
        "{err}"
    );
}
