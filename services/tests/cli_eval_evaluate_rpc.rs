//! `autoj eval` drives the server's bulk `Evaluate` RPC (one bidirectional stream, the
//! server's window and backpressure), not its own loop of Compare / Critique calls: against a
//! server whose only working RPC is `Evaluate`, every row is judged; a result the server marks
//! failed becomes that row's error.

mod common;

use std::pin::Pin;

use autoj_proto::stream::{EventStream, ResultStream};
use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_server::{Judge, JudgeServer};
use common::{autoj, run};
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use tonic::{Request, Response, Status, Streaming};

/// A judge that answers only `Evaluate`: rows whose query says "fail" get an error result,
/// the rest a single verdict of 7.
#[derive(Clone)]
struct EvaluateOnly;

fn result(item: pb::EvaluateItem) -> pb::EvaluateResult {
    let query = match &item.request {
        Some(pb::evaluate_item::Request::Critique(c)) => c.query.clone(),
        _ => String::new(),
    };
    if query.contains("fail") {
        return pb::EvaluateResult {
            id: item.id,
            events: Vec::new(),
            error_code: tonic::Code::FailedPrecondition as i32,
            error_message: "too long".into(),
        };
    }
    let verdict = pb::Verdict {
        result: Some(pb::verdict::Result::Single(pb::SingleVerdict {
            rating: Some(7.0),
            ..Default::default()
        })),
        source: pb::VerdictSource::Parsed as i32,
        ..Default::default()
    };
    pb::EvaluateResult {
        id: item.id,
        events: vec![pb::JudgeEvent {
            event: Some(pb::judge_event::Event::Verdict(verdict)),
        }],
        error_code: 0,
        error_message: String::new(),
    }
}

#[tonic::async_trait]
impl Judge for EvaluateOnly {
    type CompareStream = EventStream;
    type CritiqueStream = EventStream;
    type EvaluateStream = ResultStream;
    type ChatStream = EventStream;

    async fn compare(
        &self,
        _: Request<pb::CompareRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("only Evaluate here"))
    }

    async fn critique(
        &self,
        _: Request<pb::CritiqueRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("only Evaluate here"))
    }

    async fn score(
        &self,
        _: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        Err(Status::unimplemented("only Evaluate here"))
    }

    async fn chat(&self, _: Request<pb::ChatRequest>) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("only Evaluate here"))
    }

    async fn evaluate(
        &self,
        request: Request<Streaming<pb::EvaluateItem>>,
    ) -> Result<Response<ResultStream>, Status> {
        let items = request.into_inner();
        let results: Pin<Box<dyn Stream<Item = _> + Send>> =
            Box::pin(items.map(|item| item.map(result)));
        Ok(Response::new(results))
    }
}

#[test]
fn eval_judges_every_row_through_evaluate() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(JudgeServer::new(EvaluateOnly))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    let rows = [
        json!({"prompt": "Say hi.", "response": "Hello!"}),
        json!({"prompt": "please fail", "response": "x"}),
        json!({"prompt": "Count to three.", "response": "1 2 3"}),
    ];
    std::fs::write(
        &input,
        rows.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .unwrap();
    let out = run(autoj()
        .args(["eval", "--addr", &addr, "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output));
    assert!(
        !out.status.success(),
        "one row failed, so the exit status says so"
    );
    let written: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(written.len(), 3);
    for i in [0, 2] {
        assert_eq!(written[i]["index"], i);
        assert_eq!(written[i]["rating"], 7.0, "{}", written[i]);
        assert!(written[i].get("error").is_none(), "{}", written[i]);
    }
    assert_eq!(written[1]["error"]["code"], "FailedPrecondition");
    assert_eq!(written[1]["error"]["message"], "too long");
}
