//! The reference engine, outside the serving path: one request at a time through candle's
//! stock LLaMA models ([`stock::JudgeModel`], one attention state inside the model), with
//! verdicts scored from a saved model state ([`verdict_point`]). The batched engines (CPU
//! kernels and the device backend) are tested against its logits, texts, verdicts and
//! probabilities (`Scheduling::Serial`). Built for tests only (the `testkit` feature): the
//! server's `--scheduler serial` runs the batching scheduler one sequence at a time.

pub(crate) mod serial;
pub mod stock;
pub mod verdict_point;

pub use stock::{JudgeModel, Snapshot};
