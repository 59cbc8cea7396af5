//! One-process mode: a `local = true` pool is served by a `Judge` implementation called
//! in-process through the same backend interface as a remote replica.

mod common;

use std::sync::Arc;

use autoj_router::{LocalBackend, Router, RouterConfig};
use common::*;

#[tokio::test]
async fn local_pool_calls_the_judge_in_process() {
    let log = JudgeLog::default();
    let judge = FakeJudge::new("in-process", &log);
    let config = RouterConfig::from_toml(
        "[routing]\ndefault_pool = \"local\"\n[[routing.pool]]\nname = \"local\"\nlocal = true\n",
        std::path::Path::new("t"),
    )
    .unwrap();
    let router = within(
        Router::builder(config)
            .catalog(fixture_catalog())
            .classifier(Box::new(FakeClassifier::default()))
            .local_judge("local", Arc::new(LocalBackend::new(Arc::new(judge))))
            .build(),
    )
    .await
    .unwrap();
    let server = spawn_router(router).await;
    let mut client = judge_client(&server).await;
    let events = collect(
        within(client.compare(compare("Hi", "")))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(accepted(&events).replica, "in-process");
    assert_eq!(accepted(&events).scenario, "chitchat");
    assert_eq!(log.served()[0].options.scenario, "chitchat");
}
