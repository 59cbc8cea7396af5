//! When the critique ends without a verdict, the Chinese templates' own verdict phrases are
//! appended and the verdict is chosen among the legal Chinese choices.

mod common;

use autoj_judge::grpc::validate::ServiceLimits;
use autoj_judge::testkit::TinySpec;
use autoj_proto::v1 as pb;
use common::{collect, compare, critique, within, Kind, TestServer};
use pb::judge_event::Event;

fn verdict(events: &[Event]) -> &pb::Verdict {
    events
        .iter()
        .find_map(|e| match e {
            Event::Verdict(v) => Some(v),
            _ => None,
        })
        .expect("a verdict event")
}

#[tokio::test]
async fn chinese_forced_verdicts() {
    let mut server =
        TestServer::start(Kind::Hf, TinySpec::default(), ServiceLimits::default(), 8).await;
    let mut req = compare(6);
    req.options.as_mut().unwrap().language = pb::Language::Zh as i32;
    let events = collect(
        within(server.client.compare(req))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    let v = verdict(&events);
    assert_eq!(v.source, pb::VerdictSource::Forced as i32);
    let choices = [
        "所以，最终决定是回应1",
        "所以，最终决定是回应2",
        "所以，最终决定是平局",
    ];
    assert!(choices.contains(&v.raw_text.as_str()), "{}", v.raw_text);

    let mut req = critique(6);
    req.options.as_mut().unwrap().language = pb::Language::Zh as i32;
    let events = collect(
        within(server.client.critique(req))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    let v = verdict(&events);
    assert_eq!(v.source, pb::VerdictSource::Forced as i32);
    assert!(
        v.raw_text.starts_with("评分: [[") && v.raw_text.ends_with("]]"),
        "{}",
        v.raw_text
    );
    let Some(pb::verdict::Result::Single(s)) = &v.result else {
        panic!("single verdict")
    };
    assert_eq!(v.raw_text, format!("评分: [[{}]]", s.rating.unwrap()));
    server.stop().await;
}
