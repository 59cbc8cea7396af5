//! The autoj router: the public gRPC endpoint in front of the judge pools.
//!
//! A request is validated, its scenario taken from the client or classified by a small ONNX
//! model, a judge pool picked by scenario, group or language, a replica picked by least
//! in-flight requests (another one tried while replicas are unavailable before the first
//! event), and the judge's stream relayed back with the scenario filled in.
//!
//! Modules, in the order a request meets them:
//! - [`config`]: the router's TOML config file.
//! - [`server`]: [`Router`] — build from config, serve with health and reflection.
//! - [`service`]: the `Judge` and `Scenarios` gRPC services.
//! - `validate`: request checks, INVALID_ARGUMENT naming the field.
//! - [`scenarios`] and [`criteria`]: the scenario catalog and its criteria, validated at
//!   start-up; [`data`] says where their files come from (embedded or a directory).
//! - [`classifier`]: the classifier trait and its worker thread; [`onnx`]: the ONNX model.
//! - [`language`]: English/Chinese detection for routing.
//! - [`routing`]: the routing table.
//! - [`pool`]: replicas, balancing, failover, DNS re-resolution.
//! - [`backend`]: a replica, remote (gRPC) or in-process (one-process mode).
//! - `relay`: the relayed stream (scenario stamp, deadline, load accounting).
//! - [`error`]: the crate's error and its one mapping to `tonic::Status`.
//! - [`http`]: the HTTP door beside gRPC (JSON, Server-Sent Events, a page), calling the
//!   same services in-process.
//! - [`auth`]: API keys (hashed, constant-time) on the public services.
//! - [`tls`]: TLS and mTLS settings towards the judges.
//! - [`metrics`] and `trace`: Prometheus metrics and OpenTelemetry spans of each call.

pub mod auth;
pub mod backend;
pub mod classifier;
pub mod config;
pub mod criteria;
pub mod data;
pub mod error;
pub mod http;
pub mod language;
pub mod metrics;
pub mod onnx;
pub mod pool;
mod relay;
pub mod routing;
pub mod scenarios;
pub mod server;
pub mod service;
pub mod tls;
mod trace;
mod validate;

pub use auth::{ApiKeys, AuthInterceptor};
pub use backend::{Connect, EventStream, JudgeBackend, LocalBackend, RemoteBackend};
pub use classifier::{Classifier, ClassifierHandle, Prediction};
pub use config::{ClassifierConfig, JudgeTlsConfig, LimitsConfig, RouterConfig};
pub use data::DataSource;
pub use error::RouterError;
pub use language::{detect_language, Lang};
pub use onnx::OnnxClassifier;
pub use routing::{PoolConfig, RoutingConfig, RuleConfig};
pub use scenarios::{Catalog, Scenario};
pub use server::{Router, RouterBuilder};
pub use service::RouterService;
pub use validate::{check_compare, check_critique, check_score, DEFAULT_TOP_K, MAX_CLASSIFY_BATCH};
