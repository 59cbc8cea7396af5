//! A `dns` pool's replicas are the addresses its name resolves to (as a Kubernetes headless
//! Service gives them); `localhost` may also resolve to ::1, where nobody listens, and the
//! router then fails over to 127.0.0.1.

mod common;

use common::*;

#[tokio::test]
async fn dns_pool_serves_from_resolved_addresses() {
    let log = JudgeLog::default();
    let judge = spawn_judge(FakeJudge::new("resolved", &log)).await;
    let config = format!(
        r#"
        [routing]
        default_pool = "dns"
        dns_refresh_secs = 1
        [[routing.pool]]
        name = "dns"
        dns = "localhost:{}"
        "#,
        judge.addr.port()
    );
    let router = start_router(&config, FakeClassifier::default()).await;
    let mut client = judge_client(&router).await;
    for _ in 0..3 {
        let events = collect(
            within(client.compare(compare("Hi", "chitchat")))
                .await
                .unwrap()
                .into_inner(),
        )
        .await
        .unwrap();
        assert_eq!(accepted(&events).replica, "resolved");
    }
}
