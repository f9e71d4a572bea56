//! The operator binary: parses its settings, logs JSON and runs the operator (`app::run`). It exits
//! non-zero when the operator stops leading.

use clap::Parser;
use herald_operator::app::{self, Settings};

#[derive(Parser)]
#[command(
    name = "herald-operator",
    version,
    about = "Reconciles NotificationGateway and NotificationChannel resources"
)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    app::run(cli.settings).await
}
