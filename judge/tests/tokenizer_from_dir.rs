//! `TextTokenizer::from_dir`: which file a Hugging Face directory's tokenizer comes from
//! (`tokenizer.json` first, else `tokenizer.model`, else a clear error), BOS as
//! `tokenizer_config.json` says, and `added_tokens.json` (as GAIR/autoj-13b ships: tokens
//! past the SentencePiece pieces) registered at exactly its ids or refused with a reason.
//! Each directory is written here, the `tokenizer.model` with the crate's own prost messages.

use std::path::Path;

use autoj_judge::engine::sentencepiece::{
    piece_type, ModelProto, NormalizerSpec, Piece, TrainerSpec,
};
use autoj_judge::engine::tokenizer::TextTokenizer;
use autoj_judge::error::JudgeError;
use prost::Message;

/// Pieces after `<unk>` `<s>` `</s>` and the 256 byte pieces.
const PIECES: &[(&str, f32)] = &[
    ("▁Hello", -1.0),
    ("Hello", -2.0),
    ("llo", -3.0),
    ("He", -4.0),
    ("ll", -5.0),
    ("▁", -10.0),
    ("H", -10.0),
    ("e", -10.0),
    ("l", -10.0),
    ("o", -10.0),
];

/// Ids of the vocabulary: the pieces above follow 3 specials and 256 bytes.
const N_PIECES: u32 = 3 + 256 + PIECES.len() as u32;

fn id(piece: &str) -> u32 {
    3 + 256 + PIECES.iter().position(|(p, _)| *p == piece).unwrap() as u32
}

/// A LLaMA-style `tokenizer.model` (BPE, byte fallback), with or without a dummy prefix.
fn model_bytes(add_dummy_prefix: bool) -> Vec<u8> {
    let piece = |text: &str, score: f32, kind: i32| Piece {
        piece: Some(text.into()),
        score: Some(score),
        r#type: Some(kind),
    };
    let mut pieces = vec![
        piece("<unk>", 0.0, piece_type::UNKNOWN),
        piece("<s>", 0.0, piece_type::CONTROL),
        piece("</s>", 0.0, piece_type::CONTROL),
    ];
    pieces.extend((0..=255u8).map(|b| piece(&format!("<0x{b:02X}>"), 0.0, piece_type::BYTE)));
    pieces.extend(PIECES.iter().map(|(t, s)| piece(t, *s, piece_type::NORMAL)));
    ModelProto {
        pieces,
        trainer_spec: Some(TrainerSpec {
            model_type: Some(2),
            byte_fallback: Some(true),
            ..Default::default()
        }),
        normalizer_spec: Some(NormalizerSpec {
            name: Some("identity".into()),
            add_dummy_prefix: Some(add_dummy_prefix),
            remove_extra_whitespaces: Some(false),
            ..Default::default()
        }),
    }
    .encode_to_vec()
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), contents).unwrap();
}

/// A directory with LLaMA's `tokenizer.model` and the given extra files.
fn llama_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tokenizer.model", model_bytes(true));
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    dir
}

fn load_err(dir: &Path) -> String {
    TextTokenizer::from_dir(dir, &[2]).unwrap_err().to_string()
}

#[test]
fn tokenizer_model_alone_is_llamas_tokenizer_with_bos() {
    let dir = llama_dir(&[]);
    let tok = TextTokenizer::from_dir(dir.path(), &[2]).unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![1, id("▁Hello")]);
    assert_eq!(tok.encode("Hello", false).unwrap(), vec![id("▁Hello")]);
    // Control text is the control token, as in transformers' LLaMA tokenizer.json.
    assert_eq!(
        tok.encode("Hello</s>", false).unwrap(),
        vec![id("▁Hello"), 2]
    );
    assert_eq!(tok.decode(&[1, id("▁Hello"), 2]).unwrap(), "Hello");
    assert_eq!((tok.bos_id(), tok.eos_ids()), (Some(1), &[2][..]));
    assert_eq!(tok.vocab_size(), N_PIECES as usize);

    // Saved as tokenizer.json, it loads back with the same ids and the same BOS.
    let saved = tempfile::tempdir().unwrap();
    tok.save(&saved.path().join("tokenizer.json")).unwrap();
    let back = TextTokenizer::from_dir(saved.path(), &[2]).unwrap();
    for text in ["Hello", " Hello  Hello", "Héllo\n"] {
        assert_eq!(
            back.encode(text, true).unwrap(),
            tok.encode(text, true).unwrap()
        );
    }
}

#[test]
fn tokenizer_config_can_turn_bos_off() {
    let dir = llama_dir(&[("tokenizer_config.json", r#"{"add_bos_token": false}"#)]);
    let tok = TextTokenizer::from_dir(dir.path(), &[2]).unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![id("▁Hello")]);
    // A config without the key keeps LLaMA's default.
    let dir = llama_dir(&[("tokenizer_config.json", r#"{"legacy": true}"#)]);
    let tok = TextTokenizer::from_dir(dir.path(), &[2]).unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap()[0], 1);
}

#[test]
fn yi_style_model_puts_no_space_first() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tokenizer.model", model_bytes(false));
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"add_bos_token": false}"#,
    );
    let tok = TextTokenizer::from_dir(dir.path(), &[]).unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![id("Hello")]);
    assert_eq!(tok.encode(" Hello", true).unwrap(), vec![id("▁Hello")]);
    assert_eq!(tok.decode(&[id("▁Hello")]).unwrap(), " Hello");
    assert_eq!(tok.eos_ids(), &[2], "the model's own EOS");
}

#[test]
fn tokenizer_json_wins_over_tokenizer_model() {
    let dir = llama_dir(&[]);
    TextTokenizer::from_dir(dir.path(), &[2])
        .unwrap()
        .save(&dir.path().join("tokenizer.json"))
        .unwrap();
    // A broken tokenizer.model is never read while tokenizer.json is there.
    write(dir.path(), "tokenizer.model", b"\xff\xff not a model");
    let tok = TextTokenizer::from_dir(dir.path(), &[2]).unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![1, id("▁Hello")]);
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("tokenizer.model") && err.contains("not a SentencePiece model"),
        "{err}"
    );
}

#[test]
fn a_directory_without_a_tokenizer_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let err = TextTokenizer::from_dir(dir.path(), &[]).unwrap_err();
    assert!(matches!(err, JudgeError::ModelLoad { .. }), "{err}");
    let msg = err.to_string();
    for part in [
        "tokenizer.json",
        "tokenizer.model",
        &dir.path().display().to_string(),
    ] {
        assert!(msg.contains(part), "{msg} lacks {part}");
    }
}

#[test]
fn added_tokens_get_exactly_their_ids() {
    let added = format!(r#"{{"<pad>": {N_PIECES}, "[SEP]": {}}}"#, N_PIECES + 1);
    let map = r#"{"pad_token": {"content": "<pad>", "lstrip": false}, "bos_token": "<s>"}"#;
    let dir = llama_dir(&[
        ("added_tokens.json", &added),
        ("special_tokens_map.json", map),
    ]);
    let tok = TextTokenizer::from_dir(dir.path(), &[2]).unwrap();
    assert_eq!(tok.vocab_size(), N_PIECES as usize + 2);
    assert_eq!(tok.id_to_token(N_PIECES).as_deref(), Some("<pad>"));
    let ids = tok.encode("Hello<pad>Hello[SEP]", false).unwrap();
    let want = vec![id("▁Hello"), N_PIECES, id("▁Hello"), N_PIECES + 1];
    assert_eq!(ids, want);
    // `<pad>` is special (named in special_tokens_map.json) and dropped from decoded text;
    // `[SEP]` is an ordinary added token and stays.
    assert_eq!(tok.decode(&ids).unwrap(), "Hello Hello[SEP]");

    // Entries the tokenizer already has at those ids are fine.
    let dir = llama_dir(&[("added_tokens.json", r#"{"</s>": 2, "<unk>": 0}"#)]);
    let tok = TextTokenizer::from_dir(dir.path(), &[2]).unwrap();
    assert_eq!(tok.vocab_size(), N_PIECES as usize);
}

#[test]
fn added_tokens_at_other_ids_are_refused_with_the_reason() {
    let cases = [
        (
            format!(r#"{{"<pad>": {}}}"#, N_PIECES + 1),
            format!("id {}, but the next free id is {N_PIECES}", N_PIECES + 1),
        ),
        (
            r#"{"</s>": 7}"#.to_string(),
            "gives `</s>` id 7, but the tokenizer already has it as id 2".to_string(),
        ),
        (
            r#"{"<pad>": "x"}"#.to_string(),
            "the id of `<pad>` is not a token id".to_string(),
        ),
        (
            r#"["<pad>"]"#.to_string(),
            "expected a JSON object".to_string(),
        ),
        ("{".to_string(), "not valid JSON".to_string()),
    ];
    for (json, want) in cases {
        let dir = llama_dir(&[("added_tokens.json", &json)]);
        let err = load_err(dir.path());
        assert!(err.contains(&want), "{json}: {err}");
        assert!(err.contains("added_tokens.json"), "{err}");
    }
}

/// The committed checkpoint fixtures (`tests/fixtures/checkpoints/`, written by transformers
/// and sentencepiece; see its README) and their reference ids.
fn fixtures() -> (std::path::PathBuf, serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints");
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    (dir, serde_json::from_str(&text).unwrap())
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn bilingual_fixtures_tokenizer_model_gives_transformers_and_sentencepieces_ids() {
    let (fixtures, reference) = fixtures();
    let layout = fixtures.join("autoj-bilingual-layout");
    // tokenizer.model alone (with its configs): the directory's tokenizer.json is left out.
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(layout.join(f), dir.path().join(f)).unwrap();
    }
    let from_model = TextTokenizer::from_dir(dir.path(), &[2]).unwrap();
    let from_json = TextTokenizer::from_dir(&layout, &[2]).unwrap();
    let model = &reference["models"]["autoj-bilingual-layout"];
    assert_eq!(from_model.vocab_size(), 512);
    let texts = model["texts"].as_array().unwrap();
    for case in texts {
        let text = case["text"].as_str().unwrap();
        // add_bos_token is false: `ids` (special tokens as transformers adds them) has none.
        assert_eq!(
            from_model.encode(text, true).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
        let plain = from_model.encode(text, false).unwrap();
        assert_eq!(plain, ids(&case["sentencepiece_ids"]), "{text:?}");
        assert_eq!(plain, from_json.encode(text, false).unwrap(), "{text:?}");
        assert_eq!(from_model.decode(&plain).unwrap(), text);
    }
    for name in ["pairwise_en", "single_zh"] {
        let prompt = reference["prompts"][name].as_str().unwrap();
        let want = ids(&model["prompts"][name]["ids"]);
        assert_eq!(from_model.encode(prompt, true).unwrap(), want, "{name}");
    }
    assert!(texts.len() >= 4);
}

#[test]
fn autoj_13b_fixtures_added_pad_token_is_already_in_its_tokenizer_json() {
    let (fixtures, reference) = fixtures();
    let tok = TextTokenizer::from_dir(&fixtures.join("autoj-13b-layout"), &[2]).unwrap();
    let model = &reference["models"]["autoj-13b-layout"];
    assert_eq!(
        tok.vocab_size() as u64,
        model["tokenizer_len"].as_u64().unwrap()
    );
    assert_eq!(tok.id_to_token(416).as_deref(), Some("<pad>"));
    for case in model["texts"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
    }
}
