//! The `Evaluate` bulk RPC, driven the same way by the judge and the router: each item of
//! the request's stream runs through the server's own `Compare` / `Critique` (so validation,
//! admission and status mapping are exactly theirs), [`WINDOW`] items at a time, and each
//! result is sent as soon as its judgment ends, tagged with the item's id. A failed item
//! becomes a result with `error_code` / `error_message` and the stream goes on.
//!
//! Backpressure: the next item is read from the client only when a slot in the window is
//! free, and results wait for the client to read them (HTTP/2 flow control on both sides).
//! The client's deadline covers the whole stream: each item gets what is left of it, and
//! each item's call carries the stream's metadata (API key, trace context).

use std::time::Instant;

use futures::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::deadline::{deadline_of, with_remaining};
use crate::stream::ResultStream;
use crate::v1::judge_server::Judge;
use crate::v1::{evaluate_item, EvaluateItem, EvaluateResult, JudgeEvent};

/// Items of one stream judged at once; the engine batches them.
pub const WINDOW: usize = 8;

/// Judges every item of the request's stream with `server`'s own `Compare` / `Critique`,
/// [`WINDOW`] at a time, results in completion order. A client-side stream error ends the
/// results with that status.
pub fn evaluate<J, S>(server: J, request: Request<S>) -> ResultStream
where
    J: Judge + Clone,
    S: Stream<Item = Result<EvaluateItem, Status>> + Send + 'static,
{
    let (metadata, _, items) = request.into_parts();
    let deadline = deadline_of(&metadata);
    let results = items
        .map(move |item| {
            let server = server.clone();
            let metadata = metadata.clone();
            async move { Ok(judge_item(&server, &metadata, deadline, item?).await) }
        })
        .buffer_unordered(WINDOW);
    Box::pin(results)
}

/// One item's result: every event of its judgment, or its status (with the events that
/// came before a mid-stream failure).
async fn judge_item<J: Judge>(
    server: &J,
    metadata: &MetadataMap,
    deadline: Option<Instant>,
    item: EvaluateItem,
) -> EvaluateResult {
    let (events, error) = match item.request {
        Some(evaluate_item::Request::Compare(r)) => {
            match server.compare(item_call(metadata, r, deadline)).await {
                Ok(response) => drain(response.into_inner()).await,
                Err(status) => (Vec::new(), Some(status)),
            }
        }
        Some(evaluate_item::Request::Critique(r)) => {
            match server.critique(item_call(metadata, r, deadline)).await {
                Ok(response) => drain(response.into_inner()).await,
                Err(status) => (Vec::new(), Some(status)),
            }
        }
        None => (
            Vec::new(),
            Some(Status::invalid_argument(
                "the item holds neither `compare` nor `critique`",
            )),
        ),
    };
    if let Some(s) = &error {
        tracing::debug!(item = %item.id, code = ?s.code(), "bulk item failed: {}", s.message());
    }
    EvaluateResult {
        id: item.id,
        events,
        error_code: error.as_ref().map_or(0, |s| s.code() as i32),
        error_message: error.map(|s| s.message().to_owned()).unwrap_or_default(),
    }
}

/// An item's call: the stream's metadata and the rest of its deadline.
fn item_call<M>(metadata: &MetadataMap, msg: M, deadline: Option<Instant>) -> Request<M> {
    let request = Request::from_parts(metadata.clone(), Default::default(), msg);
    with_remaining(request, deadline)
}

/// Reads a judgment's events to the end, stopping at the first error.
async fn drain<S>(stream: S) -> (Vec<JudgeEvent>, Option<Status>)
where
    S: Stream<Item = Result<JudgeEvent, Status>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => events.push(event),
            Err(status) => return (events, Some(status)),
        }
    }
    (events, None)
}
