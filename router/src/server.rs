//! Building the router from its config and serving it with health and reflection.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use autoj_proto::v1::judge_server::JudgeServer;
use autoj_proto::v1::scenarios_server::ScenariosServer;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::auth::{ApiKeys, AuthInterceptor};
use crate::backend::{Connect, JudgeBackend};
use crate::classifier::{Classifier, ClassifierHandle};
use crate::config::RouterConfig;
use crate::error::RouterError;
use crate::onnx::OnnxClassifier;
use crate::pool::Pool;
use crate::routing::{PoolSource, RoutingTable};
use crate::scenarios::Catalog;
use crate::service::RouterService;

/// Collects what the router is made of, then validates and assembles it in
/// [`RouterBuilder::build`]. Parts not given are loaded from the config.
pub struct RouterBuilder {
    /// The config file's content.
    config: RouterConfig,
    /// A catalog to use instead of loading `config.data_dir` / the embedded data.
    catalog: Option<Catalog>,
    /// A classifier to use instead of loading the ONNX model (tests, `autoj serve`).
    classifier: Option<Box<dyn Classifier>>,
    /// In-process judges for `local = true` pools, by pool name.
    local: HashMap<String, Arc<dyn JudgeBackend>>,
    /// API keys the public services require; open when `None`.
    api_keys: Option<ApiKeys>,
    /// TLS on the public listener; plaintext when `None`.
    tls: Option<ServerTlsConfig>,
    /// TLS on the HTTP door (the same certificate, as rustls settings); plaintext when `None`.
    http_tls: Option<crate::tls::HttpTls>,
}

impl std::fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("config", &self.config)
            .field("local", &self.local.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RouterBuilder {
    /// Uses `catalog` instead of loading one.
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Uses `classifier` instead of loading the ONNX model (even if the config disables it).
    pub fn classifier(mut self, classifier: Box<dyn Classifier>) -> Self {
        self.classifier = Some(classifier);
        self
    }

    /// Serves the `local = true` pool `pool` with an in-process judge (one-process mode),
    /// e.g. `Arc::new(LocalBackend::new(Arc::new(judge_service)))`.
    pub fn local_judge(mut self, pool: &str, backend: Arc<dyn JudgeBackend>) -> Self {
        self.local.insert(pool.to_owned(), backend);
        self
    }

    /// Requires one of `keys` (as `authorization: Bearer <key>`) on `Judge` and `Scenarios`
    /// calls; health and reflection stay open.
    pub fn api_keys(mut self, keys: Option<ApiKeys>) -> Self {
        self.api_keys = keys;
        self
    }

    /// Serves TLS (rustls) with `tls` on the public listener.
    pub fn tls(mut self, tls: Option<ServerTlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// Serves the HTTP door over TLS with `tls` ([`crate::tls::http_server_config`] builds it
    /// from the public port's certificate).
    pub fn http_tls(mut self, tls: Option<crate::tls::HttpTls>) -> Self {
        self.http_tls = tls;
        self
    }

    /// Loads and validates everything (data, routing, classifier, ONNX Runtime), resolves
    /// `dns` pools once and starts their refresh tasks. Must run inside a Tokio runtime.
    pub async fn build(self) -> Result<Router, RouterError> {
        let catalog = match self.catalog {
            Some(catalog) => catalog,
            None => Catalog::load(&self.config.data_source())?,
        };
        let table = RoutingTable::new(&self.config.routing, &catalog)?;
        if let Some(confidence) = self.config.classifier.min_confidence {
            check_confidence(confidence, "`classifier.min_confidence`")?;
        }
        if self.config.limits.max_in_flight == 0 || self.config.limits.max_new_tokens == 0 {
            return Err(RouterError::Routing(
                "`limits.max_in_flight` and `limits.max_new_tokens` must be at least 1".into(),
            ));
        }
        let pools = build_pools(&table, &self.config, self.local).await?;
        let classifier = match self.classifier {
            Some(classifier) => Some(classifier),
            None if self.config.classifier.enabled => Some(load_classifier(&self.config).await?),
            None => None,
        };
        let handle = match classifier {
            Some(classifier) => {
                if let Some(label) = classifier
                    .labels()
                    .into_iter()
                    .find(|l| catalog.get(l).is_none())
                {
                    return Err(RouterError::UnknownLabel { label });
                }
                let min_confidence = min_confidence(&self.config, classifier.as_ref())?;
                Some(ClassifierHandle::spawn(
                    classifier,
                    self.config.classifier.queue,
                    min_confidence,
                )?)
            }
            None => None,
        };
        let catalog = Arc::new(catalog);
        let watched = pools.values().cloned().collect();
        Ok(Router {
            service: RouterService::new(catalog.clone(), table, pools, handle, &self.config.limits),
            catalog,
            pools: watched,
            auth: AuthInterceptor::new(self.api_keys),
            tls: self.tls,
            http_tls: self.http_tls,
            ready: Arc::new(watch::channel(false).0),
        })
    }
}

/// One pool per routing-table entry: fixed endpoints, DNS-resolved replicas (refreshed in
/// the background), or the in-process judges in `local`, each of which must be used.
async fn build_pools(
    table: &RoutingTable,
    config: &RouterConfig,
    mut local: HashMap<String, Arc<dyn JudgeBackend>>,
) -> Result<HashMap<String, Arc<Pool>>, RouterError> {
    let connect = Connect {
        timeout: table.connect_timeout(),
        tls: match &config.judge_tls {
            Some(tls) => Some(crate::tls::client_config(tls)?),
            None => None,
        },
    };
    let mut pools = HashMap::new();
    for spec in table.pools() {
        let pool = match &spec.source {
            PoolSource::Endpoints(urls) => Pool::endpoints(&spec.name, urls, &connect)?,
            PoolSource::Dns(host_port) => {
                Pool::dns(&spec.name, host_port, table.dns_refresh(), &connect).await
            }
            PoolSource::Local => {
                let backend = local.remove(&spec.name).ok_or_else(|| {
                    RouterError::Routing(format!(
                        "pool `{}` is `local` but this binary supplied no in-process judge for it",
                        spec.name
                    ))
                })?;
                Pool::fixed(&spec.name, vec![("local".to_owned(), backend)])
            }
        };
        pools.insert(spec.name.clone(), pool);
    }
    if let Some(extra) = local.keys().next() {
        return Err(RouterError::Routing(format!(
            "an in-process judge was supplied for pool `{extra}`, which is not a `local` pool"
        )));
    }
    Ok(pools)
}

/// Refuses a confidence threshold outside [0, 1]; `what` names where it came from.
fn check_confidence(confidence: f32, what: &str) -> Result<(), RouterError> {
    if (0.0..=1.0).contains(&confidence) {
        Ok(())
    } else {
        Err(RouterError::Routing(format!(
            "{what} is {confidence}; it must be between 0 and 1"
        )))
    }
}

/// The group confidence below which queries route as unsure: the configured one, else the
/// classifier's recommendation, else 0 (every query routes on its group decision).
fn min_confidence(config: &RouterConfig, classifier: &dyn Classifier) -> Result<f32, RouterError> {
    if let Some(configured) = config.classifier.min_confidence {
        return Ok(configured);
    }
    let Some(recommended) = classifier.recommended_min_confidence() else {
        return Ok(0.0);
    };
    check_confidence(recommended, "the classifier's `recommended_min_confidence`")?;
    tracing::info!(
        min_confidence = recommended,
        "classifier threshold: the model's recommendation"
    );
    Ok(recommended)
}

/// The configured ONNX classifier. Loading parses a model and dlopens a library: it runs off
/// the reactor.
async fn load_classifier(config: &RouterConfig) -> Result<Box<dyn Classifier>, RouterError> {
    let model_dir = config.classifier.model_dir.clone();
    let dylib = config.classifier.dylib();
    let loaded = tokio::task::spawn_blocking(move || OnnxClassifier::load(&model_dir, &dylib))
        .await
        .map_err(|e| RouterError::Server(format!("classifier loader panicked: {e}")))??;
    Ok(Box::new(loaded))
}

/// A built router, ready to serve.
#[derive(Debug, Clone)]
pub struct Router {
    /// The Judge + Scenarios implementation.
    service: RouterService,
    /// The scenario catalog it serves.
    catalog: Arc<Catalog>,
    /// Every pool, probed for readiness while serving.
    pools: Vec<Arc<Pool>>,
    /// The API-key check on the public services.
    auth: AuthInterceptor,
    /// TLS on the listener.
    tls: Option<ServerTlsConfig>,
    /// TLS on the HTTP door.
    http_tls: Option<crate::tls::HttpTls>,
    /// Whether every pool has a ready replica and the server is not draining: what gRPC
    /// health reports, kept for the HTTP door's `/healthz`.
    ready: Arc<watch::Sender<bool>>,
}

impl Router {
    /// Starts building a router from `config`.
    pub fn builder(config: RouterConfig) -> RouterBuilder {
        RouterBuilder {
            config,
            catalog: None,
            classifier: None,
            local: HashMap::new(),
            api_keys: None,
            tls: None,
            http_tls: None,
        }
    }

    /// The services' implementation, to mount on a server of the caller's own.
    pub fn service(&self) -> RouterService {
        self.service.clone()
    }

    /// The scenario catalog (for `autoj classify` and listings).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The HTTP door over this router's services (same API keys, limits and readiness), to
    /// serve with [`crate::http::serve`] or to extend with more routes.
    pub fn http_door(&self) -> crate::http::HttpDoor {
        crate::http::HttpDoor::new(
            self.service.clone(),
            self.auth.clone(),
            self.ready.subscribe(),
        )
    }

    /// Serves gRPC on `grpc` and, when given, the HTTP door on `http` until `shutdown`
    /// completes; then both stop accepting and drain their open calls. Returns when both
    /// have stopped, or at the first one that fails.
    pub async fn serve_all(
        self,
        grpc: TcpListener,
        http: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RouterError> {
        let Some(http) = http else {
            return self.serve(grpc, shutdown).await;
        };
        let shutdown = shutdown.boxed().shared();
        let app = self.http_door().routes();
        let tls = self.http_tls.clone();
        let http = async {
            crate::http::serve(http, app, tls, shutdown.clone())
                .await
                .map_err(|e| RouterError::Server(format!("HTTP door: {e}")))
        };
        tokio::try_join!(self.serve(grpc, shutdown.clone()), http).map(|_| ())
    }

    /// Serves on `listener` until `shutdown` completes, then drains open calls.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RouterError> {
        self.serve_with_incoming(TcpListenerStream::new(listener), shutdown)
            .await
    }

    /// Serves `Judge`, `Scenarios`, `grpc.health.v1.Health` and server reflection on the
    /// connections of `incoming` until `shutdown` completes.
    ///
    /// Health answers NOT_SERVING until every pool has a ready replica (probed every
    /// second, so it follows replicas that come and go), and again from the moment
    /// `shutdown` completes, so load balancers stop sending while open calls finish.
    pub async fn serve_with_incoming<I, IO, IE>(
        self,
        incoming: I,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RouterError>
    where
        I: Stream<Item = Result<IO, IE>>,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (health, health_service) = tonic_health::server::health_reporter();
        let health = Health {
            reporter: health,
            ready: self.ready,
        };
        health.set(ServingStatus::NotServing).await;
        let (reflection, reflection_alpha) = autoj_proto::reflection::services()
            .map_err(|e| RouterError::Server(format!("reflection: {e}")))?;
        let pools = self.pools;
        let drain = async move {
            tokio::select! {
                () = shutdown => {}
                () = watch_readiness(&health, &pools) => {}
            }
            health.set(ServingStatus::NotServing).await;
            tracing::info!("router shutting down, draining open calls");
        };
        let mut server = Server::builder();
        if let Some(tls) = self.tls {
            server = server
                .tls_config(tls)
                .map_err(|e| RouterError::Tls(e.to_string()))?;
        }
        server
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(JudgeServer::with_interceptor(
                self.service.clone(),
                self.auth.clone(),
            ))
            .add_service(ScenariosServer::with_interceptor(self.service, self.auth))
            .serve_with_incoming_shutdown(incoming, drain)
            .await
            .map_err(|e| RouterError::Server(e.to_string()))
    }
}

/// How often pools are probed for a ready replica.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Where the router's readiness is reported: gRPC health, and the HTTP door's `/healthz`.
struct Health {
    /// gRPC health's statuses.
    reporter: HealthReporter,
    /// What `/healthz` reads.
    ready: Arc<watch::Sender<bool>>,
}

impl Health {
    /// Sets the overall status and both services' to `status`.
    async fn set(&self, status: ServingStatus) {
        for service in [
            <JudgeServer<RouterService> as tonic::server::NamedService>::NAME,
            <ScenariosServer<RouterService> as tonic::server::NamedService>::NAME,
            "",
        ] {
            self.reporter.set_service_status(service, status).await;
        }
        self.ready.send_replace(status == ServingStatus::Serving);
    }
}

/// Probes every pool forever: SERVING while each has a ready replica, NOT_SERVING
/// otherwise (logging each change once).
async fn watch_readiness(health: &Health, pools: &[Arc<Pool>]) {
    let mut serving = false;
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let ready = futures::future::join_all(pools.iter().map(|p| p.probe())).await;
        let now = ready.iter().all(|r| *r);
        if now != serving {
            let waiting: Vec<&str> = pools
                .iter()
                .zip(&ready)
                .filter(|(_, r)| !**r)
                .map(|(p, _)| p.name())
                .collect();
            if now {
                tracing::info!("every judge pool has a ready replica: SERVING");
            } else {
                tracing::warn!(pools = ?waiting, "judge pools without a ready replica: NOT_SERVING");
            }
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set(status).await;
            serving = now;
        }
    }
}
