//! The operator process: serves `/healthz` and `/metrics`, waits to lead, then runs the gateway and
//! channel controllers until a signal stops them or the lease is lost. The binary only parses its
//! settings, sets up logging and calls [`run`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use futures_util::StreamExt;
use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};

use crate::admission::ImagePolicy;
use crate::admission::image::{ImagePattern, ImageReference, InvalidReference};
use crate::controller::{self, Context, MANAGER, Reconciled};
use crate::crd::{DEFAULT_GATEWAY_IMAGE, DEFAULT_GATEWAY_REPOSITORY};
use crate::crd::{NotificationChannel, NotificationGateway};
use crate::leader::{LeaderElection, Timing};
use crate::metrics::{self, Metrics};
use crate::render::MANAGED_BY;

/// Name of the leader-election Lease, in the operator's namespace.
const LEASE: &str = "herald-operator";

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "HERALD_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease: the operator's own (the downward API sets it).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// This replica's name, holder of the Lease and reporter of events (the downward API sets it;
    /// without it the holder is `herald-operator-<pid>`).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Images a NotificationGateway may run, comma-separated: `registry/repo` (any tag or digest),
    /// `registry/repo:tag`, `registry/repo@sha256:...`, `registry/path/*`, or `*` (any). A gateway
    /// whose image is not allowed is not rendered.
    #[arg(long, env = "HERALD_OPERATOR_ALLOWED_IMAGES", value_delimiter = ',', default_value = DEFAULT_GATEWAY_REPOSITORY)]
    pub allowed_images: Vec<ImagePattern>,
    /// The image a NotificationGateway without `spec.image` runs (a mirror of the published image in
    /// your own registry, say); always allowed.
    #[arg(long, env = "HERALD_OPERATOR_DEFAULT_GATEWAY_IMAGE", default_value = DEFAULT_GATEWAY_IMAGE, value_parser = image_reference)]
    pub default_gateway_image: String,
    /// Namespaces whose gateways and channels this operator reconciles, comma-separated; none: every
    /// namespace. The chart grants the operator rights in these namespaces only.
    #[arg(long, env = "HERALD_OPERATOR_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Leader election: how long the Lease must stay unrenewed before another replica takes it.
    #[arg(long, env = "HERALD_OPERATOR_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Leader election: how long the leader keeps reconciling without a successful renewal (less
    /// than the lease duration).
    #[arg(long, env = "HERALD_OPERATOR_RENEW_DEADLINE_SECONDS", default_value_t = 10)]
    pub renew_deadline_seconds: u64,
    /// Leader election: how often the leader renews and followers look (less than the deadline).
    #[arg(long, env = "HERALD_OPERATOR_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    pub retry_period_seconds: u64,
}

/// A well-formed image reference, kept as written (it is what the pods' `image` field says).
fn image_reference(text: &str) -> std::result::Result<String, InvalidReference> {
    text.parse::<ImageReference>()?;
    Ok(text.to_owned())
}

impl Settings {
    /// The election's timing, refused unless the leader stops before a follower may take over.
    pub fn timing(&self) -> anyhow::Result<Timing> {
        let s = Duration::from_secs;
        Timing::new(
            s(self.lease_duration_seconds),
            s(self.renew_deadline_seconds),
            s(self.retry_period_seconds),
        )
        .map_err(anyhow::Error::msg)
    }
}

/// Where the controllers look: every namespace, or one of the watched ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Namespace(String),
}

impl Scope {
    /// One scope per watched namespace (blank entries ignored), or the whole cluster when none is.
    pub fn of(watch_namespaces: &[String]) -> Vec<Self> {
        let namespaces: BTreeSet<&str> = watch_namespaces
            .iter()
            .map(|ns| ns.trim())
            .filter(|ns| !ns.is_empty())
            .collect();
        if namespaces.is_empty() {
            return vec![Self::Cluster];
        }
        namespaces
            .into_iter()
            .map(|ns| Self::Namespace(ns.to_owned()))
            .collect()
    }

    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match self {
            Self::Cluster => Api::all(client.clone()),
            Self::Namespace(namespace) => Api::namespaced(client.clone(), namespace),
        }
    }
}

/// Runs the operator until SIGTERM/SIGINT (`Ok`, the Lease released) or until it stops leading
/// (`Err`: the controllers are dropped at once, mid-flight, and the process should exit, so that
/// Kubernetes restarts it as a follower).
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let timing = settings.timing()?;
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let identity = settings
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("herald-operator-{}", std::process::id()));
    let election = Arc::new(LeaderElection::new(
        Api::<Lease>::namespaced(client.clone(), &settings.namespace),
        LEASE,
        &identity,
        timing,
    ));
    let leading = election.clone();
    let ctx = Arc::new(Context {
        metrics: metrics.clone(),
        // Reconciles run as tasks of their own (kube-runtime spawns them), outside the gate below:
        // each one checks too, so that one started before a pause does nothing after it.
        may_act: Arc::new(move || leading.may_act()),
        ..Context::new(
            client.clone(),
            settings.pod_name.clone(),
            ImagePolicy::new(settings.allowed_images, settings.default_gateway_image),
        )
    });
    let reporting = election.clone();
    metrics.report_leadership(LEASE, move || reporting.may_act());
    let scopes = Scope::of(&settings.watch_namespaces);
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr).await?;
    let server = tokio::spawn(async move { axum::serve(listener, router(metrics)).await });

    let renewed = election.acquire().await;
    tracing::info!("operator:started");
    tokio::select! {
        // Polled first: once leadership is gone, nothing else runs another step.
        biased;
        lost = election.hold(renewed) => return Err(lost.into()),
        result = server => result??,
        // Polled only while the lease is held by the clock: a process resumed after a pause past
        // its deadline takes no further step before `hold` ends it.
        _ = election.gated(join_all(scopes.iter().map(|scope| controllers(&client, scope, ctx.clone())))) => {}
    }
    if let Err(err) = election.release().await {
        tracing::warn!(error = %err, "leader:release-failed");
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
/// controller of one scope, both until a signal stops them. Every watch stays inside the scope, so a
/// namespace-scoped operator needs no cluster-wide right. Their reconciles are measured in
/// `ctx.metrics`, which also reports the gateways of the gateway controller's cache.
pub async fn controllers(client: &Client, scope: &Scope, ctx: Arc<Context>) {
    let gateways: Api<NotificationGateway> = scope.api(client);
    let channels: Api<NotificationChannel> = scope.api(client);
    ctx.metrics.controller_started(NotificationGateway::CONTROLLER);
    ctx.metrics.controller_started(NotificationChannel::CONTROLLER);
    // Only the operator's own children are watched (and cached): not every ConfigMap, Deployment
    // and Service of the cluster.
    let owned = || watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
    let gateway_controller = Controller::new(gateways, watcher::Config::default());
    // Conditions and key ages are read from this cache at each scrape, as kube-state-metrics reads
    // its own: what the apiserver last said, and nothing of a deleted gateway.
    ctx.metrics.report_gateways(gateway_controller.store());
    let gateway_controller = gateway_controller
        .owns(scope.api::<ConfigMap>(client), owned())
        .owns(scope.api::<Deployment>(client), owned())
        .owns(scope.api::<Service>(client), owned())
        .owns(scope.api::<PodDisruptionBudget>(client), owned())
        .owns(scope.api::<PersistentVolumeClaim>(client), owned())
        .owns(scope.api::<Job>(client), owned())
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
        .run(
            controller::reconcile_gateway,
            controller::gateway_error_policy,
            ctx.clone(),
        )
        .for_each(|outcome| async move {
            if let Err(err) = outcome {
                tracing::debug!(error = %err, "gateway reconcile");
            }
        });
    // A gateway deleted (or created) re-reconciles the channels naming it: channels of a deleted
    // gateway stop claiming `Accepted`. The channels come from the controller's own cache.
    let channel_controller = Controller::new(channels, watcher::Config::default());
    let cached = channel_controller.store();
    let channel_controller = channel_controller
        .watches(
            scope.api::<NotificationGateway>(client),
            watcher::Config::default(),
            move |gateway: NotificationGateway| {
                let (name, namespace) = (gateway.name_any(), gateway.namespace());
                cached
                    .state()
                    .into_iter()
                    .filter(|channel| channel.spec.gateway_ref.name == name && channel.namespace() == namespace)
                    .map(|channel| ObjectRef::from_obj(channel.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
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

    #[test]
    fn watched_namespaces_become_one_scope_each_and_none_means_the_cluster() {
        assert_eq!(Scope::of(&[]), [Scope::Cluster]);
        assert_eq!(Scope::of(&[String::new()]), [Scope::Cluster], "an empty variable");
        let listed = ["b", " a", "b", ""].map(String::from);
        assert_eq!(
            Scope::of(&listed),
            [Scope::Namespace("a".into()), Scope::Namespace("b".into())]
        );
    }

    #[test]
    fn the_allow_list_defaults_to_the_default_gateway_image_and_reads_a_list() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        let defaults = Cli::parse_from(["herald-operator"]).settings;
        assert_eq!(defaults.allowed_images.len(), 1);
        assert_eq!(defaults.allowed_images[0].to_string(), DEFAULT_GATEWAY_REPOSITORY);
        assert_eq!(defaults.default_gateway_image, DEFAULT_GATEWAY_IMAGE);
        assert!(defaults.watch_namespaces.is_empty());
        let listed = Cli::parse_from([
            "herald-operator",
            "--allowed-images=registry.local/herald/*,ghcr.io/herald-dev/herald-gateway",
            "--default-gateway-image=mirror.local:5000/herald/gateway:0.1.0",
            "--watch-namespaces=apps,web",
        ])
        .settings;
        assert_eq!(listed.allowed_images.len(), 2);
        assert_eq!(listed.default_gateway_image, "mirror.local:5000/herald/gateway:0.1.0");
        assert!(
            Cli::try_parse_from(["herald-operator", "--default-gateway-image=Mirror/UPPER:x"]).is_err(),
            "a malformed default image stops the operator at start"
        );
        assert_eq!(listed.watch_namespaces, ["apps", "web"]);
        assert!(
            Cli::try_parse_from(["herald-operator", "--allowed-images=ghcr.io/UPPER/x"]).is_err(),
            "a malformed pattern stops the operator at start"
        );
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text_beside_healthz() {
        let metrics = Arc::new(Metrics::default());
        metrics.controller_started(NotificationGateway::CONTROLLER);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router(metrics)).await });
        let get = |path: &str| reqwest::get(format!("http://{addr}{path}"));

        let response = get("/metrics").await.expect("GET /metrics");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], metrics::CONTENT_TYPE);
        let text = response.text().await.expect("text");
        let started = r#"controller_runtime_reconcile_total{controller="notificationgateway",result="success"} 0"#;
        assert!(text.lines().any(|l| l == started), "{text}");
        assert_eq!(get("/healthz").await.expect("GET /healthz").status(), 200);
    }
}
