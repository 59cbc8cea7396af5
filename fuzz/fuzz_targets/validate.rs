//! Arbitrary bytes decoded as the judging requests (the first byte picks which): the
//! router's and the judge's validation never panic on whatever decodes.
#![no_main]

use autoj_judge::protocol::prompt::Task;
use autoj_judge::grpc::validate::{validate_request, ServiceLimits};
use autoj_proto::v1::{CompareRequest, CritiqueRequest, ScoreRequest};
use autoj_router::LimitsConfig;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let router = LimitsConfig::default();
    let judge = ServiceLimits::default();
    match which % 3 {
        0 => {
            if let Ok(mut r) = CompareRequest::decode(bytes) {
                let options = r.options.clone().unwrap_or_default();
                let task = Task::Pairwise {
                    query: r.query.clone(),
                    response_1: r.response_1.clone(),
                    response_2: r.response_2.clone(),
                };
                let _ = validate_request(&judge, task, &options);
                let _ = autoj_router::check_compare(&mut r, &router);
            }
        }
        1 => {
            if let Ok(mut r) = CritiqueRequest::decode(bytes) {
                let options = r.options.clone().unwrap_or_default();
                let task = Task::Single {
                    query: r.query.clone(),
                    response: r.response.clone(),
                };
                let _ = validate_request(&judge, task, &options);
                let _ = autoj_router::check_critique(&mut r, &router);
            }
        }
        _ => {
            if let Ok(mut r) = ScoreRequest::decode(bytes) {
                let _ = autoj_router::check_score(&mut r, &router);
            }
        }
    }
});
