//! Requests reach the pool their scenario, group or language routes them to, and each pool
//! spreads them over its replicas.

mod common;

use autoj_proto::v1::{Language, ScenarioSource};
use common::*;

#[tokio::test]
async fn routes_by_scenario_group_and_language() {
    let log = JudgeLog::default();
    let (s1, s2, g1, g2) = (
        spawn_judge(FakeJudge::new("special-1", &log)).await,
        spawn_judge(FakeJudge::new("special-2", &log)).await,
        spawn_judge(FakeJudge::new("general-1", &log)).await,
        spawn_judge(FakeJudge::new("general-2", &log)).await,
    );
    let config = format!(
        r#"
        [routing]
        default_pool = "general"
        [[routing.pool]]
        name = "special"
        endpoints = ["{}", "{}"]
        [[routing.pool]]
        name = "general"
        endpoints = ["{}", "{}"]
        [[routing.rule]]
        scenarios = ["text_summarization"]
        pool = "special"
        [[routing.rule]]
        groups = ["Code"]
        pool = "special"
        [[routing.rule]]
        languages = ["zh"]
        pool = "special"
        "#,
        s1.url(),
        s2.url(),
        g1.url(),
        g2.url()
    );
    let router = start_router(&config, FakeClassifier::default()).await;
    let mut client = judge_client(&router).await;

    // (query, named scenario, expected pool prefix, expected scenario)
    let cases = [
        (
            "Shorten this article",
            "text_summarization",
            "special",
            "text_summarization",
        ),
        (
            "Fix my loop",
            "code_correction_rewriting",
            "special",
            "code_correction_rewriting",
        ),
        ("How are you today?", "", "general", "chitchat"),
        ("How is the weather?", "chitchat", "general", "chitchat"),
        ("你今天过得怎么样？", "", "special", "chitchat"),
    ];
    for (query, scenario, pool, expect_scenario) in cases {
        let before = log.served().len();
        let stream = within(client.compare(compare(query, scenario)))
            .await
            .unwrap()
            .into_inner();
        let events = collect(stream).await.unwrap();
        assert_eq!(events.len(), 4, "{query}: Accepted, delta, verdict, usage");
        let accepted = accepted(&events);
        assert!(
            accepted.replica.starts_with(pool),
            "{query}: served by {}",
            accepted.replica
        );
        assert_eq!(accepted.scenario, expect_scenario, "{query}");
        let source = if scenario.is_empty() {
            ScenarioSource::Classifier
        } else {
            ScenarioSource::Client
        };
        assert_eq!(accepted.scenario_source, source as i32, "{query}");
        let forwarded = &log.served()[before].options;
        assert_eq!(
            forwarded.scenario, expect_scenario,
            "the judge is told the scenario"
        );
        let lang = if query.is_ascii() {
            Language::En
        } else {
            Language::Zh
        };
        assert_eq!(
            forwarded.language, lang as i32,
            "the judge is told the language"
        );
    }

    // Equal load alternates between a pool's replicas.
    let before = log.served().len();
    for _ in 0..4 {
        let stream = within(client.compare(compare("Hello there", "")))
            .await
            .unwrap()
            .into_inner();
        collect(stream).await.unwrap();
    }
    let mut used: Vec<String> = log.replicas()[before..].to_vec();
    used.sort();
    used.dedup();
    assert_eq!(used, ["general-1", "general-2"]);
}
