//! `gotalk bench`: placeholder, replaced by the load generator.

/// `gotalk bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("bench is not built yet")
}

pub(crate) async fn serve_child(_kind: &str) -> anyhow::Result<()> {
    anyhow::bail!("bench is not built yet")
}
