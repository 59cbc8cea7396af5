//! Hostile pickles and malformed checkpoints: a clear error naming the file and the
//! problem, never a panic, never code run; the loaders refuse them the same way.

use std::io::Write;
use std::path::{Path, PathBuf};

use autoj_judge::engine::checkpoint::pickle::parse;
use autoj_judge::engine::cpu::BatchModel;
use autoj_judge::testkit::layouts::{write_layout, Layout};
use autoj_judge::testkit::{torch_writer, TinySpec};
use candle_core::{DType, Device, Tensor};
use zip::write::SimpleFileOptions;

fn load_err(path: &Path) -> String {
    match BatchModel::load(path, None) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

/// A one-shard PyTorch model whose `pytorch_model.bin` is replaced by `bytes`.
fn model_with_bin(dir: &Path, bytes: &[u8]) -> PathBuf {
    let layout = Layout::PyTorch {
        shards: 1,
        dtype: DType::F32,
    };
    let path = write_layout(dir, "m", &TinySpec::default(), layout).unwrap();
    std::fs::write(path.join("pytorch_model.bin"), bytes).unwrap();
    path
}

/// A zip like torch's holding `pickle` as `archive/data.pkl` and `storage` as entry 0.
fn zip_with(pickle: &[u8], storage: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/data/0", opts).unwrap();
    zip.write_all(storage).unwrap();
    zip.finish().unwrap().into_inner()
}

/// `os.system("echo pwned")` as a pickle would call it.
const CALLS_OS_SYSTEM: &[u8] = b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwnedq\x00\x85R.";

#[test]
fn a_pickle_that_names_any_other_global_is_refused_by_name() {
    let err = parse(CALLS_OS_SYSTEM).unwrap_err().to_string();
    assert!(
        err.contains("os.system") && err.contains("refused"),
        "{err}"
    );
    // Through the loader: the file is named.
    let dir = tempfile::tempdir().unwrap();
    let path = model_with_bin(dir.path(), &zip_with(CALLS_OS_SYSTEM, &[]));
    let err = load_err(&path);
    assert!(
        err.contains("pytorch_model.bin") && err.contains("os.system"),
        "{err}"
    );
    // `builtins.eval` and friends are refused the same way, whatever the opcode.
    let stack_global = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
    assert!(parse(stack_global)
        .unwrap_err()
        .to_string()
        .contains("builtins.eval"));
}

#[test]
fn malformed_pickles_are_errors_not_panics() {
    let t = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    let good = torch_writer::pickle_of(&[("w".into(), t)]).unwrap();
    let records = parse(&good).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].1.shape, vec![2, 3]);
    // Every truncation of a good pickle is refused with a message.
    for n in 0..good.len() {
        let err = parse(&good[..n]).unwrap_err().to_string();
        assert!(!err.is_empty());
    }
    for (bytes, says) in [
        (&b"\x80\x02(K\x01K\x02."[..], "not a dict"),
        (b"\x80\x02h\x07.", "never stored"),
        (b"\x80\x02}X\xff\xff\xff\x7fabc", "ends in the middle"),
        (b"\x80\x02}\xff.", "opcode 0xff"),
        (b"\x80\x02}X\x01\x00\x00\x00aK\x01s.", "not a tensor"),
        (b"\x80\x02t.", "no MARK"),
    ] {
        let err = parse(bytes).unwrap_err().to_string();
        assert!(err.contains(says), "{bytes:?}: {err}");
    }
}

#[test]
fn a_memo_bomb_stops_at_the_value_budget() {
    // A list fetched from the memo and appended to itself, doubling each round.
    let mut p = b"\x80\x02]q\x00".to_vec();
    for _ in 0..64 {
        p.extend_from_slice(b"h\x00h\x00aq\x00");
    }
    p.push(b'.');
    let err = parse(&p).unwrap_err().to_string();
    assert!(err.contains("more values"), "{err}");
}

#[test]
fn tensors_that_reach_past_their_storage_or_disagree_with_it_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    let pickle = torch_writer::pickle_of(&[("model.embed_tokens.weight".into(), t)]).unwrap();
    // The pickle says 4 floats; the entry holds 3.
    let path = model_with_bin(dir.path(), &zip_with(&pickle, &[0u8; 12]));
    let err = load_err(&path);
    assert!(
        err.contains("pytorch_model.bin") && err.contains("holds 12 bytes"),
        "{err}"
    );
    // Not a zip at all (a legacy or truncated file).
    let path = model_with_bin(dir.path(), b"\x80\x02}.");
    let err = load_err(&path);
    assert!(err.contains("not a PyTorch zip checkpoint"), "{err}");
}

#[test]
fn a_sharded_index_must_name_shards_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::PyTorch {
        shards: 2,
        dtype: DType::F16,
    };
    let path = write_layout(dir.path(), "m", &TinySpec::default(), layout).unwrap();
    std::fs::remove_file(path.join("pytorch_model-00002-of-00002.bin")).unwrap();
    let err = load_err(&path);
    assert!(
        err.contains("pytorch_model-00002-of-00002.bin") && err.contains("missing"),
        "{err}"
    );
    // An index that points outside the directory.
    let idx = r#"{"weight_map": {"model.norm.weight": "../../etc/passwd"}}"#;
    std::fs::write(path.join("pytorch_model.bin.index.json"), idx).unwrap();
    let err = load_err(&path);
    assert!(err.contains("not a plain file name"), "{err}");
    // No weights at all.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(path.join("config.json"), empty.join("config.json")).unwrap();
    let err = load_err(&empty);
    assert!(
        err.contains("no weights") && err.contains("pytorch_model.bin"),
        "{err}"
    );
}
