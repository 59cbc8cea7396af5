//! One request is one trace across processes: `autoj judge` and `autoj router` export their
//! spans over OTLP/gRPC to a real OTLP trace receiver (the `TraceService` generated from the
//! published OTLP protos, served here), and the router's and the judge's spans all carry
//! the trace id the client sent in its `traceparent`, linked parent to child.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autoj_judge::testkit::{write_gguf, TinySpec};
use autoj_proto::v1::judge_client::JudgeClient;
use autoj_proto::v1::{CompareRequest, GenerationOptions, JudgeOptions};
use common::Server;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio_stream::StreamExt;

/// One received span, flattened: the exporting service, ids, name.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: String,
}

/// The OTLP receiver: keeps every span exported to it.
#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Received {
                        service: service.clone(),
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        name: span.name,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Makes every `autoj` this test starts export traces to `endpoint` in 100 ms batches
/// (children inherit the environment; this file holds one test, so nothing races on it).
fn export_traces_to(endpoint: &str) {
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    for name in [
        "OTEL_SERVICE_NAME",
        "OTEL_SDK_DISABLED",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ] {
        std::env::remove_var(name);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_and_judge_spans_form_one_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    export_traces_to(&endpoint);
    let judge = Server::spawn(&[
        "judge",
        "--listen",
        "127.0.0.1:0",
        "--model",
        model.to_str().unwrap(),
    ]);
    let router = Server::router_for(dir.path(), &judge.addr);

    // The client's own trace: the router must continue it, not start another.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut client = JudgeClient::connect(router.addr.clone()).await.unwrap();
    let mut request = tonic::Request::new(CompareRequest {
        query: "Sort a list in Rust".into(),
        response_1: "v.sort()".into(),
        response_2: "use a loop".into(),
        options: Some(JudgeOptions {
            scenario: "code_generation".into(),
            generation: Some(GenerationOptions {
                max_new_tokens: Some(6),
                ..Default::default()
            }),
            ..Default::default()
        }),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{client_span}-01").parse().unwrap(),
    );
    let mut stream = tokio::time::timeout(Duration::from_secs(60), client.compare(request))
        .await
        .expect("the call answered in time")
        .expect("the call was accepted")
        .into_inner();
    let mut events = 0;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("the stream moved in time")
    {
        event.expect("no error mid-stream");
        events += 1;
    }
    assert!(events >= 3, "accepted, text, verdict and usage came back");

    // Batches leave every 100 ms; wait (bounded) for both services' spans of the trace.
    let wanted = |spans: &[Received]| {
        let ours: Vec<_> = spans
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .collect();
        let has =
            |service: &str, name: &str| ours.iter().any(|s| s.service == service && s.name == name);
        ["autoj.v1.Judge/Compare", "validate", "route", "forward"]
            .iter()
            .all(|n| has("autoj-router", n))
            && [
                "autoj.v1.Judge/Compare",
                "validate",
                "admit",
                "queue",
                "prefill",
                "decode",
            ]
            .iter()
            .all(|n| has("autoj-judge", n))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = collector.spans.lock().unwrap().clone();
        if wanted(&spans) {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "router and judge spans of trace {trace_id} not all received within 30 s; got: {:#?}",
            spans
                .iter()
                .map(|s| (s.service.clone(), hex(&s.trace_id), s.name.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let ours: Vec<&Received> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    let by_id: HashMap<String, &Received> = ours.iter().map(|s| (hex(&s.span_id), *s)).collect();
    let find = |service: &str, name: &str| {
        *ours
            .iter()
            .find(|s| s.service == service && s.name == name)
            .unwrap()
    };
    let parent_of = |s: &Received| by_id.get(&hex(&s.parent_span_id)).copied();

    // The router's server span is the client's child.
    let router_root = find("autoj-router", "autoj.v1.Judge/Compare");
    assert_eq!(hex(&router_root.parent_span_id), client_span);
    // The judge's server span is the child of the router's call to it, across processes.
    let forward = find("autoj-router", "forward");
    assert_eq!(parent_of(forward).unwrap().span_id, router_root.span_id);
    let judge_root = find("autoj-judge", "autoj.v1.Judge/Compare");
    assert_eq!(
        hex(&judge_root.parent_span_id),
        hex(&forward.span_id),
        "the judge continued the context the router injected"
    );
    // The engine's phases hang under the judge's span.
    for phase in ["queue", "prefill", "decode"] {
        let span = find("autoj-judge", phase);
        assert_eq!(
            parent_of(span).map(|p| p.span_id.clone()),
            Some(judge_root.span_id.clone()),
            "{phase} is a child of the judge's call span"
        );
    }
    drop(router);
    drop(judge);
}
