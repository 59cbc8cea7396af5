//! TLS on the router's public port (rustls): a client that trusts the CA gets a full round
//! trip; a plaintext client gets nothing.

mod common;

use std::path::Path;

use autoj_proto::v1::judge_client::JudgeClient;
use autoj_router::{Router, RouterConfig};
use common::pki::TestCa;
use common::*;
use tonic::transport::{ClientTlsConfig, Endpoint, ServerTlsConfig};

#[tokio::test]
async fn tls_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "public");
    let server_cert = ca.issue("router", &["localhost"]);

    let judge = spawn_judge(FakeJudge::new("a", &JudgeLog::default())).await;
    let config = RouterConfig::from_toml(&one_pool(&[judge.url()]), Path::new("t.toml")).unwrap();
    let router = within(
        Router::builder(config)
            .catalog(fixture_catalog())
            .classifier(Box::new(FakeClassifier::default()))
            .tls(Some(
                ServerTlsConfig::new().identity(server_cert.identity()),
            ))
            .build(),
    )
    .await
    .unwrap();
    let router = spawn_router(router).await;

    let tls = ClientTlsConfig::new()
        .ca_certificate(ca.certificate())
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", router.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let channel = within(channel.connect()).await.expect("TLS handshake");
    let events = collect(
        within(JudgeClient::new(channel).compare(compare("hi", "chitchat")))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(accepted(&events).replica, "a");
    assert_eq!(events.len(), 4, "Accepted, delta, Verdict, Usage over TLS");

    // A plaintext client cannot talk to the TLS port.
    let mut plain = JudgeClient::new(Endpoint::from_shared(router.url()).unwrap().connect_lazy());
    assert!(within(plain.compare(compare("hi", "chitchat")))
        .await
        .is_err());
}
