//! The boxed response streams of the `Judge` service, named once for every implementation
//! (the judge, the router, and the router's backends).

use std::pin::Pin;

use futures::Stream;
use tonic::Status;

use crate::v1::{EvaluateResult, JudgeEvent};

/// A judgment's events, as `Compare` and `Critique` return them.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<JudgeEvent, Status>> + Send + 'static>>;

/// `Evaluate`'s results, one per item.
pub type ResultStream =
    Pin<Box<dyn Stream<Item = Result<EvaluateResult, Status>> + Send + 'static>>;
