//! `autoj load` on a tiny model: every stream is accounted for (none lost, no event
//! duplicated), also when a judge replica is killed mid-run; non-loopback targets are
//! refused.

mod common;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, run, Server};
use serde_json::Value;

/// The JSON report of a finished `autoj load --json` run.
fn report(out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Checks the accounting identities of a report and returns its failures by code.
fn accounted(r: &Value) -> serde_json::Map<String, Value> {
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicated"], 0, "{r}");
    let failed = r["failed"].as_object().unwrap().clone();
    let failed_total: u64 = failed.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(
        r["started"].as_u64().unwrap(),
        r["completed"].as_u64().unwrap() + failed_total,
        "every started stream completed or failed: {r}"
    );
    failed
}

#[test]
fn load_accounts_for_every_stream() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let server = Server::start(&model, &["--no-classifier"]);
    let out = run(autoj().args([
        "load",
        "--addr",
        &server.addr,
        "--streams",
        "6",
        "--duration",
        "3s",
        "--max-new-tokens",
        "8",
        "--json",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    let failed = accounted(&r);
    assert!(failed.is_empty(), "a healthy server fails nothing: {r}");
    assert!(r["completed"].as_u64().unwrap() >= 6, "{r}");
}

#[test]
fn killing_a_replica_loses_no_stream() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let out = run(autoj().args([
        "load",
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    let failed = accounted(&r);
    assert!(
        r["fault"].as_str().unwrap().contains("killed replica-a"),
        "{r}"
    );
    assert!(r["completed"].as_u64().unwrap() > 0, "{r}");
    for code in failed.keys() {
        assert_eq!(
            code, "Unavailable",
            "only streams on the killed replica fail: {r}"
        );
    }
}

#[test]
fn refuses_addresses_off_this_machine() {
    let out = run(autoj().args(["load", "--addr", "http://10.11.12.13:50051"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
    let out = run(autoj().args(["load", "--streams", "5000"]));
    assert!(!out.status.success(), "the stream count is bounded");
}
