//! The life of one judging call as both services meter it: it arrives, its event stream is
//! watched (time to first critique chunk, gaps between chunks), and it ends exactly once with
//! a status (OK at the end of the stream, the stream's error, or CANCELLED when the client
//! dropped it first). What is recorded, under which metric families and labels, is each
//! service's own [`CallRecorder`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tonic::{Code, Response, Status};

use crate::observe::{record_status, ChunkClock};
use crate::stream::EventStream;
use crate::v1::{judge_event, JudgeEvent};

/// A service's metrics for one call; the lifecycle ([`Call`], [`Observed`]) decides when
/// each hook runs.
pub trait CallRecorder {
    /// The call arrived (once, first).
    fn open(&mut self);
    /// Its event stream started being watched.
    fn watch(&mut self) {}
    /// An event went by; for a critique chunk, `first` is the time from arrival to the first
    /// chunk (on that chunk only) and `gap` the time since the previous chunk of its order.
    fn event(&mut self, event: &JudgeEvent, first: Option<Duration>, gap: Option<Duration>);
    /// The call ended with `code` (once); `dropped` when the client went away before its end.
    fn end(&mut self, code: Code, dropped: bool);
    /// The call is gone (once, last).
    fn close(&mut self);
}

/// One call from arrival to end; dropping it unfinished records a dropped call.
#[derive(Debug)]
pub struct Call<R: CallRecorder> {
    /// The service's metrics for this call.
    recorder: R,
    /// When it arrived.
    started: Instant,
    /// Whether its end has been recorded.
    finished: bool,
}

impl<R: CallRecorder> Call<R> {
    /// A call arriving now, metered by `recorder`.
    pub fn start(mut recorder: R) -> Self {
        recorder.open();
        Self {
            recorder,
            started: Instant::now(),
            finished: false,
        }
    }

    /// The service's recorder (to add labels learnt along the way).
    pub fn recorder_mut(&mut self) -> &mut R {
        &mut self.recorder
    }

    /// Records the call's final status (only the first call counts).
    pub fn finish(&mut self, code: Code) {
        self.end(code, false);
    }

    /// Records the outcome of a call that has no stream to watch (a unary call, or one that
    /// failed before its stream started): OK, or its status, which also marks `span` failed.
    pub fn settle<T>(mut self, span: &tracing::Span, result: &Result<T, Status>) {
        match result {
            Ok(_) => self.finish(Code::Ok),
            Err(status) => {
                record_status(span, status);
                self.finish(status.code());
            }
        }
    }

    fn end(&mut self, code: Code, dropped: bool) {
        if !std::mem::replace(&mut self.finished, true) {
            self.recorder.end(code, dropped);
        }
    }
}

impl<R: CallRecorder> Drop for Call<R> {
    fn drop(&mut self) {
        // Dropped before its end: the client cancelled or went away.
        self.end(Code::Cancelled, true);
        self.recorder.close();
    }
}

/// A judgment's event stream as watched for metrics; `span` (the call's trace span) stays
/// open until the stream is dropped, and a failed stream marks it.
pub struct Observed<S, R: CallRecorder> {
    /// The events.
    inner: S,
    /// The call's accounting.
    call: Call<R>,
    /// Times the critique chunks.
    clock: ChunkClock,
    /// The call's trace span.
    span: tracing::Span,
}

/// Wraps `inner`, the event stream of `call`, keeping `span` open until it ends.
pub fn observe<S, R: CallRecorder>(
    inner: S,
    mut call: Call<R>,
    span: tracing::Span,
) -> Observed<S, R> {
    call.recorder.watch();
    Observed {
        inner,
        clock: ChunkClock::new(call.started),
        call,
        span,
    }
}

/// A streaming call's response: its event stream watched until it ends, or the status it
/// failed with before any event (recorded at once, `span` marked).
pub fn respond<S, R>(
    started: Result<Response<S>, Status>,
    call: Call<R>,
    span: tracing::Span,
) -> Result<Response<EventStream>, Status>
where
    S: Stream<Item = Result<JudgeEvent, Status>> + Unpin + Send + 'static,
    R: CallRecorder + Unpin + Send + 'static,
{
    match started {
        Ok(response) => Ok(response.map(|s| Box::pin(observe(s, call, span)) as EventStream)),
        Err(status) => {
            let failed = Err(status);
            call.settle(&span, &failed);
            failed
        }
    }
}

impl<S, R> Stream for Observed<S, R>
where
    S: Stream<Item = Result<JudgeEvent, Status>> + Unpin,
    R: CallRecorder + Unpin,
{
    type Item = Result<JudgeEvent, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.inner).poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(event))) => {
                let (first, gap) = match &event.event {
                    Some(judge_event::Event::CritiqueDelta(d)) => {
                        this.clock.chunk(d.order, Instant::now())
                    }
                    _ => (None, None),
                };
                this.call.recorder.event(event, first, gap);
            }
            Poll::Ready(Some(Err(status))) => {
                record_status(&this.span, status);
                this.call.finish(status.code());
            }
            Poll::Ready(None) => this.call.finish(Code::Ok),
            Poll::Pending => {}
        }
        next
    }
}
