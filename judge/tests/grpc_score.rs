//! `Judge.Score` (Best-of-N): every candidate gets a rating with its distribution over 1-10
//! and expected rating; the best index is the highest expected rating.

mod common;

use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::testkit::TinySpec;
use autoj_proto::v1 as pb;
use common::{options, within, Kind, TestServer};
use tonic::Code;

#[tokio::test]
async fn best_of_n_uses_expected_ratings() {
    let mut server =
        TestServer::start(Kind::Gguf, TinySpec::default(), ServiceLimits::default(), 8).await;
    let req = pb::ScoreRequest {
        query: "Name a prime number.".into(),
        responses: vec![
            "7".into(),
            "8, which is prime".into(),
            "2 is the only even prime".into(),
        ],
        options: options(6),
    };
    let resp = within(server.client.score(req.clone()))
        .await
        .expect("scored")
        .into_inner();
    assert_eq!(resp.scores.len(), 3);
    // The candidates ran as one batch: the template and query they share were computed once
    // and served to the others from the prefix cache.
    let stats = server.engine.stats();
    assert!(
        stats
            .prefix_hit_tokens
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let mut expected = Vec::new();
    for (i, c) in resp.scores.iter().enumerate() {
        assert_eq!(c.index as usize, i);
        let v = c.verdict.as_ref().unwrap();
        assert_eq!(v.distribution.len(), 10);
        assert!((v.distribution.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        let e = v.expected_rating.unwrap();
        let direct: f32 = v
            .distribution
            .iter()
            .enumerate()
            .map(|(r, p)| (r + 1) as f32 * p)
            .sum();
        assert!(
            (e - direct).abs() < 1e-4,
            "expected rating is the mean of the distribution"
        );
        assert!(v.rating.is_some());
        expected.push(e);
    }
    let best = (0..3).fold(0, |b, i| if expected[i] > expected[b] { i } else { b });
    assert_eq!(resp.best_index as usize, best);
    // Deterministic under greedy decoding. The second run reads the shared prompt prefix from
    // the prefix cache, computed in other chunk sizes; with this model's f32 weights the dense
    // matrix product rounds differently by chunk size, so probabilities agree to rounding.
    let again = within(server.client.score(req)).await.unwrap().into_inner();
    assert_eq!(again.best_index, resp.best_index);
    for (a, b) in again.scores.iter().zip(&resp.scores) {
        let (a, b) = (a.verdict.as_ref().unwrap(), b.verdict.as_ref().unwrap());
        assert_eq!(a.rating, b.rating);
        for (p, q) in a.distribution.iter().zip(&b.distribution) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
    }

    let bad = pb::ScoreRequest {
        query: "q".into(),
        responses: vec!["a".into(), "  ".into()],
        options: options(4),
    };
    let err = within(server.client.score(bad))
        .await
        .expect_err("empty candidate");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("`responses[1]` is empty"),
        "{}",
        err.message()
    );
    server.stop().await;
}
