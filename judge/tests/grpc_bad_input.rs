//! Each kind of bad input gets its own gRPC status with a message naming the problem, and
//! the server keeps serving afterwards.

mod common;

use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::testkit::TinySpec;
use autoj_proto::v1 as pb;
use common::{collect, compare, critique, within, Kind, TestServer};
use prost::Message;
use tonic::Code;

async fn expect_status(server: &mut TestServer, req: pb::CompareRequest, code: Code, needle: &str) {
    let err = within(server.client.compare(req))
        .await
        .expect_err("must be refused");
    assert_eq!(err.code(), code, "message: {}", err.message());
    assert!(
        err.message().contains(needle),
        "`{}` should mention `{needle}`",
        err.message()
    );
}

#[tokio::test]
async fn bad_inputs_get_clear_statuses() {
    let limits = ServiceLimits {
        max_field_bytes: 2000,
        max_new_tokens_limit: 64,
        ..ServiceLimits::default()
    };
    let mut server = TestServer::start(Kind::Gguf, TinySpec::default(), limits, 8).await;

    let mut r = compare(8);
    r.query = "   ".into();
    expect_status(&mut server, r, Code::InvalidArgument, "`query` is empty").await;

    let mut r = compare(8);
    r.response_2.clear();
    expect_status(
        &mut server,
        r,
        Code::InvalidArgument,
        "`response_2` is empty",
    )
    .await;

    let mut r = compare(8);
    r.response_1 = "x".repeat(2001);
    expect_status(
        &mut server,
        r,
        Code::InvalidArgument,
        "`response_1` is 2001 bytes",
    )
    .await;

    expect_status(
        &mut server,
        compare(65),
        Code::InvalidArgument,
        "max_new_tokens",
    )
    .await;
    expect_status(
        &mut server,
        compare(0),
        Code::InvalidArgument,
        "max_new_tokens",
    )
    .await;

    let mut r = compare(8);
    r.options
        .as_mut()
        .unwrap()
        .generation
        .as_mut()
        .unwrap()
        .top_p = Some(1.5);
    expect_status(&mut server, r, Code::InvalidArgument, "top_p").await;

    let mut r = compare(8);
    r.options.as_mut().unwrap().language = 9;
    expect_status(&mut server, r, Code::InvalidArgument, "language").await;

    let mut req = critique(8);
    req.response.clear();
    let err = within(server.client.critique(req))
        .await
        .expect_err("empty response");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("`response` is empty"));

    let err = within(server.client.score(pb::ScoreRequest::default()))
        .await
        .expect_err("score");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("`responses` has 0 entries"),
        "{}",
        err.message()
    );

    // Still serving after all that.
    let s = within(server.client.compare(compare(4)))
        .await
        .expect("serves")
        .into_inner();
    assert!(collect(s).await.is_ok());
    server.stop().await;
}

/// A `string` field carrying invalid UTF-8, sent with a hand-encoded body, is refused with
/// INVALID_ARGUMENT before any handler sees it.
#[tokio::test]
async fn invalid_utf8_is_invalid_argument() {
    let server =
        TestServer::start(Kind::Gguf, TinySpec::default(), ServiceLimits::default(), 8).await;
    /// Same field numbers as CompareRequest, but bytes instead of strings.
    #[derive(Clone, PartialEq, Message)]
    struct RawCompare {
        #[prost(bytes = "vec", tag = "1")]
        query: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        response_1: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        response_2: Vec<u8>,
    }
    let channel = tonic::transport::Endpoint::from_shared(server.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    within(grpc.ready()).await.unwrap();
    let codec = tonic_prost::ProstCodec::<RawCompare, pb::JudgeEvent>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/autoj.v1.Judge/Compare");
    let req = RawCompare {
        query: vec![0xff, 0xfe, b'a'],
        response_1: b"a".to_vec(),
        response_2: b"b".to_vec(),
    };
    let err = within(grpc.server_streaming(tonic::Request::new(req), path, codec))
        .await
        .expect_err("invalid UTF-8 must be refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    server.stop().await;
}
