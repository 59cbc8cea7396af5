//! Auto-J's protocol as pure functions (no model, no gRPC): what the judge model reads and
//! how its writing is read back.
//!
//! - [`prompt`]: Auto-J's exact templates and the model's own chat template.
//! - [`chat`]: a chat conversation checked and rendered (the `Chat` RPC).
//! - [`fit`]: fits input into the context, truncating from the middle when allowed.
//! - [`verdict`]: extracts the verdict from a critique, as Auto-J does and better.
//! - [`scoring`]: verdict positions, the legal continuations and their probabilities.
//! - [`outcome`]: the verdict a judgment reports (parsed, forced or unresolved).

pub mod chat;
pub mod fit;
pub mod outcome;
pub mod prompt;
pub mod scoring;
pub mod verdict;
