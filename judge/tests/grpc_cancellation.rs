//! A client that drops its stream stops its generation before the next decode step, and
//! the engine goes on to serve the next request.

mod common;

use std::sync::atomic::Ordering;

use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::testkit::TinySpec;
use autoj_proto::v1 as pb;
use common::{collect, compare, within, Kind, TestServer};

#[tokio::test]
async fn dropped_stream_frees_the_engine() {
    let mut server =
        TestServer::start(Kind::Gguf, TinySpec::default(), ServiceLimits::default(), 8).await;
    // Long enough that it cannot finish before we hang up: the tiny model never emits EOS.
    let mut stream = within(server.client.compare(compare(3000)))
        .await
        .unwrap()
        .into_inner();
    // Wait for the first critique text, so generation is under way, then hang up.
    loop {
        let ev = within(stream.message())
            .await
            .unwrap()
            .expect("stream open");
        if matches!(ev.event, Some(pb::judge_event::Event::CritiqueDelta(_))) {
            break;
        }
    }
    drop(stream);
    // The engine serves one request at a time: once the next one completes, the first has
    // left the engine, and it must have left as cancelled, not completed.
    let next = within(server.client.compare(compare(4)))
        .await
        .unwrap()
        .into_inner();
    let events = collect(next).await.expect("next request is served");
    assert!(matches!(
        events.last(),
        Some(pb::judge_event::Event::Usage(_))
    ));
    let stats = server.engine.stats();
    assert_eq!(
        stats.cancelled.load(Ordering::Relaxed),
        1,
        "the dropped request was cancelled"
    );
    assert_eq!(
        stats.completed.load(Ordering::Relaxed),
        1,
        "only the second request completed"
    );
    server.stop().await;
}
