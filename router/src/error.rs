//! The crate's one error type and the one place it becomes a gRPC status.
//!
//! Start-up problems (bad data files, a bad routing file, a missing ONNX Runtime) and
//! per-request problems (bad input, no replica, an upstream failure) share one enum so that a
//! caller needs a single `match`; [`RouterError::into_status`] is the only mapping to
//! [`tonic::Status`], and it is where a request error is logged, once.

use std::path::PathBuf;

use tonic::{Code, Status};

/// Everything that can go wrong in the router, at start-up or while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A data, model or config file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A TOML file (scenarios, criteria, routing config) does not parse or has wrong fields.
    #[error("{path}: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A JSON file (the classifier's labels) does not parse or has wrong fields.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        source: serde_json::Error,
    },
    /// The same name appears twice where names must be unique.
    #[error("duplicate {kind} `{name}` in {path}")]
    Duplicate {
        /// What is duplicated: scenario, group, basic set, criterion, pool, ...
        kind: &'static str,
        /// The repeated name.
        name: String,
        /// Where the second one was found.
        path: PathBuf,
    },
    /// A scenario listed in scenarios.toml has no criteria file.
    #[error("scenario `{scenario}` has no criteria file criteria/scenarios/{scenario}.toml")]
    MissingCriteria {
        /// The scenario.
        scenario: String,
    },
    /// A criteria file names a basic set that does not exist.
    #[error("{path}: inherits unknown basic set `{basic}`")]
    UnknownBasicSet {
        /// The scenario criteria file.
        path: PathBuf,
        /// The name it inherits.
        basic: String,
    },
    /// A criteria file belongs to no scenario of scenarios.toml, or its name and its
    /// `scenario` field disagree.
    #[error("{path}: criteria for `{scenario}`, which is not a scenario of scenarios.toml (or not this file's name)")]
    UnknownScenarioFile {
        /// The criteria file.
        path: PathBuf,
        /// The scenario it names.
        scenario: String,
    },
    /// A scenario's group is not in the `groups` list.
    #[error("scenario `{scenario}` has group `{group}`, which is not in `groups`")]
    UnknownGroup {
        /// The scenario.
        scenario: String,
        /// Its group.
        group: String,
    },
    /// The routing or router config is inconsistent (unknown pool, no default, a pool with
    /// no address, ...).
    #[error("routing config: {0}")]
    Routing(String),
    /// The classifier's labels disagree with the scenario catalog.
    #[error("classifier label `{label}` is not a scenario of the catalog")]
    UnknownLabel {
        /// The label.
        label: String,
    },
    /// The ONNX Runtime shared library is not where the config says.
    #[error(
        "ONNX Runtime library not found at {path}; run router/fetch-onnxruntime.sh or set \
         ORT_DYLIB_PATH / classifier.ort_dylib"
    )]
    OrtLibraryMissing {
        /// The path tried.
        path: PathBuf,
    },
    /// The ONNX Runtime library exists but could not be loaded (wrong version, wrong arch).
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    OrtLoad {
        /// The path tried.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// ONNX Runtime failed to build a session or to run the model.
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    /// The tokenizer file could not be loaded, or encoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The classifier's `labels.json` is inconsistent (an index out of range or missing).
    #[error("{path}: {reason}")]
    ClassifierLabels {
        /// The labels file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The classifier model answered with an unexpected shape.
    #[error("classifier output has {got} probabilities, labels.json has {want}")]
    ClassifierShape {
        /// Values in the output.
        got: usize,
        /// Labels expected.
        want: usize,
    },
    /// The classifier's bounded queue is full.
    #[error("the scenario classifier is busy; retry shortly")]
    ClassifierBusy,
    /// The classifier worker thread has stopped.
    #[error("the scenario classifier has stopped")]
    ClassifierStopped,
    /// A request field is missing, empty or out of range.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field, e.g. `response_1` or `responses[2]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A request names a scenario the catalog lacks.
    #[error("{field}: unknown scenario `{name}`; Scenarios.List names the known ones")]
    UnknownScenario {
        /// The field that named it.
        field: &'static str,
        /// The name.
        name: String,
    },
    /// A chat names a pool (an OpenAI `model`) the router does not have.
    #[error("{field}: no judge pool `{name}`; this router serves: {known}")]
    UnknownPool {
        /// The field that named it.
        field: &'static str,
        /// The name.
        name: String,
        /// The pools there are, comma-separated.
        known: String,
    },
    /// A pool has no replica that could take the request.
    #[error("no available replica in judge pool `{pool}`")]
    NoReplica {
        /// The pool.
        pool: String,
    },
    /// The client's deadline passed while the router was waiting.
    #[error("deadline exceeded before the judge answered")]
    DeadlineExceeded,
    /// The upstream judge answered with an error; its code is kept.
    #[error("judge replica {replica}: {status}")]
    Upstream {
        /// The replica that failed.
        replica: String,
        /// Its status, code and message intact.
        status: Status,
    },
    /// The RPC needs a part this router runs without (a classifier for `Classify`).
    #[error("{0}")]
    Unimplemented(&'static str),
    /// The gRPC server failed (bind, accept, reflection set-up).
    #[error("server: {0}")]
    Server(String),
    /// API keys are misconfigured (none given, unreadable file).
    #[error("API keys: {0}")]
    Auth(String),
    /// A TLS certificate, key or CA file is missing or unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The router already serves its configured maximum of concurrent streams.
    #[error("the router is serving its limit of {limit} concurrent requests; retry shortly")]
    Overloaded {
        /// The `limits.max_in_flight` setting.
        limit: usize,
    },
}

impl RouterError {
    /// A stable, low-cardinality name for the error, for logs and metric labels.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Toml { .. } => "toml",
            Self::Json { .. } => "json",
            Self::Duplicate { .. } => "duplicate",
            Self::MissingCriteria { .. } => "missing_criteria",
            Self::UnknownBasicSet { .. } => "unknown_basic_set",
            Self::UnknownScenarioFile { .. } => "unknown_scenario_file",
            Self::UnknownGroup { .. } => "unknown_group",
            Self::Routing(_) => "routing_config",
            Self::UnknownLabel { .. } => "unknown_label",
            Self::OrtLibraryMissing { .. } => "ort_missing",
            Self::OrtLoad { .. } => "ort_load",
            Self::Ort(_) => "ort",
            Self::Tokenizer(_) => "tokenizer",
            Self::ClassifierLabels { .. } => "classifier_labels",
            Self::ClassifierShape { .. } => "classifier_shape",
            Self::ClassifierBusy => "classifier_busy",
            Self::ClassifierStopped => "classifier_stopped",
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::UnknownScenario { .. } => "unknown_scenario",
            Self::UnknownPool { .. } => "unknown_pool",
            Self::NoReplica { .. } => "no_replica",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Upstream { .. } => "upstream",
            Self::Unimplemented(_) => "unimplemented",
            Self::Server(_) => "server",
            Self::Auth(_) => "auth_config",
            Self::Tls(_) => "tls",
            Self::Overloaded { .. } => "overloaded",
        }
    }

    /// Turns the error into the status a client sees, logging it once here.
    ///
    /// Upstream statuses keep their code and message (the judge's words reach the client);
    /// client mistakes are logged at debug, server faults at warn.
    pub fn into_status(self) -> Status {
        let code = match &self {
            Self::InvalidArgument { .. } | Self::UnknownScenario { .. } => Code::InvalidArgument,
            Self::ClassifierBusy | Self::Overloaded { .. } => Code::ResourceExhausted,
            Self::NoReplica { .. } | Self::ClassifierStopped => Code::Unavailable,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::UnknownPool { .. } => Code::NotFound,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::Upstream { status, .. } => status.code(),
            Self::Io { .. }
            | Self::Toml { .. }
            | Self::Json { .. }
            | Self::Duplicate { .. }
            | Self::MissingCriteria { .. }
            | Self::UnknownBasicSet { .. }
            | Self::UnknownScenarioFile { .. }
            | Self::UnknownGroup { .. }
            | Self::Routing(_)
            | Self::UnknownLabel { .. }
            | Self::OrtLibraryMissing { .. }
            | Self::OrtLoad { .. }
            | Self::Ort(_)
            | Self::Tokenizer(_)
            | Self::ClassifierLabels { .. }
            | Self::ClassifierShape { .. }
            | Self::Server(_)
            | Self::Auth(_)
            | Self::Tls(_) => Code::Internal,
        };
        match code {
            Code::InvalidArgument | Code::NotFound | Code::Unimplemented | Code::Cancelled => {
                tracing::debug!(error_type = self.error_type(), "{self}")
            }
            _ => tracing::warn!(error_type = self.error_type(), "{self}"),
        }
        match self {
            // Relay the judge's own status untouched (metadata and details included).
            Self::Upstream { status, .. } => status,
            other => Status::new(code, other.to_string()),
        }
    }
}
