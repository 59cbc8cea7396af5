//! The deployable split: `autoj judge` as a separate process, `autoj router --config` in
//! front of it, and a client talking to the router. The judge's stream comes back through
//! the router with the scenario stamped into `Accepted` and the judge's replica name.

mod common;

use autoj_judge::testkit::{write_gguf, TinySpec};
use common::{autoj, compare_json, run, Server};

#[test]
fn router_relays_a_remote_judge() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let judge = Server::spawn(&[
        "judge",
        "--listen",
        "127.0.0.1:0",
        "--replica",
        "judge-a",
        "--model",
        model.to_str().unwrap(),
    ]);
    let router = Server::router_for(dir.path(), &judge.addr);

    let events = compare_json(&router.addr);
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
        &router.addr,
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
