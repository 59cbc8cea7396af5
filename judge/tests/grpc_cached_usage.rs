//! `Usage.cached_prompt_tokens` tells how many prompt tokens the prefix cache served: none for
//! the first judgment of a protocol, most of the template for the next one.

mod common;

use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::testkit::TinySpec;
use autoj_proto::v1 as pb;
use common::{collect, critique, within, Kind, TestServer};

fn usage_of(events: &[pb::judge_event::Event]) -> pb::Usage {
    events
        .iter()
        .find_map(|e| match e {
            pb::judge_event::Event::Usage(u) => Some(*u),
            _ => None,
        })
        .expect("a usage event")
}

#[tokio::test]
async fn second_request_of_a_protocol_reports_cached_prompt_tokens() {
    let mut server =
        TestServer::start(Kind::Gguf, TinySpec::default(), ServiceLimits::default(), 8).await;
    let mut usages = Vec::new();
    for response in [
        "It rains.",
        "Clouds weep softly / over the sleeping city / rain",
    ] {
        let mut request = critique(4);
        request.response = response.into();
        let stream = within(server.client.critique(request))
            .await
            .expect("accepted")
            .into_inner();
        usages.push(usage_of(&collect(stream).await.expect("judged")));
    }
    assert_eq!(usages[0].cached_prompt_tokens, 0, "nothing cached yet");
    let second = &usages[1];
    assert!(
        second.cached_prompt_tokens > 0,
        "the shared template and query come from the prefix cache: {second:?}"
    );
    assert!(second.cached_prompt_tokens < second.prompt_tokens);
    server.stop().await;
}
