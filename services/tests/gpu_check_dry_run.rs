//! `scripts/gpu-check --dry-run --gpu-memory-gib N` prints, with no GPU, the plan the GPU
//! check would run on a card of N GiB (slots, positions, batch sizes) and the line
//! `planned device memory: X GiB of N GiB`, X at most N and larger on the larger card; it
//! passes N on to the model steps it would run, and refuses a card too small.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// `python3 scripts/gpu-check --dry-run ARGS` against the binary under test, writing into
/// `out`; `None` (the test skips) where this machine has no python3.
fn gpu_check(args: &[&str], out: &Path) -> Option<Output> {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: no python3 to run scripts/gpu-check");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gpu-check");
    let mut cmd = Command::new("python3");
    for (name, _) in std::env::vars() {
        if name.starts_with("AUTOJ_GPU") || name == "AUTOJ_CARRY_DIR" || name == "OUT" {
            cmd.env_remove(name);
        }
    }
    cmd.arg(script)
        .args(["--dry-run", "--bin", env!("CARGO_BIN_EXE_autoj"), "--out"])
        .arg(out)
        .args(args);
    Some(cmd.output().unwrap())
}

/// The dry run's planned memory in GiB, checked against the line it must print, and its
/// report.
fn planned(gib: &str) -> Option<(f64, Value)> {
    let dir = tempfile::tempdir().unwrap();
    let out = gpu_check(&["--gpu-memory-gib", gib], dir.path())?;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("planned device memory: "))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let x: f64 = lines[0]
        .strip_prefix("planned device memory: ")
        .and_then(|r| r.strip_suffix(&format!(" GiB of {gib} GiB")))
        .unwrap_or_else(|| panic!("{}", lines[0]))
        .parse()
        .unwrap();
    // The sizes it would run: slots, positions and batch sizes of each model step.
    assert!(text.contains("decode: 65 slots x"), "{text}");
    assert!(text.contains("grpc: 64 clients on"), "{text}");
    assert!(text.contains("tokens a step"), "{text}");
    let report = std::fs::read_to_string(dir.path().join("gpu-check.json")).unwrap();
    Some((x, serde_json::from_str(&report).unwrap()))
}

#[test]
fn the_dry_run_plans_within_the_card_and_more_on_the_bigger_one() {
    let Some((small, report)) = planned("80") else {
        return;
    };
    let Some((big, _)) = planned("141") else {
        return;
    };
    assert!(small > 0.0 && small <= 80.0, "{small}");
    assert!(big > small && big <= 141.0, "{big} vs {small}");
    assert_eq!(report["memory_plan"]["planned_gib"], small);
    // The model steps it would run are told the same memory, so they run what it printed.
    for step in report["steps"].as_array().unwrap() {
        let argv: Vec<&str> = step["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let sized = ["decode", "grpc"].contains(&step["name"].as_str().unwrap());
        assert_eq!(argv.ends_with(&["--gpu-memory-gib", "80"]), sized, "{step}");
    }
}

#[test]
fn a_card_too_small_or_a_size_that_is_not_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(out) = gpu_check(&["--gpu-memory-gib", "16"], dir.path()) else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no plan fits 16 GiB"), "{text}");
    assert!(text.contains("too little"), "{text}");
    let out = gpu_check(&["--gpu-memory-gib", "0"], dir.path()).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a size in GiB"), "{err}");
}
