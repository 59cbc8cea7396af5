//! A request whose `grpc-timeout` passes while it waits in the judge's queue never starts:
//! it fails with DEADLINE_EXCEEDED from the engine, and the request ahead of it is
//! unaffected.

mod common;

use std::time::Duration;

use autoj_judge::testkit::{write_gguf, TinySpec};
use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_client::JudgeClient;
use autoj_proto::v1::judge_event::Event;
use common::Server;
use tonic::{Code, Request};

/// Every await is bounded by this.
const LIMIT: Duration = Duration::from_secs(120);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

fn critique(max_new_tokens: u32) -> pb::CritiqueRequest {
    pb::CritiqueRequest {
        query: "Write a haiku.".into(),
        response: "Rain on the roof.".into(),
        options: Some(pb::JudgeOptions {
            generation: Some(pb::GenerationOptions {
                max_new_tokens: Some(max_new_tokens),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn queued_request_past_its_deadline_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let model = model.to_str().unwrap();
    // One request at a time, so the second waits in the queue behind the first.
    let judge = Server::spawn(&[
        "judge",
        "--listen",
        "127.0.0.1:0",
        "--model",
        model,
        "--scheduler",
        "serial",
    ]);
    let mut client = within(JudgeClient::connect(judge.addr.clone()))
        .await
        .unwrap();

    // A long request (the tiny model never ends by itself) holds the engine.
    let mut first = within(client.critique(critique(3000)))
        .await
        .unwrap()
        .into_inner();
    loop {
        let event = within(first.message()).await.unwrap().expect("open");
        if matches!(event.event, Some(Event::CritiqueDelta(_))) {
            break;
        }
    }

    // The second may wait 300 ms; it is still queued when that passes.
    let mut request = Request::new(critique(4));
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let status = match within(client.critique(request)).await {
        Err(status) => status,
        Ok(response) => {
            let mut second = response.into_inner();
            loop {
                match within(second.message()).await {
                    Ok(Some(event)) => assert!(
                        matches!(event.event, Some(Event::Accepted(_))),
                        "the request must not start: {event:?}"
                    ),
                    Ok(None) => panic!("stream ended without a status"),
                    Err(status) => break status,
                }
            }
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("not started"),
        "the engine refused it, not a client-side timer: {}",
        status.message()
    );

    // The first request is still being served.
    let event = within(first.message()).await.unwrap().expect("still open");
    assert!(matches!(event.event, Some(Event::CritiqueDelta(_))));
}
