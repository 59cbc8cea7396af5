//! The HTTP door: JSON over HTTP/1.1 for the `Judge` and `Scenarios` services, Server-Sent
//! Events for the judging streams, and a page for people, on a listener of its own beside
//! gRPC.
//!
//! There is one implementation underneath: every handler builds a `tonic::Request` (API key
//! as `authorization` metadata, deadline as `grpc-timeout`, W3C trace context) and calls the
//! router's own [`RouterService`] in-process, after the same [`AuthInterceptor`] the gRPC
//! server mounts. Validation, admission limits, routing, metrics and traces are therefore the
//! gRPC path's own; dropping an HTTP response (the client went away) drops the relayed
//! stream, and the judge stops generating exactly as when a gRPC client cancels.
//!
//! Modules, in the order a request meets them:
//! - `routes`: the route table and the handlers, one per RPC.
//! - `call`: from HTTP headers, query and body to the in-process gRPC request.
//! - `judgment` and `sse`: a judging stream answered as one JSON document, or as events.
//! - `errors`: the one mapping from a gRPC code to an HTTP status, and the error body.
//! - `page`: the page at `/` (static HTML, CSS and JS embedded in the binary).
//! - `openai` and `openai_answer`: OpenAI-compatible `/v1/chat/completions` and
//!   `/v1/models` over `Judge.Chat`, for evaluation tools that use any chat model as grader.

mod call;
mod errors;
pub mod https;
mod judgment;
mod openai;
mod openai_answer;
mod page;
mod routes;
mod sse;

use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::AuthInterceptor;
use crate::config::LimitsConfig;
use crate::service::RouterService;

pub use errors::http_status;

/// Bytes of JSON allowed on top of six times `limits.max_input_bytes`: room for the options
/// and the field names.
const BODY_OVERHEAD: usize = 64 * 1024;

/// The largest request body accepted: the router's input limit written as JSON with every
/// character escaped (`\u0000` is six bytes for one), plus [`BODY_OVERHEAD`]. Text within
/// the input limit always fits; a larger body is refused with 413 before it is read.
pub fn body_limit(limits: &LimitsConfig) -> usize {
    limits
        .max_input_bytes
        .saturating_mul(6)
        .saturating_add(BODY_OVERHEAD)
}

/// What the HTTP handlers share: the services, the key check and readiness. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpDoor {
    /// The `Judge` and `Scenarios` implementation every handler calls.
    service: RouterService,
    /// The gRPC server's own API-key check, run on each call's metadata.
    auth: AuthInterceptor,
    /// Whether every judge pool has a ready replica (what gRPC health says), for `/healthz`.
    ready: watch::Receiver<bool>,
    /// The largest request body accepted, in bytes.
    body_limit: usize,
}

impl HttpDoor {
    /// The door over `service`, checking keys with `auth`, reporting `ready` at `/healthz`.
    pub(crate) fn new(
        service: RouterService,
        auth: AuthInterceptor,
        ready: watch::Receiver<bool>,
    ) -> Self {
        let body_limit = body_limit(service.limits());
        Self {
            service,
            auth,
            ready,
            body_limit,
        }
    }

    /// Every route of the door (`docs/api.md#http`), ready to serve or to merge with more.
    pub fn routes(&self) -> axum::Router {
        routes::routes(self.clone())
    }
}

/// Serves `app` on `listener` (over TLS with `tls`, else plaintext) until `shutdown`
/// completes, then lets open calls (streams included) finish.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<crate::tls::HttpTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(tls) => https::serve(listener, app, tls, shutdown).await,
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}
