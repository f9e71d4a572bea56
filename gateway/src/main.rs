//! Composition root: parse the configuration, set up logging, build the gateway, serve until a signal.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald_gateway::config::{Cli, Command, Config};
use herald_gateway::{server, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.options) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("herald-gateway: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!(
                "{}",
                serde_json::to_string_pretty(&config.describe()).unwrap_or_default()
            );
            std::process::ExitCode::SUCCESS
        }
        Command::Migrate => {
            telemetry::init(config.log_format);
            match server::migrate(&config.store).await {
                Ok(()) => {
                    tracing::info!(store = %config.store.describe(), "migrations:applied");
                    std::process::ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("herald-gateway: {err:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Serve => match serve(config).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = format!("{err:#}"), "gateway:failed");
                eprintln!("herald-gateway: {err:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::init(config.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let gateway = server::build(&config).await?;
    tracing::info!(address = %format!("http://{addr}"), store = %config.store.describe(), dev = config.dev, "gateway:listening");
    if config.dev {
        tracing::warn!("dev mode: generated secrets, POST /dev/jwt enabled; never use in production");
        tracing::info!(
            "try it: JWT=$(curl -s -X POST 'http://{addr}/dev/jwt?sub=alice' | jq -r .jwt); \
             curl -s -X POST -H \"Authorization: Bearer $JWT\" http://{addr}/ws/token"
        );
        if let Some(key) = &config.dev_publisher_key {
            tracing::info!(
                "publish: curl -s -X POST -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \
                 -d '{{\"userIds\":[\"alice\"],\"notification\":{{\"type\":\"new_like\",\"title\":\"Hello\"}}}}' \
                 http://{addr}/api/publish"
            );
        }
    }
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    server::serve(listener, gateway, server::shutdown_signal(), grace).await
}
