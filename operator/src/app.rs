//! The operator process: serves `/healthz` and `/metrics`, waits to lead, then runs the gateway and
//! channel controllers until a signal stops them or the lease is lost. The binary only parses its
//! settings, sets up logging and calls [`run`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};

use crate::controller::{self, Context};
use crate::crd::{NotificationChannel, NotificationGateway};
use crate::leader::LeaderElection;
use crate::metrics::{self, Metrics};

/// Name of the leader-election Lease, in the operator's namespace.
const LEASE: &str = "herald-operator";
/// A leader that has not renewed the Lease for this long may be replaced.
const LEASE_DURATION: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "HERALD_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Image of the key-rotation CronJob (this operator's image).
    #[arg(long, env = "HERALD_OPERATOR_IMAGE", default_value = concat!("ghcr.io/herald-dev/herald-operator:", env!("CARGO_PKG_VERSION")))]
    pub operator_image: String,
    /// Namespace of the leader-election Lease: the operator's own (the downward API sets it).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// This replica's name, holder of the Lease and reporter of events (the downward API sets it;
    /// without it the holder is `herald-operator-<pid>`).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
}

/// Runs the operator until SIGTERM/SIGINT (`Ok`) or until it stops leading (`Err`: the process should
/// exit, so that Kubernetes restarts it as a follower rather than it stopping controllers mid-flight).
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let reporter = Reporter {
        controller: controller::MANAGER.into(),
        instance: settings.pod_name.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: metrics.clone(),
        operator_image: settings.operator_image,
    });
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr).await?;
    let server = tokio::spawn(async move { axum::serve(listener, router(metrics)).await });

    let identity = settings
        .pod_name
        .unwrap_or_else(|| format!("herald-operator-{}", std::process::id()));
    let election = LeaderElection::new(
        Api::<Lease>::namespaced(client.clone(), &settings.namespace),
        LEASE,
        &identity,
        LEASE_DURATION,
    );
    election.acquire().await?;
    tracing::info!("operator:started");
    tokio::select! {
        () = controllers(client, ctx) => {}
        result = server => result??,
        lost = election.hold() => return Err(lost.into()),
    }
    tracing::info!("operator:stopped");
    Ok(())
}

/// `/healthz`, and `/metrics` in the Prometheus text format.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/metrics",
        get(move || async move { ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics.render()) }),
    )
}

/// The gateway controller (owning the children, and requeued by its channels) and the channel
/// controller, both until a signal stops them.
async fn controllers(client: Client, ctx: Arc<Context>) {
    let gateways: Api<NotificationGateway> = Api::all(client.clone());
    let channels: Api<NotificationChannel> = Api::all(client.clone());
    let gateway_controller = Controller::new(gateways, watcher::Config::default())
        .owns(Api::<ConfigMap>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Deployment>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Service>::all(client), watcher::Config::default())
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
    tokio::join!(gateway_controller, channel_controller);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text_beside_healthz() {
        let metrics = Arc::new(Metrics::default());
        metrics.reconciled();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router(metrics)).await });
        let get = |path: &str| reqwest::get(format!("http://{addr}{path}"));

        let response = get("/metrics").await.expect("GET /metrics");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], metrics::CONTENT_TYPE);
        let text = response.text().await.expect("text");
        assert!(
            text.lines().any(|l| l == "herald_operator_reconciles_total 1"),
            "{text}"
        );
        assert_eq!(get("/healthz").await.expect("GET /healthz").status(), 200);
    }
}
