//! The client's deadline travels to the judge (as grpc-timeout) and ends the relayed stream
//! with DEADLINE_EXCEEDED, cancelling the judge call.

mod common;

use std::time::Duration;

use common::*;
use tokio_stream::StreamExt;
use tonic::{Code, Request};

#[tokio::test]
async fn deadline_is_propagated_and_enforced() {
    let log = JudgeLog::default();
    let judge = spawn_judge(FakeJudge {
        hold: true,
        ..FakeJudge::new("slow", &log)
    })
    .await;
    let config = one_pool(&[judge.url()]);
    let router = start_router(&config, FakeClassifier::default()).await;
    let mut client = judge_client(&router).await;

    let mut request = Request::new(compare("Hi!", "chitchat"));
    request.set_timeout(Duration::from_millis(300));
    let mut stream = within(client.compare(request)).await.unwrap().into_inner();
    let first = within(stream.next()).await.expect("Accepted").unwrap();
    assert_eq!(accepted(&[first]).replica, "slow");
    let err = within(stream.next()).await.expect("an error").unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    within(log.closed.notified()).await;
    let forwarded = log.served()[0]
        .timeout
        .clone()
        .expect("grpc-timeout forwarded");
    assert!(
        forwarded.ends_with('u') || forwarded.ends_with('m'),
        "{forwarded}"
    );
}
