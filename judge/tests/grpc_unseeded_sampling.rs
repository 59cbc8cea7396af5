//! A sampled request without a seed draws its own, so repeated calls differ (as clients of
//! sampling APIs expect), while a given seed is kept and reproduces its text.

use autoj_judge::grpc::validate::{validate_request, ServiceLimits};
use autoj_judge::protocol::prompt::Task;
use autoj_proto::v1 as pb;

fn seed_of(seed: Option<u64>) -> u64 {
    let task = Task::Single {
        query: "Rate this.".into(),
        response: "An answer.".into(),
    };
    let options = pb::JudgeOptions {
        generation: Some(pb::GenerationOptions {
            temperature: Some(0.8),
            seed,
            ..Default::default()
        }),
        ..Default::default()
    };
    validate_request(&ServiceLimits::default(), task, &options)
        .expect("valid")
        .params
        .seed
}

#[test]
fn unseeded_requests_draw_distinct_seeds_and_a_given_seed_is_kept() {
    let drawn: std::collections::HashSet<u64> = (0..8).map(|_| seed_of(None)).collect();
    assert_eq!(
        drawn.len(),
        8,
        "eight unseeded requests, eight seeds: {drawn:?}"
    );
    assert_eq!(seed_of(Some(7)), 7);
    assert_eq!(seed_of(Some(0)), 0);
}
