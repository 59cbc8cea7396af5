//! SIGTERM drains `autoj serve`: the listener stops taking connections, while the stream
//! already open runs on to its Verdict and Usage; then the process exits 0.

mod common;

use std::time::Duration;

use autoj_judge::testkit::{write_gguf, TinySpec};
use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_client::JudgeClient;
use autoj_proto::v1::judge_event::Event;
use common::Server;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Every await is bounded by this.
const LIMIT: Duration = Duration::from_secs(120);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

/// Whether a fresh connection still finds the server SERVING.
async fn fresh_connection_serving(addr: &str) -> bool {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .unwrap()
        .connect()
        .await
    else {
        return false;
    };
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    matches!(answer, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_open_stream_finish() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let mut server = Server::start(&model, &["--no-classifier", "--shutdown-grace", "60s"]);
    // The router reports SERVING once its first readiness poll finds the in-process judge
    // ready, which may come just after the listening line.
    within(async {
        while !fresh_connection_serving(&server.addr).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let mut client = within(JudgeClient::connect(server.addr.clone()))
        .await
        .unwrap();
    let request = pb::CompareRequest {
        query: "Which answer is better?".into(),
        response_1: "The first.".into(),
        response_2: "The second.".into(),
        options: Some(pb::JudgeOptions {
            generation: Some(pb::GenerationOptions {
                // The tiny model never ends by itself: this runs a while.
                max_new_tokens: Some(1500),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let mut stream = within(client.compare(request)).await.unwrap().into_inner();
    // Generation is under way once critique text arrives.
    loop {
        let event = within(stream.message()).await.unwrap().expect("open");
        if matches!(event.event, Some(Event::CritiqueDelta(_))) {
            break;
        }
    }

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());

    // New connections are refused (or find it NOT_SERVING) while the stream drains.
    within(async {
        while fresh_connection_serving(&server.addr).await {
            tokio::task::yield_now().await;
        }
    })
    .await;

    let mut verdicts = 0;
    let mut last = None;
    while let Some(event) = within(stream.message())
        .await
        .expect("no error while draining")
    {
        if matches!(event.event, Some(Event::Verdict(_))) {
            verdicts += 1;
        }
        last = event.event;
    }
    assert_eq!(verdicts, 1, "the open stream got its verdict");
    match last {
        Some(Event::Usage(u)) => assert_eq!(u.completion_tokens, 1500),
        other => panic!("stream ended with {other:?}"),
    }
    drop(client);
    let status = tokio::task::block_in_place(|| server.wait_exit(LIMIT)).expect("exited");
    assert!(status.success(), "{status:?}");
}
