//! One judge replica as the router sees it: a [`JudgeBackend`], either a remote replica
//! reached over gRPC ([`RemoteBackend`]) or a judge service inside this process
//! ([`LocalBackend`], the one-process mode). Both take and give the same tonic types, so the
//! pool, failover and relay code cannot tell them apart.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use autoj_proto::v1::judge_client::JudgeClient;
use autoj_proto::v1::judge_server::Judge;
use autoj_proto::v1::{CompareRequest, CritiqueRequest, JudgeEvent, ScoreRequest, ScoreResponse};
use futures::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::error::RouterError;

/// A judge's event stream, type-erased so remote and in-process replicas look the same.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<JudgeEvent, Status>> + Send + 'static>>;

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
}

/// A remote replica: a lazily connected gRPC channel to one address.
#[derive(Debug, Clone)]
pub struct RemoteBackend {
    /// The generated client over a channel that connects on first use and reconnects after
    /// failures; a connect failure surfaces as UNAVAILABLE, which the pool fails over on.
    client: JudgeClient<Channel>,
}

impl RemoteBackend {
    /// A client for `url` (`http://host:port`) that gives up connecting after
    /// `connect_timeout`. Does not connect yet.
    pub fn new(url: &str, connect_timeout: Duration) -> Result<Self, RouterError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| RouterError::Routing(format!("endpoint `{url}`: {e}")))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        Ok(Self {
            client: JudgeClient::new(endpoint.connect_lazy()),
        })
    }
}

#[tonic::async_trait]
impl JudgeBackend for RemoteBackend {
    async fn compare(
        &self,
        request: Request<CompareRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let response = self.client.clone().compare(request).await?;
        Ok(response.map(|s| Box::pin(s) as EventStream))
    }

    async fn critique(
        &self,
        request: Request<CritiqueRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let response = self.client.clone().critique(request).await?;
        Ok(response.map(|s| Box::pin(s) as EventStream))
    }

    async fn score(
        &self,
        request: Request<ScoreRequest>,
    ) -> Result<Response<ScoreResponse>, Status> {
        self.client.clone().score(request).await
    }
}

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
}
