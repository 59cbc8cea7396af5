//! mTLS between router and judges: a judge that requires client certificates signed by its
//! CA serves the router (which presents one and verifies the judge's certificate), and
//! refuses a caller without a client certificate.

mod common;

use autoj_proto::v1::judge_client::JudgeClient;
use common::pki::TestCa;
use common::*;
use tokio::net::TcpListener;
use tonic::transport::{ClientTlsConfig, Endpoint, ServerTlsConfig};

#[tokio::test]
async fn router_reaches_an_mtls_judge_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let judges_ca = TestCa::new(dir.path(), "judges");
    let clients_ca = TestCa::new(dir.path(), "clients");
    let judge_cert = judges_ca.issue("judge", &["autoj-judge"]);
    let router_cert = clients_ca.issue("router-client", &["autoj-router"]);

    let listener = within(TcpListener::bind("127.0.0.1:0")).await.unwrap();
    let tls = ServerTlsConfig::new()
        .identity(judge_cert.identity())
        .client_ca_root(clients_ca.certificate());
    let judge = serve_judge_on(
        listener,
        FakeJudge::new("secure", &JudgeLog::default()),
        Some(tls),
    );

    let config = format!(
        "{}[judge_tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\ndomain = \"autoj-judge\"\n",
        one_pool(&[judge.url()]),
        judges_ca.cert_path(),
        router_cert.cert,
        router_cert.key,
    );
    let router = start_router(&config, FakeClassifier::default()).await;
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
    assert_eq!(accepted(&events).replica, "secure", "served over mTLS");

    // The same judge refuses a client that verifies it but presents no certificate.
    let no_cert = ClientTlsConfig::new()
        .ca_certificate(judges_ca.certificate())
        .domain_name("autoj-judge");
    let endpoint = Endpoint::from_shared(format!("https://{}", judge.addr))
        .unwrap()
        .tls_config(no_cert)
        .unwrap();
    let refused = match within(endpoint.connect()).await {
        Err(_) => true,
        Ok(channel) => within(JudgeClient::new(channel).compare(compare("hi", "chitchat")))
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a caller without a client certificate gets no answer"
    );
}
