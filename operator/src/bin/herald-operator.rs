//! The operator binary: runs the controllers, serves `/metrics` and `/healthz`, logs JSON, and stops
//! cleanly on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use futures_util::StreamExt;
use herald_operator::controller::{self, Context};
use herald_operator::crd::{NotificationChannel, NotificationGateway};
use herald_operator::metrics::Metrics;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};

#[derive(Parser)]
#[command(
    name = "herald-operator",
    version,
    about = "Reconciles NotificationGateway and NotificationChannel resources"
)]
struct Cli {
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "HERALD_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Image of the key-rotation CronJob (this operator's image).
    #[arg(long, env = "HERALD_OPERATOR_IMAGE", default_value = concat!("ghcr.io/herald-dev/herald-operator:", env!("CARGO_PKG_VERSION")))]
    operator_image: String,
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
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let reporter = Reporter {
        controller: controller::MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: metrics.clone(),
        operator_image: cli.operator_image,
    });

    let server = tokio::spawn(serve_metrics(cli.metrics_addr, metrics));
    lead(&client).await?;
    let gateways: Api<NotificationGateway> = Api::all(client.clone());
    let channels: Api<NotificationChannel> = Api::all(client.clone());
    let gateway_controller = Controller::new(gateways, watcher::Config::default())
        .owns(Api::<ConfigMap>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Deployment>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Service>::all(client.clone()), watcher::Config::default())
        // A channel change re-reconciles the gateway it names.
        .watches(
            channels.clone(),
            watcher::Config::default(),
            |channel: NotificationChannel| {
                channel
                    .namespace()
                    .map(|ns| ObjectRef::<NotificationGateway>::new(&channel.spec.gateway_ref.name).within(&ns))
            },
        )
        .shutdown_on_signal()
        .run(controller::reconcile_gateway, controller::error_policy, ctx.clone())
        .for_each(|outcome| async move {
            if let Err(err) = outcome {
                tracing::debug!(error = %err, "gateway reconcile");
            }
        });
    let channel_controller = Controller::new(channels, watcher::Config::default())
        .shutdown_on_signal()
        .run(controller::reconcile_channel, controller::error_policy, ctx)
        .for_each(|outcome| async move {
            if let Err(err) = outcome {
                tracing::debug!(error = %err, "channel reconcile");
            }
        });
    tracing::info!("operator:started");
    tokio::select! {
        () = async { tokio::join!(gateway_controller, channel_controller); } => {}
        result = server => result??,
    }
    tracing::info!("operator:stopped");
    Ok(())
}

/// Waits until this replica holds the Lease, then keeps renewing it in the background. Losing it
/// exits the process: another replica leads, and Kubernetes restarts this one as a follower.
async fn lead(client: &Client) -> anyhow::Result<()> {
    use herald_operator::leader::LeaderElection;
    use k8s_openapi::api::coordination::v1::Lease;
    let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into());
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("herald-operator-{}", std::process::id()));
    let duration = std::time::Duration::from_secs(15);
    let election = LeaderElection::new(
        Api::<Lease>::namespaced(client.clone(), &namespace),
        "herald-operator",
        &identity,
        duration,
    );
    while !election.try_lead().await? {
        tracing::info!(identity, "leader:following");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    tracing::info!(identity, "leader:elected");
    tokio::spawn(async move {
        let mut last_success = std::time::Instant::now();
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            match election.try_lead().await {
                Ok(true) => last_success = std::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("leader:lost, exiting");
                    std::process::exit(1);
                }
                Err(err) if last_success.elapsed() < duration => tracing::warn!(error = %err, "leader:renew-failed"),
                Err(err) => {
                    tracing::error!(error = %err, "leader:expired, exiting");
                    std::process::exit(1);
                }
            }
        }
    });
    Ok(())
}

async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/metrics",
        get(move || async move {
            (
                [(axum::http::header::CONTENT_TYPE, herald_operator::metrics::CONTENT_TYPE)],
                metrics.render(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
