//! The router serves standard gRPC health (SERVING for its services once its pool has a
//! ready replica) and server reflection listing the autoj services.

mod common;

use autoj_proto::v1::judge_server::JudgeServer;
use autoj_router::RouterService;
use common::*;
use tokio_stream::StreamExt;
use tonic::server::NamedService;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

#[tokio::test]
async fn health_and_reflection() {
    let judge = spawn_judge(FakeJudge::new("a", &JudgeLog::default())).await;
    let config = one_pool(&[judge.url()]);
    let router = start_router(&config, FakeClassifier::default()).await;

    let mut health = HealthClient::new(channel(&router).await);
    let service = <JudgeServer<RouterService> as NamedService>::NAME;
    assert_eq!(service, "autoj.v1.Judge");
    // SERVING once the first readiness probe has found the replica.
    let mut watch = within(health.watch(HealthCheckRequest {
        service: service.into(),
    }))
    .await
    .unwrap()
    .into_inner();
    while within(watch.next())
        .await
        .expect("an update")
        .unwrap()
        .status
        != ServingStatus::Serving as i32
    {}

    let mut reflection = ServerReflectionClient::new(channel(&router).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = within(reflection.server_reflection_info(tokio_stream::once(request)))
        .await
        .unwrap()
        .into_inner();
    let answer = within(answers.next()).await.expect("an answer").unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer {answer:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "autoj.v1.Judge",
        "autoj.v1.Scenarios",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
}
