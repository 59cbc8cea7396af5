//! `autoj eval` (being written).

use clap::Args;

/// Eval settings.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {}

/// Runs the command.
pub async fn run(_args: &EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("autoj eval is not implemented yet")
}
