//! `Scenarios` over gRPC: List returns the catalog, GetCriteria the resolved criteria
//! (inherited first), Classify a batch with top-k; bad input is INVALID_ARGUMENT.

mod common;

use autoj_proto::v1::scenarios_client::ScenariosClient;
use autoj_proto::v1::{ClassifyRequest, GetCriteriaRequest, ListScenariosRequest};
use common::*;
use tonic::Code;

#[tokio::test]
async fn list_criteria_and_classify() {
    // A pool whose only replica nobody serves: these RPCs never reach a judge.
    let config = one_pool(&["http://127.0.0.1:1".to_string()]);
    let router = start_router(&config, FakeClassifier::default()).await;
    let mut client = within(ScenariosClient::connect(router.url()))
        .await
        .unwrap();

    let list = within(client.list(ListScenariosRequest {}))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "text_summarization",
            "code_generation",
            "code_correction_rewriting",
            "chitchat",
            "default"
        ]
    );
    assert_eq!(list.scenarios[1].group, "Code");
    assert_eq!(list.scenarios[4].group, "", "default has no group");

    let criteria = within(client.get_criteria(GetCriteriaRequest {
        scenario: "chitchat".into(),
    }))
    .await
    .unwrap()
    .into_inner();
    let rows: Vec<_> = criteria
        .criteria
        .iter()
        .map(|c| (c.name.as_str(), c.inherited_from.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("clarity", "basic_writing"),
            ("accuracy", "basic_writing"),
            ("chitchat_specific", "")
        ]
    );
    let err = within(client.get_criteria(GetCriteriaRequest {
        scenario: "poetry".into(),
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let request = ClassifyRequest {
        queries: vec!["write a function".into(), "please summarize this".into()],
        top_k: 2,
    };
    let results = within(client.classify(request))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].top.len(), 2);
    assert_eq!(results[0].top[0].scenario, "code_generation");
    assert_eq!(
        results[0].top[0].group, "Code",
        "groups come from the catalog"
    );
    assert_eq!(results[1].top[0].scenario, "text_summarization");
    let default_k = ClassifyRequest {
        queries: vec!["hello".into()],
        top_k: 0,
    };
    let results = within(client.classify(default_k))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results[0].top.len(), 3, "top_k 0 means 3");

    for (request, field) in [
        (
            ClassifyRequest {
                queries: vec![],
                top_k: 1,
            },
            "queries",
        ),
        (
            ClassifyRequest {
                queries: vec!["a".into(), "".into()],
                top_k: 1,
            },
            "queries[1]",
        ),
        (
            ClassifyRequest {
                queries: vec!["a".into()],
                top_k: 6,
            },
            "top_k",
        ),
        (
            ClassifyRequest {
                queries: vec!["a".into(); 65],
                top_k: 1,
            },
            "queries",
        ),
    ] {
        let err = within(client.classify(request)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }
}
