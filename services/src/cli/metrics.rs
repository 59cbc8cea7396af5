//! `autoj metrics` (being written).

use clap::Args;

/// Metrics settings.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {}

/// Runs the command.
pub fn run(_args: &MetricsArgs) -> anyhow::Result<()> {
    anyhow::bail!("autoj metrics is not implemented yet")
}
