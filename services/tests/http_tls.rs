//! With `--tls-cert` and `--tls-key`, `autoj serve` serves its HTTP door over TLS with the
//! same certificate as its gRPC port: the door announces `https://`, a client that trusts
//! the CA judges through it (the API key still required), the OpenAI endpoint answers,
//! and a plaintext request gets no HTTP answer at all (no key ever crosses in clear);
//! `autoj load --transport http --tls-ca` completes streams through it, and one that
//! trusts another CA fails every stream as `Unavailable`.

mod common;
#[path = "common/http.rs"]
mod http;

#[path = "../../router/tests/common/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::process::Command;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, run};
use http::{curl, post, serve_door};

const KEY: &str = "tls-door-key";

#[test]
fn the_http_door_serves_tls_with_the_public_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let ca = pki::TestCa::new(dir.path(), "public");
    let cert = ca.issue("server", &["localhost"]);
    let tls = [
        "--no-classifier",
        "--tls-cert",
        cert.cert.to_str().unwrap(),
        "--tls-key",
        cert.key.to_str().unwrap(),
    ];
    let mut server = serve_door(&model, KEY, &tls);
    let addr = server.announced("http on https://");
    let port = addr
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let base = format!("https://localhost:{port}");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let ca_path = ca.cert_path();
    let trust = ["--cacert", ca_path.to_str().unwrap(), "--resolve", &resolve];

    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while curl(&format!("{base}/healthz"), &trust).status != 200 {
        assert!(std::time::Instant::now() < until, "/healthz over TLS");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // A judgment through the door, over TLS, with the key; without it, 401.
    let auth = format!("Authorization: Bearer {KEY}");
    let mut with_key = trust.to_vec();
    with_key.extend(["-H", auth.as_str()]);
    let body = serde_json::json!({
        "query": "Which is right?", "response_1": "Yes.", "response_2": "No.",
        "options": {"generation": {"max_new_tokens": 4}}
    })
    .to_string();
    let url = format!("{base}/v1/judge/compare");
    let judged = post(&url, &body, &with_key);
    assert_eq!(judged.status, 200, "{}", judged.body);
    assert_eq!(judged.json()["usages"].as_array().unwrap().len(), 1);
    let (code, _) = post(&url, &body, &trust).error(401);
    assert_eq!(code, "UNAUTHENTICATED");
    let models = curl(&format!("{base}/v1/models"), &with_key);
    assert_eq!(models.status, 200, "{}", models.body);
    assert_eq!(models.json()["object"], "list");

    // A client that does not trust the CA is refused by its own TLS check.
    let untrusted = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--resolve", &resolve])
        .arg(format!("{base}/healthz"))
        .output()
        .expect("run curl");
    assert!(!untrusted.status.success(), "an unknown CA is not trusted");

    // Plaintext on the TLS port: no HTTP answer, and the server goes on serving.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{port}/healthz"))
        .output()
        .expect("run curl");
    let status = String::from_utf8_lossy(&plain.stdout);
    assert!(
        !plain.status.success() || status.trim() == "000",
        "a plaintext request got an HTTP answer: {status}"
    );
    assert_eq!(curl(&format!("{base}/healthz"), &trust).status, 200);

    // The load tool through the TLS door: streams complete; trusting another CA, none
    // connects.
    let load = |ca: &std::path::Path| {
        let out = run(autoj().env_remove("AUTOJ_API_KEY").args([
            "load",
            "--transport",
            "http",
            "--addr",
            &base,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--api-key",
            KEY,
            "--streams",
            "2",
            "--duration",
            "1s",
            "--max-new-tokens",
            "4",
            "--json",
        ]));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        report
    };
    let r = load(ca_path);
    assert_eq!(r["transport"], "http", "{r}");
    assert!(r["completed"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert!(r["failed"].as_object().unwrap().is_empty(), "{r}");
    let other = pki::TestCa::new(dir.path(), "other");
    let r = load(other.cert_path());
    assert_eq!(r["completed"], 0, "{r}");
    assert!(r["failed"]["Unavailable"].as_u64().unwrap() >= 1, "{r}");
}
