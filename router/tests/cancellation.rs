//! A client that goes away cancels the judge call: dropping the client's stream drops the
//! router's relay, which resets the upstream stream, and the judge sees its receiver close.

mod common;

use common::*;
use tokio_stream::StreamExt;

#[tokio::test]
async fn dropping_the_client_stream_cancels_the_judge() {
    let log = JudgeLog::default();
    let judge = spawn_judge(FakeJudge {
        hold: true,
        ..FakeJudge::new("slow", &log)
    })
    .await;
    let config = one_pool(&[judge.url()]);
    let router = start_router(&config, FakeClassifier::default()).await;
    let mut client = judge_client(&router).await;

    let mut stream = within(client.compare(compare("Hi!", "chitchat")))
        .await
        .unwrap()
        .into_inner();
    let first = within(stream.next()).await.expect("an event").unwrap();
    assert_eq!(accepted(&[first]).replica, "slow");
    drop(stream);
    within(log.closed.notified()).await;
}
