//! Continuous batching, for any backend: the engine thread's loop ([`run`]) that admits
//! requests within [`BatchLimits`], plans each step's rows (decode tokens, prompt chunks,
//! verdict rows), hands them to a [`Backend`] and moves every sequence on from its answer,
//! streaming text, finishing and scoring verdicts inside the batch; and the prefix cache.
//!
//! It knows no backend: [`backend`] is the contract both implement (the CPU forward pass in
//! [`crate::engine::cpu`], candle tensor ops in [`crate::engine::device`]), and nothing here
//! imports either (`scripts/engine-imports.py --check`).
//!
//! - [`backend`]: the [`Backend`] and [`SeqCache`] traits, a step's rows and answers.
//! - [`limits`]: [`BatchLimits`] and the cache storage type [`KvType`].
//! - [`prefix`]: the prefix cache.
//! - [`sample`]: temperature and nucleus sampling from the few candidates a backend returns.
//! - `run`: the loop; `seq`: a running sequence and the loop's context; `finish`: how a
//!   sequence moves on after a step and ends; `verdict`: forced verdicts as rows of steps.

pub mod backend;
mod finish;
pub mod limits;
pub mod prefix;
mod run;
pub mod sample;
mod seq;
mod verdict;

pub use backend::{
    answer_on_host, log_probs, Answer, Ask, Backend, Row, SeqCache, SharedPrefix, StepOut,
};
pub use backend::{StepInput, Want};
pub use limits::{BatchLimits, KvType};
pub(crate) use run::run;
