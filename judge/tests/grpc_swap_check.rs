//! `swap_check` judges the pair in both orders: the events of order 0, then of order 1
//! (verdict mapped back to the order sent), then one `Consistency` event.

mod common;

use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::testkit::TinySpec;
use autoj_proto::v1 as pb;
use common::{collect, compare, within, Kind, TestServer};
use pb::judge_event::Event;

fn pairwise(v: &pb::Verdict) -> &pb::PairwiseVerdict {
    match &v.result {
        Some(pb::verdict::Result::Pairwise(p)) => p,
        other => panic!("pairwise verdict expected, got {other:?}"),
    }
}

fn order_of(e: &Event) -> u32 {
    match e {
        Event::Accepted(a) => a.order,
        Event::CritiqueDelta(d) => d.order,
        Event::Verdict(v) => v.order,
        Event::Usage(u) => u.order,
        Event::Consistency(_) => 2,
        Event::TokenLogprob(t) => panic!("a judgment sent a chat token: {t:?}"),
    }
}

#[tokio::test]
async fn both_orders_then_consistency() {
    let mut server =
        TestServer::start(Kind::Gguf, TinySpec::default(), ServiceLimits::default(), 8).await;
    let mut req = compare(10);
    req.options.as_mut().unwrap().swap_check = true;
    let events = collect(
        within(server.client.compare(req.clone()))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    // Orders never interleave: 0..., 1..., then Consistency.
    let orders: Vec<u32> = events.iter().map(order_of).collect();
    assert!(orders.windows(2).all(|w| w[0] <= w[1]), "{orders:?}");
    assert!(matches!(events[0], Event::Accepted(_)));
    let second_accepted = events
        .iter()
        .position(|e| matches!(e, Event::Accepted(a) if a.order == 1))
        .unwrap();
    assert!(matches!(events[second_accepted - 1], Event::Usage(_)));
    let verdicts: Vec<&pb::Verdict> = events
        .iter()
        .filter_map(|e| match e {
            Event::Verdict(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(verdicts.len(), 2);
    let Some(Event::Consistency(c)) = events.last() else {
        panic!("Consistency last")
    };
    assert_eq!(c.original, pairwise(verdicts[0]).winner);
    assert_eq!(c.swapped, pairwise(verdicts[1]).winner);
    assert_eq!(c.consistent, c.original == c.swapped);
    assert_eq!(
        c.combined,
        if c.consistent {
            c.original
        } else {
            pb::Winner::Tie as i32
        }
    );

    // The order-1 verdict is the swapped pair's own verdict mapped back.
    let mut direct = compare(10);
    std::mem::swap(&mut direct.response_1, &mut direct.response_2);
    let events = collect(
        within(server.client.compare(direct))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    let own = events
        .iter()
        .find_map(|e| match e {
            Event::Verdict(v) => Some(pairwise(v).clone()),
            _ => None,
        })
        .unwrap();
    let mapped = pairwise(verdicts[1]);
    let back = match pb::Winner::try_from(own.winner).unwrap() {
        pb::Winner::Response1 => pb::Winner::Response2,
        pb::Winner::Response2 => pb::Winner::Response1,
        w => w,
    };
    assert_eq!(mapped.winner, back as i32);
    // Equal up to rounding: the direct run reads its prompt prefix from the prefix cache,
    // computed in other chunk sizes, and this model's f32 matrix product rounds by chunk size.
    assert!((mapped.p_response_1.unwrap() - own.p_response_2.unwrap()).abs() < 1e-4);
    assert!((mapped.p_tie.unwrap() - own.p_tie.unwrap()).abs() < 1e-4);
    server.stop().await;
}
