//! Running the servers: a judge alone, the router alone, or both in one process.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use autoj_judge::engine::Engine;
use autoj_judge::grpc::service::JudgeService;
use autoj_judge::JudgeError;
use autoj_router::{LocalBackend, Router, RouterConfig};
use clap::Args;
use tonic::transport::ServerTlsConfig;

use crate::config::{HttpListenArgs, JudgeSettings};
use crate::security::PublicSecurity;
use crate::shutdown::with_grace;

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
    /// Judging calls served at once; one more is refused with RESOURCE_EXHAUSTED (overrides
    /// the config file's `limits.max_in_flight`, default 256).
    #[arg(long, env = "AUTOJ_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// The HTTP door's address.
    #[command(flatten)]
    pub http: HttpListenArgs,
}

/// Where `autoj router` listens, over its config file's `listen` and `http_listen`.
#[derive(Debug, Clone, Default)]
pub struct RouterListen {
    /// The gRPC address.
    pub grpc: Option<SocketAddr>,
    /// The HTTP door's address.
    pub http: Option<SocketAddr>,
}

/// The one-process configuration: every request to the in-process judge.
pub fn default_router_config() -> Result<RouterConfig, autoj_router::RouterError> {
    let text = format!("[routing]\ndefault_pool = \"{LOCAL_POOL}\"\n[[routing.pool]]\nname = \"{LOCAL_POOL}\"\nlocal = true\n");
    RouterConfig::from_toml(&text, std::path::Path::new("<built-in one-process config>"))
}

async fn start_engine(settings: &JudgeSettings) -> Result<Engine, JudgeError> {
    let engine_config = settings.engine.clone();
    tokio::task::spawn_blocking(move || Engine::start(engine_config))
        .await
        .map_err(|_| JudgeError::EngineStopped)?
}

async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))
}

/// Scripts and tests wait for this line (and learn the port when asked for port 0): it is
/// printed once the server is ready to judge.
fn announce(addr: SocketAddr) {
    println!("listening on {addr}");
}

/// Binds the HTTP door's address when one is configured and prints
/// `http on http://ADDR/` (`https://` with `tls`: the door then serves TLS with the public
/// port's certificate) before the gRPC `listening on` line, so a script that waits for that
/// one finds the door open too.
async fn bind_http(
    listen: Option<SocketAddr>,
    tls: bool,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for HTTP on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let scheme = if tls { "https" } else { "http" };
    println!("http on {scheme}://{addr}/");
    tracing::info!(%addr, "serving the HTTP door (JSON, SSE, the page)");
    Ok(Some(listener))
}

/// Binds `listen` at once and serves the judge alone: health answers NOT_SERVING while the
/// model loads (on the engine thread), SERVING after, until `signal`; then open streams get
/// `grace` to finish.
pub async fn run_judge(
    settings: JudgeSettings,
    listen: SocketAddr,
    replica: String,
    tls: Option<ServerTlsConfig>,
    grace: Duration,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = bind(listen).await?;
    let addr = listener.local_addr()?;
    let load = async move {
        let engine = start_engine(&settings).await?;
        crate::metrics::watch_engine(&engine);
        tracing::info!(model = %engine.info().name, "judge serving");
        Ok(JudgeService::new(engine, settings.limits, replica))
    };
    with_grace(signal, grace, |shutdown| async move {
        autoj_judge::grpc::server::serve_loading(
            listener,
            tls,
            load,
            move || announce(addr),
            shutdown,
        )
        .await?;
        Ok(())
    })
    .await
}

/// The whole stack in one process: the router in front, the judge engine behind it called
/// in-process through the same backend interface as a remote replica.
pub async fn run_serve(
    settings: JudgeSettings,
    listen: SocketAddr,
    router: &ServeRouterArgs,
    security: PublicSecurity,
    grace: Duration,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut config = match &router.router_config {
        Some(path) => RouterConfig::from_file(path)?,
        None => default_router_config()?,
    };
    config.listen = listen;
    if router.no_classifier {
        config.classifier.enabled = false;
    }
    if let Some(n) = router.max_in_flight {
        config.limits.max_in_flight = n;
    }
    if let Some(http) = router.http.http_listen {
        config.http_listen = Some(http);
    }
    let http_listen = config.http_listen;
    let local_pools: Vec<String> = config
        .routing
        .pools
        .iter()
        .filter(|p| p.local)
        .map(|p| p.name.clone())
        .collect();
    let engine = start_engine(&settings).await?;
    crate::metrics::watch_engine(&engine);
    let judge = Arc::new(JudgeService::new(engine, settings.limits, "local"));
    let tls = security.http_tls.is_some();
    let mut builder = Router::builder(config)
        .api_keys(security.api_keys)
        .tls(security.tls)
        .http_tls(security.http_tls);
    for pool in &local_pools {
        builder = builder.local_judge(pool, Arc::new(LocalBackend::new(judge.clone())));
    }
    let built = builder.build().await?;
    let listener = bind(listen).await?;
    let http = bind_http(http_listen, tls).await?;
    announce(listener.local_addr()?);
    tracing::info!(pools = ?local_pools, "autoj serving (router + in-process judge)");
    with_grace(signal, grace, |shutdown| async move {
        built.serve_all(listener, http, shutdown).await?;
        Ok(())
    })
    .await
}

/// The router alone, in front of remote judge pools.
pub async fn run_router(
    config_path: &std::path::Path,
    listen: RouterListen,
    security: PublicSecurity,
    grace: Duration,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut config = RouterConfig::from_file(config_path)?;
    if let Some(l) = listen.grpc {
        config.listen = l;
    }
    if let Some(http) = listen.http {
        config.http_listen = Some(http);
    }
    let (listen, http_listen) = (config.listen, config.http_listen);
    let tls = security.http_tls.is_some();
    let built = Router::builder(config)
        .api_keys(security.api_keys)
        .tls(security.tls)
        .http_tls(security.http_tls)
        .build()
        .await?;
    let listener = bind(listen).await?;
    let http = bind_http(http_listen, tls).await?;
    announce(listener.local_addr()?);
    with_grace(signal, grace, |shutdown| async move {
        built.serve_all(listener, http, shutdown).await?;
        Ok(())
    })
    .await
}
