//! Over a real loopback gRPC connection, Compare and Critique streams carry
//! Accepted → CritiqueDelta* → Verdict → Usage, for a GGUF and a Hugging Face model.

mod common;

use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::testkit::TinySpec;
use autoj_proto::v1 as pb;
use common::{collect, compare, critique, within, Kind, TestServer};
use pb::judge_event::Event;

fn check_order(events: &[Event], max_new_tokens: u32, protocol: pb::Protocol) {
    assert!(
        events.len() >= 3,
        "at least accepted, verdict, usage: {events:?}"
    );
    let Event::Accepted(a) = &events[0] else {
        panic!("first event must be Accepted, got {:?}", events[0]);
    };
    assert_eq!(a.protocol, protocol as i32);
    assert!(a.prompt_tokens > 50, "the Auto-J template alone is long");
    assert!(!a.truncated);
    assert_eq!(a.replica, "test-replica");
    assert!(!a.request_id.is_empty());
    let n = events.len();
    assert!(
        events[1..n - 2]
            .iter()
            .all(|e| matches!(e, Event::CritiqueDelta(_))),
        "only deltas between Accepted and Verdict"
    );
    let Event::Verdict(v) = &events[n - 2] else {
        panic!("second to last must be Verdict");
    };
    let Event::Usage(u) = &events[n - 1] else {
        panic!("last must be Usage");
    };
    assert_eq!(u.prompt_tokens, a.prompt_tokens);
    assert_eq!(
        u.completion_tokens, max_new_tokens,
        "the tiny model never emits EOS"
    );
    assert_eq!(u.finish_reason, pb::FinishReason::Length as i32);
    // A random model writes no verdict: the verdict is forced, one of the legal choices,
    // with probabilities from the model that sum to 1, and the choice is the most probable.
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            Event::CritiqueDelta(d) => Some(d.text.as_str()),
            _ => None,
        })
        .collect();
    assert!(!text.is_empty());
    assert_eq!(v.source, pb::VerdictSource::Forced as i32, "{v:?}");
    match (&v.result, protocol) {
        (Some(pb::verdict::Result::Pairwise(p)), pb::Protocol::Pairwise) => {
            let probs = [
                p.p_response_1.unwrap(),
                p.p_response_2.unwrap(),
                p.p_tie.unwrap(),
            ];
            assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{probs:?}");
            let best = (0..3)
                .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
                .unwrap();
            let want = [
                pb::Winner::Response1,
                pb::Winner::Response2,
                pb::Winner::Tie,
            ][best];
            assert_eq!(
                p.winner, want as i32,
                "forced winner is the most probable choice"
            );
            assert!(
                v.raw_text.starts_with("So, the final decision is "),
                "{}",
                v.raw_text
            );
        }
        (Some(pb::verdict::Result::Single(s)), pb::Protocol::Single) => {
            assert_eq!(s.distribution.len(), 10);
            assert!((s.distribution.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            let rating = s.rating.expect("forced rating");
            assert!((1.0..=10.0).contains(&rating) && rating.fract() == 0.0);
            let best = (0..10)
                .max_by(|&a, &b| s.distribution[a].total_cmp(&s.distribution[b]))
                .unwrap();
            assert_eq!(rating, (best + 1) as f32);
            let e = s.expected_rating.unwrap();
            assert!((1.0..=10.0).contains(&e), "expected rating {e}");
            assert!(v.raw_text.starts_with("Rating: [["), "{}", v.raw_text);
        }
        other => panic!("verdict kind does not match the protocol: {other:?}"),
    }
}

async fn run(kind: Kind) {
    let mut server =
        TestServer::start(kind, TinySpec::default(), ServiceLimits::default(), 8).await;
    let pair = within(server.client.compare(compare(24)))
        .await
        .expect("compare")
        .into_inner();
    check_order(
        &collect(pair).await.expect("stream"),
        24,
        pb::Protocol::Pairwise,
    );
    let single = within(server.client.critique(critique(16)))
        .await
        .expect("critique")
        .into_inner();
    check_order(
        &collect(single).await.expect("stream"),
        16,
        pb::Protocol::Single,
    );
    server.stop().await;
}

#[tokio::test]
async fn gguf_model_streams_in_order() {
    run(Kind::Gguf).await;
}

#[tokio::test]
async fn safetensors_model_streams_in_order() {
    run(Kind::Hf).await;
}

#[tokio::test]
async fn greedy_is_deterministic() {
    let mut server =
        TestServer::start(Kind::Gguf, TinySpec::default(), ServiceLimits::default(), 8).await;
    let mut texts = Vec::new();
    for _ in 0..2 {
        let s = within(server.client.compare(compare(20)))
            .await
            .unwrap()
            .into_inner();
        let t: String = collect(s)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| match e {
                Event::CritiqueDelta(d) => Some(d.text),
                _ => None,
            })
            .collect();
        texts.push(t);
    }
    assert_eq!(texts[0], texts[1]);
    server.stop().await;
}
