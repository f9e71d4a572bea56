//! Composition root: parse the configuration, set up logging, build the gateway, serve until a signal.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use herald_gateway::adapters::clock::SystemClock;
use herald_gateway::config::{Cli, Command, Config, Options, StoreConfig};
use herald_gateway::{server, telemetry};

/// jemalloc instead of the system allocator: see docs/architecture.md ("Allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => migrate(cli.options, false).await,
        Command::AwaitMigrations => migrate(cli.options, true).await,
        Command::Openapi => {
            print!("{}", herald_gateway::api::render(false));
            ExitCode::SUCCESS
        }
        Command::CheckConfig => match load(cli.options) {
            Ok(config) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&config.describe()).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve => match load(cli.options) {
            Ok(config) => match serve(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = format!("{err:#}"), "gateway:failed");
                    eprintln!("herald-gateway: {err:#}");
                    ExitCode::FAILURE
                }
            },
            Err(code) => code,
        },
    }
}

/// The whole configuration; a refused one exits with 2 and says why.
fn load(options: Options) -> Result<Config, ExitCode> {
    Config::load(options).map_err(|err| {
        eprintln!("herald-gateway: {err}");
        ExitCode::from(2)
    })
}

/// `migrate` and `await-migrations` need only the database settings: no JWT, key or publisher
/// configuration.
async fn migrate(options: Options, only_wait: bool) -> ExitCode {
    let log_format = options.log_format.unwrap_or_default();
    let store = match StoreConfig::load(options) {
        Ok(store) => store,
        Err(err) => {
            eprintln!("herald-gateway: {err}");
            return ExitCode::from(2);
        }
    };
    let _tracing = telemetry::init(log_format, None);
    let outcome = if only_wait {
        server::await_migrations(&store, Duration::from_secs(2), Duration::from_secs(600)).await
    } else {
        server::migrate(&store).await
    };
    match outcome {
        Ok(()) => {
            tracing::info!(store = %store.describe(), "migrations:applied");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("herald-gateway: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Held until serving ends: dropping it sends the spans still buffered.
    let _tracing = telemetry::init(config.log_format, config.otlp_endpoint.as_ref());
    let listeners = server::Listeners::bind(&config).await?;
    let (addr, internal) = listeners.local_addrs()?;
    let gateway = server::build(&config, Arc::new(SystemClock)).await?;
    tracing::info!(
        address = %format!("http://{addr}"),
        internal = %format!("http://{internal}"),
        store = %config.store.describe(),
        dev = config.dev,
        "gateway:listening"
    );
    if config.dev {
        tracing::warn!("dev mode: generated secrets, POST /dev/jwt enabled; never use in production");
        tracing::info!("demo: open http://{addr}/ in a browser (?user=bob for another user)");
        tracing::info!(
            "try it: JWT=$(curl -s -X POST 'http://{addr}/dev/jwt?sub=alice' | jq -r .jwt); \
             curl -s -X POST -H \"Authorization: Bearer $JWT\" http://{addr}/ws/token"
        );
        if let Some(key) = &config.dev_publisher_key {
            // Services publish on the internal listener (the demo page uses dev mode's /dev/publish).
            tracing::info!(
                "publish: curl -s -X POST -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' \
                 -d '{{\"userIds\":[\"alice\"],\"notification\":{{\"type\":\"new_like\",\"title\":\"Hello\"}}}}' \
                 http://{internal}/api/publish",
                key.expose()
            );
        }
    }
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    server::serve(listeners, gateway, config.listener, server::shutdown_signal(), grace).await
}
