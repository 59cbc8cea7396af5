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

use candle_transformers::generation::{LogitsProcessor, Sampling};

use crate::engine::generate::GenerationParams;

/// candle's sampler for `params` (greedy at temperature 0): how the reference engine picks
/// its tokens, and what the batched engines' greedy pick is tested against.
pub fn candle_sampler(params: &GenerationParams) -> LogitsProcessor {
    let sampling = if params.temperature <= 0.0 {
        Sampling::ArgMax
    } else if params.top_p < 1.0 {
        Sampling::TopP {
            p: params.top_p,
            temperature: params.temperature,
        }
    } else {
        Sampling::All {
            temperature: params.temperature,
        }
    };
    LogitsProcessor::from_sampling(params.seed, sampling)
}
