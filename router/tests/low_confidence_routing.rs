//! A query the classifier is unsure about (no scenario group holds `classifier.min_confidence`
//! of the probability) is routed on its language to the default pool, with no scenario and
//! `scenario_source` LOW_CONFIDENCE; a clear query still routes on its group.

mod common;

use autoj_proto::v1::ScenarioSource;
use common::*;

fn config(special: &str, general: &str, min_confidence: f32) -> String {
    format!(
        r#"
        [classifier]
        min_confidence = {min_confidence}
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
        &config(&special.url(), &general.url(), 0.5),
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
        &config("http://127.0.0.1:1", "http://127.0.0.1:1", 1.5),
        FakeClassifier::default(),
    )
    .await;
    let Err(error) = built else {
        panic!("a threshold of 1.5 was accepted");
    };
    assert!(error.to_string().contains("min_confidence"), "{error}");
}
