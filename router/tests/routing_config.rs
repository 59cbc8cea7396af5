//! A bad routing file is refused at start-up: unknown pool, missing default, a pool with no
//! or two address sources, unknown scenario or group names, classifier labels the catalog
//! lacks, a `local` pool without an in-process judge.

mod common;

use autoj_router::RouterError;
use common::*;

async fn build_err(routing: &str) -> String {
    let config = format!("[routing]\n{routing}");
    match build_router(&config, FakeClassifier::default()).await {
        Ok(_) => panic!("accepted:\n{routing}"),
        Err(RouterError::Routing(msg)) => msg,
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

const POOL: &str = "[[routing.pool]]\nname = \"a\"\nendpoints = [\"http://127.0.0.1:1\"]\n";

#[tokio::test]
async fn invalid_routing_files() {
    let msg = build_err(&format!("default_pool = \"b\"\n{POOL}")).await;
    assert!(msg.contains("default_pool `b`"), "{msg}");

    let msg = build_err(&format!(
        "default_pool = \"a\"\n{POOL}[[routing.rule]]\ngroups = [\"Code\"]\npool = \"c\"\n"
    ))
    .await;
    assert!(msg.contains("pool `c` is not defined"), "{msg}");

    let msg = build_err("default_pool = \"a\"\n[[routing.pool]]\nname = \"a\"\n").await;
    assert!(msg.contains("exactly one"), "{msg}");

    let both = "[[routing.pool]]\nname = \"a\"\nendpoints = [\"http://x:1\"]\ndns = \"x:1\"\n";
    let msg = build_err(&format!("default_pool = \"a\"\n{both}")).await;
    assert!(msg.contains("exactly one"), "{msg}");

    let msg = build_err(&format!("default_pool = \"a\"\n{POOL}{POOL}")).await;
    assert!(msg.contains("defined twice"), "{msg}");

    let rule = "[[routing.rule]]\nscenarios = [\"poetry\"]\npool = \"a\"\n";
    let msg = build_err(&format!("default_pool = \"a\"\n{POOL}{rule}")).await;
    assert!(msg.contains("unknown scenario `poetry`"), "{msg}");

    let rule = "[[routing.rule]]\ngroups = [\"Poetry\"]\npool = \"a\"\n";
    let msg = build_err(&format!("default_pool = \"a\"\n{POOL}{rule}")).await;
    assert!(msg.contains("unknown group `Poetry`"), "{msg}");

    let rule = "[[routing.rule]]\npool = \"a\"\n";
    let msg = build_err(&format!("default_pool = \"a\"\n{POOL}{rule}")).await;
    assert!(
        msg.contains("needs scenarios, groups or languages"),
        "{msg}"
    );

    let local = "[[routing.pool]]\nname = \"a\"\nlocal = true\n";
    let msg = build_err(&format!("default_pool = \"a\"\n{local}")).await;
    assert!(msg.contains("no in-process judge"), "{msg}");

    let msg = build_err(
        "default_pool = \"a\"\n[[routing.pool]]\nname = \"a\"\nendpoints = [\"grpc://x\"]\n",
    )
    .await;
    assert!(msg.contains("not an http:// URL"), "{msg}");
}

#[tokio::test]
async fn unknown_language_and_fields_do_not_parse() {
    let bad = format!("[routing]\ndefault_pool = \"a\"\n{POOL}[[routing.rule]]\nlanguages = [\"fr\"]\npool = \"a\"\n");
    assert!(matches!(
        build_router(&bad, FakeClassifier::default()).await,
        Err(RouterError::Toml { .. })
    ));
    let typo = format!("[routing]\ndefault_pool = \"a\"\n{POOL}[[routing.rule]]\ngroup = [\"Code\"]\npool = \"a\"\n");
    assert!(matches!(
        build_router(&typo, FakeClassifier::default()).await,
        Err(RouterError::Toml { .. })
    ));
}

#[tokio::test]
async fn classifier_labels_must_be_scenarios() {
    struct Odd;
    impl autoj_router::Classifier for Odd {
        fn labels(&self) -> Vec<String> {
            vec!["chitchat".into(), "poetry".into()]
        }
        fn classify(
            &mut self,
            _: &str,
            _: usize,
        ) -> Result<Vec<autoj_router::Prediction>, RouterError> {
            Ok(Vec::new())
        }
    }
    let config = autoj_router::RouterConfig::from_toml(
        &format!("[routing]\ndefault_pool = \"a\"\n{POOL}"),
        std::path::Path::new("t"),
    )
    .unwrap();
    let built = within(
        autoj_router::Router::builder(config)
            .catalog(fixture_catalog())
            .classifier(Box::new(Odd))
            .build(),
    )
    .await;
    assert!(matches!(built, Err(RouterError::UnknownLabel { label }) if label == "poetry"));
}
