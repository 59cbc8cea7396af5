//! Serving the judge: the `Judge` service with gRPC health and reflection on one listener,
//! optionally over TLS (and mTLS), stopping when the shutdown future resolves.
//!
//! The listener serves while the model loads: health answers NOT_SERVING (so an orchestrator
//! can tell "loading" from "dead") and judging calls UNAVAILABLE, until the model is ready.
//! On shutdown health turns NOT_SERVING, the listener stops accepting, and open streams
//! finish.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_server::{Judge, JudgeServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::error::JudgeError;
use crate::grpc::service::JudgeService;
use autoj_proto::stream::{EventStream, ResultStream};

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed (accept, TLS set-up).
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The model could not be loaded; the server stopped.
    #[error("{0}")]
    Load(#[from] JudgeError),
}

/// The judge as served: the real service once the model is loaded, UNAVAILABLE before.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// Set once, when the model is ready.
    ready: Arc<OnceLock<JudgeService>>,
}

impl Gate {
    /// The service, or UNAVAILABLE while the model loads.
    fn service(&self) -> Result<&JudgeService, Status> {
        self.ready
            .get()
            .ok_or_else(|| Status::unavailable("the judge model is still loading; retry shortly"))
    }
}

/// The stream type of `Evaluate`.

#[tonic::async_trait]
impl Judge for Gate {
    type CompareStream = EventStream;
    type CritiqueStream = EventStream;
    type EvaluateStream = ResultStream;
    type ChatStream = EventStream;

    async fn compare(
        &self,
        request: Request<pb::CompareRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.service()?.compare(request).await
    }

    async fn critique(
        &self,
        request: Request<pb::CritiqueRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.service()?.critique(request).await
    }

    async fn score(
        &self,
        request: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        self.service()?.score(request).await
    }

    async fn evaluate(
        &self,
        request: Request<Streaming<pb::EvaluateItem>>,
    ) -> Result<Response<ResultStream>, Status> {
        let response = self.service()?.evaluate(request).await?;
        Ok(response)
    }

    async fn chat(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.service()?.chat(request).await
    }
}

/// The name health reports for.
const JUDGE: &str = <JudgeServer<Gate> as tonic::server::NamedService>::NAME;

/// Sets the judge's and the overall health status.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status(JUDGE, status).await;
    health.set_service_status("", status).await;
}

/// Serves an already-built `service` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    service: JudgeService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_loading(listener, None, async { Ok(service) }, || {}, shutdown).await
}

/// Serves on `listener` (with `tls` when given) at once, NOT_SERVING while `load` builds the
/// service, then SERVING (calling `on_ready`) until `shutdown` resolves, then NOT_SERVING
/// while open streams finish. A failed `load` stops the server and is returned.
pub async fn serve_loading<L>(
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
    load: L,
    on_ready: impl FnOnce() + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError>
where
    L: Future<Output = Result<JudgeService, JudgeError>> + Send,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let (reflection, reflection_alpha) =
        autoj_proto::reflection::services().expect("the embedded descriptor sets are valid");
    let gate = Gate::default();
    let slot = gate.ready.clone();
    let failed: Mutex<Option<JudgeError>> = Mutex::new(None);
    let loader = async {
        match load.await {
            Ok(service) => {
                let _ = slot.set(service);
                set_health(&health, ServingStatus::Serving).await;
                on_ready();
                std::future::pending::<()>().await;
            }
            Err(e) => {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        }
    };
    let drain = async {
        tokio::select! {
            () = shutdown => tracing::info!("judge shutting down, draining open streams"),
            () = loader => {}
        }
        set_health(&health, ServingStatus::NotServing).await;
    };
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(JudgeServer::new(gate))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drain)
        .await?;
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(ServeError::Load(e)),
        None => Ok(()),
    }
}
