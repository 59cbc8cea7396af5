//! The relayed judge stream: the judge's events passed through unchanged except for the
//! scenario stamped into `Accepted`, cut off with DEADLINE_EXCEEDED when the client's deadline
//! passes, and holding the replica's load guard until it ends.
//!
//! Dropping the relay (the client cancelled or went away) drops the upstream stream, which
//! resets the HTTP/2 stream to a remote judge or drops the in-process judge's receiver: the
//! judge sees the cancellation and stops generating.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use autoj_proto::v1::{judge_event, JudgeEvent, ScenarioSource};
use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};
use tonic::{Response, Status};

use crate::backend::EventStream;
use crate::pool::InFlight;

/// A judge stream whose first event has been read (so failover is over).
pub(crate) struct Peeked {
    /// The first event, `None` when the judge's stream was empty.
    pub first: Option<JudgeEvent>,
    /// The rest of the stream.
    pub rest: EventStream,
}

/// Calls into `response`'s stream until its first item: an error there is returned as the
/// call's error (so the pool can fail over on UNAVAILABLE), an event is kept for the relay.
pub(crate) async fn peek(response: Response<EventStream>) -> Result<Peeked, Status> {
    let mut rest = response.into_inner();
    match rest.next().await {
        Some(Err(status)) => Err(status),
        first => Ok(Peeked {
            first: first.and_then(Result::ok),
            rest,
        }),
    }
}

/// What the router adds to each `Accepted` event.
#[derive(Debug, Clone)]
pub(crate) struct Stamp {
    /// Scenario name (empty when none was determined).
    pub scenario: String,
    /// Where it came from.
    pub source: ScenarioSource,
}

/// The stream the router's client reads.
pub(crate) struct Relay {
    /// The first event, not yet sent.
    first: Option<JudgeEvent>,
    /// The judge's remaining events; `None` once finished.
    upstream: Option<EventStream>,
    /// Fires at the client's deadline.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Added to `Accepted`.
    stamp: Stamp,
    /// The replica's name, for the log line of a mid-stream failure.
    replica: String,
    /// Counts this request against the replica until the relay ends.
    _in_flight: InFlight,
}

impl Relay {
    /// Relays `peeked` from `replica` with `stamp`, ending at `deadline` if one is set.
    pub fn new(
        peeked: Peeked,
        stamp: Stamp,
        deadline: Option<Instant>,
        replica: String,
        in_flight: InFlight,
    ) -> Self {
        Self {
            first: peeked.first,
            upstream: Some(peeked.rest),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            stamp,
            replica,
            _in_flight: in_flight,
        }
    }

    /// Fills the scenario into an `Accepted` event; other events pass untouched.
    fn stamp(&self, mut event: JudgeEvent) -> JudgeEvent {
        if let Some(judge_event::Event::Accepted(accepted)) = event.event.as_mut() {
            accepted.scenario.clone_from(&self.stamp.scenario);
            accepted.scenario_source = self.stamp.source as i32;
        }
        event
    }
}

impl Stream for Relay {
    type Item = Result<JudgeEvent, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(this.stamp(first))));
        }
        let Some(upstream) = this.upstream.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                this.upstream = None; // drops the judge call: it stops working
                tracing::debug!(replica = %this.replica, "client deadline passed mid-stream");
                return Poll::Ready(Some(Err(Status::deadline_exceeded(
                    "deadline exceeded while the judge was generating",
                ))));
            }
        }
        match upstream.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.upstream = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(event))) => Poll::Ready(Some(Ok(this.stamp(event)))),
            Poll::Ready(Some(Err(status))) => {
                // Output has reached the client, so no retry: relay the judge's status as is.
                tracing::warn!(replica = %this.replica, code = ?status.code(), "judge failed mid-stream: {}", status.message());
                this.upstream = None;
                Poll::Ready(Some(Err(status)))
            }
        }
    }
}
