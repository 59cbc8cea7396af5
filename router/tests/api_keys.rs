//! API keys on the router: a call without a key, or with a wrong one, is UNAUTHENTICATED
//! with the same message that says nothing about why; a listed key gets through; health
//! and reflection stay open without a key.

mod common;

use std::path::Path;

use autoj_router::{ApiKeys, Router, RouterConfig};
use common::*;
use tonic::{Code, Request};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A router over one fake judge that accepts only `keys`.
async fn secured_router(judge: &Running, keys: &str) -> Running {
    let config = RouterConfig::from_toml(&one_pool(&[judge.url()]), Path::new("t.toml")).unwrap();
    let router = within(
        Router::builder(config)
            .catalog(fixture_catalog())
            .classifier(Box::new(FakeClassifier::default()))
            .api_keys(Some(ApiKeys::from_list(keys).unwrap()))
            .build(),
    )
    .await
    .unwrap();
    spawn_router(router).await
}

/// A compare request carrying `authorization: <header>` when given.
fn with_auth(header: Option<&str>) -> Request<autoj_proto::v1::CompareRequest> {
    let mut request = Request::new(compare("hi", "chitchat"));
    if let Some(value) = header {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn missing_or_wrong_key_is_unauthenticated() {
    let log = JudgeLog::default();
    let judge = spawn_judge(FakeJudge::new("a", &log)).await;
    let router = secured_router(&judge, "key-one,key-two").await;
    let mut client = judge_client(&router).await;

    let missing = within(client.compare(with_auth(None))).await.unwrap_err();
    let wrong = within(client.compare(with_auth(Some("Bearer key-three"))))
        .await
        .unwrap_err();
    let prefix = within(client.compare(with_auth(Some("Bearer key-on"))))
        .await
        .unwrap_err();
    for err in [&missing, &wrong, &prefix] {
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert_eq!(
            err.message(),
            missing.message(),
            "no detail tells them apart"
        );
        assert!(!err.message().contains("key-"), "{}", err.message());
    }
    assert!(log.served().is_empty(), "nothing reached a judge");

    let events = collect(
        within(client.compare(with_auth(Some("Bearer key-two"))))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(accepted(&events).replica, "a");

    // Health stays open to probes without a key.
    let mut health = HealthClient::new(channel(&router).await);
    within(health.check(HealthCheckRequest {
        service: String::new(),
    }))
    .await
    .expect("health needs no key");
}
