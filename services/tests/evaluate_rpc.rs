//! `Judge.Evaluate` through `autoj serve` (router + in-process judge): each item is routed
//! like a Compare / Critique (its scenario stamped per item), a bad item mid-stream yields
//! the same status a direct call gets, and the other items complete.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use autoj_judge::testkit::{write_gguf, TinySpec};
use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_client::JudgeClient;
use common::Server;
use pb::evaluate_item::Request as Item;
use pb::judge_event::Event;

fn options(scenario: &str, max_new_tokens: u32) -> Option<pb::JudgeOptions> {
    Some(pb::JudgeOptions {
        scenario: scenario.into(),
        generation: Some(pb::GenerationOptions {
            max_new_tokens: Some(max_new_tokens),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn compare(scenario: &str, response_2: &str) -> pb::CompareRequest {
    pb::CompareRequest {
        query: "Write a function that adds two numbers.".into(),
        response_1: "def add(a, b): return a + b".into(),
        response_2: response_2.into(),
        options: options(scenario, 6),
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gguf(dir.path(), &TinySpec::default()).unwrap();
    let server = Server::start(&model, &["--no-classifier"]);
    let mut client = within(JudgeClient::connect(server.addr.clone()))
        .await
        .unwrap();

    let items = vec![
        (
            "good-code",
            Some(Item::Compare(compare("code_generation", "a + b"))),
        ),
        ("bad-empty", Some(Item::Compare(compare("", "  ")))),
        (
            "bad-scenario",
            Some(Item::Compare(compare("no_such_scenario", "x"))),
        ),
        (
            "good-single",
            Some(Item::Critique(pb::CritiqueRequest {
                query: "Say hi.".into(),
                response: "Hello!".into(),
                options: options("chitchat", 5),
            })),
        ),
        (
            "good-default",
            Some(Item::Compare(compare("", "return a+b"))),
        ),
    ];
    let items: Vec<pb::EvaluateItem> = items
        .into_iter()
        .map(|(id, request)| pb::EvaluateItem {
            id: id.into(),
            request,
        })
        .collect();
    let mut stream = within(client.evaluate(tokio_stream::iter(items)))
        .await
        .expect("stream opens")
        .into_inner();
    let mut results = HashMap::new();
    while let Some(r) = within(stream.message()).await.expect("no stream error") {
        results.insert(r.id.clone(), r);
    }
    assert_eq!(results.len(), 5, "{:?}", results.keys());

    // A bad item fails with exactly the status a direct Compare gets.
    for (id, request) in [
        ("bad-empty", compare("", "  ")),
        ("bad-scenario", compare("no_such_scenario", "x")),
    ] {
        let direct = within(client.compare(request))
            .await
            .expect_err("the direct call is refused");
        let r = &results[id];
        assert_eq!(r.error_code, direct.code() as i32, "{id}");
        assert_eq!(r.error_message, direct.message(), "{id}");
        assert_eq!(r.error_code, tonic::Code::InvalidArgument as i32, "{id}");
    }

    // The good ones were routed one by one: the router stamps each item's scenario.
    for (id, scenario) in [
        ("good-code", "code_generation"),
        ("good-single", "chitchat"),
        ("good-default", ""),
    ] {
        let r = &results[id];
        assert_eq!(r.error_code, 0, "{id}: {}", r.error_message);
        let events: Vec<&Event> = r.events.iter().filter_map(|e| e.event.as_ref()).collect();
        let Some(Event::Accepted(a)) = events.first() else {
            panic!("{id}: Accepted first")
        };
        assert_eq!(a.scenario, scenario, "{id}");
        assert!(
            events.iter().any(|e| matches!(e, Event::Verdict(_))),
            "{id}: a verdict"
        );
        assert!(matches!(events.last(), Some(Event::Usage(_))), "{id}");
    }
}
