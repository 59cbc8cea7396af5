//! A request that names its scenario skips the classifier; one that names none is
//! classified; bad input is refused with INVALID_ARGUMENT naming the field, before any
//! classification or judge work.

mod common;

use std::sync::atomic::Ordering;

use autoj_proto::v1::{CritiqueRequest, JudgeOptions, ScenarioSource, ScoreRequest};
use common::*;
use tonic::Code;

#[tokio::test]
async fn named_scenario_skips_classification() {
    let log = JudgeLog::default();
    let judge = spawn_judge(FakeJudge::new("j", &log)).await;
    let config = one_pool(&[judge.url()]);
    let classifier = FakeClassifier::default();
    let calls = classifier.calls.clone();
    let router = start_router(&config, classifier).await;
    let mut client = judge_client(&router).await;

    let stream = within(client.compare(compare("Write a function", "code_generation")))
        .await
        .unwrap();
    let events = collect(stream.into_inner()).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a named scenario is not classified"
    );
    assert_eq!(
        accepted(&events).scenario_source,
        ScenarioSource::Client as i32
    );

    let critique = CritiqueRequest {
        query: "Write a function".into(),
        response: "def f(): pass".into(),
        options: None,
    };
    let events = collect(
        within(client.critique(critique))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let accepted = accepted(&events);
    assert_eq!(accepted.scenario, "code_generation");
    assert_eq!(accepted.scenario_source, ScenarioSource::Classifier as i32);

    // Invalid input: the field is named, nothing is classified or judged.
    let served = log.served().len();
    let cases = [
        (compare("", "chitchat"), "query"),
        (
            autoj_proto::v1::CompareRequest {
                response_2: " ".into(),
                ..compare("q", "")
            },
            "response_2",
        ),
        (compare("q", "no_such_scenario"), "options.scenario"),
        (
            autoj_proto::v1::CompareRequest {
                options: Some(JudgeOptions {
                    language: 7,
                    ..Default::default()
                }),
                ..compare("q", "")
            },
            "options.language",
        ),
    ];
    for (request, field) in cases {
        let err = within(client.compare(request)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }
    let score = ScoreRequest {
        query: "q".into(),
        responses: vec!["a".into(), "".into()],
        options: None,
    };
    let err = within(client.score(score)).await.unwrap_err();
    assert!(
        err.message().starts_with("responses[1]"),
        "{}",
        err.message()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(log.served().len(), served);
}
