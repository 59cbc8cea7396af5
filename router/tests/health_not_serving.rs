//! The router's health says NOT_SERVING while a pool has no ready replica, and SERVING once
//! every pool has one (the replica set is probed continuously, so a judge that comes up
//! later turns the router SERVING without a restart).

mod common;

use common::*;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The status of `service` now.
async fn status(health: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
    within(health.check(HealthCheckRequest {
        service: service.into(),
    }))
    .await
    .unwrap()
    .into_inner()
    .status
}

#[tokio::test]
async fn not_serving_until_every_pool_has_a_ready_replica() {
    // Two pools: `main` has a live judge, `late` only an address where nobody listens yet.
    let log = JudgeLog::default();
    let live = spawn_judge(FakeJudge::new("live", &log)).await;
    let reserved = within(TcpListener::bind("127.0.0.1:0")).await.unwrap();
    let late_addr = reserved.local_addr().unwrap();
    drop(reserved);
    let config = format!(
        "[routing]\ndefault_pool = \"main\"\n\
         [[routing.pool]]\nname = \"main\"\nendpoints = [\"{}\"]\n\
         [[routing.pool]]\nname = \"late\"\nendpoints = [\"http://{late_addr}\"]\n\
         [[routing.rule]]\nscenarios = [\"code_generation\"]\npool = \"late\"\n",
        live.url()
    );
    let router = start_router(&config, FakeClassifier::default()).await;
    let mut health = HealthClient::new(channel(&router).await);
    for service in ["", "autoj.v1.Judge", "autoj.v1.Scenarios"] {
        assert_eq!(
            status(&mut health, service).await,
            ServingStatus::NotServing as i32,
            "`{service}` while pool `late` has no replica"
        );
    }
    // Requests to the ready pool are still served meanwhile.
    let events = collect(
        within(
            judge_client(&router)
                .await
                .compare(compare("hi", "chitchat")),
        )
        .await
        .unwrap()
        .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(accepted(&events).replica, "live");

    // The missing replica comes up on its address: the router turns SERVING by itself.
    let mut watch = within(health.watch(HealthCheckRequest {
        service: "autoj.v1.Judge".into(),
    }))
    .await
    .unwrap()
    .into_inner();
    let listener = within(TcpListener::bind(late_addr)).await.unwrap();
    let _late = serve_judge_on(listener, FakeJudge::new("late", &log), None);
    loop {
        let update = within(watch.next())
            .await
            .expect("a status update")
            .unwrap();
        if update.status == ServingStatus::Serving as i32 {
            break;
        }
        assert_eq!(update.status, ServingStatus::NotServing as i32);
    }
    assert_eq!(status(&mut health, "").await, ServingStatus::Serving as i32);
}
