//! `Judge.Evaluate`: bulk evaluation over one bidirectional stream. Each item runs through
//! the service's own `Compare` / `Critique` (so validation and status mapping are exactly
//! theirs); up to [`WINDOW`] items are in flight at once and each result is sent as soon as
//! its judgment ends, tagged with the item's id. A failed item becomes a result with
//! `error_code` / `error_message` and the stream goes on.
//!
//! Backpressure: the next item is read from the client only when a slot in the window is
//! free, and results wait for the client to read them (HTTP/2 flow control on both sides).
//! The client's deadline covers the whole stream: each item gets what is left of it.

use std::pin::Pin;
use std::time::{Duration, Instant};

use autoj_proto::v1 as pb;
use autoj_proto::v1::judge_server::Judge;
use futures::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// Items of one stream judged at once; the engine batches them.
pub const WINDOW: usize = 8;

/// The `Evaluate` response stream.
pub type ResultStream =
    Pin<Box<dyn Stream<Item = Result<pb::EvaluateResult, Status>> + Send + 'static>>;

/// Judges every item of the request's stream with `judge`'s own `Compare` / `Critique`,
/// [`WINDOW`] at a time, results in completion order. Each item's call carries the stream's
/// request metadata, with `grpc-timeout` set to what is left of the stream's deadline. A
/// client-side stream error ends the results with that status.
pub fn evaluate<J, S>(judge: J, request: Request<S>) -> ResultStream
where
    J: Judge + Clone,
    S: Stream<Item = Result<pb::EvaluateItem, Status>> + Send + 'static,
{
    let (metadata, _, items) = request.into_parts();
    let deadline = autoj_proto::deadline::deadline_of(&metadata);
    let results = items
        .map(move |item| {
            let judge = judge.clone();
            let metadata = metadata.clone();
            async move {
                let item = item?;
                Ok(judge_item(&judge, &metadata, deadline, item).await)
            }
        })
        .buffer_unordered(WINDOW);
    Box::pin(results)
}

/// One item's result: every event of its judgment, or its status (with the events that
/// came before a mid-stream failure).
async fn judge_item<J: Judge>(
    judge: &J,
    metadata: &MetadataMap,
    deadline: Option<Instant>,
    item: pb::EvaluateItem,
) -> pb::EvaluateResult {
    use pb::evaluate_item::Request as Item;
    let id = item.id;
    let outcome = match item.request {
        Some(Item::Compare(r)) => match judge.compare(call(metadata, r, deadline)).await {
            Ok(response) => drain(response.into_inner()).await,
            Err(status) => (Vec::new(), Some(status)),
        },
        Some(Item::Critique(r)) => match judge.critique(call(metadata, r, deadline)).await {
            Ok(response) => drain(response.into_inner()).await,
            Err(status) => (Vec::new(), Some(status)),
        },
        None => (
            Vec::new(),
            Some(Status::invalid_argument(
                "the item holds neither `compare` nor `critique`",
            )),
        ),
    };
    let (events, error) = outcome;
    if let Some(s) = &error {
        tracing::debug!(item = %id, code = ?s.code(), "bulk item failed: {}", s.message());
    }
    pb::EvaluateResult {
        id,
        events,
        error_code: error.as_ref().map_or(0, |s| s.code() as i32),
        error_message: error.map(|s| s.message().to_owned()).unwrap_or_default(),
    }
}

/// An item's call: the stream's metadata and the rest of its deadline.
fn call<M>(metadata: &MetadataMap, msg: M, deadline: Option<Instant>) -> Request<M> {
    let mut request = Request::from_parts(metadata.clone(), Default::default(), msg);
    if let Some(at) = deadline {
        let left = at.saturating_duration_since(Instant::now());
        request.set_timeout(left.max(Duration::from_millis(1)));
    }
    request
}

/// Reads a judgment's events to the end, stopping at the first error.
async fn drain<S>(stream: S) -> (Vec<pb::JudgeEvent>, Option<Status>)
where
    S: Stream<Item = Result<pb::JudgeEvent, Status>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut events = Vec::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => events.push(ev),
            Err(status) => return (events, Some(status)),
        }
    }
    (events, None)
}
