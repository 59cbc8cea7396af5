//! The production classifier: the project's ONNX scenario model run by ONNX Runtime through
//! `ort`, with the `tokenizers` tokenizer exported beside it.
//!
//! ONNX Runtime is loaded at run time from a shared library (`ort`'s `load-dynamic`), taken
//! from the PyPI wheel by `router/fetch-onnxruntime.sh`, so the build needs no native
//! download. Model contract (see `router/classifier/train.py`): inputs `input_ids` and
//! `attention_mask`, int64 `[1, seq]`; output `probabilities`, float32 `[1, labels]`,
//! softmax applied; `labels.json` maps each index to a scenario and gives the max length.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use crate::classifier::{top_k_of, Classifier, Prediction};
use crate::error::RouterError;

/// The model file inside the classifier directory.
pub const MODEL_FILE: &str = "scenario_classifier.onnx";
/// The tokenizer file inside the classifier directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The label file inside the classifier directory.
pub const LABELS_FILE: &str = "labels.json";

/// `labels.json` (only the fields the router needs; the file documents more).
#[derive(Debug, Deserialize)]
struct LabelsFile {
    /// One entry per output index.
    labels: Vec<LabelEntry>,
    /// Tokens per query, [CLS] and [SEP] included; longer queries are truncated.
    max_length: usize,
    /// The group confidence threshold picked with the model (absent in older label files).
    #[serde(default)]
    recommended_min_confidence: Option<f32>,
}

/// One label of `labels.json`.
#[derive(Debug, Deserialize)]
struct LabelEntry {
    /// Output index.
    index: usize,
    /// Scenario name.
    name: String,
    /// Scenario group, null outside the groups.
    group: Option<String>,
}

/// ONNX Runtime allows one environment per process (`ort` refuses a second even after the
/// first is dropped), so it is created once, from the first library path, and shared.
static ORT_ENV: Mutex<Option<Environment>> = Mutex::new(None);

/// Loads ONNX Runtime from `dylib` (once per process) and returns the shared environment.
fn environment(dylib: &Path) -> Result<Environment, RouterError> {
    let mut env = ORT_ENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = env.as_ref() {
        return Ok(env.clone());
    }
    if !dylib.is_file() {
        return Err(RouterError::OrtLibraryMissing {
            path: dylib.to_path_buf(),
        });
    }
    let load_err = |message: String| RouterError::OrtLoad {
        path: dylib.to_path_buf(),
        message,
    };
    let built = ort::init_from(dylib)
        .map_err(|e| load_err(e.to_string()))?
        .with_name("autoj-router")
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    *env = Some(built.clone());
    Ok(built)
}

/// The ONNX scenario classifier; owned by the classifier worker thread.
pub struct OnnxClassifier {
    /// The ONNX Runtime session (needs `&mut` to run).
    session: Session,
    /// The WordPiece tokenizer exported with the model, truncating to `max_length`.
    tokenizer: Tokenizer,
    /// Output index -> (scenario, group).
    labels: Vec<(String, Option<String>)>,
    /// `labels.json`'s `recommended_min_confidence`, the router's default threshold.
    recommended_min_confidence: Option<f32>,
}

impl std::fmt::Debug for OnnxClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxClassifier")
            .field("labels", &self.labels.len())
            .finish()
    }
}

impl OnnxClassifier {
    /// Loads the model, tokenizer and labels from `model_dir`, running ONNX Runtime from the
    /// shared library at `ort_dylib`. Fails with a message naming the missing file.
    pub fn load(model_dir: &Path, ort_dylib: &Path) -> Result<Self, RouterError> {
        let labels_path = model_dir.join(LABELS_FILE);
        let text = std::fs::read_to_string(&labels_path).map_err(|source| RouterError::Io {
            path: labels_path.clone(),
            source,
        })?;
        let file: LabelsFile = serde_json::from_str(&text).map_err(|source| RouterError::Json {
            path: labels_path.clone(),
            source,
        })?;
        let labels_err = |reason: String| RouterError::ClassifierLabels {
            path: labels_path.clone(),
            reason,
        };
        let recommended_min_confidence = file.recommended_min_confidence;
        let mut slots = vec![None; file.labels.len()];
        for entry in file.labels {
            let slot = slots
                .get_mut(entry.index)
                .ok_or_else(|| labels_err(format!("label index {} out of range", entry.index)))?;
            *slot = Some((entry.name, entry.group));
        }
        let labels = slots
            .into_iter()
            .enumerate()
            .map(|(i, slot)| slot.ok_or_else(|| labels_err(format!("no label for index {i}"))))
            .collect::<Result<Vec<_>, _>>()?;

        let tokenizer = load_tokenizer(&model_dir.join(TOKENIZER_FILE), file.max_length)?;
        let model_path = model_dir.join(MODEL_FILE);
        if !model_path.is_file() {
            return Err(RouterError::Io {
                path: model_path,
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let env = environment(ort_dylib)?;
        let ort_err = |e: ort::Error| RouterError::Ort(e.to_string());
        let builder_err = |e: ort::Error<_>| ort_err(e.into());
        // One intra-op thread: queries run one at a time on the worker thread, and the
        // router shares its cores with the reactor.
        let session = Session::builder(&env)
            .map_err(ort_err)?
            .with_intra_threads(1)
            .map_err(builder_err)?
            .with_inter_threads(1)
            .map_err(builder_err)?
            .commit_from_file(&model_path)
            .map_err(ort_err)?;
        Ok(Self {
            session,
            tokenizer,
            labels,
            recommended_min_confidence,
        })
    }

    /// Where the ONNX Runtime library is looked for when nothing names it: `ORT_DYLIB_PATH`,
    /// else the file `router/fetch-onnxruntime.sh` installs.
    pub fn default_dylib() -> PathBuf {
        match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from("models/onnxruntime/libonnxruntime.so"),
        }
    }
}

/// Loads the tokenizer, truncating to `max_length` tokens and never padding.
fn load_tokenizer(path: &Path, max_length: usize) -> Result<Tokenizer, RouterError> {
    let err = |e: tokenizers::Error| RouterError::Tokenizer(format!("{}: {e}", path.display()));
    let mut tokenizer = Tokenizer::from_file(path).map_err(err)?;
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length,
            ..Default::default()
        }))
        .map_err(err)?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

impl Classifier for OnnxClassifier {
    fn labels(&self) -> Vec<String> {
        self.labels.iter().map(|(name, _)| name.clone()).collect()
    }

    fn recommended_min_confidence(&self) -> Option<f32> {
        self.recommended_min_confidence
    }

    fn classify(&mut self, query: &str, top_k: usize) -> Result<Vec<Prediction>, RouterError> {
        let encoding = self
            .tokenizer
            .encode(query, true)
            .map_err(|e| RouterError::Tokenizer(e.to_string()))?;
        let ids: Vec<i64> = encoding.get_ids().iter().map(|&i| i64::from(i)).collect();
        let len = ids.len();
        let ort_err = |e: ort::Error| RouterError::Ort(e.to_string());
        let input_ids = Tensor::from_array(([1usize, len], ids)).map_err(ort_err)?;
        let attention_mask =
            Tensor::from_array(([1usize, len], vec![1i64; len])).map_err(ort_err)?;
        let outputs = self
            .session
            .run(ort::inputs![
                "input_ids" => input_ids,
                "attention_mask" => attention_mask,
            ])
            .map_err(ort_err)?;
        let probs = outputs
            .get("probabilities")
            .ok_or_else(|| RouterError::Ort("the model has no `probabilities` output".into()))?;
        let (_, probs) = probs.try_extract_tensor::<f32>().map_err(ort_err)?;
        if probs.len() != self.labels.len() {
            return Err(RouterError::ClassifierShape {
                got: probs.len(),
                want: self.labels.len(),
            });
        }
        Ok(top_k_of(probs, top_k, |i| self.labels[i].clone()))
    }
}
