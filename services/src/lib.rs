//! Deployable autoj binaries and the plumbing they share.
//!
//! - [`config`]: clap/env settings, validated once.
//! - [`gpu`]: a CUDA device's memory pool and memory in use.
//! - [`shutdown`]: the SIGINT/SIGTERM future every server takes, and the grace period.
//! - [`security`]: API keys and TLS on the public port; TLS/mTLS on a judge.
//! - [`telemetry`]: logs, and OpenTelemetry traces over OTLP when `OTEL_*` asks for them.
//! - [`metrics`]: the Prometheus endpoint (`--metrics-listen`).
//! - [`cli`]: the client-side subcommands (`compare`, `critique`, `verdict`).
//! - [`stack`]: runs a judge, the router, or both in one process until shutdown.

pub mod cli;
pub mod config;
pub mod gpu;
pub mod metrics;
pub mod security;
pub mod shutdown;
pub mod stack;
pub mod telemetry;
