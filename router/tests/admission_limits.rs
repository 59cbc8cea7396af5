//! Admission at the router: past `limits.max_in_flight` open streams a new call is refused
//! with RESOURCE_EXHAUSTED at once (and admitted again once a stream ends); input over
//! `limits.max_input_bytes` or `max_new_tokens` over `limits.max_new_tokens` is
//! INVALID_ARGUMENT naming the limit, before any judge sees it.

mod common;

use autoj_proto::v1::GenerationOptions;
use common::*;
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test]
async fn full_router_refuses_at_once() {
    let log = JudgeLog::default();
    let judge = spawn_judge(FakeJudge {
        hold: true,
        ..FakeJudge::new("held", &log)
    })
    .await;
    let config = format!(
        "{}[limits]\nmax_in_flight = 1\nmax_input_bytes = 64\nmax_new_tokens = 16\n",
        one_pool(&[judge.url()])
    );
    let router = start_router(&config, FakeClassifier::default()).await;
    let mut client = judge_client(&router).await;

    // One stream open (held by the judge after Accepted) fills the router.
    let mut open = within(client.compare(compare("hi", "chitchat")))
        .await
        .unwrap()
        .into_inner();
    within(open.next()).await.expect("Accepted").unwrap();
    let err = within(client.compare(compare("hi again", "chitchat")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("1 concurrent"), "{}", err.message());
    assert_eq!(log.served().len(), 1, "the refused call reached no judge");

    // The stream ends (client hangs up): its slot is free again.
    drop(open);
    within(log.closed.notified()).await;
    let mut again = within(async {
        loop {
            match client.compare(compare("third", "chitchat")).await {
                Ok(stream) => break stream.into_inner(),
                // The slot is released when the router drops the relay, just after the
                // judge saw the hang-up; retry until it is.
                Err(e) if e.code() == Code::ResourceExhausted => tokio::task::yield_now().await,
                Err(e) => panic!("{e:?}"),
            }
        }
    })
    .await;
    within(again.next()).await.expect("Accepted").unwrap();
}

#[tokio::test]
async fn per_request_limits_name_the_limit() {
    let log = JudgeLog::default();
    let judge = spawn_judge(FakeJudge::new("a", &log)).await;
    let config = format!(
        "{}[limits]\nmax_input_bytes = 64\nmax_new_tokens = 16\n",
        one_pool(&[judge.url()])
    );
    let router = start_router(&config, FakeClassifier::default()).await;
    let mut client = judge_client(&router).await;

    let mut big = compare("q", "chitchat");
    big.response_2 = "x".repeat(80);
    let err = within(client.compare(big)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("limits.max_input_bytes"),
        "{}",
        err.message()
    );

    let mut long = compare("q", "chitchat");
    long.options.as_mut().unwrap().generation = Some(GenerationOptions {
        max_new_tokens: Some(17),
        ..Default::default()
    });
    let err = within(client.compare(long.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("limits.max_new_tokens"),
        "{}",
        err.message()
    );
    assert!(log.served().is_empty(), "refused before any judge");

    long.options
        .as_mut()
        .unwrap()
        .generation
        .as_mut()
        .unwrap()
        .max_new_tokens = Some(16);
    let events = collect(within(client.compare(long)).await.unwrap().into_inner())
        .await
        .unwrap();
    assert_eq!(accepted(&events).replica, "a", "at the limit is fine");
}
