//! What a NotificationGateway becomes: every child object, rendered as a pure function of the gateway
//! and its accepted channels, so the controller only applies them (server-side apply) and tests can
//! check them without an apiserver. Every child is owned by the gateway (garbage-collected with it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use herald_contract::{ChannelEntry, LogFormat, Options, channels_checksum, defaults, env};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    SeccompProfile, Secret, SecretKeySelector, SecretProjection, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec as CoreServiceSpec, Volume, VolumeMount, VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{NotificationChannel, NotificationGateway, SecretKeyRef, ServiceType};

/// The port the gateway container listens on for clients (WebSocket, tokens, a user's notifications).
pub const GATEWAY_PORT: i32 = defaults::PORT as i32;
/// The port of the gateway's internal listener (`/api/publish`, `/metrics`): only the internal Service
/// points at it.
pub const GATEWAY_INTERNAL_PORT: i32 = defaults::INTERNAL_PORT as i32;
/// Where the config and the signing keys are mounted in the gateway container.
pub const CONFIG_DIR: &str = "/etc/herald/config";
pub const KEYS_DIR: &str = "/etc/herald/keys";
/// Where the CAs of PostgreSQL's and Redis' certificates are mounted (when the spec names them).
pub const TLS_DIR: &str = "/etc/herald/tls";
/// The gateway drains for this long on SIGTERM; the pod's termination grace is longer.
pub const DRAIN_SECONDS: i64 = defaults::SHUTDOWN_GRACE_SECONDS as i64;
/// Annotation on the pod template carrying the hash of the rendered config, channels left out: a
/// change of any other setting changes the template, which rolls the pods.
pub const CHECKSUM_ANNOTATION: &str = "herald.dev/config-checksum";
/// Annotation on the pod template: a hash of the names and `resourceVersion`s of the Secrets the pods
/// read through their environment, so that a changed credential (a rotated database password) rolls
/// the pods, which read environment variables only at start. Only metadata is read for it.
pub const SECRETS_CHECKSUM_ANNOTATION: &str = "herald.dev/secrets-checksum";
/// Annotation on the ConfigMap: the checksum of its channel set, as gateways report it on
/// `GET /channels` once they serve it (`herald_contract::channels_checksum`).
pub const CHANNELS_CHECKSUM_ANNOTATION: &str = "herald.dev/channels-checksum";

/// Names of a gateway's children, derived from the gateway's name.
pub struct Names {
    pub gateway: String,
    /// The ClusterIP Service of the internal port, for publishers and Prometheus.
    pub internal_service: String,
    pub config: String,
    pub signing_keys: String,
    /// The embedded gateway's PersistentVolumeClaim.
    pub data: String,
}

impl Names {
    pub fn of(gateway: &NotificationGateway) -> Self {
        let name = gateway.name_any();
        Self {
            internal_service: format!("{name}-internal"),
            config: format!("{name}-config"),
            signing_keys: format!("{name}-signing-keys"),
            data: format!("{name}-data"),
            gateway: name,
        }
    }
}

/// The label every child carries, set to the operator's field manager name; the operator's watches
/// select on it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Labels every child carries: the selector's, and `managed-by`.
pub fn labels(gateway: &NotificationGateway) -> BTreeMap<String, String> {
    let mut labels = selector(gateway);
    labels.insert(MANAGED_BY.to_owned(), crate::controller::MANAGER.to_owned());
    labels
}

/// The gateway's pods, for its Deployment, Services and PodDisruptionBudget: named explicitly and
/// never changed (a Deployment's selector is immutable), and never matched by anything else the
/// operator renders (no other child is a pod template).
pub fn selector(gateway: &NotificationGateway) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "herald-gateway".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), gateway.name_any()),
    ])
}

/// The pods' selector as a string (`status.selector`, read by the scale subresource and HPAs).
pub fn selector_string(gateway: &NotificationGateway) -> String {
    selector(gateway)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn owner(gateway: &NotificationGateway) -> OwnerReference {
    // `controller_owner_ref` only fails for objects without a name or uid, which every object read
    // from the apiserver has; the fallback keeps rendering total for tests.
    gateway.controller_owner_ref(&()).unwrap_or_else(|| OwnerReference {
        api_version: NotificationGateway::api_version(&()).into_owned(),
        kind: NotificationGateway::kind(&()).into_owned(),
        name: gateway.name_any(),
        uid: gateway.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn meta(gateway: &NotificationGateway, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: gateway.namespace(),
        labels: Some(labels(gateway)),
        owner_references: Some(vec![owner(gateway)]),
        ..ObjectMeta::default()
    }
}

/// Every object a reconcile writes for a gateway (the signing-key Secret aside: it is created once,
/// never applied), rendered together before anything is written, so that the ownership check and the
/// apply go over the same objects.
#[derive(Debug, Clone)]
pub struct Children {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    /// The public Service: the `http` port only.
    pub service: Service,
    /// `<gw>-internal`: the `internal` port (`/api/publish`, `/metrics`), ClusterIP only.
    pub internal_service: Service,
    /// Only with more than one replica; otherwise the reconcile removes this gateway's own.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// Only embedded: the volume of the SQLite file, so that it outlives pods.
    pub data_claim: Option<PersistentVolumeClaim>,
    /// Only in cluster mode: the Job applying the schema of this image.
    pub migration_job: Option<Job>,
    /// Only when `spec.monitoring.serviceMonitor.enabled`: the Prometheus Operator's ServiceMonitor
    /// (a kind of another project, so untyped).
    pub service_monitor: Option<DynamicObject>,
}

/// Kind and name of a child, and the API resource it is read by.
#[derive(Debug, Clone)]
pub struct ChildRef {
    pub resource: ApiResource,
    pub name: String,
}

impl ChildRef {
    fn of<K: Resource<DynamicType = ()>>(object: &K) -> Self {
        Self {
            resource: ApiResource::erase::<K>(&()),
            name: object.meta().name.clone().unwrap_or_default(),
        }
    }
}

impl Children {
    /// `image`: the gateway's own or the operator's default. `secret_versions`: the name and
    /// `resourceVersion` of each Secret read by reference (admission reads them), stamped on the pod
    /// templates.
    pub fn render(
        gateway: &NotificationGateway,
        image: &str,
        channels: &[&NotificationChannel],
        secret_versions: &[(String, String)],
    ) -> Self {
        let (config_map, checksum) = config_map(gateway, channels);
        let mut deployment = deployment(gateway, image, &checksum);
        stamp_secret_versions(
            deployment
                .spec
                .get_or_insert_with(Default::default)
                .template
                .metadata
                .get_or_insert_with(Default::default),
            secret_versions,
        );
        Self {
            config_map,
            deployment,
            service: service(gateway),
            internal_service: internal_service(gateway),
            pod_disruption_budget: pod_disruption_budget(gateway),
            data_claim: data_claim(gateway),
            migration_job: migration_job(gateway, image, secret_versions),
            service_monitor: service_monitor(gateway),
        }
    }

    /// Every child, in apply order, named as rendered. The exhaustive destructuring makes a new field
    /// an unused variable (a lint error) until it is listed here, so no child escapes the check.
    pub fn refs(&self) -> Vec<ChildRef> {
        let Self {
            config_map,
            deployment,
            service,
            internal_service,
            pod_disruption_budget,
            data_claim,
            migration_job,
            service_monitor,
        } = self;
        let mut refs = vec![
            ChildRef::of(config_map),
            ChildRef::of(deployment),
            ChildRef::of(service),
            ChildRef::of(internal_service),
        ];
        refs.extend(pod_disruption_budget.iter().map(ChildRef::of));
        refs.extend(data_claim.iter().map(ChildRef::of));
        refs.extend(migration_job.iter().map(ChildRef::of));
        refs.extend(service_monitor.iter().map(|monitor| ChildRef {
            resource: service_monitor_resource(),
            name: monitor.name_any(),
        }));
        refs
    }
}

/// The gateway's settings file (`HERALD_CONFIG`), with the accepted channels merged in: the settings
/// type is the gateway's own (`herald_contract::Options`), so every key is one the gateway reads.
/// Secrets are never written here: they come from Secret-backed environment variables.
pub fn gateway_options(gateway: &NotificationGateway, channels: &[&NotificationChannel]) -> Options {
    let spec = &gateway.spec;
    let mut channels: Vec<&&NotificationChannel> = channels.iter().collect();
    channels.sort_by_key(|c| c.name_any());
    let channels: Vec<ChannelEntry> = channels
        .iter()
        .map(|channel| ChannelEntry {
            name: channel.name_any(),
            description: channel.spec.description.clone(),
            types: channel.spec.types.iter().map(|t| t.as_str().to_owned()).collect(),
            admin_only: channel.spec.admin_only,
            required_role: channel.spec.required_role.clone(),
            default_subscribed: channel.spec.default_subscribed,
            retention_days: channel.spec.retention_days,
        })
        .collect();
    Options {
        listen: Some(SocketAddr::from(([0, 0, 0, 0], defaults::PORT))),
        internal_listen: Some(SocketAddr::from(([0, 0, 0, 0], defaults::INTERNAL_PORT))),
        log_format: Some(LogFormat::Json),
        otlp_endpoint: spec.tracing.otlp_endpoint.clone(),
        signing_keys_file: Some(PathBuf::from(format!("{KEYS_DIR}/keys.json"))),
        token_ttl_seconds: Some(u64::from(spec.token_ttl_seconds)),
        max_connections_per_user: Some(spec.limits.connections_per_user),
        max_tokens_per_minute: Some(spec.limits.tokens_per_minute),
        max_connects_per_minute_per_ip: Some(spec.limits.connects_per_minute_per_ip),
        max_messages_per_second: Some(spec.limits.messages_per_second),
        max_subscription_changes_per_minute: Some(spec.limits.subscription_changes_per_minute),
        trusted_proxies: (!spec.trusted_proxies.is_empty()).then(|| spec.trusted_proxies.join(",")),
        action_url_origins: spec.links.action_url_origins.as_ref().map(|origins| origins.join(",")),
        icon_url_origins: (!spec.links.icon_url_origins.is_empty()).then(|| spec.links.icon_url_origins.join(",")),
        heartbeat_interval_seconds: Some(u64::from(spec.heartbeat.interval_seconds)),
        heartbeat_timeout_seconds: Some(u64::from(spec.heartbeat.timeout_seconds)),
        retention_days: Some(spec.retention_days),
        shutdown_grace_seconds: Some(DRAIN_SECONDS as u64),
        jwt_roles_claim: Some(spec.auth.roles_claim.clone()),
        jwt_jwks_url: spec.auth.jwks_url.clone(),
        jwt_issuer: spec.auth.issuer.clone(),
        jwt_audience: spec.auth.audience.clone(),
        jwt_allow_any_issuer_and_audience: spec.auth.allow_any_issuer_and_audience.then_some(true),
        database_max_connections: spec.postgres.as_ref().map(|p| p.max_connections),
        redis_cluster: spec.redis.as_ref().and_then(|redis| redis.cluster.then_some(true)),
        redis_prefix: spec.redis.as_ref().map(|redis| {
            redis.prefix.clone().unwrap_or_else(|| {
                format!(
                    "herald:{}:{}:",
                    gateway.namespace().unwrap_or_default(),
                    gateway.name_any()
                )
            })
        }),
        channels: (!channels.is_empty()).then_some(channels),
        ..Options::default()
    }
}

/// The ConfigMap holding `gateway.yaml`, and the checksum that rolls the pods when a setting other
/// than the channels changes. Channels are left out of it: gateways reload them from the mounted
/// file without a restart, so a channel edit drops no connection. The ConfigMap carries the
/// channels' own checksum ([`CHANNELS_CHECKSUM_ANNOTATION`]), which gateways report once they serve
/// that set.
pub fn config_map(gateway: &NotificationGateway, channels: &[&NotificationChannel]) -> (ConfigMap, String) {
    let options = gateway_options(gateway, channels);
    let yaml = options.to_yaml();
    let restart_checksum = sha256_hex(
        Options {
            channels: None,
            ..options.clone()
        }
        .to_yaml()
        .as_bytes(),
    );
    let mut metadata = meta(gateway, &Names::of(gateway).config);
    metadata.annotations = Some(BTreeMap::from([(
        CHANNELS_CHECKSUM_ANNOTATION.to_owned(),
        channels_checksum(options.channels.as_deref().unwrap_or_default()),
    )]));
    let config_map = ConfigMap {
        metadata,
        data: Some(BTreeMap::from([("gateway.yaml".to_owned(), yaml)])),
        ..ConfigMap::default()
    };
    (config_map, restart_checksum)
}

/// Puts the hash of `versions` (Secret name and `resourceVersion`) on a pod template's metadata
/// ([`SECRETS_CHECKSUM_ANNOTATION`]).
pub fn stamp_secret_versions(template: &mut ObjectMeta, versions: &[(String, String)]) {
    let mut versions = versions.to_vec();
    versions.sort();
    let text: String = versions
        .iter()
        .map(|(name, version)| format!("{name}@{version}\n"))
        .collect();
    template
        .annotations
        .get_or_insert_with(Default::default)
        .insert(SECRETS_CHECKSUM_ANNOTATION.to_owned(), sha256_hex(text.as_bytes()));
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The signing-key Secret as first created, holding `keys_json` (the gateway's keys file). It is
/// never applied: `signing` creates it once and from then on changes it compare-and-swap.
pub fn signing_keys(gateway: &NotificationGateway, keys_json: &str) -> Secret {
    Secret {
        metadata: meta(gateway, &Names::of(gateway).signing_keys),
        string_data: Some(BTreeMap::from([("keys.json".to_owned(), keys_json.to_owned())])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

fn secret_env(name: &str, reference: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: reference.name.clone(),
                key: reference.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

/// The CAs the spec names: the gateway's variable, the file name under [`TLS_DIR`], and the Secret key.
fn ca_files(gateway: &NotificationGateway) -> Vec<(&'static str, &'static str, &SecretKeyRef)> {
    let spec = &gateway.spec;
    let postgres = spec.postgres.as_ref().and_then(|p| p.ca_secret_ref.as_ref());
    let redis = spec.redis.as_ref().and_then(|r| r.ca_secret_ref.as_ref());
    [
        ("HERALD_DATABASE_CA_FILE", "postgres-ca.crt", postgres),
        ("HERALD_REDIS_CA_FILE", "redis-ca.crt", redis),
    ]
    .into_iter()
    .filter_map(|(variable, file, reference)| reference.map(|r| (variable, file, r)))
    .collect()
}

/// The `tls` volume: each CA the spec names, from its Secret key, as a file under [`TLS_DIR`].
fn tls_volume(gateway: &NotificationGateway) -> Option<Volume> {
    let sources: Vec<VolumeProjection> = ca_files(gateway)
        .into_iter()
        .map(|(_, file, reference)| VolumeProjection {
            secret: Some(SecretProjection {
                name: reference.name.clone(),
                items: Some(vec![KeyToPath {
                    key: reference.key.clone(),
                    path: file.to_owned(),
                    ..KeyToPath::default()
                }]),
                optional: Some(false),
            }),
            ..VolumeProjection::default()
        })
        .collect();
    (!sources.is_empty()).then(|| Volume {
        name: "tls".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    })
}

/// Where a container reads the `tls` volume.
fn tls_mount(_: &Volume) -> VolumeMount {
    VolumeMount {
        name: "tls".into(),
        mount_path: TLS_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The gateway container's environment: the config file, and every secret from a Secret reference.
pub fn gateway_env(gateway: &NotificationGateway) -> Vec<EnvVar> {
    let spec = &gateway.spec;
    let mut env = vec![plain_env(env::CONFIG, &format!("{CONFIG_DIR}/gateway.yaml"))];
    if let Some(postgres) = &spec.postgres {
        env.push(secret_env(env::DATABASE_URL, &postgres.url_secret_ref));
    } else {
        // The embedded default keeps its SQLite file on its claim (`data_claim`).
        env.push(plain_env(env::DATA_DIR, "/var/lib/herald"));
    }
    if let Some(redis) = &spec.redis {
        env.push(secret_env(env::REDIS_URL, &redis.url_secret_ref));
    }
    for (variable, file, _) in ca_files(gateway) {
        env.push(plain_env(variable, &format!("{TLS_DIR}/{file}")));
    }
    if let Some(secret) = &spec.auth.hs256_secret_ref {
        env.push(secret_env(env::JWT_HS256_SECRET, secret));
    }
    if let Some(keys) = &spec.publisher_keys_secret_ref {
        env.push(secret_env(env::PUBLISHER_KEYS, keys));
    }
    if spec.tracing.otlp_endpoint.is_some() {
        env.extend(tracing_env(gateway));
    }
    env
}

/// With traces on: each pod names itself in its spans (`service.instance.id`, the pod's name), and
/// a sample ratio becomes OpenTelemetry's parent-based ratio sampler.
fn tracing_env(gateway: &NotificationGateway) -> Vec<EnvVar> {
    let pod_name = EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let attributes = format!(
        "service.instance.id=$(POD_NAME),k8s.pod.name=$(POD_NAME),k8s.namespace.name={},herald.gateway={}",
        gateway.namespace().unwrap_or_default(),
        gateway.name_any()
    );
    let mut env = vec![pod_name, plain_env("OTEL_RESOURCE_ATTRIBUTES", &attributes)];
    if let Some(ratio) = gateway.spec.tracing.sample_ratio {
        env.push(plain_env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"));
        env.push(plain_env("OTEL_TRACES_SAMPLER_ARG", &ratio.to_string()));
    }
    env
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// The Deployment: probes, non-root and read-only root filesystem, migrations in an init container
/// (cluster mode), a termination grace longer than the gateway's drain. Cluster mode rolls updates
/// without going below the desired count; an embedded gateway is recreated (the old pod stops before
/// the new one starts), so that two pods never hold one SQLite file and a ReadWriteOnce volume is
/// free for the new pod.
/// `image`: the gateway's own, or the operator's default ([`crate::admission::ImagePolicy::image_of`]).
pub fn deployment(gateway: &NotificationGateway, image: &str, config_checksum: &str) -> Deployment {
    let spec = &gateway.spec;
    let names = Names::of(gateway);
    let env = gateway_env(gateway);
    let mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "signing-keys".into(),
            mount_path: KEYS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "data".into(),
            mount_path: "/var/lib/herald".into(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    let tls = tls_volume(gateway);
    let mut mounts = mounts;
    mounts.extend(tls.as_ref().map(tls_mount));
    let gateway_container = Container {
        name: "gateway".into(),
        image: Some(image.to_owned()),
        image_pull_policy: spec.image_pull_policy.clone(),
        args: Some(vec!["serve".into()]),
        env: Some(env.clone()),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: GATEWAY_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("internal".into()),
                container_port: GATEWAY_INTERNAL_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        resources: spec.resources.clone(),
        security_context: Some(restricted_security_context()),
        volume_mounts: Some(mounts.clone()),
        ..Container::default()
    };
    // Cluster mode: the pods wait (reading only) until the migration Job has applied the schema
    // their image needs; they never change it themselves.
    let init_containers = spec.postgres.as_ref().map(|_| {
        vec![Container {
            name: "await-migrations".into(),
            image: Some(image.to_owned()),
            image_pull_policy: spec.image_pull_policy.clone(),
            args: Some(vec!["await-migrations".into()]),
            env: Some(env),
            security_context: Some(restricted_security_context()),
            volume_mounts: Some(mounts),
            ..Container::default()
        }]
    });
    let pod_labels = labels(gateway);
    Deployment {
        metadata: meta(gateway, &names.gateway),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.desired_replicas()),
            selector: LabelSelector {
                match_labels: Some(selector(gateway)),
                ..LabelSelector::default()
            },
            strategy: Some(if spec.is_cluster() {
                DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_unavailable: Some(IntOrString::Int(0)),
                        max_surge: Some(IntOrString::Int(1)),
                    }),
                }
            } else {
                DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    rolling_update: None,
                }
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CHECKSUM_ANNOTATION.to_owned(),
                        config_checksum.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![gateway_container],
                    init_containers,
                    termination_grace_period_seconds: Some(DRAIN_SECONDS + 10),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65_532),
                        run_as_group: Some(65_532),
                        fs_group: Some(65_532),
                        ..PodSecurityContext::default()
                    }),
                    node_selector: spec.node_selector.clone(),
                    tolerations: spec.tolerations.clone(),
                    affinity: spec.affinity.clone(),
                    automount_service_account_token: Some(false),
                    volumes: Some(
                        [
                            Volume {
                                name: "config".into(),
                                config_map: Some(ConfigMapVolumeSource {
                                    name: names.config.clone(),
                                    ..ConfigMapVolumeSource::default()
                                }),
                                ..Volume::default()
                            },
                            Volume {
                                name: "signing-keys".into(),
                                secret: Some(SecretVolumeSource {
                                    secret_name: Some(names.signing_keys.clone()),
                                    ..SecretVolumeSource::default()
                                }),
                                ..Volume::default()
                            },
                            data_volume(gateway),
                            Volume {
                                name: "tmp".into(),
                                empty_dir: Some(EmptyDirVolumeSource::default()),
                                ..Volume::default()
                            },
                        ]
                        .into_iter()
                        .chain(tls)
                        .collect(),
                    ),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Labels of the migration Job's pod: the gateway's instance, but never the gateway pods' selector
/// (its Services, PodDisruptionBudget and Deployment must not count a migration as a replica).
pub fn migration_labels(gateway: &NotificationGateway) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "herald-migration".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), gateway.name_any()),
        (MANAGED_BY.to_owned(), crate::controller::MANAGER.to_owned()),
    ])
}

/// Cluster mode: the Job applying the database migrations of the gateway's image, once per version:
/// named after a hash of its pod template (image, database settings), so a new image (or new
/// migration credentials) makes a new Job, and an unchanged one is applied again as it is. It uses
/// `postgres.migrationUrlSecretRef` (a role that may change the schema) when set.
pub fn migration_job(gateway: &NotificationGateway, image: &str, secret_versions: &[(String, String)]) -> Option<Job> {
    let spec = &gateway.spec;
    let postgres = spec.postgres.as_ref()?;
    // Only what `migrate` reads: the store's URLs (REDIS_URL decides the mode) and the CAs; none of
    // the gateway's other secrets (JWT, publisher keys) reaches this pod.
    let needed = [
        env::DATABASE_URL,
        env::REDIS_URL,
        "HERALD_DATABASE_CA_FILE",
        "HERALD_REDIS_CA_FILE",
    ];
    let mut env: Vec<EnvVar> = gateway_env(gateway)
        .into_iter()
        .filter(|v| needed.contains(&v.name.as_str()))
        .collect();
    if let Some(reference) = &postgres.migration_url_secret_ref {
        for variable in &mut env {
            if variable.name == env::DATABASE_URL {
                *variable = secret_env(env::DATABASE_URL, reference);
            }
        }
    }
    let tls = tls_volume(gateway);
    let mounts: Vec<VolumeMount> = tls.iter().map(tls_mount).collect();
    let pod = PodSpec {
        restart_policy: Some("OnFailure".into()),
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65_532),
            run_as_group: Some(65_532),
            ..PodSecurityContext::default()
        }),
        containers: vec![Container {
            name: "migrate".into(),
            image: Some(image.to_owned()),
            image_pull_policy: spec.image_pull_policy.clone(),
            args: Some(vec!["migrate".into()]),
            env: Some(env),
            security_context: Some(restricted_security_context()),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            resources: spec.resources.clone(),
            ..Container::default()
        }],
        volumes: tls.map(|v| vec![v]),
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        ..PodSpec::default()
    };
    // The versions of the Secrets this pod reads are part of its template, hence of the Job's name:
    // a fixed password (after a Job that failed for good) makes a new Job that runs again.
    let read: Vec<&str> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .filter_map(|v| v.value_from.as_ref()?.secret_key_ref.as_ref().map(|r| r.name.as_str()))
        .chain(
            pod.volumes
                .iter()
                .flatten()
                .filter_map(|v| v.projected.as_ref()?.sources.as_ref())
                .flatten()
                .filter_map(|source| source.secret.as_ref().map(|s| s.name.as_str())),
        )
        .collect();
    let versions: Vec<(String, String)> = secret_versions
        .iter()
        .filter(|(name, _)| read.contains(&name.as_str()))
        .cloned()
        .collect();
    let mut metadata = ObjectMeta {
        labels: Some(migration_labels(gateway)),
        ..ObjectMeta::default()
    };
    stamp_secret_versions(&mut metadata, &versions);
    let template = PodTemplateSpec {
        metadata: Some(metadata),
        spec: Some(pod),
    };
    let hash = sha256_hex(serde_json::to_string(&template).unwrap_or_default().as_bytes());
    let name = format!("{}-migrate-{}", truncated(&gateway.name_any(), 63 - 19), &hash[..10]);
    let mut metadata = meta(gateway, &name);
    metadata.labels = Some(migration_labels(gateway));
    Some(Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(4),
            active_deadline_seconds: Some(900),
            template,
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// `name` cut to `max` bytes (names are ASCII), without a trailing `-`.
fn truncated(name: &str, max: usize) -> &str {
    name[..name.len().min(max)].trim_end_matches('-')
}

/// The public Service (`spec.service`): the clients' port only. The internal port is not on it, so
/// exposing this Service (LoadBalancer, NodePort, an Ingress) never exposes publishing or metrics.
pub fn service(gateway: &NotificationGateway) -> Service {
    let service_type = match gateway.spec.service.service_type {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    pod_service(
        gateway,
        &gateway.name_any(),
        service_type,
        "http",
        gateway.spec.service.port,
    )
}

/// The internal Service `<gw>-internal`: always ClusterIP, on the internal port, for the services that
/// publish and for Prometheus. docs/security.md ("Exposure") recommends a NetworkPolicy that admits
/// only those to the port.
pub fn internal_service(gateway: &NotificationGateway) -> Service {
    let name = Names::of(gateway).internal_service;
    pod_service(gateway, &name, "ClusterIP", "internal", GATEWAY_INTERNAL_PORT)
}

/// A Service of the gateway's pods exposing the one named container port `target` as `port`.
fn pod_service(gateway: &NotificationGateway, name: &str, service_type: &str, target: &str, port: i32) -> Service {
    Service {
        metadata: meta(gateway, name),
        spec: Some(CoreServiceSpec {
            type_: Some(service_type.into()),
            selector: Some(selector(gateway)),
            ports: Some(vec![ServicePort {
                name: Some(target.into()),
                port,
                target_port: Some(IntOrString::String(target.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..CoreServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The `data` volume: the embedded gateway's claim, scratch space in cluster mode (unused there).
fn data_volume(gateway: &NotificationGateway) -> Volume {
    if gateway.spec.is_cluster() {
        return Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        };
    }
    Volume {
        name: "data".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: Names::of(gateway).data,
            read_only: Some(false),
        }),
        ..Volume::default()
    }
}

/// An embedded gateway's claim `<gw>-data` (ReadWriteOnce, `spec.storage`): its notifications,
/// preferences and subscriptions survive pod restarts and config changes. Owned by the gateway, so
/// deleting the gateway deletes it (and the data) too.
pub fn data_claim(gateway: &NotificationGateway) -> Option<PersistentVolumeClaim> {
    if gateway.spec.is_cluster() {
        return None;
    }
    let storage = &gateway.spec.storage;
    Some(PersistentVolumeClaim {
        metadata: meta(gateway, &Names::of(gateway).data),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(storage.size.clone()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}

/// The Prometheus Operator's ServiceMonitor kind (`monitoring.coreos.com/v1`).
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"))
}

/// Only when asked for: a ServiceMonitor named like the gateway, scraping `/metrics` on the
/// `internal` port. It selects the gateway's Services by their labels; only `<gw>-internal` has that
/// port, so only its endpoints are scraped (each ready pod once).
pub fn service_monitor(gateway: &NotificationGateway) -> Option<DynamicObject> {
    let spec = &gateway.spec.monitoring.service_monitor;
    if !spec.enabled {
        return None;
    }
    let mut metadata = meta(gateway, &Names::of(gateway).gateway);
    // The operator's own labels win: its watches and ownership checks read them.
    let mut labels = spec.labels.clone();
    labels.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(labels);
    let mut endpoint = serde_json::json!({"port": "internal", "path": "/metrics"});
    if let Some(interval) = &spec.interval {
        endpoint["interval"] = serde_json::json!(interval);
    }
    let mut monitor = DynamicObject::new(&Names::of(gateway).gateway, &service_monitor_resource());
    monitor.metadata = metadata;
    monitor.data = serde_json::json!({
        "spec": {
            "selector": {"matchLabels": selector(gateway)},
            "namespaceSelector": {"matchNames": [gateway.namespace().unwrap_or_default()]},
            "endpoints": [endpoint],
        }
    });
    Some(monitor)
}

/// Only with more than one replica: one pod may be disrupted at a time.
pub fn pod_disruption_budget(gateway: &NotificationGateway) -> Option<PodDisruptionBudget> {
    (gateway.spec.desired_replicas() > 1).then(|| PodDisruptionBudget {
        metadata: meta(gateway, &gateway.name_any()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(gateway)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

#[cfg(test)]
mod tests;
