//! Closing the connection of a Server-Sent Events judgment stops its generation within one
//! engine step, as cancelling a gRPC stream does: the router, its HTTP door and gRPC server
//! run in this process over a tiny model's engine, behind a replica that notes the engine's
//! step count at the moment the router drops the judge's stream. Generation may finish the
//! step under way then; it must not start another.

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use autoj_judge::engine::model::{ModelSpec, WeightDType};
use autoj_judge::engine::{Engine, EngineConfig, PromptFormatChoice, Scheduling};
use autoj_judge::grpc::service::JudgeService;
use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::testkit::{write_gguf, TinySpec};
use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_client::JudgeClient;
use autoj_router::{EventStream, JudgeBackend, LocalBackend, Router};
use autoj_services::stack::{default_router_config, LOCAL_POOL};
use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// Every wait is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

/// New tokens asked for: more than the test lets it write (the tiny model never ends).
const LONG: u32 = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_stops_generation_within_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path()).await;

    // Over HTTP: hang up once critique text is streaming.
    let steps = stack.cancel_over_http().await;
    steps.print("HTTP");
    assert!(
        steps.after_drop <= 1,
        "HTTP: {} engine steps ran after the door dropped the stream ({steps:?})",
        steps.after_drop
    );
    // Over gRPC, the same measure: what the HTTP door must match.
    let steps = stack.cancel_over_grpc().await;
    steps.print("gRPC");
    assert!(
        steps.after_drop <= 1,
        "gRPC: {} engine steps ran after the router dropped the stream ({steps:?})",
        steps.after_drop
    );
    assert_eq!(
        stack.engine.stats().completed.load(Ordering::Relaxed),
        0,
        "neither judgment ran to its end"
    );
    stack.stop().await;
}

/// Engine step counts around one cancelled judgment.
#[derive(Debug)]
struct Steps {
    /// Steps between the client closing and the router dropping the judge's stream: how
    /// long the server took to notice (printed, not asserted: it is a matter of timing).
    to_notice: u64,
    /// Steps started after the drop, counted once the engine reports the request cancelled.
    after_drop: u64,
}

impl Steps {
    /// Prints the counts (the figures, for `--nocapture`).
    fn print(&self, what: &str) {
        eprintln!(
            "{what}: the server dropped the stream {} steps after the client closed; {} steps ran after the drop",
            self.to_notice, self.after_drop
        );
    }
}

/// The router (gRPC and the HTTP door) over one engine, in this process.
struct Stack {
    /// The judge's engine, for its counters.
    engine: Engine,
    /// The step count when the router last dropped a judge stream.
    dropped_at: Arc<Mutex<Option<u64>>>,
    /// The HTTP door's `host:port`.
    http: String,
    /// The gRPC address, `http://host:port`.
    grpc: String,
    /// Stops the servers.
    stop: tokio::sync::oneshot::Sender<()>,
    /// The servers' task.
    task: tokio::task::JoinHandle<()>,
}

impl Stack {
    /// Starts an engine on a tiny model written in `dir`, and the router over it.
    async fn start(dir: &std::path::Path) -> Self {
        let model = write_gguf(dir, &TinySpec::default()).unwrap();
        let config = EngineConfig {
            model: ModelSpec::new(model, WeightDType::F32, candle_core::Device::Cpu),
            prompt_format: PromptFormatChoice::Auto,
            queue_capacity: 8,
            prefill_chunk: 64,
            scheduling: Scheduling::default(),
        };
        let engine = within(tokio::task::spawn_blocking(move || Engine::start(config)))
            .await
            .unwrap()
            .expect("the engine starts");
        let judge = Arc::new(JudgeService::new(
            engine.clone(),
            ServiceLimits::default(),
            "probe",
        ));
        let dropped_at = Arc::new(Mutex::new(None));
        let probe = Probe {
            judge: LocalBackend::new(judge),
            engine: engine.clone(),
            dropped_at: dropped_at.clone(),
        };
        let mut config = default_router_config().unwrap();
        config.classifier.enabled = false;
        let router = Router::builder(config)
            .local_judge(LOCAL_POOL, Arc::new(probe))
            .build()
            .await
            .expect("the router builds");
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            router
                .serve_all(grpc, Some(http), shutdown)
                .await
                .expect("the router serves");
        });
        Self {
            engine,
            dropped_at,
            http: http_addr.to_string(),
            grpc: format!("http://{grpc_addr}"),
            stop,
            task,
        }
    }

    /// The engine's step count now.
    fn steps(&self) -> u64 {
        self.engine.stats().steps.load(Ordering::Relaxed)
    }

    /// Opens an SSE compare on a connection of its own, reads until critique text arrives,
    /// closes the connection; the step counts.
    async fn cancel_over_http(&self) -> Steps {
        let door = self.http.clone();
        let open = tokio::task::spawn_blocking(move || open_sse(&door));
        let events = within(open).await.unwrap();
        self.close_and_count(move || drop(events)).await
    }

    /// The same over gRPC: a `Judge.Compare` stream dropped once critique text arrives.
    async fn cancel_over_grpc(&self) -> Steps {
        let mut client = within(JudgeClient::connect(self.grpc.clone()))
            .await
            .expect("connect over gRPC");
        let mut stream = within(client.compare(compare()))
            .await
            .expect("Compare starts")
            .into_inner();
        loop {
            let event = within(stream.message())
                .await
                .unwrap()
                .expect("stream open");
            if matches!(event.event, Some(pb::judge_event::Event::CritiqueDelta(_))) {
                break;
            }
        }
        self.close_and_count(move || drop(stream)).await
    }

    /// Runs `close`, waits until the engine has cancelled one more request, and counts the
    /// steps around the router's drop of the stream.
    async fn close_and_count(&self, close: impl FnOnce()) -> Steps {
        let cancelled = self.engine.stats().cancelled.load(Ordering::Relaxed);
        *self.dropped_at.lock().unwrap() = None;
        let at_close = self.steps();
        close();
        within(async {
            while self.engine.stats().cancelled.load(Ordering::Relaxed) == cancelled {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let dropped = self
            .dropped_at
            .lock()
            .unwrap()
            .expect("the router dropped the judge's stream");
        Steps {
            to_notice: dropped.saturating_sub(at_close),
            after_drop: self.steps() - dropped,
        }
    }

    /// Stops the servers.
    async fn stop(self) {
        let _ = self.stop.send(());
        within(self.task).await.unwrap();
    }
}

/// Posts a long compare to the door at `door` asking for events, on a connection of its
/// own, and reads until the first critique text; the open connection.
fn open_sse(door: &str) -> BufReader<std::net::TcpStream> {
    let mut conn = std::net::TcpStream::connect(door).expect("connect to the HTTP door");
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    let body = serde_json::to_string(&compare()).unwrap();
    write!(
        conn,
        "POST /v1/judge/compare HTTP/1.1\r\nHost: {door}\r\nAccept: text/event-stream\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut events = BufReader::new(conn);
    let mut line = String::new();
    while line.trim_end() != "event: critique_delta" {
        line.clear();
        let read = events.read_line(&mut line).unwrap();
        assert!(read > 0, "the stream ended before any critique text");
    }
    events
}

/// A long pairwise request.
fn compare() -> pb::CompareRequest {
    pb::CompareRequest {
        query: "Explain sorting.".into(),
        response_1: "Use sort().".into(),
        response_2: "Write a loop.".into(),
        options: Some(pb::JudgeOptions {
            generation: Some(pb::GenerationOptions {
                max_new_tokens: Some(LONG),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Awaits `f`, failing the test after [`LIMIT`].
async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

/// The in-process judge, with each judging stream it gives out watched for its drop.
struct Probe {
    /// The real replica.
    judge: LocalBackend<JudgeService>,
    /// Its engine, whose step count a drop notes.
    engine: Engine,
    /// Where a drop notes it.
    dropped_at: Arc<Mutex<Option<u64>>>,
}

impl Probe {
    /// `response`'s stream, watched.
    fn watch(&self, response: Response<EventStream>) -> Response<EventStream> {
        let engine = self.engine.clone();
        let dropped_at = self.dropped_at.clone();
        response.map(|inner| {
            Box::pin(Watched {
                inner,
                engine,
                dropped_at,
            }) as EventStream
        })
    }
}

#[tonic::async_trait]
impl JudgeBackend for Probe {
    async fn compare(
        &self,
        request: Request<pb::CompareRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Ok(self.watch(self.judge.compare(request).await?))
    }

    async fn critique(
        &self,
        request: Request<pb::CritiqueRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Ok(self.watch(self.judge.critique(request).await?))
    }

    async fn score(
        &self,
        request: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        self.judge.score(request).await
    }

    async fn chat(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Ok(self.watch(self.judge.chat(request).await?))
    }
}

/// A judge's event stream that notes the engine's step count when it is dropped (before
/// the stream inside it is, so a step started in between counts as after the drop).
struct Watched {
    /// The judge's stream.
    inner: EventStream,
    /// The engine generating it.
    engine: Engine,
    /// Where the drop is noted.
    dropped_at: Arc<Mutex<Option<u64>>>,
}

impl Stream for Watched {
    type Item = Result<pb::JudgeEvent, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let steps = self.engine.stats().steps.load(Ordering::Relaxed);
        if let Ok(mut at) = self.dropped_at.lock() {
            *at = Some(steps);
        }
    }
}
