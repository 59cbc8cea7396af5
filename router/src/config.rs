//! The router's config file (TOML), parsed into [`RouterConfig`]. Every default is declared
//! here (routing defaults in [`crate::routing`]); the binary may override fields from its
//! command line before building the router.
//!
//! ```toml
//! listen = "0.0.0.0:50051"
//! # http_listen = "0.0.0.0:8080"      # the HTTP door (JSON, SSE, the page); off when absent
//! # data_dir = "router/data"          # override the embedded scenarios and criteria
//!
//! [classifier]
//! model_dir = "router/classifier"
//! # ort_dylib = "models/onnxruntime/libonnxruntime.so"   # else ORT_DYLIB_PATH
//! # min_confidence = 0.4         # else the model's recommended_min_confidence, else 0
//!
//! [routing]
//! default_pool = "general"
//!
//! [[routing.pool]]
//! name = "general"
//! dns = "autoj-judge.autoj.svc.cluster.local:50051"
//!
//! [[routing.pool]]
//! name = "bilingual"
//! endpoints = ["http://10.0.0.7:50051"]
//!
//! [[routing.rule]]
//! languages = ["zh"]
//! pool = "bilingual"
//!
//! [limits]
//! max_in_flight = 256            # concurrent streams; more get RESOURCE_EXHAUSTED at once
//! max_input_bytes = 1048576      # query + responses, in bytes
//! max_new_tokens = 4096
//!
//! # [judge_tls]                  # mTLS to the judges (their endpoints become https://)
//! # ca = "certs/judge-ca.pem"    # verifies the judges' certificates
//! # cert = "certs/router.pem"    # presented to the judges
//! # key = "certs/router.key"
//! # domain = "autoj-judge"       # the name the judges' certificates carry
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::DataSource;
use crate::error::RouterError;
use crate::onnx::OnnxClassifier;
use crate::routing::RoutingConfig;

/// Everything the router needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Address the binary listens on ([`crate::Router::serve`] takes a bound listener).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the HTTP door ([`crate::http`]); not served when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// A directory overriding the scenario and criteria files embedded in the binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The scenario classifier.
    #[serde(default)]
    pub classifier: ClassifierConfig,
    /// Pools and rules.
    pub routing: RoutingConfig,
    /// Admission limits at the edge.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// TLS (and client certificates) towards remote judges; plaintext when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_tls: Option<JudgeTlsConfig>,
}

/// The `[limits]` section: what the router admits before any work is spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Judging calls served at once (streams until their end); one more is refused with
    /// RESOURCE_EXHAUSTED at once rather than queued, so a client can back off or go
    /// elsewhere.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Largest query plus responses of one request, in bytes.
    #[serde(default = "default_max_input_bytes")]
    pub max_input_bytes: usize,
    /// Largest `options.generation.max_new_tokens` a client may ask for.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: u32,
}

/// Concurrent judging calls unless configured.
fn default_max_in_flight() -> usize {
    256
}

/// Input bytes per request unless configured (1 MiB).
fn default_max_input_bytes() -> usize {
    1024 * 1024
}

/// `max_new_tokens` ceiling unless configured.
fn default_max_new_tokens() -> u32 {
    4096
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_in_flight: default_max_in_flight(),
            max_input_bytes: default_max_input_bytes(),
            max_new_tokens: default_max_new_tokens(),
        }
    }
}

/// The `[judge_tls]` section: how the router reaches judges that require TLS (and mTLS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeTlsConfig {
    /// PEM CA certificate(s) the judges' certificates must chain to.
    pub ca: PathBuf,
    /// PEM client certificate presented to the judges (mTLS); with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The DNS name to verify in the judges' certificates (default: each endpoint's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// The `[classifier]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Classify queries that name no scenario; when false they are routed as `default` and
    /// `Scenarios.Classify` answers UNIMPLEMENTED.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Directory with `scenario_classifier.onnx`, `tokenizer.json` and `labels.json`.
    #[serde(default = "default_model_dir")]
    pub model_dir: PathBuf,
    /// The ONNX Runtime shared library; unset means `ORT_DYLIB_PATH`, else
    /// `models/onnxruntime/libonnxruntime.so`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ort_dylib: Option<PathBuf>,
    /// Classification jobs that may wait; more are refused with RESOURCE_EXHAUSTED.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// The summed probability of the most probable scenario group below which a query is
    /// routed as unsure: on its language to the default pool, with `scenario_source`
    /// LOW_CONFIDENCE and no scenario. Unset: the threshold the model ships with
    /// (`recommended_min_confidence` in `labels.json`, picked on out-of-fold predictions,
    /// see docs/router.md), else 0; 0 routes every query on its group decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f32>,
}

/// The listen address unless configured.
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 50051))
}

/// Classification is on unless configured.
fn default_enabled() -> bool {
    true
}

/// The classifier directory unless configured (relative to the working directory).
fn default_model_dir() -> PathBuf {
    PathBuf::from("router/classifier")
}

/// Classifier queue length unless configured.
fn default_queue() -> usize {
    256
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            model_dir: default_model_dir(),
            ort_dylib: None,
            queue: default_queue(),
            min_confidence: None,
        }
    }
}

impl ClassifierConfig {
    /// The library path to load: the configured one, else [`OnnxClassifier::default_dylib`].
    pub fn dylib(&self) -> PathBuf {
        self.ort_dylib
            .clone()
            .unwrap_or_else(OnnxClassifier::default_dylib)
    }
}

impl RouterConfig {
    /// A config with the given routing and every other field at its default.
    pub fn new(routing: RoutingConfig) -> Self {
        Self {
            listen: default_listen(),
            http_listen: None,
            data_dir: None,
            classifier: ClassifierConfig::default(),
            routing,
            limits: LimitsConfig::default(),
            judge_tls: None,
        }
    }

    /// Parses TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, RouterError> {
        toml::from_str(text).map_err(|e| RouterError::Toml {
            path: origin.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, RouterError> {
        let text = std::fs::read_to_string(path).map_err(|source| RouterError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Where to load scenarios and criteria from.
    pub fn data_source(&self) -> DataSource {
        self.data_dir
            .clone()
            .map_or(DataSource::Embedded, DataSource::Dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let config = RouterConfig::from_toml(&example, Path::new("example")).unwrap();
        assert_eq!(config.routing.pools.len(), 2);
        assert_eq!(config.classifier, ClassifierConfig::default());
        let unknown =
            RouterConfig::from_toml("[routing]\ndefault_pool='a'\ntypo=1", Path::new("x"));
        assert!(unknown.is_err());
    }
}
