//! Deployable autoj binaries and the plumbing they share.
//!
//! - [`config`]: clap/env settings, validated once.
//! - [`shutdown`]: the SIGINT/SIGTERM future every server takes.
//! - [`telemetry`]: logging set-up.
//! - [`cli`]: the client-side subcommands (`compare`, `critique`, `verdict`).
//! - [`stack`]: runs a judge, the router, or both in one process until shutdown.

pub mod cli;
pub mod config;
pub mod shutdown;
pub mod stack;
pub mod telemetry;
