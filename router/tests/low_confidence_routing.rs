//! A query the classifier is unsure about (no scenario group holds `classifier.min_confidence`
//! of the probability) is routed on its language to the default pool, with no scenario and
//! `scenario_source` LOW_CONFIDENCE; a clear query still routes on its group. Without a
//! configured threshold the router takes the one the classifier recommends.

mod common;

use autoj_proto::v1::{Accepted, ScenarioSource};
use common::*;

/// The routing table; `min_confidence` is left out of the file when `None`.
fn config(special: &str, general: &str, min_confidence: Option<f32>) -> String {
    let threshold = min_confidence.map_or(String::new(), |t| format!("min_confidence = {t}"));
    format!(
        r#"
        [classifier]
        {threshold}
        [routing]
        default_pool = "general"
        [[routing.pool]]
        name = "special"
        endpoints = ["{special}"]
        [[routing.pool]]
        name = "general"
        endpoints = ["{general}"]
        [[routing.rule]]
        groups = ["Code"]
        pool = "special"
        [[routing.rule]]
        languages = ["zh"]
        pool = "special"
        "#
    )
}

#[tokio::test]
async fn unsure_queries_route_on_language_to_the_default_pool() {
    let log = JudgeLog::default();
    let special = spawn_judge(FakeJudge::new("special-1", &log)).await;
    let general = spawn_judge(FakeJudge::new("general-1", &log)).await;
    let router = start_router(
        &config(&special.url(), &general.url(), Some(0.5)),
        FakeClassifier::default(),
    )
    .await;
    let mut client = judge_client(&router).await;
    // (query, pool, scenario, source)
    let cases = [
        (
            "an ambiguous request",
            "general",
            "",
            ScenarioSource::LowConfidence,
        ),
        (
            "一个模棱两可的 ambiguous 问题",
            "special",
            "",
            ScenarioSource::LowConfidence,
        ),
        (
            "write a function",
            "special",
            "code_generation",
            ScenarioSource::Classifier,
        ),
    ];
    for (query, pool, scenario, source) in cases {
        let stream = within(client.compare(compare(query, "")))
            .await
            .unwrap()
            .into_inner();
        let events = collect(stream).await.unwrap();
        let accepted = accepted(&events);
        assert!(
            accepted.replica.starts_with(pool),
            "{query}: {}",
            accepted.replica
        );
        assert_eq!(accepted.scenario, scenario, "{query}");
        assert_eq!(accepted.scenario_source, source as i32, "{query}");
    }
}

#[tokio::test]
async fn a_threshold_outside_zero_to_one_is_refused_at_start() {
    let built = build_router(
        &config("http://127.0.0.1:1", "http://127.0.0.1:1", Some(1.5)),
        FakeClassifier::default(),
    )
    .await;
    let Err(error) = built else {
        panic!("a threshold of 1.5 was accepted");
    };
    assert!(error.to_string().contains("min_confidence"), "{error}");
}

/// The `Accepted` of one Compare call for `query`.
async fn accepted_for(router: &Running, query: &str) -> Accepted {
    let mut client = judge_client(router).await;
    let stream = within(client.compare(compare(query, "")))
        .await
        .unwrap()
        .into_inner();
    accepted(&collect(stream).await.unwrap())
}

#[tokio::test]
async fn without_a_configured_threshold_the_classifiers_recommendation_applies() {
    let log = JudgeLog::default();
    let special = spawn_judge(FakeJudge::new("special-1", &log)).await;
    let general = spawn_judge(FakeJudge::new("general-1", &log)).await;
    let recommending = FakeClassifier {
        recommended_min_confidence: Some(0.5),
        ..FakeClassifier::default()
    };
    // Nothing configured: the recommended 0.5 sends the ambiguous query to the default pool.
    let router = start_router(
        &config(&special.url(), &general.url(), None),
        recommending.clone(),
    )
    .await;
    let unsure = accepted_for(&router, "an ambiguous request").await;
    assert_eq!(unsure.scenario_source, ScenarioSource::LowConfidence as i32);
    assert!(unsure.replica.starts_with("general"), "{}", unsure.replica);
    assert_eq!(unsure.scenario, "");
    // A configured 0 overrides the recommendation: the same query routes on its group.
    let router = start_router(
        &config(&special.url(), &general.url(), Some(0.0)),
        recommending.clone(),
    )
    .await;
    let routed = accepted_for(&router, "an ambiguous request").await;
    assert_eq!(routed.scenario_source, ScenarioSource::Classifier as i32);
    assert!(!routed.scenario.is_empty());
    // A recommendation outside [0, 1] is refused at start like a configured one.
    let broken = FakeClassifier {
        recommended_min_confidence: Some(2.0),
        ..FakeClassifier::default()
    };
    let built = build_router(&config(&special.url(), &general.url(), None), broken).await;
    let Err(error) = built else {
        panic!("a recommended threshold of 2.0 was accepted");
    };
    assert!(
        error.to_string().contains("recommended_min_confidence"),
        "{error}"
    );
}
