//! A replica that is down (nobody listens) is skipped: the request is retried on another
//! replica of the same pool before anything reaches the client; with no live replica the
//! client gets UNAVAILABLE.

mod common;

use autoj_proto::v1::ScoreRequest;
use common::*;
use tonic::Code;

#[tokio::test]
async fn retries_on_another_replica_when_one_is_down() {
    let log = JudgeLog::default();
    let alive = spawn_judge(FakeJudge::new("alive", &log)).await;
    let config = format!(
        r#"
        [routing]
        default_pool = "main"
        [[routing.pool]]
        name = "main"
        endpoints = ["{}", "{}"]
        [[routing.pool]]
        name = "dead"
        endpoints = ["{}"]
        [[routing.rule]]
        groups = ["Code"]
        pool = "dead"
        "#,
        dead_url().await,
        alive.url(),
        dead_url().await,
    );
    let router = start_router(&config, FakeClassifier::default()).await;
    let mut client = judge_client(&router).await;

    for _ in 0..4 {
        let stream = within(client.compare(compare("Hi!", "chitchat")))
            .await
            .unwrap()
            .into_inner();
        let events = collect(stream).await.unwrap();
        assert_eq!(accepted(&events).replica, "alive");
    }
    let score = ScoreRequest {
        query: "Hi!".into(),
        responses: vec!["a".into(), "b".into()],
        options: None,
    };
    let scored = within(client.score(score)).await.unwrap().into_inner();
    assert_eq!(scored.scores.len(), 2);
    assert_eq!(
        scored.scenario, "chitchat",
        "the router fills the scenario it used"
    );
    assert_eq!(log.replicas(), ["alive"; 5]);

    let err = within(client.compare(compare("Write code", "code_generation")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}
