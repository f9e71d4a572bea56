//! The reconcilers. A gateway reconcile judges the gateway's channels (`channels`), renders every
//! child (`render`), then asks `admission` whether the gateway may be rendered at all (an allowed
//! image, Secrets that opted in, and no child name taken by an object the gateway does not control);
//! a refused gateway only gets a status saying why. Otherwise it applies the children with
//! server-side apply (unchanged objects are not written), creates the signing-key Secret once,
//! records the channels' verdicts, then writes status (computed by `status`) only when it changed.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::admission::ownership::{self, Control, Found};
use crate::admission::{self, ImagePolicy};
use crate::channels;
use crate::crd::{NotificationChannel, NotificationGateway};
use crate::keys;
use crate::metrics::Metrics;
use crate::programmed;
use crate::render::{self, Children, Names};
use crate::rotation::{self, Step};
use crate::signing;
use crate::status::{self, ChannelOutcome, GatewayObservation, KeysObservation, Refusal};

/// Field manager of every server-side apply.
pub const MANAGER: &str = "herald-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("signing keys: {0}")]
    Signing(#[from] signing::SigningError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The images gateways may run.
    pub images: ImagePolicy,
    /// Asks gateway replicas which channels they serve (`programmed`).
    pub http: reqwest::Client,
    /// Whether this replica may act now (it holds the lease by the clock); always, outside an
    /// election (tests).
    pub may_act: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl Context {
    /// A context whose events are reported as `instance` of the operator (the pod's name).
    pub fn new(client: Client, instance: Option<String>, images: ImagePolicy) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: Arc::default(),
            images,
            http: programmed::client(),
            may_act: Arc::new(|| true),
        }
    }
}

/// A refused gateway is looked at again this often: the fix may be a label on a Secret, which the
/// operator does not watch (watching Secrets would need `list` on every Secret it may read), or the
/// deletion of an object in the way of a child, whose kind it may not watch either.
pub const REFUSED_RECHECK: Duration = Duration::from_secs(30);

async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + std::fmt::Debug,
    K: Serialize + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object
        .meta()
        .name
        .clone()
        .ok_or_else(|| Error::Invalid("a rendered object has no name".into()))?;
    Ok(api
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object))
        .await?)
}

async fn publish(ctx: &Context, object: &impl Resource<DynamicType = ()>, warning: bool, reason: &str, note: String) {
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(error = %err, "event not recorded");
    }
}

/// Keeps the gateway's signing keys (`signing::keep`) and records each step as an event. Returns
/// what status shows of them, and when they next need a look.
async fn keep_signing_keys(
    ctx: &Context,
    gateway: &NotificationGateway,
    now: Timestamp,
    scope: signing::Scope,
) -> Result<(KeysObservation, Option<Timestamp>)> {
    // The one write that must never come from two replicas at once: checked again right before.
    if !(ctx.may_act)() {
        return Err(Error::Invalid("no longer leading".into()));
    }
    let outcome = signing::keep(&ctx.client, gateway, now, scope).await?;
    for step in &outcome.steps {
        let (reason, note) = match step {
            Step::Added { kid, not_before } if *not_before <= now => {
                ("KeyAdded", format!("added signing key {kid}, signing at once"))
            }
            Step::Added { kid, not_before } => (
                "KeyAdded",
                format!("added signing key {kid}, signing from {}", keys::rfc3339(*not_before)),
            ),
            Step::Retired { kid } => (
                "KeyRetired",
                format!("retired signing key {kid}: no valid token can name it any more"),
            ),
            Step::Revoked { kid } => (
                "KeyRevoked",
                format!("revoked signing key {kid} on request: tokens it signed are refused"),
            ),
        };
        publish(ctx, gateway, false, reason, note).await;
        tracing::info!(gateway = %gateway.name_any(), reason, "keys:changed");
    }
    let policy = signing::policy(gateway)?;
    let changed = !outcome.steps.is_empty() || outcome.request_handled.is_some();
    let observed = KeysObservation {
        active_key_id: rotation::active(&outcome.keys, now).map(|key| key.kid.clone()),
        keys: outcome.key_statuses(now),
        rotated: outcome.rotated(),
        next_rotation: rotation::next_rotation(&outcome.keys, now, &policy).map(Time),
        request_handled: outcome.request_handled.clone(),
    };
    if changed {
        // In status at once: what the Secret now holds must show even if the reconcile fails later
        // (and a handled request must not be acted on again).
        record_keys(ctx, gateway, &observed, now).await?;
    }
    Ok((observed, rotation::next_change(&outcome.keys, now, &policy)))
}

/// The kinds the operator reconciles, each with the name its controller has in metrics: its kind in
/// lower case, as controller-runtime names a controller by default.
pub trait Reconciled {
    const CONTROLLER: &'static str;
}

impl Reconciled for NotificationGateway {
    const CONTROLLER: &'static str = "notificationgateway";
}

impl Reconciled for NotificationChannel {
    const CONTROLLER: &'static str = "notificationchannel";
}

/// Reconciles a gateway (measured as one reconcile of its controller), unless this replica may not
/// act: then nothing is done, nor counted.
pub async fn reconcile_gateway(gateway: Arc<NotificationGateway>, ctx: Arc<Context>) -> Result<Action> {
    if !(ctx.may_act)() {
        return Ok(Action::await_change());
    }
    let metrics = ctx.metrics.clone();
    // Boxed: the reconcile's future is large, and a caller that awaits it on its own stack (a test)
    // would otherwise hold it twice over, once in the measuring future.
    metrics
        .reconcile(
            NotificationGateway::CONTROLLER,
            Box::pin(gateway_reconcile(gateway, ctx)),
        )
        .await
}

async fn gateway_reconcile(gateway: Arc<NotificationGateway>, ctx: Arc<Context>) -> Result<Action> {
    tracing::info!(gateway = %gateway.name_any(), generation = gateway.metadata.generation, "gateway:reconciling");
    let namespace = gateway
        .namespace()
        .ok_or_else(|| Error::Invalid("NotificationGateway without a namespace".into()))?;
    if gateway.spec.paused {
        let revoked = revoke_while_held(&ctx, &gateway, &namespace).await?;
        let mut next = status::paused_gateway_status(gateway.status.as_ref(), gateway.metadata.generation, &now());
        if let Some(keys) = &revoked {
            status::overlay_keys(&mut next, keys, &now());
        }
        if gateway.status.as_ref() != Some(&next) {
            patch_status(&ctx.client, gateway.as_ref(), &next).await?;
        }
        return Ok(Action::await_change());
    }
    let channels = channels_of(&ctx.client, &gateway, &namespace).await?;
    let verdicts = channels::judge(&channels);
    let (secret_versions, mut refusals) = read_secrets(&ctx, &gateway, &namespace).await?;
    let image = ctx.images.image_of(&gateway.spec);
    let children = Children::render(&gateway, image, &verdicts.accepted, &secret_versions);
    refusals.extend(name_conflicts(&ctx, &gateway, &namespace, &children).await?);
    if let Some(refusal) = admission::combine(refusals) {
        let revoked = revoke_while_held(&ctx, &gateway, &namespace).await?;
        return refuse(&ctx, &gateway, &refusal, revoked.as_ref()).await;
    }
    let now = k8s_openapi::jiff::Timestamp::now();
    let channels_checksum = children
        .config_map
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(render::CHANNELS_CHECKSUM_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    let (deployment, (keys, next_key_change)) = apply_children(&ctx, &gateway, &namespace, children, now).await?;
    let served = if verdicts.accepted.is_empty() {
        None
    } else {
        Some(programmed(&ctx, &gateway, &namespace, &channels_checksum).await?)
    };
    if let Some(verdict) = &served {
        for channel in &verdicts.accepted {
            set_channel_status(&ctx, channel, ChannelOutcome::Accepted(verdict)).await?;
        }
    }
    for (channel, refusal) in &verdicts.refused {
        set_channel_status(&ctx, channel, ChannelOutcome::Refused(refusal)).await?;
    }

    let rollout = status::Rollout {
        generation: deployment.metadata.generation,
        observed_generation: deployment.status.as_ref().and_then(|s| s.observed_generation),
        deadline_exceeded: deployment
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions.iter().any(|c| {
                    c.type_ == "Progressing"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                })
            }),
    };
    let replicas = deployment.status.unwrap_or_default();
    let observed = GatewayObservation {
        generation: gateway.metadata.generation,
        desired_replicas: gateway.spec.desired_replicas(),
        ready_replicas: replicas.ready_replicas.unwrap_or(0),
        updated_replicas: replicas.updated_replicas.unwrap_or(0),
        total_replicas: replicas.replicas.unwrap_or(0),
        selector: render::selector_string(&gateway),
        refused_channels: verdicts.refused.len(),
        keys,
        rollout,
    };
    let next = status::gateway_status(gateway.status.as_ref(), observed, &Time(now));
    if gateway.status.as_ref() != Some(&next) {
        patch_status(&ctx.client, gateway.as_ref(), &next).await?;
        let generation = gateway.metadata.generation;
        if gateway.status.as_ref().and_then(|s| s.observed_generation) != generation {
            publish(
                &ctx,
                gateway.as_ref(),
                false,
                "Reconciled",
                format!("applied generation {}", generation.unwrap_or_default()),
            )
            .await;
        }
    }
    ctx.metrics.succeeded(&gateway.uid().unwrap_or_default());
    let look = next_look(now, next_key_change);
    // Until every replica serves the channels, look again soon: kubelet's refresh is not watched.
    // A gateway scaled to zero has no replica to wait for.
    let waiting = served.is_some_and(|v| !v.programmed) && gateway.spec.desired_replicas() > 0;
    let look = if waiting { look.min(PROGRAMMED_RECHECK) } else { look };
    Ok(Action::requeue(look))
}

/// How often a gateway whose replicas do not all serve its channels yet is looked at.
pub const PROGRAMMED_RECHECK: Duration = Duration::from_secs(10);

/// Whether the gateway's ready replicas serve the channel set `checksum` (`programmed`).
async fn programmed(
    ctx: &Context,
    gateway: &NotificationGateway,
    namespace: &str,
    checksum: &str,
) -> Result<programmed::Verdict> {
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
    let service = Names::of(gateway).internal_service;
    let listed = slices
        .list(&ListParams::default().labels(&format!(
            "kubernetes.io/service-name={service},{}={}",
            programmed::MANAGED_BY_CONTROLLER.0,
            programmed::MANAGED_BY_CONTROLLER.1
        )))
        .await?;
    let replicas = programmed::ready_endpoints(&listed.items, "internal");
    let reports = programmed::probe(&ctx.http, &replicas).await;
    Ok(programmed::verdict(checksum, &reports))
}

/// A paused or refused gateway is left as it is, except that a key named in `herald.dev/revoke-keys`
/// is revoked at once (a leak does not wait for the gateway to be resumed or admitted): only in a
/// signing-key Secret this gateway controls, and the keys' status is written at once.
async fn revoke_while_held(
    ctx: &Context,
    gateway: &NotificationGateway,
    namespace: &str,
) -> Result<Option<KeysObservation>> {
    if signing::Requests::of(gateway).revoke.is_empty() {
        return Ok(None);
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(existing) = secrets.get_metadata_opt(&Names::of(gateway).signing_keys).await? else {
        return Ok(None);
    };
    if ownership::control(gateway, &existing.metadata) != Control::ThisGateway {
        return Ok(None);
    }
    let (keys, _) = keep_signing_keys(ctx, gateway, Timestamp::now(), signing::Scope::RevocationsOnly).await?;
    Ok(Some(keys))
}

/// Writes the keys' part of the gateway's status at once (a merge patch of those fields alone), so
/// that a change to the Secret is in status even if the rest of the reconcile fails.
async fn record_keys(
    ctx: &Context,
    gateway: &NotificationGateway,
    keys: &KeysObservation,
    now: Timestamp,
) -> Result<()> {
    let mut patch = json!({"status": {"activeKeyId": keys.active_key_id, "keys": keys.keys}});
    if keys.rotated {
        patch["status"]["lastRotationTime"] = json!(Time(now));
    }
    if let Some(next) = &keys.next_rotation {
        patch["status"]["nextRotationTime"] = json!(next);
    }
    if let Some(handled) = &keys.request_handled {
        patch["status"]["rotationRequestHandled"] = json!(handled);
    }
    let api: Api<NotificationGateway> = Api::namespaced(ctx.client.clone(), &gateway.namespace().unwrap_or_default());
    api.patch_status(&gateway.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// A reconciled gateway is looked at again when its keys next change (a pending key starts
/// signing, an old one may go, a rotation is due), and at least every five minutes.
fn next_look(now: Timestamp, next_key_change: Option<Timestamp>) -> Duration {
    const AT_LEAST: Duration = Duration::from_secs(300);
    next_key_change
        .and_then(|at| Duration::try_from(now.duration_until(at)).ok())
        // A second late, so that the change has happened when the reconcile runs.
        .map_or(AT_LEAST, |until| (until + Duration::from_secs(1)).min(AT_LEAST))
}

/// The first half of admission, before rendering: the image and every Secret the pods would read
/// (only metadata is read, one GET per Secret, never Secrets' data). Returns the `resourceVersion`
/// of each Secret the gateway's pods and migration Job read by reference (rendering stamps them on
/// the pod templates, so a changed credential rolls them out), and the refusals so far. The second
/// half, [`name_conflicts`], needs the rendered children.
async fn read_secrets(
    ctx: &Context,
    gateway: &NotificationGateway,
    namespace: &str,
) -> Result<(Vec<(String, String)>, Vec<Refusal>)> {
    let mut refusals: Vec<Refusal> = ctx
        .images
        .judge(ctx.images.image_of(&gateway.spec))
        .err()
        .into_iter()
        .collect();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut versions = Vec::new();
    for secret in admission::secret_uses(gateway) {
        let metadata = secrets.get_metadata_opt(&secret.name).await?;
        if let Err(refusal) = admission::judge_secret(gateway, &secret, metadata.as_ref().map(|m| &m.metadata)) {
            refusals.push(refusal);
        }
        // The signing keys are left out: they rotate in place, read again by running pods.
        if let (true, Some(metadata)) = (secret.must_exist, &metadata) {
            versions.push((secret.name.clone(), metadata.resource_version().unwrap_or_default()));
        }
    }
    Ok((versions, refusals))
}

/// Whether a child would overwrite an object the gateway does not control: each child's metadata is
/// read by name (one GET each; the controllers' caches cover only some kinds and cannot be read).
async fn name_conflicts(
    ctx: &Context,
    gateway: &NotificationGateway,
    namespace: &str,
    children: &Children,
) -> Result<Option<Refusal>> {
    let refs = children.refs();
    let mut existing = Vec::with_capacity(refs.len());
    for child in &refs {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &child.resource);
        existing.push(metadata_of(&api, &child.name).await?);
    }
    let found: Vec<Found<'_>> = refs
        .iter()
        .zip(&existing)
        .map(|(child, metadata)| Found {
            kind: &child.resource.kind,
            name: &child.name,
            metadata: metadata.as_ref(),
        })
        .collect();
    Ok(ownership::judge_children(gateway, &found).err())
}

/// A refused gateway: nothing is applied (its children stay as last rendered, so changing the image
/// or a Secret reference to something not allowed changes nothing that runs), the status says why,
/// and a Warning event is recorded when that status is new.
async fn refuse(
    ctx: &Context,
    gateway: &NotificationGateway,
    refusal: &Refusal,
    revoked: Option<&KeysObservation>,
) -> Result<Action> {
    let mut next =
        status::refused_gateway_status(gateway.status.as_ref(), gateway.metadata.generation, refusal, &now());
    if let Some(keys) = revoked {
        status::overlay_keys(&mut next, keys, &now());
    }
    if gateway.status.as_ref() != Some(&next) {
        patch_status(&ctx.client, gateway, &next).await?;
        publish(ctx, gateway, true, refusal.reason, refusal.message.clone()).await;
        tracing::info!(gateway = %gateway.name_any(), reason = refusal.reason, "gateway:refused");
    }
    Ok(Action::requeue(REFUSED_RECHECK))
}

/// The channels that name this gateway.
async fn channels_of(
    client: &Client,
    gateway: &NotificationGateway,
    namespace: &str,
) -> Result<Vec<NotificationChannel>> {
    let api: Api<NotificationChannel> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|c| c.spec.gateway_ref.name == gateway.name_any())
        .collect())
}

/// Applies every child of an admitted gateway, and keeps its signing keys. Returns the applied
/// Deployment (for its replica counts) and what became of the keys.
async fn apply_children(
    ctx: &Context,
    gateway: &NotificationGateway,
    namespace: &str,
    children: Children,
    now: Timestamp,
) -> Result<(Deployment, (KeysObservation, Option<Timestamp>))> {
    let client = &ctx.client;
    apply::<ConfigMap>(client, namespace, &children.config_map).await?;
    // Before the Deployment: its pods mount the Secret and the claim.
    let keys = keep_signing_keys(ctx, gateway, now, signing::Scope::Everything).await?;
    if let Some(claim) = &children.data_claim {
        apply::<PersistentVolumeClaim>(client, namespace, claim).await?;
    }
    // Before the Deployment: its pods wait for the schema the Job applies.
    if let Some(job) = &children.migration_job {
        apply::<Job>(client, namespace, job).await?;
    }
    let deployment = apply::<Deployment>(client, namespace, &children.deployment).await?;
    apply::<Service>(client, namespace, &children.service).await?;
    apply::<Service>(client, namespace, &children.internal_service).await?;
    match &children.pod_disruption_budget {
        Some(pdb) => {
            apply::<PodDisruptionBudget>(client, namespace, pdb).await?;
        }
        None => {
            let kind = ApiResource::erase::<PodDisruptionBudget>(&());
            remove_own(client, gateway, namespace, &kind).await?;
        }
    }
    match &children.service_monitor {
        Some(monitor) => apply_service_monitor(ctx, gateway, namespace, monitor).await?,
        None => remove_own(client, gateway, namespace, &render::service_monitor_resource()).await?,
    }
    Ok((deployment, keys))
}

/// Applies the gateway's ServiceMonitor. Without the Prometheus Operator's CRD there is nothing to
/// apply it to: the gateway runs all the same, and a Warning event says why (the next reconcile tries
/// again, so installing the CRD is enough).
async fn apply_service_monitor(
    ctx: &Context,
    gateway: &NotificationGateway,
    namespace: &str,
    monitor: &DynamicObject,
) -> Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &render::service_monitor_resource());
    let params = PatchParams::apply(MANAGER).force();
    match api.patch(&monitor.name_any(), &params, &Patch::Apply(monitor)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            let note = "spec.monitoring.serviceMonitor is enabled but the cluster has no \
                        monitoring.coreos.com/v1 ServiceMonitor kind: install the Prometheus Operator's CRDs"
                .to_owned();
            publish(ctx, gateway, true, "ServiceMonitorUnavailable", note).await;
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

/// The metadata of the object `name`, or `None` when there is none, or when the cluster has no such
/// kind at all (the Prometheus Operator's CRDs not installed: the apiserver answers a bare 404, not a
/// NotFound status, so `get_metadata_opt` reports it as an error).
async fn metadata_of(api: &Api<DynamicObject>, name: &str) -> Result<Option<ObjectMeta>> {
    match api.get_metadata_opt(name).await {
        Ok(found) => Ok(found.map(|object| object.metadata)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Removes a child the gateway no longer needs (its PodDisruptionBudget once scaled to one replica,
/// its ServiceMonitor once turned off), named like the gateway. Only its own is deleted (the uid
/// precondition keeps it so if the object is replaced meanwhile): an object of the same name that the
/// gateway does not control is no child of it, and is neither deleted nor a reason to refuse. A kind
/// the cluster does not have has nothing to remove.
async fn remove_own(client: &Client, gateway: &NotificationGateway, namespace: &str, kind: &ApiResource) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, kind);
    let name = gateway.name_any();
    let Some(existing) = metadata_of(&api, &name).await? else {
        return Ok(());
    };
    if ownership::control(gateway, &existing) != Control::ThisGateway {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    api.delete(&name, &params).await?;
    Ok(())
}

/// The clock is read here, once per status, and nowhere in `status`.
fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Writes `status` to the object's status subresource (server-side apply, forced).
async fn patch_status<K>(client: &Client, object: &K, status: &impl Serialize) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + std::fmt::Debug,
    K: DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Records a channel's verdict (`Accepted`, `Programmed`), writing only when it changed.
async fn set_channel_status(ctx: &Context, channel: &NotificationChannel, outcome: ChannelOutcome<'_>) -> Result<()> {
    let next = status::channel_status(channel.status.as_ref(), channel.metadata.generation, outcome, &now());
    if channel.status.as_ref() == Some(&next) {
        return Ok(());
    }
    patch_status(&ctx.client, channel, &next).await?;
    if let ChannelOutcome::Refused(refusal) = outcome {
        publish(ctx, channel, true, refusal.reason, refusal.message.clone()).await;
    }
    Ok(())
}

/// A channel whose gateway does not exist is refused here; channels of existing gateways are judged
/// by the gateway's reconcile (the gateway is requeued when one of its channels changes).
pub async fn reconcile_channel(channel: Arc<NotificationChannel>, ctx: Arc<Context>) -> Result<Action> {
    if !(ctx.may_act)() {
        return Ok(Action::await_change());
    }
    let metrics = ctx.metrics.clone();
    metrics
        .reconcile(
            NotificationChannel::CONTROLLER,
            Box::pin(channel_reconcile(channel, ctx)),
        )
        .await
}

async fn channel_reconcile(channel: Arc<NotificationChannel>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = channel.namespace().unwrap_or_default();
    let gateways: Api<NotificationGateway> = Api::namespaced(ctx.client.clone(), &namespace);
    if gateways.get_opt(&channel.spec.gateway_ref.name).await?.is_none() {
        let refusal = Refusal {
            reason: "GatewayNotFound",
            message: format!(
                "no NotificationGateway `{}` in namespace `{namespace}`",
                channel.spec.gateway_ref.name
            ),
        };
        set_channel_status(&ctx, &channel, ChannelOutcome::Refused(&refusal)).await?;
    }
    Ok(Action::await_change())
}

impl Error {
    /// The reason a failed reconcile reports in status: what kind of failure, so that an RBAC denial,
    /// an object the apiserver refuses and unreadable keys read differently.
    pub fn reason(&self) -> &'static str {
        let api = |err: &kube::Error| match err {
            kube::Error::Api(status) if status.code == 403 => "Forbidden",
            kube::Error::Api(status) if status.code == 422 || status.code == 400 => "Rejected",
            kube::Error::Api(status) if status.code == 409 => "Conflict",
            _ => "APIError",
        };
        match self {
            Self::Kube(err) | Self::Signing(signing::SigningError::Kube(err)) => api(err),
            Self::Signing(signing::SigningError::Unreadable { .. }) => "SigningKeysUnreadable",
            Self::Signing(signing::SigningError::Contended(_)) => "SigningKeysContended",
            Self::Signing(signing::SigningError::Policy(_)) | Self::Invalid(_) => "Invalid",
        }
    }
}

/// A gateway's failed reconcile: [`error_policy`], and the failure in its status (`Ready` false,
/// `Degraded` true, both with the failure's reason and message), so that `kubectl get ngw` and
/// `kubectl wait` show it, not only an event.
pub fn gateway_error_policy(gateway: Arc<NotificationGateway>, error: &Error, ctx: Arc<Context>) -> Action {
    let failure = Refusal {
        reason: error.reason(),
        message: format!("reconcile failed (retried with backoff): {error}"),
    };
    let status_ctx = ctx.clone();
    let failed = gateway.clone();
    tokio::spawn(async move {
        let next = status::failed_gateway_status(failed.status.as_ref(), failed.metadata.generation, &failure, &now());
        if failed.status.as_ref() != Some(&next) {
            if let Err(err) = patch_status(&status_ctx.client, failed.as_ref(), &next).await {
                tracing::warn!(error = %err, "the failure could not be written to status");
            }
        }
    });
    error_policy(gateway, error, ctx)
}

/// Errors requeue with a backoff that grows with the failures of the same object, and are recorded as
/// a Warning event on the object.
pub fn error_policy<K>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()> + Reconciled + Send + Sync + 'static,
{
    ctx.metrics.retried(K::CONTROLLER);
    let failures = ctx.metrics.failures_of(&object.meta().uid.clone().unwrap_or_default());
    tracing::warn!(error = %error, failures, "reconcile failed");
    let note = error.to_string();
    tokio::spawn(async move { publish(&ctx, object.as_ref(), true, "ReconcileFailed", note).await });
    Action::requeue(Duration::from_secs((5u64 << failures.min(6)).min(300)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_controller_is_named_after_its_kind_in_lower_case() {
        assert_eq!(
            NotificationGateway::CONTROLLER,
            NotificationGateway::kind(&()).to_lowercase()
        );
        assert_eq!(
            NotificationChannel::CONTROLLER,
            NotificationChannel::kind(&()).to_lowercase()
        );
    }
}
