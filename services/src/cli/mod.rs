//! The `autoj` command line: subcommands and what each runs.

pub mod bench;
pub mod bench_batch;
pub mod bench_classifier;
pub mod bench_roofline;
pub mod classify;
pub mod client;
pub mod eval;
pub mod gpu_bench;
pub mod leaderboard;
pub mod load;
pub mod quantize;
pub mod verdict;
