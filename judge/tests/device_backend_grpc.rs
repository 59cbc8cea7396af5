//! The judge service over the device backend: a critique cut short gets a forced verdict
//! with its probabilities (pairwise and single), `swap_check` judges both orders and reports
//! their consistency, and `Score` rates every candidate by its expected rating.

mod common;

use autoj_judge::engine::scheduler::BatchLimits;
use autoj_judge::engine::Scheduling;
use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::testkit::TinySpec;
use autoj_proto::v1 as pb;
use common::{collect, compare, critique, options, test_device, within, Kind, TestServer};
use pb::judge_event::Event;

fn verdicts(events: &[Event]) -> Vec<&pb::Verdict> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Verdict(v) => Some(v),
            _ => None,
        })
        .collect()
}

fn sums_to_one(p: &[f32]) {
    assert!(p.iter().all(|&x| (0.0..=1.0).contains(&x)), "{p:?}");
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{p:?}");
}

async fn device_server() -> TestServer {
    TestServer::start_with(
        Kind::Hf,
        TinySpec::default(),
        ServiceLimits::default(),
        8,
        |cfg| {
            cfg.scheduling = Scheduling::Device(BatchLimits::default());
            cfg.model.device = test_device();
        },
    )
    .await
}

#[tokio::test]
async fn device_backend_forced_verdicts_swap_check_and_score() {
    let mut server = device_server().await;
    // Four tokens leave no room for a verdict in the text: it is forced and scored.
    let mut req = compare(4);
    req.options.as_mut().unwrap().swap_check = true;
    let events = collect(
        within(server.client.compare(req))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    let vs = verdicts(&events);
    assert_eq!(vs.len(), 2, "one verdict per order");
    let mut winners = Vec::new();
    for v in &vs {
        assert_eq!(v.source, pb::VerdictSource::Forced as i32);
        let Some(pb::verdict::Result::Pairwise(p)) = &v.result else {
            panic!("pairwise verdict expected")
        };
        sums_to_one(&[
            p.p_response_1.unwrap(),
            p.p_response_2.unwrap(),
            p.p_tie.unwrap(),
        ]);
        winners.push(p.winner);
    }
    let Some(Event::Consistency(c)) = events.last() else {
        panic!("Consistency last")
    };
    assert_eq!((c.original, c.swapped), (winners[0], winners[1]));
    assert_eq!(c.consistent, c.original == c.swapped);

    let events = collect(
        within(server.client.critique(critique(4)))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    let v = verdicts(&events)[0];
    assert_eq!(v.source, pb::VerdictSource::Forced as i32);
    let Some(pb::verdict::Result::Single(s)) = &v.result else {
        panic!("single verdict expected")
    };
    assert_eq!(s.distribution.len(), 10);
    sums_to_one(&s.distribution);

    let score = pb::ScoreRequest {
        query: "Name a prime number.".into(),
        responses: vec!["7".into(), "8, which is prime".into(), "2".into()],
        options: options(6),
    };
    let resp = within(server.client.score(score))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.scores.len(), 3);
    let expected: Vec<f32> = resp
        .scores
        .iter()
        .map(|c| {
            let v = c.verdict.as_ref().unwrap();
            sums_to_one(&v.distribution);
            v.expected_rating.unwrap()
        })
        .collect();
    let best = (0..3).fold(0, |b, i| if expected[i] > expected[b] { i } else { b });
    assert_eq!(resp.best_index as usize, best);
    let stats = server.engine.stats();
    let hits = stats
        .prefix_hit_tokens
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        hits > 0,
        "the shared template came from the device prefix cache"
    );
    server.stop().await;
}
