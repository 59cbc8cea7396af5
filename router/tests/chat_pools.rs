//! `Judge.Chat` through the router: the pool it names serves it (the default pool when it
//! names none), nothing is classified, an unknown pool is NOT_FOUND listing the pools, and
//! the router's input limit applies.

mod common;

use autoj_proto::v1::{ChatMessage, ChatRequest, GenerationOptions, ScenarioSource};
use common::*;

fn chat(pool: &str, content: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: content.into(),
        }],
        generation: Some(GenerationOptions {
            max_new_tokens: Some(4),
            ..Default::default()
        }),
        pool: pool.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn chats_reach_the_pool_they_name() {
    let log = JudgeLog::default();
    let (a, b) = (
        spawn_judge(FakeJudge::new("alpha-1", &log)).await,
        spawn_judge(FakeJudge::new("beta-1", &log)).await,
    );
    let config = format!(
        r#"
        [routing]
        default_pool = "beta"
        [[routing.pool]]
        name = "alpha"
        endpoints = ["{}"]
        [[routing.pool]]
        name = "beta"
        endpoints = ["{}"]
        "#,
        a.url(),
        b.url()
    );
    let classifier = FakeClassifier::default();
    let router = start_router(&config, classifier.clone()).await;
    let mut client = judge_client(&router).await;
    for (pool, replica) in [("alpha", "alpha-1"), ("beta", "beta-1"), ("", "beta-1")] {
        let stream = within(client.chat(chat(pool, "Shorten this article")))
            .await
            .unwrap()
            .into_inner();
        let events = collect(stream).await.unwrap();
        let accepted = accepted(&events);
        assert_eq!(accepted.replica, replica, "pool `{pool}`");
        assert_eq!(accepted.scenario, "", "a chat is not classified");
        assert_eq!(accepted.scenario_source, ScenarioSource::None as i32);
    }
    let served = log.served();
    assert_eq!(served.len(), 3);
    assert!(served.iter().all(|s| s.rpc == "chat"), "{served:?}");
    let classified = classifier.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(classified, 0, "no query was classified");

    let status = within(client.chat(chat("gamma", "hi"))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(
        status.message().contains("`gamma`") && status.message().contains("beta, alpha"),
        "{}",
        status.message()
    );
    let big = "x".repeat(2 * 1024 * 1024);
    let status = within(client.chat(chat("alpha", &big))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("max_input_bytes"),
        "{}",
        status.message()
    );
    assert_eq!(log.served().len(), 3, "refused calls reach no judge");
}
