//! Running the servers: a judge alone, the router alone, or both in one process.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use autoj_judge::engine::Engine;
use autoj_judge::service::JudgeService;
use autoj_router::{LocalBackend, Router, RouterConfig};
use clap::Args;

use crate::config::JudgeSettings;

/// Name of the in-process pool in the default one-process configuration.
pub const LOCAL_POOL: &str = "local";

/// Router settings for `autoj serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeRouterArgs {
    /// Router config file (TOML: pools, rules, classifier); its `local = true` pools are
    /// served by the judge in this process. Default: one local pool for everything.
    #[arg(long, env = "AUTOJ_ROUTER_CONFIG")]
    pub router_config: Option<PathBuf>,
    /// Do not classify queries (they route as `default`; Scenarios.Classify answers
    /// UNIMPLEMENTED). Useful where the ONNX Runtime library is unavailable.
    #[arg(long, env = "AUTOJ_NO_CLASSIFIER")]
    pub no_classifier: bool,
}

/// The one-process configuration: every request to the in-process judge.
pub fn default_router_config() -> Result<RouterConfig, autoj_router::RouterError> {
    let text = format!("[routing]\ndefault_pool = \"{LOCAL_POOL}\"\n[[routing.pool]]\nname = \"{LOCAL_POOL}\"\nlocal = true\n");
    RouterConfig::from_toml(&text, std::path::Path::new("<built-in one-process config>"))
}

async fn start_engine(settings: &JudgeSettings) -> anyhow::Result<Engine> {
    let engine_config = settings.engine.clone();
    Ok(tokio::task::spawn_blocking(move || Engine::start(engine_config)).await??)
}

async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    // Scripts and tests wait for this line (and learn the port when asked for port 0).
    println!("listening on {}", listener.local_addr()?);
    Ok(listener)
}

/// Loads the model (on the engine thread), binds `listen` and serves the judge alone until
/// `shutdown` resolves.
pub async fn run_judge(
    settings: JudgeSettings,
    listen: SocketAddr,
    replica: String,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let engine = start_engine(&settings).await?;
    let listener = bind(listen).await?;
    tracing::info!(model = %engine.info().name, "judge serving");
    let service = JudgeService::new(engine, settings.limits, replica);
    autoj_judge::server::serve(listener, service, shutdown).await?;
    Ok(())
}

/// The whole stack in one process: the router in front, the judge engine behind it called
/// in-process through the same backend interface as a remote replica.
pub async fn run_serve(
    settings: JudgeSettings,
    listen: SocketAddr,
    router: &ServeRouterArgs,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut config = match &router.router_config {
        Some(path) => RouterConfig::from_file(path)?,
        None => default_router_config()?,
    };
    config.listen = listen;
    if router.no_classifier {
        config.classifier.enabled = false;
    }
    let local_pools: Vec<String> = config
        .routing
        .pools
        .iter()
        .filter(|p| p.local)
        .map(|p| p.name.clone())
        .collect();
    let engine = start_engine(&settings).await?;
    let judge = Arc::new(JudgeService::new(engine, settings.limits, "local"));
    let mut builder = Router::builder(config);
    for pool in &local_pools {
        builder = builder.local_judge(pool, Arc::new(LocalBackend::new(judge.clone())));
    }
    let built = builder.build().await?;
    let listener = bind(listen).await?;
    tracing::info!(pools = ?local_pools, "autoj serving (router + in-process judge)");
    built.serve(listener, shutdown).await?;
    Ok(())
}

/// The router alone, in front of remote judge pools.
pub async fn run_router(
    config_path: &std::path::Path,
    listen: Option<SocketAddr>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut config = RouterConfig::from_file(config_path)?;
    if let Some(l) = listen {
        config.listen = l;
    }
    let listen = config.listen;
    let built = Router::builder(config).build().await?;
    let listener = bind(listen).await?;
    built.serve(listener, shutdown).await?;
    Ok(())
}
