//! `autoj serve` with API keys (from a file and the environment) and TLS on its port:
//! `autoj compare --api-key --tls-ca` gets its verdict; without a key, or with a wrong
//! one, the call is UNAUTHENTICATED.

mod common;

#[path = "../../router/tests/common/pki.rs"]
#[allow(dead_code)]
mod pki;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, json_lines, run, Server};

#[test]
fn keys_and_tls_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let ca = pki::TestCa::new(dir.path(), "public");
    let cert = ca.issue("server", &["localhost"]);
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "# operators\nfile-key\n\n").unwrap();
    let mut cmd = autoj();
    cmd.env("AUTOJ_API_KEYS", "env-key-1,env-key-2");
    let server = Server::spawn_with(
        cmd,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--model",
            model.to_str().unwrap(),
            "--no-classifier",
            "--api-keys-file",
            keys.to_str().unwrap(),
            "--tls-cert",
            cert.cert.to_str().unwrap(),
            "--tls-key",
            cert.key.to_str().unwrap(),
        ],
    );
    let compare = |extra: &[&str]| {
        let mut args = vec![
            "compare",
            "--addr",
            &server.addr,
            "--tls-ca",
            ca.cert_path().to_str().unwrap(),
            "--tls-domain",
            "localhost",
            "--query",
            "Which is right?",
            "--response-1",
            "Yes.",
            "--response-2",
            "No.",
            "--max-new-tokens",
            "4",
            "--json",
        ];
        args.extend_from_slice(extra);
        run(autoj().env_remove("AUTOJ_API_KEY").args(&args))
    };
    for key in ["file-key", "env-key-2"] {
        let events = json_lines(&compare(&["--api-key", key]));
        assert_eq!(events.last().unwrap()["type"], "usage", "{key}");
    }
    for extra in [&[][..], &["--api-key", "nope"][..]] {
        let out = compare(extra);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Unauthenticated"), "{err}");
        assert!(!err.contains("key-"), "no detail: {err}");
    }
}
