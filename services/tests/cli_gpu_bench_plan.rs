//! `autoj gpu-bench plan --gpu-memory-gib N` sizes the GPU check's model steps to a card of
//! N GiB without opening a device: never more than the card, more on a 141 GiB card than on
//! an 80 GiB one, and a clear refusal of a card too small or a size that is not one.

mod common;

use std::process::Output;

use common::autoj;
use serde_json::{json, Value};

/// `autoj gpu-bench plan ARGS`, away from any carried tokenizer and `AUTOJ_GPU_*` setting.
fn plan(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = autoj();
    for (name, _) in std::env::vars() {
        if name.starts_with("AUTOJ_GPU_") || name == "AUTOJ_CARRY_DIR" {
            cmd.env_remove(name);
        }
    }
    cmd.args(["gpu-bench", "plan"])
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap()
}

/// The JSON plan for a card of `gib` GiB.
fn plan_json(gib: &str) -> Value {
    let out = plan(&["--gpu-memory-gib", gib, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// `GiB` of a plan's byte count.
fn gib(v: &Value) -> f64 {
    v.as_u64().unwrap() as f64 / (1u64 << 30) as f64
}

#[test]
fn the_plan_fits_the_card_and_grows_with_it() {
    let (small, big) = (plan_json("80"), plan_json("141"));
    for (p, card) in [(&small, 80.0), (&big, 141.0)] {
        assert_eq!(p["shape"], "llama2-13b");
        assert!(p["planned_gib"].as_f64().unwrap() <= card, "{p}");
        for step in ["decode", "grpc"] {
            let s = &p[step];
            assert!(gib(&s["planned_bytes"]) <= card * 0.95, "{step}: {s}");
            // 40 layers of keys and values, 5120 wide, in bf16.
            assert_eq!(s["kv_bytes_per_position"], 40 * 2 * 5120 * 2);
            let kv = s["slots"].as_u64().unwrap() * s["slot_len"].as_u64().unwrap() * 819_200;
            assert_eq!(s["kv_store_bytes"], kv);
        }
    }
    assert!(big["planned_bytes"].as_u64() > small["planned_bytes"].as_u64());
    // The big card holds what gpu-check asks for.
    assert_eq!(big["grpc"]["slots"], 64);
    assert_eq!(big["grpc"]["slot_len"], 1000 + 400 + 288);
    assert_eq!(big["decode"]["contexts"], 1000);
    assert_eq!(big["decode"]["concurrency"], json!([8, 32, 64]));
    // The 80 GiB card does not: gRPC keeps its lengths on fewer slots (the other clients
    // wait), decode keeps its 64 sequences on shorter contexts.
    assert_eq!(small["grpc"]["slot_len"], 1688);
    assert_eq!(small["grpc"]["clients"], 64);
    assert!(small["grpc"]["slots"].as_u64().unwrap() < 64);
    assert_eq!(small["decode"]["concurrency"], json!([8, 32, 64]));
    assert!(small["decode"]["contexts"].as_u64().unwrap() < 1000);
    assert_eq!(small["decode"]["shrunk"], true);
}

#[test]
fn the_text_names_the_sizes_and_ends_with_the_planned_memory() {
    let out = plan(&["--gpu-memory-gib", "80"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("decode: 65 slots x")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.contains("grpc: 64 clients on")),
        "{text}"
    );
    let last = lines.last().unwrap();
    let planned: f64 = last
        .strip_prefix("planned device memory: ")
        .and_then(|r| r.strip_suffix(" GiB of 80 GiB"))
        .unwrap_or_else(|| panic!("last line: {last}"))
        .parse()
        .unwrap();
    assert!(planned > 60.0 && planned <= 80.0, "{last}");
}

#[test]
fn a_card_too_small_or_a_size_that_is_not_one_is_refused() {
    let out = plan(&["--gpu-memory-gib", "16"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("16.0 GiB of device memory is too little"),
        "{err}"
    );
    assert!(err.contains("need a card of at least"), "{err}");
    for bad in ["0", "-3", "eighty", "inf"] {
        let out = plan(&[&format!("--gpu-memory-gib={bad}")]);
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--gpu-memory-gib"), "{bad}: {err}");
        assert!(err.contains("not a size in GiB"), "{bad}: {err}");
    }
}
