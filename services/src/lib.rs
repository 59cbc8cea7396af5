//! Deployable autoj binaries and the plumbing they share.
//!
//! - [`config`]: clap/env settings, validated once.
//! - [`shutdown`]: the SIGINT/SIGTERM future every server takes.
//! - [`telemetry`]: logging set-up.
//! - [`cli`]: the client-side subcommands (`compare`, `critique`, `verdict`).
//! - [`run_judge`]: starts the engine and serves the judge until shutdown.

pub mod cli;
pub mod config;
pub mod shutdown;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;

use autoj_judge::engine::Engine;
use autoj_judge::service::JudgeService;

/// Loads the model (on the engine thread), binds `listen` and serves the judge until
/// `shutdown` resolves. Prints `listening on ADDR` on stdout once ready, so scripts and tests
/// can wait for it (and learn the port when `listen` asked for port 0).
pub async fn run_judge(
    settings: config::JudgeSettings,
    listen: SocketAddr,
    replica: String,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let engine_config = settings.engine.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::start(engine_config)).await??;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    tracing::info!(%addr, model = %engine.info().name, "judge serving");
    let service = JudgeService::new(engine, settings.limits, replica);
    autoj_judge::server::serve(listener, service, shutdown).await?;
    Ok(())
}
