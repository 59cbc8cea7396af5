//! Building the router from its config and serving it with health and reflection.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use autoj_proto::v1::judge_server::JudgeServer;
use autoj_proto::v1::scenarios_server::ScenariosServer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::transport::Server;

use crate::backend::JudgeBackend;
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

    /// Loads and validates everything (data, routing, classifier, ONNX Runtime), resolves
    /// `dns` pools once and starts their refresh tasks. Must run inside a Tokio runtime.
    pub async fn build(self) -> Result<Router, RouterError> {
        let catalog = match self.catalog {
            Some(catalog) => catalog,
            None => Catalog::load(&self.config.data_source())?,
        };
        let table = RoutingTable::new(&self.config.routing, &catalog)?;
        let mut local = self.local;
        let mut pools = HashMap::new();
        for spec in table.pools() {
            let pool = match &spec.source {
                PoolSource::Endpoints(urls) => {
                    Pool::endpoints(&spec.name, urls, table.connect_timeout())?
                }
                PoolSource::Dns(host_port) => {
                    Pool::dns(
                        &spec.name,
                        host_port,
                        table.dns_refresh(),
                        table.connect_timeout(),
                    )
                    .await
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

        let classifier = match self.classifier {
            Some(classifier) => Some(classifier),
            None if self.config.classifier.enabled => {
                let c = &self.config.classifier;
                let model_dir = c.model_dir.clone();
                let dylib = c.dylib();
                // Loading parses a model and dlopens a library: keep it off the reactor.
                let loaded =
                    tokio::task::spawn_blocking(move || OnnxClassifier::load(&model_dir, &dylib))
                        .await
                        .map_err(|e| {
                            RouterError::Server(format!("classifier loader panicked: {e}"))
                        })??;
                Some(Box::new(loaded) as Box<dyn Classifier>)
            }
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
                Some(ClassifierHandle::spawn(
                    classifier,
                    self.config.classifier.queue,
                )?)
            }
            None => None,
        };
        let catalog = Arc::new(catalog);
        Ok(Router {
            service: RouterService::new(catalog.clone(), table, pools, handle),
            catalog,
        })
    }
}

/// A built router, ready to serve.
#[derive(Debug, Clone)]
pub struct Router {
    /// The Judge + Scenarios implementation.
    service: RouterService,
    /// The scenario catalog it serves.
    catalog: Arc<Catalog>,
}

impl Router {
    /// Starts building a router from `config`.
    pub fn builder(config: RouterConfig) -> RouterBuilder {
        RouterBuilder {
            config,
            catalog: None,
            classifier: None,
            local: HashMap::new(),
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
    /// connections of `incoming` until `shutdown` completes; health turns NOT_SERVING first
    /// so load balancers stop sending while open calls finish.
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
        health.set_serving::<JudgeServer<RouterService>>().await;
        health.set_serving::<ScenariosServer<RouterService>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(autoj_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| RouterError::Server(format!("reflection: {e}")))?;
        let drain = async move {
            shutdown.await;
            health.set_not_serving::<JudgeServer<RouterService>>().await;
            health
                .set_not_serving::<ScenariosServer<RouterService>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            tracing::info!("router shutting down, draining open calls");
        };
        Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(JudgeServer::new(self.service.clone()))
            .add_service(ScenariosServer::new(self.service))
            .serve_with_incoming_shutdown(incoming, drain)
            .await
            .map_err(|e| RouterError::Server(e.to_string()))
    }
}
