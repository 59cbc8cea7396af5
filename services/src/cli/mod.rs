//! The `autoj` command line: subcommands and what each runs.

pub mod client;
pub mod verdict;
