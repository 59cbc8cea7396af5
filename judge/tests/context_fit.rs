//! Input longer than the context is cut from the middle and `Accepted` says so; a request
//! that refuses truncation gets FAILED_PRECONDITION instead.

mod common;

use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::testkit::TinySpec;
use autoj_proto::v1 as pb;
use common::{collect, compare, within, Kind, TestServer};
use pb::judge_event::Event;
use tonic::Code;

fn small_context() -> TinySpec {
    TinySpec {
        context: 1500,
        ..TinySpec::default()
    }
}

#[tokio::test]
async fn long_input_is_truncated_and_reported() {
    let mut server =
        TestServer::start(Kind::Gguf, small_context(), ServiceLimits::default(), 8).await;
    let mut req = compare(32);
    req.response_1 = "Paris is lovely in spring. ".repeat(200);
    let events = collect(
        within(server.client.compare(req))
            .await
            .expect("admitted")
            .into_inner(),
    )
    .await
    .expect("stream");
    let Event::Accepted(a) = &events[0] else {
        panic!("Accepted first")
    };
    assert!(a.truncated, "{a:?}");
    assert!(
        a.truncated_tokens > 1500,
        "most of a ~3000-token response is cut: {a:?}"
    );
    assert!(
        a.prompt_tokens as usize + 32 <= 1500,
        "prompt + max_new_tokens fit: {a:?}"
    );
    let Some(Event::Usage(u)) = events.last() else {
        panic!("Usage last")
    };
    assert_eq!(u.completion_tokens, 32);
    server.stop().await;
}

#[tokio::test]
async fn refused_truncation_is_failed_precondition() {
    let mut server =
        TestServer::start(Kind::Gguf, small_context(), ServiceLimits::default(), 8).await;
    let mut req = compare(32);
    req.response_1 = "Paris is lovely in spring. ".repeat(200);
    req.options.as_mut().unwrap().truncation = pb::Truncation::Refuse as i32;
    let err = within(server.client.compare(req))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("context of 1500"),
        "{}",
        err.message()
    );

    // max_new_tokens alone larger than the context cannot be fixed by cutting input.
    let err = within(server.client.compare(compare(1490)))
        .await
        .expect_err("cannot fit");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    server.stop().await;
}
