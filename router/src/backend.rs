//! One judge replica as the router sees it: a [`JudgeBackend`], either a remote replica
//! reached over gRPC ([`RemoteBackend`]) or a judge service inside this process
//! ([`LocalBackend`], the one-process mode). Both take and give the same tonic types, so the
//! pool, failover and relay code cannot tell them apart.

use std::sync::Arc;
use std::time::Duration;

use autoj_proto::v1::judge_client::JudgeClient;
use autoj_proto::v1::judge_server::Judge;
use autoj_proto::v1::{
    ChatRequest, CompareRequest, CritiqueRequest, JudgeEvent, ScoreRequest, ScoreResponse,
};
use futures::StreamExt;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::error::RouterError;

/// A judge's event stream, type-erased so remote and in-process replicas look the same.
pub use autoj_proto::stream::EventStream;

/// A judge replica the router can send requests to.
#[tonic::async_trait]
pub trait JudgeBackend: Send + Sync + 'static {
    /// Pairwise comparison; the judge's event stream.
    async fn compare(
        &self,
        request: Request<CompareRequest>,
    ) -> Result<Response<EventStream>, Status>;
    /// Single-response critique; the judge's event stream.
    async fn critique(
        &self,
        request: Request<CritiqueRequest>,
    ) -> Result<Response<EventStream>, Status>;
    /// Best-of-N scoring (unary).
    async fn score(
        &self,
        request: Request<ScoreRequest>,
    ) -> Result<Response<ScoreResponse>, Status>;
    /// Free-form chat; the judge's event stream.
    async fn chat(&self, request: Request<ChatRequest>) -> Result<Response<EventStream>, Status>;
    /// Whether the replica can take work now (its model is loaded and it is not draining).
    /// The router's own health is SERVING only while every pool has a ready replica. An
    /// in-process judge exists only once its model is loaded, so the default is `true`.
    async fn ready(&self) -> bool {
        true
    }
}

/// How the router connects to remote replicas.
#[derive(Debug, Clone)]
pub struct Connect {
    /// Give up a TCP (and TLS) connection attempt after this long.
    pub timeout: Duration,
    /// TLS towards the judges (with a client certificate for mTLS); plaintext when `None`.
    pub tls: Option<ClientTlsConfig>,
}

impl Connect {
    /// The URL to dial for `host_port` or for a configured endpoint: `https://` when TLS is
    /// on (tonic only runs TLS for `https` URIs), as written otherwise.
    pub fn url(&self, url: &str) -> String {
        let bare = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        match (bare, self.tls.is_some()) {
            (Some(rest), true) => format!("https://{rest}"),
            (None, true) => format!("https://{url}"),
            (None, false) => format!("http://{url}"),
            (Some(_), false) => url.to_owned(),
        }
    }
}

/// A remote replica: a lazily connected gRPC channel to one address.
#[derive(Debug, Clone)]
pub struct RemoteBackend {
    /// The generated client over a channel that connects on first use and reconnects after
    /// failures; a connect failure surfaces as UNAVAILABLE, which the pool fails over on.
    client: JudgeClient<Channel>,
    /// Health checks over the same channel: readiness of this replica.
    health: HealthClient<Channel>,
}

impl RemoteBackend {
    /// A client for `url` (`http://host:port`, or `host:port`) connected as `connect` says.
    /// Does not connect yet.
    pub fn new(url: &str, connect: &Connect) -> Result<Self, RouterError> {
        let url = connect.url(url);
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| RouterError::Routing(format!("endpoint `{url}`: {e}")))?
            .connect_timeout(connect.timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &connect.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| RouterError::Tls(format!("endpoint `{url}`: {e}")))?;
        }
        let channel = endpoint.connect_lazy();
        Ok(Self {
            client: JudgeClient::new(channel.clone()),
            health: HealthClient::new(channel),
        })
    }
}

#[tonic::async_trait]
impl JudgeBackend for RemoteBackend {
    async fn compare(
        &self,
        request: Request<CompareRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let response = self.client.clone().compare(request).await;
        Ok(remote_stream(response.map_err(replica_failure)?))
    }

    async fn critique(
        &self,
        request: Request<CritiqueRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let response = self.client.clone().critique(request).await;
        Ok(remote_stream(response.map_err(replica_failure)?))
    }

    async fn score(
        &self,
        request: Request<ScoreRequest>,
    ) -> Result<Response<ScoreResponse>, Status> {
        self.client
            .clone()
            .score(request)
            .await
            .map_err(replica_failure)
    }

    async fn chat(&self, request: Request<ChatRequest>) -> Result<Response<EventStream>, Status> {
        let response = self.client.clone().chat(request).await;
        Ok(remote_stream(response.map_err(replica_failure)?))
    }

    /// Asks the judge's `grpc.health.v1` for `autoj.v1.Judge`: ready when SERVING. A server
    /// without a health service (UNIMPLEMENTED) answered, so it counts as ready; no answer,
    /// NOT_SERVING or an unknown service does not.
    async fn ready(&self) -> bool {
        let mut request = Request::new(HealthCheckRequest {
            service: JUDGE_SERVICE.to_owned(),
        });
        request.set_timeout(HEALTH_TIMEOUT);
        match self.health.clone().check(request).await {
            Ok(answer) => answer.into_inner().status == ServingStatus::Serving as i32,
            Err(status) => status.code() == tonic::Code::Unimplemented,
        }
    }
}

/// A remote judge's event stream, with transport failures made UNAVAILABLE.
fn remote_stream(response: Response<tonic::codec::Streaming<JudgeEvent>>) -> Response<EventStream> {
    response.map(|s| Box::pin(s.map(|item| item.map_err(replica_failure))) as EventStream)
}

/// A status the replica did not send: the connection broke (the replica died or the network
/// failed), which tonic reports as UNKNOWN or CANCELLED with the transport error as its
/// source. That is UNAVAILABLE to the router (fail over before the first event; a retryable
/// code for the client after it). A status the judge sent itself carries no source and
/// passes unchanged; the router's own cancellations drop the call and produce no status.
fn replica_failure(status: Status) -> Status {
    let broken = matches!(status.code(), tonic::Code::Unknown | tonic::Code::Cancelled)
        && std::error::Error::source(&status).is_some();
    if broken {
        Status::unavailable(format!(
            "judge replica connection lost: {}",
            status.message()
        ))
    } else {
        status
    }
}

/// The service name a judge reports health for.
const JUDGE_SERVICE: &str = "autoj.v1.Judge";

/// How long a readiness probe may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// An in-process replica: any `Judge` service implementation called directly, without a
/// socket or serialisation (one-process mode).
#[derive(Debug)]
pub struct LocalBackend<T> {
    /// The judge service.
    judge: Arc<T>,
}

impl<T> LocalBackend<T> {
    /// Wraps `judge`.
    pub fn new(judge: Arc<T>) -> Self {
        Self { judge }
    }
}

#[tonic::async_trait]
impl<T: Judge> JudgeBackend for LocalBackend<T> {
    async fn compare(
        &self,
        request: Request<CompareRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let response = self.judge.compare(request).await?;
        Ok(response.map(|s| Box::pin(s) as EventStream))
    }

    async fn critique(
        &self,
        request: Request<CritiqueRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let response = self.judge.critique(request).await?;
        Ok(response.map(|s| Box::pin(s) as EventStream))
    }

    async fn score(
        &self,
        request: Request<ScoreRequest>,
    ) -> Result<Response<ScoreResponse>, Status> {
        self.judge.score(request).await
    }

    async fn chat(&self, request: Request<ChatRequest>) -> Result<Response<EventStream>, Status> {
        let response = self.judge.chat(request).await?;
        Ok(response.map(|s| Box::pin(s) as EventStream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let broken = Status::from_error(Box::new(io));
        assert_eq!(replica_failure(broken).code(), tonic::Code::Unavailable);
        let sent = Status::unknown("the judge said so");
        assert_eq!(replica_failure(sent).code(), tonic::Code::Unknown);
        let cancelled = Status::cancelled("client went away");
        assert_eq!(replica_failure(cancelled).code(), tonic::Code::Cancelled);
    }
}
