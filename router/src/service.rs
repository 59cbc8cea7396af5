//! The router's gRPC services: `Judge` (validate, pick a scenario, route, relay) and
//! `Scenarios` (classify, list, criteria).

use std::collections::HashMap;
use std::sync::Arc;

use autoj_proto::v1::judge_server::Judge;
use autoj_proto::v1::scenarios_server::Scenarios;
use autoj_proto::v1::{
    Classification, ClassifyRequest, ClassifyResponse, CompareRequest, CritiqueRequest,
    EvaluateItem, GetCriteriaRequest, GetCriteriaResponse, ListScenariosRequest,
    ListScenariosResponse, ScenarioScore, ScenarioSource, ScoreRequest, ScoreResponse,
};
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::backend::{EventStream, JudgeBackend};
use crate::classifier::{ClassifierHandle, Decision};
use crate::config::LimitsConfig;
use crate::error::RouterError;
use crate::language::Lang;
use crate::metrics::{Call, RouterCall};
use crate::pool::{Pool, Served};
use crate::relay::{peek, Relay, Stamp};
use crate::routing::{RouteKey, RoutingTable};
use crate::scenarios::Catalog;
use crate::validate::{check_classify, check_limits, check_options, Judged};

mod chat;

/// The scenario used for routing when no classifier is configured and none was named.
const FALLBACK_SCENARIO: &str = "default";

/// The router's `Judge` and `Scenarios` services; cheap to clone (shared state behind an Arc).
#[derive(Debug, Clone)]
pub struct RouterService {
    /// Everything a request reads; immutable after start-up (pools update themselves).
    inner: Arc<Inner>,
}

/// The shared state.
#[derive(Debug)]
struct Inner {
    /// Scenarios and criteria.
    catalog: Arc<Catalog>,
    /// Validated routing rules.
    table: RoutingTable,
    /// Pools by name; every pool the table names is here.
    pools: HashMap<String, Arc<Pool>>,
    /// The classifier worker; `None` when classification is disabled.
    classifier: Option<ClassifierHandle>,
    /// Per-request limits and the in-flight ceiling.
    limits: LimitsConfig,
    /// One permit per judging call in flight (held until its stream ends); none left means
    /// RESOURCE_EXHAUSTED at once.
    admission: Arc<tokio::sync::Semaphore>,
}

/// Where a request goes and what it is stamped with.
struct Route {
    /// The pool.
    pool: Arc<Pool>,
    /// What `Accepted` gets.
    stamp: Stamp,
    /// The scenario's group, for metrics.
    group: Option<String>,
}

impl RouterService {
    /// Assembles the service; `pools` must hold every pool `table` names (the builder in
    /// [`crate::server`] ensures it).
    pub(crate) fn new(
        catalog: Arc<Catalog>,
        table: RoutingTable,
        pools: HashMap<String, Arc<Pool>>,
        classifier: Option<ClassifierHandle>,
        limits: &LimitsConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                catalog,
                table,
                pools,
                classifier,
                admission: Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight)),
                limits: limits.clone(),
            }),
        }
    }
}

impl RouterService {
    /// The per-request limits and the in-flight ceiling it enforces.
    pub fn limits(&self) -> &LimitsConfig {
        &self.inner.limits
    }
}

impl Inner {
    /// Validates `msg`, settles its scenario (named, classified or fallback) and language,
    /// writes both into the forwarded options, and picks the pool.
    async fn route<M: Judged>(&self, msg: &mut M) -> Result<Route, RouterError> {
        let requested = tracing::info_span!("validate").in_scope(|| {
            msg.check_fields()?;
            check_limits(msg, &self.limits)?;
            check_options(msg.options_mut())
        })?;
        let named = msg.options_mut().scenario.trim().to_owned();
        let (scenario, source) = if !named.is_empty() {
            if self.catalog.get(&named).is_none() {
                return Err(RouterError::UnknownScenario {
                    field: "options.scenario",
                    name: named,
                });
            }
            (named, ScenarioSource::Client)
        } else if let Some(classifier) = &self.classifier {
            let started = std::time::Instant::now();
            let group_of = |name: &str| self.catalog.get(name).and_then(|s| s.group.clone());
            let decision = classifier
                .decide(msg.query(), group_of)
                .instrument(tracing::info_span!("classify"))
                .await?;
            crate::metrics::record_classifier(started.elapsed());
            match decision {
                Decision::Confident { scenario, .. } => (scenario, ScenarioSource::Classifier),
                Decision::Unsure { group_probability } => {
                    tracing::debug!(group_probability, "classifier unsure: routing on language");
                    (String::new(), ScenarioSource::LowConfidence)
                }
            }
        } else {
            (String::new(), ScenarioSource::None)
        };
        let language = Lang::resolve(requested, msg.query());
        let routed_on = if scenario.is_empty() {
            FALLBACK_SCENARIO
        } else {
            &scenario
        };
        let group = self.catalog.get(routed_on).and_then(|s| s.group.as_deref());
        let pool_name = tracing::info_span!("route").in_scope(|| {
            self.table.route(RouteKey {
                scenario: routed_on,
                group,
                language,
            })
        });
        tracing::debug!(scenario = %routed_on, ?group, ?language, pool = pool_name, "routed");
        let span = tracing::Span::current();
        span.record("autoj.scenario", routed_on);
        span.record("autoj.pool", pool_name);
        let pool = self
            .pools
            .get(pool_name)
            .cloned()
            .ok_or_else(|| RouterError::NoReplica {
                pool: pool_name.to_owned(),
            })?;
        let options = msg.options_mut();
        options.scenario.clone_from(&scenario);
        options.language = language.to_proto() as i32;
        Ok(Route {
            pool,
            stamp: Stamp { scenario, source },
            group: group.map(str::to_owned),
        })
    }

    /// Routes a streaming judging request and relays the chosen replica's stream.
    async fn stream<M: StreamRpc>(
        &self,
        request: Request<M>,
        call: &mut Call,
    ) -> Result<Response<EventStream>, RouterError> {
        let permit = self.admit()?;
        let deadline = deadline_of(request.metadata());
        let metadata = forwarded_metadata(request.metadata());
        let mut msg = request.into_inner();
        let route = self.route(&mut msg).await?;
        call.recorder_mut()
            .routed(route.group.as_deref(), route.pool.name());
        let served = route
            .pool
            .call(deadline, |backend| {
                let request = outbound(&metadata, msg.clone(), deadline);
                async move { peek(M::send(backend, request).await?).await }
            })
            .instrument(forward_span())
            .await?;
        Ok(relayed(served, route.stamp, deadline, permit))
    }

    /// A slot for one more judging call, or RESOURCE_EXHAUSTED at once when all are taken.
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, RouterError> {
        self.admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| RouterError::Overloaded {
                limit: self.limits.max_in_flight,
            })
    }

    /// Routes a `Score` request (unary, so failover covers the whole call).
    async fn score(
        &self,
        request: Request<ScoreRequest>,
        call: &mut Call,
    ) -> Result<Response<ScoreResponse>, RouterError> {
        let _permit = self.admit()?;
        let deadline = deadline_of(request.metadata());
        let metadata = forwarded_metadata(request.metadata());
        let mut msg = request.into_inner();
        let route = self.route(&mut msg).await?;
        call.recorder_mut()
            .routed(route.group.as_deref(), route.pool.name());
        let served = route
            .pool
            .call(deadline, |backend| {
                let request = outbound(&metadata, msg.clone(), deadline);
                async move { backend.score(request).await }
            })
            .instrument(forward_span())
            .await?;
        let mut response = served.value.into_inner();
        if response.scenario.is_empty() {
            response.scenario = route.stamp.scenario;
        }
        Ok(Response::new(response))
    }

    /// Classifies a batch of queries.
    async fn classify(&self, request: ClassifyRequest) -> Result<ClassifyResponse, RouterError> {
        let classifier = self.classifier.as_ref().ok_or(RouterError::Unimplemented(
            "this router runs without a scenario classifier",
        ))?;
        let top_k = check_classify(&request, self.catalog.scenarios().len())?;
        let results = classifier.classify(request.queries, top_k).await?;
        let results = results
            .into_iter()
            .map(|top| Classification {
                top: top
                    .into_iter()
                    .map(|p| {
                        // The catalog is the one source of groups; the model's copy is a fallback.
                        let group = self.catalog.get(&p.scenario).and_then(|s| s.group.clone());
                        ScenarioScore {
                            group: group.or(p.group).unwrap_or_default(),
                            scenario: p.scenario,
                            probability: p.probability,
                        }
                    })
                    .collect(),
            })
            .collect();
        Ok(ClassifyResponse { results })
    }

    /// The criteria of one scenario.
    fn criteria(&self, request: GetCriteriaRequest) -> Result<GetCriteriaResponse, RouterError> {
        let name = request.scenario.trim();
        if name.is_empty() {
            return Err(crate::validate::invalid("scenario", "must not be empty"));
        }
        let criteria = self
            .catalog
            .criteria(name)
            .ok_or_else(|| RouterError::UnknownScenario {
                field: "scenario",
                name: name.to_owned(),
            })?;
        Ok(GetCriteriaResponse {
            scenario: name.to_owned(),
            criteria: criteria
                .iter()
                .map(|c| autoj_proto::v1::Criterion {
                    name: c.name.clone(),
                    content: c.content.clone(),
                    inherited_from: c.inherited_from.clone().unwrap_or_default(),
                })
                .collect(),
        })
    }
}

/// A streaming judging RPC: how to send it to a backend.
trait StreamRpc: Judged + Clone + Send + 'static {
    /// Calls the matching method of `backend`.
    fn send(
        backend: Arc<dyn JudgeBackend>,
        request: Request<Self>,
    ) -> BoxFuture<'static, Result<Response<EventStream>, Status>>;
}

impl StreamRpc for CompareRequest {
    fn send(
        backend: Arc<dyn JudgeBackend>,
        request: Request<Self>,
    ) -> BoxFuture<'static, Result<Response<EventStream>, Status>> {
        Box::pin(async move { backend.compare(request).await })
    }
}

impl StreamRpc for CritiqueRequest {
    fn send(
        backend: Arc<dyn JudgeBackend>,
        request: Request<Self>,
    ) -> BoxFuture<'static, Result<Response<EventStream>, Status>> {
        Box::pin(async move { backend.critique(request).await })
    }
}

/// The client's deadline, from its `grpc-timeout` header.
fn deadline_of(metadata: &MetadataMap) -> Option<Instant> {
    autoj_proto::deadline::deadline_of(metadata).map(Instant::from_std)
}

/// The client metadata worth passing to the judge (auth, trace context, custom keys): all
/// but the transport's own headers, which the outbound client sets itself.
fn forwarded_metadata(incoming: &MetadataMap) -> MetadataMap {
    let mut headers = incoming.clone().into_headers();
    let own = [
        "te",
        "content-type",
        "user-agent",
        "host",
        "accept-encoding",
        "content-length",
    ];
    let drop: Vec<_> = headers
        .keys()
        .filter(|k| own.contains(&k.as_str()) || k.as_str().starts_with("grpc-"))
        .cloned()
        .collect();
    for key in drop {
        headers.remove(key);
    }
    MetadataMap::from_headers(headers)
}

/// The span of the call to the judge pool (every attempt of a failover), whose context the
/// judge receives.
fn forward_span() -> tracing::Span {
    tracing::info_span!("forward", otel.kind = "client")
}

/// One attempt's outbound request: forwarded metadata with this call's trace context, the
/// message, and what is left of the client's deadline (so the judge stops when the client
/// would stop waiting).
fn outbound<M>(metadata: &MetadataMap, msg: M, deadline: Option<Instant>) -> Request<M> {
    let mut metadata = metadata.clone();
    crate::trace::inject_current(&mut metadata);
    let request = Request::from_parts(metadata, Default::default(), msg);
    autoj_proto::deadline::with_remaining(request, deadline.map(Instant::into_std))
}

impl RouterService {
    /// A streaming judging call inside its trace span and metrics: the relayed stream keeps
    /// both until it ends; a failure before the stream is recorded at once.
    async fn observed_stream<M: StreamRpc>(
        &self,
        rpc: &'static str,
        request: Request<M>,
    ) -> Result<Response<EventStream>, Status> {
        let span = crate::trace::call_span(rpc, request.metadata());
        let mut call = RouterCall::start(rpc);
        let started = self
            .inner
            .stream(request, &mut call)
            .instrument(span.clone())
            .await;
        autoj_proto::calls::respond(started.map_err(RouterError::into_status), call, span)
    }
}

#[tonic::async_trait]
impl Judge for RouterService {
    type CompareStream = EventStream;
    type CritiqueStream = EventStream;
    type EvaluateStream = autoj_proto::stream::ResultStream;
    type ChatStream = EventStream;

    async fn compare(
        &self,
        request: Request<CompareRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.observed_stream("Compare", request).await
    }

    async fn critique(
        &self,
        request: Request<CritiqueRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.observed_stream("Critique", request).await
    }

    async fn score(
        &self,
        request: Request<ScoreRequest>,
    ) -> Result<Response<ScoreResponse>, Status> {
        let span = crate::trace::call_span("Score", request.metadata());
        let mut call = RouterCall::start("Score");
        let result = self
            .inner
            .score(request, &mut call)
            .instrument(span.clone())
            .await
            .map_err(RouterError::into_status);
        call.settle(&span, &result);
        result
    }

    async fn evaluate(
        &self,
        request: Request<Streaming<EvaluateItem>>,
    ) -> Result<Response<Self::EvaluateStream>, Status> {
        Ok(Response::new(autoj_proto::evaluate::evaluate(
            self.clone(),
            request,
        )))
    }

    async fn chat(
        &self,
        request: Request<autoj_proto::v1::ChatRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.observed_chat(request).await
    }
}

#[tonic::async_trait]
impl Scenarios for RouterService {
    async fn classify(
        &self,
        request: Request<ClassifyRequest>,
    ) -> Result<Response<ClassifyResponse>, Status> {
        self.inner
            .classify(request.into_inner())
            .await
            .map(Response::new)
            .map_err(RouterError::into_status)
    }

    async fn list(
        &self,
        _request: Request<ListScenariosRequest>,
    ) -> Result<Response<ListScenariosResponse>, Status> {
        let scenarios = self
            .inner
            .catalog
            .scenarios()
            .iter()
            .map(|s| autoj_proto::v1::Scenario {
                name: s.name.clone(),
                group: s.group.clone().unwrap_or_default(),
                description: s.description.clone(),
            })
            .collect();
        Ok(Response::new(ListScenariosResponse { scenarios }))
    }

    async fn get_criteria(
        &self,
        request: Request<GetCriteriaRequest>,
    ) -> Result<Response<GetCriteriaResponse>, Status> {
        self.inner
            .criteria(request.into_inner())
            .map(Response::new)
            .map_err(RouterError::into_status)
    }
}

/// The replica's stream relayed to the caller (stamped, under the deadline), holding the
/// router's admission permit for as long as the stream lives.
fn relayed(
    served: Served<crate::relay::Peeked>,
    stamp: Stamp,
    deadline: Option<Instant>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Response<EventStream> {
    let relay = Relay::new(
        served.value,
        stamp,
        deadline,
        served.replica,
        served.in_flight,
    );
    let relay = relay.map(move |event| {
        let _held = &permit;
        event
    });
    Response::new(Box::pin(relay) as EventStream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_only_client_metadata() {
        let mut md = MetadataMap::new();
        md.insert("authorization", "Bearer x".parse().unwrap());
        md.insert("grpc-timeout", "1S".parse().unwrap());
        md.insert("te", "trailers".parse().unwrap());
        let out = forwarded_metadata(&md);
        assert!(out.get("authorization").is_some());
        assert!(out.get("grpc-timeout").is_none() && out.get("te").is_none());
    }
}
