//! `autoj verdict` reads a judgment on stdin and prints the parsed verdict as JSON.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::autoj;
use serde_json::Value;

fn verdict(protocol: &str, text: &str) -> Value {
    let mut child = autoj()
        .args(["verdict", "--protocol", protocol])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn pairwise_and_single_verdicts() {
    let v = verdict(
        "pairwise",
        "1. The key factors to distinguish these two responses:\n\n- accuracy: Response 2 is wrong.\n\n2. The final decision:\n\nSo, the final decision is Response 1. It is correct.",
    );
    assert_eq!(v["winner"], "response_1");
    assert_eq!(v["protocol"], "pairwise");

    assert_eq!(
        verdict("pairwise", "所以，最终决定是平局。")["winner"],
        "tie"
    );
    assert_eq!(
        verdict("pairwise", "no decision here")["winner"],
        Value::Null
    );

    let v = verdict(
        "single",
        "Good answer.\n\nRating: [[3]] ... on reflection, Rating: [[7]]",
    );
    assert_eq!(v["rating"], 7.0);
    assert_eq!(verdict("single", "评分: [[6]]")["rating"], 6.0);
    assert_eq!(
        verdict("single", "Rating: [[rating]]")["rating"],
        Value::Null
    );
}
