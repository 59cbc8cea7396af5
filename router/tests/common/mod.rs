//! Test kit shared by the router's behaviour tests: a fake judge server that records who
//! served what, a fake classifier that counts calls, loopback servers and timeouts.

#![allow(dead_code)] // each test file uses a different part of the kit

pub mod pki;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autoj_proto::v1::judge_client::JudgeClient;
use autoj_proto::v1::judge_event::Event;
use autoj_proto::v1::judge_server::{Judge, JudgeServer};
use autoj_proto::v1::{
    verdict, Accepted, CandidateScore, CompareRequest, CritiqueDelta, CritiqueRequest,
    EvaluateItem, EvaluateResult, JudgeEvent, JudgeOptions, PairwiseVerdict, ScoreRequest,
    ScoreResponse, SingleVerdict, Usage, Verdict, VerdictSource, Winner,
};
use autoj_router::{
    Catalog, Classifier, DataSource, Prediction, Router, RouterConfig, RouterError,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// Every await in the tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than [`LIMIT`].
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

/// The fixture catalog under `tests/fixtures/data`.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data")
}

/// Loads the fixture catalog.
pub fn fixture_catalog() -> Catalog {
    Catalog::load(&DataSource::Dir(fixture_dir())).expect("fixture catalog is valid")
}

/// One request a fake judge served.
#[derive(Debug, Clone)]
pub struct Served {
    /// Which fake replica.
    pub replica: String,
    /// `compare`, `critique` or `score`.
    pub rpc: &'static str,
    /// The options the router forwarded.
    pub options: JudgeOptions,
    /// The `grpc-timeout` the router forwarded, if any.
    pub timeout: Option<String>,
}

/// What all fake judges of a test record, shared between them.
#[derive(Debug, Clone, Default)]
pub struct JudgeLog {
    served: Arc<Mutex<Vec<Served>>>,
    /// Notified when a held stream's receiver closes (the router dropped the call).
    pub closed: Arc<Notify>,
}

impl JudgeLog {
    /// Everything served so far.
    pub fn served(&self) -> Vec<Served> {
        self.served.lock().unwrap().clone()
    }

    /// The replicas that served, in order.
    pub fn replicas(&self) -> Vec<String> {
        self.served().into_iter().map(|s| s.replica).collect()
    }
}

/// A judge replica answering Accepted, one CritiqueDelta, Verdict and Usage; with `hold`
/// it stops after Accepted and waits for the receiver to go away.
#[derive(Debug, Clone)]
pub struct FakeJudge {
    /// Reported as `Accepted.replica` and recorded in the log.
    pub replica: String,
    /// The shared log.
    pub log: JudgeLog,
    /// Hold the stream open after Accepted until the client side closes it.
    pub hold: bool,
}

impl FakeJudge {
    /// A replica that answers at once.
    pub fn new(replica: &str, log: &JudgeLog) -> Self {
        Self {
            replica: replica.to_owned(),
            log: log.clone(),
            hold: false,
        }
    }

    /// Records a call.
    fn record<M>(&self, rpc: &'static str, request: &Request<M>, options: Option<&JudgeOptions>) {
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.log.served.lock().unwrap().push(Served {
            replica: self.replica.clone(),
            rpc,
            options: options.cloned().unwrap_or_default(),
            timeout,
        });
    }

    /// The event stream of one judgment.
    fn events(&self) -> ReceiverStream<Result<JudgeEvent, Status>> {
        let (tx, rx) = mpsc::channel(4);
        let replica = self.replica.clone();
        let hold = self.hold;
        let closed = self.log.closed.clone();
        tokio::spawn(async move {
            let accepted = Event::Accepted(Accepted {
                request_id: "r-1".into(),
                replica,
                model: "fake".into(),
                ..Default::default()
            });
            if tx
                .send(Ok(JudgeEvent {
                    event: Some(accepted),
                }))
                .await
                .is_err()
            {
                return;
            }
            if hold {
                tx.closed().await;
                closed.notify_one();
                return;
            }
            let verdict = Verdict {
                result: Some(verdict::Result::Pairwise(PairwiseVerdict {
                    winner: Winner::Response1 as i32,
                    ..Default::default()
                })),
                source: VerdictSource::Parsed as i32,
                raw_text: "So, the final decision is Response 1.".into(),
                order: 0,
            };
            let events = [
                Event::CritiqueDelta(CritiqueDelta {
                    text: "Response 1 is clearer.".into(),
                    order: 0,
                }),
                Event::Verdict(verdict),
                Event::Usage(Usage::default()),
            ];
            for event in events {
                if tx
                    .send(Ok(JudgeEvent { event: Some(event) }))
                    .await
                    .is_err()
                {
                    return; // stop the moment the receiver is gone
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

#[tonic::async_trait]
impl Judge for FakeJudge {
    type CompareStream = ReceiverStream<Result<JudgeEvent, Status>>;
    type CritiqueStream = ReceiverStream<Result<JudgeEvent, Status>>;
    type EvaluateStream = tokio_stream::Empty<Result<EvaluateResult, Status>>;
    type ChatStream = ReceiverStream<Result<JudgeEvent, Status>>;

    async fn compare(
        &self,
        request: Request<CompareRequest>,
    ) -> Result<Response<Self::CompareStream>, Status> {
        self.record("compare", &request, request.get_ref().options.as_ref());
        Ok(Response::new(self.events()))
    }

    async fn critique(
        &self,
        request: Request<CritiqueRequest>,
    ) -> Result<Response<Self::CritiqueStream>, Status> {
        self.record("critique", &request, request.get_ref().options.as_ref());
        Ok(Response::new(self.events()))
    }

    async fn score(
        &self,
        request: Request<ScoreRequest>,
    ) -> Result<Response<ScoreResponse>, Status> {
        self.record("score", &request, request.get_ref().options.as_ref());
        let scores = (0..request.get_ref().responses.len() as u32)
            .map(|index| CandidateScore {
                index,
                verdict: Some(SingleVerdict {
                    rating: Some(5.0),
                    ..Default::default()
                }),
                source: VerdictSource::Parsed as i32,
            })
            .collect();
        Ok(Response::new(ScoreResponse {
            scores,
            best_index: 0,
            scenario: String::new(),
        }))
    }

    async fn evaluate(
        &self,
        _: Request<Streaming<EvaluateItem>>,
    ) -> Result<Response<Self::EvaluateStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn chat(
        &self,
        request: Request<autoj_proto::v1::ChatRequest>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        self.record("chat", &request, None);
        Ok(Response::new(self.events()))
    }
}

/// A loopback server that stops when dropped.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Dropping it stops the server.
    _stop: oneshot::Sender<()>,
}

impl Running {
    /// Its `http://` URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Binds 127.0.0.1:0.
async fn bind() -> (TcpListener, SocketAddr) {
    let listener = within(TcpListener::bind("127.0.0.1:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Serves a fake judge on a loopback port.
pub async fn spawn_judge(judge: FakeJudge) -> Running {
    let (listener, _) = bind().await;
    serve_judge_on(listener, judge, None)
}

/// Serves a fake judge on `listener`, over TLS when `tls` is given.
pub fn serve_judge_on(
    listener: TcpListener,
    judge: FakeJudge,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Running {
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).expect("valid TLS config");
    }
    tokio::spawn(
        server
            .add_service(JudgeServer::new(judge))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    Running { addr, _stop: stop }
}

/// Serves a built router on a loopback port.
pub async fn spawn_router(router: Router) -> Running {
    let (listener, addr) = bind().await;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(router.serve(listener, async {
        let _ = stopped.await;
    }));
    Running { addr, _stop: stop }
}

/// An address nobody listens on (bound, then released).
pub async fn dead_url() -> String {
    let (listener, addr) = bind().await;
    drop(listener);
    format!("http://{addr}")
}

/// Builds a router from TOML config text over the fixture catalog, with `classifier`.
pub async fn build_router(config: &str, classifier: FakeClassifier) -> Result<Router, RouterError> {
    let config = RouterConfig::from_toml(config, Path::new("test.toml"))?;
    within(
        Router::builder(config)
            .catalog(fixture_catalog())
            .classifier(Box::new(classifier))
            .build(),
    )
    .await
}

/// Builds a router from TOML config text (see [`build_router`]) and serves it on loopback.
pub async fn start_router(config: &str, classifier: FakeClassifier) -> Running {
    spawn_router(
        build_router(config, classifier)
            .await
            .expect("router builds"),
    )
    .await
}

/// Config text with one pool, `main`, of the given replica URLs, serving everything.
pub fn one_pool(urls: &[String]) -> String {
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[routing]\ndefault_pool = \"main\"\n[[routing.pool]]\nname = \"main\"\nendpoints = [{}]\n",
        list.join(", ")
    )
}

/// A connected Judge client.
pub async fn judge_client(server: &Running) -> JudgeClient<Channel> {
    within(JudgeClient::connect(server.url())).await.unwrap()
}

/// A connected channel to `server`, for clients without a `connect` of their own.
pub async fn channel(server: &Running) -> Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(server.url()).unwrap();
    within(endpoint.connect()).await.unwrap()
}

/// Reads a judge stream to its end.
pub async fn collect(
    stream: impl Stream<Item = Result<JudgeEvent, Status>>,
) -> Result<Vec<JudgeEvent>, Status> {
    within(stream.collect::<Result<Vec<_>, _>>()).await
}

/// The `Accepted` event of a collected stream.
pub fn accepted(events: &[JudgeEvent]) -> Accepted {
    match events.first().and_then(|e| e.event.clone()) {
        Some(Event::Accepted(a)) => a,
        other => panic!("first event is not Accepted: {other:?}"),
    }
}

/// A compare request with `query` and optionally a named scenario.
pub fn compare(query: &str, scenario: &str) -> CompareRequest {
    CompareRequest {
        query: query.into(),
        response_1: "one".into(),
        response_2: "two".into(),
        options: Some(JudgeOptions {
            scenario: scenario.into(),
            ..Default::default()
        }),
    }
}

/// A classifier that maps keywords to scenarios and counts its calls.
#[derive(Debug, Clone, Default)]
pub struct FakeClassifier {
    /// How many queries it classified.
    pub calls: Arc<AtomicUsize>,
    /// The threshold it recommends to the router (as `labels.json` does for the real model).
    pub recommended_min_confidence: Option<f32>,
}

impl Classifier for FakeClassifier {
    fn labels(&self) -> Vec<String> {
        fixture_catalog()
            .scenarios()
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    fn recommended_min_confidence(&self) -> Option<f32> {
        self.recommended_min_confidence
    }

    fn classify(&mut self, query: &str, top_k: usize) -> Result<Vec<Prediction>, RouterError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let first = if query.contains("code") || query.contains("function") {
            "code_generation"
        } else if query.contains("summar") {
            "text_summarization"
        } else {
            "chitchat"
        };
        let catalog = fixture_catalog();
        let mut names: Vec<&str> = catalog
            .scenarios()
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        names.retain(|n| *n != first);
        names.insert(0, first);
        // An "ambiguous" query gets a flat distribution: no group stands out.
        if query.contains("ambiguous") {
            let flat = 1.0 / names.len() as f32;
            return Ok(names
                .into_iter()
                .take(top_k)
                .map(|name| Prediction {
                    scenario: name.to_owned(),
                    group: None,
                    probability: flat,
                })
                .collect());
        }
        Ok(names
            .into_iter()
            .take(top_k)
            .enumerate()
            .map(|(i, name)| Prediction {
                scenario: name.to_owned(),
                group: None,
                probability: 0.5 / (i as f32 + 1.0),
            })
            .collect())
    }
}
