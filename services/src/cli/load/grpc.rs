//! One load stream over gRPC: `Judge.Compare` or `Judge.Critique` on a shared channel, its
//! events counted, its status kept.

use std::time::Instant;

use autoj_proto::v1::judge_client::JudgeClient;
use autoj_proto::v1::judge_event::Event;
use tonic::transport::Channel;

use super::{Call, LoadArgs, Outcome, Seen};

/// Runs `call` to its end on `channel`.
pub(super) async fn one_stream(channel: &Channel, args: &LoadArgs, call: Call) -> Outcome {
    let mut client = JudgeClient::new(channel.clone());
    let started = Instant::now();
    let answer = match call {
        Call::Compare(message) => match args.secure.request(message) {
            Ok(mut r) => {
                r.set_timeout(args.stream_timeout);
                client.compare(r).await
            }
            Err(_) => Err(tonic::Status::invalid_argument("bad API key")),
        },
        Call::Critique(message) => match args.secure.request(message) {
            Ok(mut r) => {
                r.set_timeout(args.stream_timeout);
                client.critique(r).await
            }
            Err(_) => Err(tonic::Status::invalid_argument("bad API key")),
        },
    };
    let mut outcome = Outcome::new(started);
    let mut stream = match answer {
        Ok(response) => response.into_inner(),
        Err(status) => return outcome.failed(status.code()),
    };
    loop {
        match stream.message().await {
            Ok(Some(event)) => outcome.saw(match event.event {
                Some(Event::Accepted(_)) => Seen::Accepted,
                Some(Event::Verdict(_)) => Seen::Verdict,
                Some(Event::Usage(_)) => Seen::Usage,
                _ => Seen::Other,
            }),
            Ok(None) => return outcome,
            Err(status) => return outcome.failed(status.code()),
        }
    }
}
