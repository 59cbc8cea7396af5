//! `Judge.Evaluate`: every item comes back once under its own id with the full event stream
//! of a Compare / Critique; a bad item mid-stream yields its status while the others finish.

mod common;

use std::collections::HashMap;

use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::testkit::TinySpec;
use autoj_proto::v1 as pb;
use common::{compare, critique, within, Kind, TestServer};
use pb::evaluate_item::Request as Item;
use pb::judge_event::Event;

fn events(r: &pb::EvaluateResult) -> Vec<&Event> {
    r.events.iter().map(|e| e.event.as_ref().unwrap()).collect()
}

#[tokio::test]
async fn items_complete_and_a_bad_one_fails_alone() {
    let mut server = TestServer::start(
        Kind::Gguf,
        TinySpec::default(),
        ServiceLimits::default(),
        32,
    )
    .await;
    // More items than the window, a bad one in the middle, and one with no request.
    let mut items = Vec::new();
    for i in 0..12 {
        let request = match i {
            5 => {
                let mut bad = critique(4);
                bad.response = "   ".into();
                Some(Item::Critique(bad))
            }
            7 => None,
            i if i % 2 == 0 => Some(Item::Compare(compare(4 + i as u32))),
            _ => Some(Item::Critique(critique(4 + i as u32))),
        };
        items.push(pb::EvaluateItem {
            id: format!("item-{i}"),
            request,
        });
    }
    let mut stream = within(server.client.evaluate(tokio_stream::iter(items)))
        .await
        .expect("the stream opens")
        .into_inner();
    let mut results = HashMap::new();
    while let Some(r) = within(stream.message()).await.expect("no stream error") {
        assert!(
            results.insert(r.id.clone(), r).is_none(),
            "each id comes back once"
        );
    }
    assert_eq!(results.len(), 12);

    let bad = &results["item-5"];
    assert_eq!(bad.error_code, tonic::Code::InvalidArgument as i32);
    assert!(
        bad.error_message.contains("`response` is empty"),
        "same message as Critique: {}",
        bad.error_message
    );
    assert!(bad.events.is_empty());
    let empty = &results["item-7"];
    assert_eq!(empty.error_code, tonic::Code::InvalidArgument as i32);
    assert!(empty.error_message.contains("neither"));

    for i in (0..12).filter(|i| *i != 5 && *i != 7) {
        let r = &results[&format!("item-{i}")];
        assert_eq!(r.error_code, 0, "{}: {}", r.id, r.error_message);
        let ev = events(r);
        assert!(matches!(ev.first(), Some(Event::Accepted(_))), "{}", r.id);
        let Some(Event::Usage(u)) = ev.last() else {
            panic!("{}: ends with Usage", r.id)
        };
        // Each item ran with its own settings.
        assert_eq!(u.completion_tokens, 4 + i as u32, "{}", r.id);
        let verdict = ev
            .iter()
            .find_map(|e| match e {
                Event::Verdict(v) => Some(v),
                _ => None,
            })
            .expect("a verdict");
        let pairwise = matches!(verdict.result, Some(pb::verdict::Result::Pairwise(_)));
        assert_eq!(pairwise, i % 2 == 0, "{}: protocol of its request", r.id);
    }
    // An empty stream ends with no results.
    let mut none = within(server.client.evaluate(tokio_stream::iter(Vec::new())))
        .await
        .unwrap()
        .into_inner();
    assert!(within(none.message()).await.unwrap().is_none());
    server.stop().await;
}
