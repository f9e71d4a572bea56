//! The custom resources (group `herald.dev`, version `v1alpha1`). `crdgen` renders them into `crds/`;
//! schema defaults, validation (CEL where a rule spans fields), the status subresource, printer
//! columns, short names and the `herald` category all come from these types.

use std::collections::BTreeMap;

use herald_contract::defaults;
use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A gateway deployment: replicas of `herald-gateway` with their configuration, secrets and service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "NotificationGateway",
    doc = "A Herald gateway: replicas of herald-gateway serving WebSocket notifications, embedded (SQLite on a volume, one replica) or in cluster mode (PostgreSQL and Redis), with the signing keys the operator rotates.",
    namespaced,
    status = "NotificationGatewayStatus",
    shortname = "ngw",
    category = "herald",
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas","labelSelectorPath":".status.selector"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Ready Replicas","type":"integer","priority":1,"jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Active Key","type":"string","jsonPath":".status.activeKeyId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("!has(self.spec.replicas) || self.spec.replicas <= 1 || (has(self.spec.postgres) && has(self.spec.redis))")
        .message("more than one replica needs spec.postgres and spec.redis (cluster mode): an embedded gateway keeps its data in one SQLite file and runs one replica"),
    validation = Rule::new("has(self.spec.postgres) == has(self.spec.redis)")
        .message("spec.postgres and spec.redis go together: cluster mode needs both"),
)]
#[serde(rename_all = "camelCase")]
pub struct NotificationGatewaySpec {
    /// Gateway replicas. Unset: 2 in cluster mode (spec.postgres and spec.redis), 1 embedded. An
    /// embedded gateway (SQLite on a PersistentVolumeClaim) runs at most one replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// The herald-gateway container image. Unset: the operator's default gateway image (chart value
    /// `gateway.image`), which it always runs; any other image only if its allow-list allows it
    /// (chart value `gateway.allowedImages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// The gateway container's pull policy (`Always`, `IfNotPresent`, `Never`); Kubernetes' default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// CPU and memory requests and limits of the gateway container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the gateway pods must be scheduled on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the gateway pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Scheduling affinity of the gateway pods (spread replicas across nodes or zones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// PostgreSQL (cluster mode): the connection URL, read from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSpec>,
    /// Redis (cluster mode): the connection URL, read from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
    /// How user JWTs are verified.
    pub auth: AuthSpec,
    /// A Secret key holding `name=key,name2=key2` publisher keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_keys_secret_ref: Option<SecretKeyRef>,
    /// Connection token lifetime.
    #[serde(default = "default_token_ttl")]
    #[schemars(range(min = 1, max = 600))]
    pub token_ttl_seconds: u32,
    /// Signing-key rotation of connection tokens, run by the operator.
    #[serde(default)]
    pub rotation: RotationSpec,
    /// Per-user, per-IP and per-connection limits.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Proxies in front of the gateway (ingress controller, load balancer), as addresses or CIDR
    /// ranges: their `X-Forwarded-For` names the client of the per-IP connect limit. Without them
    /// every client behind the ingress shares one budget (`limits.connectsPerMinutePerIp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new("self.all(p, isIP(p) || isCIDR(p))")
        .message("each trustedProxies entry is an IP address or a CIDR range (10.0.0.0/8, fd00::/8)"))]
    pub trusted_proxies: Vec<String>,
    /// Where notification links may point and icons may come from.
    #[serde(default)]
    pub links: LinksSpec,
    /// WebSocket heartbeats: how often clients ping and how long silence is tolerated.
    #[serde(default)]
    pub heartbeat: HeartbeatSpec,
    /// Days notifications are kept for channels that set no retention.
    #[serde(default = "default_retention_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub retention_days: u32,
    /// The public Service (WebSocket, tokens, a user's notifications).
    #[serde(default)]
    pub service: ServiceSpec,
    /// The embedded gateway's volume (a PersistentVolumeClaim `<gw>-data` holding its SQLite file);
    /// unused in cluster mode.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Monitoring by the Prometheus Operator.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
    /// OpenTelemetry traces of the gateway's publishes and deliveries (off unless `otlpEndpoint`).
    #[serde(default)]
    pub tracing: TracingSpec,
    /// Stops reconciling this gateway (children are left as they are).
    #[serde(default)]
    pub paused: bool,
}

impl NotificationGatewaySpec {
    /// Cluster mode: PostgreSQL and Redis (the CRD requires both or neither).
    pub fn is_cluster(&self) -> bool {
        self.postgres.is_some() && self.redis.is_some()
    }

    /// `replicas`, or its default for the mode: 2 in cluster mode, 1 embedded.
    pub fn desired_replicas(&self) -> i32 {
        self.replicas.unwrap_or(if self.is_cluster() { 2 } else { 1 })
    }
}

/// Repository of the published gateway image; also the operator's default image allow-list.
pub const DEFAULT_GATEWAY_REPOSITORY: &str = "ghcr.io/herald-dev/herald-gateway";

/// The gateway image a gateway without `spec.image` runs, unless the operator is told another
/// (`--default-gateway-image`): the published image of this very version.
pub const DEFAULT_GATEWAY_IMAGE: &str = concat!("ghcr.io/herald-dev/herald-gateway:", env!("CARGO_PKG_VERSION"));

fn default_token_ttl() -> u32 {
    defaults::TOKEN_TTL_SECONDS as u32
}

fn default_retention_days() -> u32 {
    defaults::RETENTION_DAYS
}

/// A key of a Secret in the gateway's namespace. The operator uses only Secrets labelled
/// `herald.dev/gateway-secret: "true"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// A Secret key holding the `postgres://` URL (with its password).
    pub url_secret_ref: SecretKeyRef,
    /// A Secret key holding the PEM CA of PostgreSQL's certificate: connections then use TLS and
    /// verify the server (`sslmode=verify-full`, or `verify-ca` if the URL says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A Secret key holding the URL the migration Job connects with (a role that may change the
    /// schema); unset: `urlSecretRef`. The gateway's pods only read the schema version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_url_secret_ref: Option<SecretKeyRef>,
    /// PostgreSQL connections per replica.
    #[serde(default = "default_pool")]
    #[schemars(range(min = 1, max = 200))]
    pub max_connections: u32,
}

fn default_pool() -> u32 {
    defaults::DATABASE_MAX_CONNECTIONS
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// A Secret key holding the `redis://` URL, or `rediss://` for TLS; for a Redis Cluster, its
    /// seed nodes' URLs, comma-separated (one is enough with `cluster: true`).
    pub url_secret_ref: SecretKeyRef,
    /// The URL names a Redis Cluster (implied when it holds several URLs). Redis 7.0 or later.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster: bool,
    /// A Secret key holding the PEM CA of Redis' certificate, for a `rediss://` URL (without it the
    /// public web roots verify the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Key prefix; defaults to `herald:<namespace>:<gateway>:` so gateways can share a Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.jwksUrl) || has(self.hs256SecretRef)").message("set jwksUrl, hs256SecretRef, or both"))]
#[x_kube(validation = Rule::new("(has(self.issuer) && has(self.audience)) || (has(self.allowAnyIssuerAndAudience) && self.allowAnyIssuerAndAudience)").message("set issuer and audience (or, only if the keys sign JWTs for nothing but this gateway, allowAnyIssuerAndAudience: true)"))]
pub struct AuthSpec {
    /// JWKS of the user JWT issuer (RS256, ES256, EdDSA): `https://`, or `http://` to a sidecar on
    /// loopback (the gateway refuses anything else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(r"self.startsWith('https://') || self.matches('^http://(127\\.0\\.0\\.1|\\[::1\\]|localhost)([:/].*)?$')").message("an https:// URL (http:// only to 127.0.0.1, [::1] or localhost)"))]
    pub jwks_url: Option<String>,
    /// Required `iss` of user JWTs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` of user JWTs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Accept user JWTs whatever their issuer and audience when `issuer` or `audience` is unset:
    /// any JWT the keys sign is accepted, whoever it was issued for.
    #[serde(default)]
    pub allow_any_issuer_and_audience: bool,
    /// A Secret key holding an HS256 secret (development, or issuers without JWKS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret_ref: Option<SecretKeyRef>,
    /// Claim holding the user's roles.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

fn default_roles_claim() -> String {
    defaults::JWT_ROLES_CLAIM.to_owned()
}

/// Signing-key rotation, run by the operator itself: every `interval` it adds a key that starts
/// signing `propagationSeconds` later (once every replica has read it), and it retires the previous
/// key once the new one has signed for longer than a token lives plus the clock skew plus
/// `gracePeriodSeconds`. The annotation `herald.dev/rotate-keys` (any new value) rotates at once;
/// `herald.dev/revoke-keys` (comma-separated key ids) removes leaked keys at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationSpec {
    /// How long a key signs before the next one replaces it, as hours, minutes and seconds
    /// (`720h`, `24h`, `1h30m`), at least one hour and at most one year.
    #[serde(default = "default_interval")]
    #[schemars(length(min = 2, max = 16), regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"))]
    #[x_kube(validation = Rule::new("self != '' && duration(self) >= duration('1h') && duration(self) <= duration('8760h')").message("interval is a duration between 1h and 8760h, such as 720h"))]
    pub interval: String,
    /// How long a new key waits before it signs: longer than the kubelet takes to refresh a mounted
    /// Secret in every gateway pod (about a minute, plus its cache TTL).
    #[serde(default = "default_propagation")]
    #[schemars(range(min = 30, max = 3600))]
    pub propagation_seconds: u32,
    /// How long a replaced key keeps verifying after every token it signed has expired.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 60, max = 604_800))]
    pub grace_period_seconds: u32,
}

impl Default for RotationSpec {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            propagation_seconds: default_propagation(),
            grace_period_seconds: default_grace(),
        }
    }
}

fn default_interval() -> String {
    "720h".to_owned()
}

fn default_propagation() -> u32 {
    300
}

fn default_grace() -> u32 {
    3_600
}

impl RotationSpec {
    /// `interval` as a duration: `<h>h<m>m<s>s`, each part optional (the schema's pattern).
    pub fn interval(&self) -> Option<std::time::Duration> {
        parse_duration(&self.interval)
    }
}

/// Parses the `720h`, `1h30m`, `90s` form the CRD allows (a subset of Go's durations, which the
/// apiserver's CEL `duration()` also reads). `None` for anything else or an empty string.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let mut seconds: u64 = 0;
    let mut digits = String::new();
    let mut last_unit = 0;
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let (rank, scale) = match ch {
            'h' => (1, 3_600),
            'm' => (2, 60),
            's' => (3, 1),
            _ => return None,
        };
        if digits.is_empty() || rank <= last_unit {
            return None;
        }
        let value: u64 = digits.parse().ok()?;
        seconds = seconds.checked_add(value.checked_mul(scale)?)?;
        digits.clear();
        last_unit = rank;
    }
    (digits.is_empty() && last_unit > 0).then(|| std::time::Duration::from_secs(seconds))
}

/// The PersistentVolumeClaim of an embedded gateway. Its size may grow (if the storage class allows
/// expansion) but never shrink; its class is fixed once created.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size, as a Kubernetes quantity (`1Gi`, `500Mi`).
    #[serde(default = "default_storage_size")]
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
    )]
    pub size: String,
    /// StorageClass of the claim; unset: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> String {
    "1Gi".to_owned()
}

/// The plan's limits (section 11), per gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// WebSocket connections one user may hold at once, across replicas.
    #[serde(default = "default_connections_per_user")]
    #[schemars(range(min = 1, max = 1000))]
    pub connections_per_user: u32,
    /// Connection tokens one user may obtain per minute.
    #[serde(default = "default_tokens_per_minute")]
    #[schemars(range(min = 1, max = 10000))]
    pub tokens_per_minute: u32,
    /// WebSocket connects per minute from one client address (see trustedProxies).
    #[serde(default = "default_connects_per_minute_per_ip")]
    #[schemars(range(min = 1, max = 100000))]
    pub connects_per_minute_per_ip: u32,
    /// Messages one connection may send per second.
    #[serde(default = "default_messages_per_second")]
    #[schemars(range(min = 1, max = 10000))]
    pub messages_per_second: u32,
    /// Subscribe and unsubscribe requests one connection may make per minute.
    #[serde(default = "default_subscription_changes_per_minute")]
    #[schemars(range(min = 1, max = 10000))]
    pub subscription_changes_per_minute: u32,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            connections_per_user: default_connections_per_user(),
            tokens_per_minute: default_tokens_per_minute(),
            connects_per_minute_per_ip: default_connects_per_minute_per_ip(),
            messages_per_second: default_messages_per_second(),
            subscription_changes_per_minute: default_subscription_changes_per_minute(),
        }
    }
}

fn default_connections_per_user() -> u32 {
    defaults::MAX_CONNECTIONS_PER_USER
}

fn default_tokens_per_minute() -> u32 {
    defaults::MAX_TOKENS_PER_MINUTE
}

fn default_connects_per_minute_per_ip() -> u32 {
    defaults::MAX_CONNECTS_PER_MINUTE_PER_IP
}

fn default_messages_per_second() -> u32 {
    defaults::MAX_MESSAGES_PER_SECOND
}

fn default_subscription_changes_per_minute() -> u32 {
    defaults::MAX_SUBSCRIPTION_CHANGES_PER_MINUTE
}

/// Origins (`https://app.example.com`, `https://app.example.com:8443`) of notification links and
/// icons; docs/security.md, "Notification content".
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinksSpec {
    /// Origins an absolute `actionUrl` must have. Unset: any https URL; empty: relative paths only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = Rule::new(ORIGINS_RULE).message(ORIGINS_MESSAGE))]
    pub action_url_origins: Option<Vec<String>>,
    /// Origins an `icon` URL must have; without any, icons are names only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = Rule::new(ORIGINS_RULE).message(ORIGINS_MESSAGE))]
    pub icon_url_origins: Vec<String>,
}

/// The common shape of an origin; the gateway checks the rest (its parser is the browsers').
const ORIGINS_RULE: &str = "self.all(o, o.matches('^https://[a-zA-Z0-9.-]+(:[0-9]{1,5})?/?$'))";
const ORIGINS_MESSAGE: &str = "each origin is https://host or https://host:port, without a path";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.timeoutSeconds >= self.intervalSeconds").message("timeoutSeconds must be at least intervalSeconds"))]
pub struct HeartbeatSpec {
    /// Seconds between a client's pings (sent to clients as heartbeatIntervalMs).
    #[serde(default = "default_heartbeat_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
    /// Seconds of silence after which a connection is closed (at least intervalSeconds).
    #[serde(default = "default_heartbeat_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: u32,
}

impl Default for HeartbeatSpec {
    fn default() -> Self {
        Self {
            interval_seconds: default_heartbeat_interval(),
            timeout_seconds: default_heartbeat_timeout(),
        }
    }
}

fn default_heartbeat_interval() -> u32 {
    defaults::HEARTBEAT_INTERVAL_SECONDS as u32
}

fn default_heartbeat_timeout() -> u32 {
    defaults::HEARTBEAT_TIMEOUT_SECONDS as u32
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// OpenTelemetry traces: each publish is one trace, from the request through the store and the bus
/// to its delivery on whichever replica holds the recipient.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// The base URL of an OTLP/HTTP collector (`http://otel-collector.monitoring:4318`; `/v1/traces`
    /// is appended). Unset: no traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 512), regex(pattern = r"^https?://[^\s/?#]+(/[^\s]*)?$"))]
    pub otlp_endpoint: Option<String>,
    /// The share of publishes traced, from 0 to 1 (a delivery follows its publish's decision).
    /// Unset: every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_ratio: Option<f64>,
}

/// Monitoring of the gateway by the Prometheus Operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// A ServiceMonitor (`monitoring.coreos.com/v1`, named like the gateway) scraping `/metrics` on
    /// the `internal` port of `<gw>-internal`. Needs the Prometheus Operator's CRDs; without them
    /// the gateway runs all the same and a `ServiceMonitorUnavailable` Warning event says why.
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Render the ServiceMonitor; turning it off deletes the gateway's own.
    #[serde(default)]
    pub enabled: bool,
    /// Scrape interval, a Prometheus duration (`30s`, `1m`); Prometheus' own when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 16), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: Option<String>,
    /// Labels added to the ServiceMonitor: the ones your Prometheus selects ServiceMonitors by
    /// (e.g. `release: kube-prometheus`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// ClusterIP, NodePort or LoadBalancer.
    #[serde(default, rename = "type")]
    pub service_type: ServiceType,
    /// The Service port (to the pods' port 8080).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            service_type: ServiceType::ClusterIP,
            port: default_port(),
        }
    }
}

fn default_port() -> i32 {
    80
}

/// What the operator observed of the gateway: conditions, replicas and signing keys.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationGatewayStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Ready pods of the gateway's current spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Replicas of the gateway's Deployment (every spec), for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The label selector of the gateway's pods, for the scale subresource (HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The key that signs new connection tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_key_id: Option<String>,
    /// The signing keys (ids, states and when each signs; never the secrets), newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["kid"]))]
    pub keys: Vec<KeyStatus>,
    /// When the operator last added a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    /// When the operator will next add a key (unless a rotation is requested sooner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,
    /// The last value of the `herald.dev/rotate-keys` annotation the operator acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_request_handled: Option<String>,
}

/// A signing key as status shows it: never its secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// The key id (`kid` of the tokens it signs).
    pub kid: String,
    /// `Active` (signs new tokens), `Pending` (verifies; signs from `notBefore`) or `Retiring`
    /// (replaced; verifies the tokens it signed until it is retired).
    pub state: String,
    /// When the key starts (or started) signing.
    pub not_before: Time,
}

/// The notification types a channel lists: the gateway's own type, from the crate both share.
pub use herald_contract::NotificationType;

/// A channel of a gateway: a named set of notification types users subscribe to.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "NotificationChannel",
    doc = "A channel of a NotificationGateway: a named set of notification types users subscribe to, reloaded by running gateways without a restart.",
    namespaced,
    status = "NotificationChannelStatus",
    shortname = "nch",
    category = "herald",
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".spec.gatewayRef.name"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9._]{0,62})$')")
        .message("the channel name (metadata.name) must be 1-63 characters of a-z, 0-9, '-', '_', '.'"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.adminOnly && has(self.requiredRole))").message("set adminOnly or requiredRole, not both"))]
pub struct NotificationChannelSpec {
    /// The NotificationGateway (same namespace) that serves this channel.
    pub gateway_ref: GatewayRef,
    /// What the channel carries, shown to users choosing their subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The notification types of this channel; a type belongs to at most one channel of a gateway.
    #[schemars(length(min = 1, max = 14), extend("x-kubernetes-list-type" = "set"))]
    pub types: Vec<NotificationType>,
    /// Only users with the gateway's admin role may subscribe.
    #[serde(default)]
    pub admin_only: bool,
    /// Only users with this role may subscribe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_role: Option<String>,
    /// Users who never chose are subscribed.
    #[serde(default = "yes")]
    pub default_subscribed: bool,
    /// Days notifications of this channel are kept (the gateway's retentionDays when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3650))]
    pub retention_days: Option<u32>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct GatewayRef {
    /// The NotificationGateway's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Whether the channel is accepted by its gateway and served by every ready replica.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationChannelStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn defaults_fill_a_minimal_gateway() {
        let spec: NotificationGatewaySpec =
            serde_json::from_value(serde_json::json!({"auth": {"jwksUrl": "https://issuer/jwks"}})).expect("minimal");
        assert_eq!(spec.replicas, None);
        assert_eq!(spec.desired_replicas(), 1, "embedded: one replica");
        let cluster: NotificationGatewaySpec = serde_json::from_value(serde_json::json!({
            "auth": {"jwksUrl": "https://issuer/jwks"},
            "postgres": {"urlSecretRef": {"name": "db", "key": "url"}},
            "redis": {"urlSecretRef": {"name": "cache", "key": "url"}},
        }))
        .expect("cluster");
        assert_eq!(cluster.desired_replicas(), 2, "cluster mode: two");
        assert_eq!(spec.storage.size, "1Gi");
        assert_eq!(spec.token_ttl_seconds, 60);
        assert_eq!(spec.limits, LimitsSpec::default());
        assert_eq!(spec.heartbeat, HeartbeatSpec::default());
        assert_eq!(spec.service.port, 80);
        assert!(!spec.paused);
    }

    #[test]
    fn rotation_intervals_read_hours_minutes_and_seconds_in_order() {
        let hours = |h: u64| Some(std::time::Duration::from_secs(h * 3600));
        assert_eq!(parse_duration("720h"), hours(720));
        assert_eq!(parse_duration("1h30m"), Some(std::time::Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Some(std::time::Duration::from_secs(90)));
        for bad in [
            "",
            "h",
            "30",
            "1m1h",
            "1h1h",
            "1d",
            "-1h",
            "1.5h",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(RotationSpec::default().interval(), hours(720));
    }

    /// Every field a user may read with `kubectl explain` says what it is: each property of the
    /// schema, at any depth, has a description (array items and map values are described by their
    /// field), and the kinds themselves have their own, not kube's "Auto-generated derived type".
    #[test]
    fn every_field_of_both_crds_has_a_description() {
        fn walk(node: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
            if let Some(properties) = node["properties"].as_object() {
                for (name, property) in properties {
                    let here = format!("{path}.{name}");
                    if property["description"].as_str().is_none_or(str::is_empty) {
                        missing.push(here.clone());
                    }
                    walk(property, &here, missing);
                }
            }
            for nested in ["items", "additionalProperties"] {
                if node[nested].is_object() {
                    walk(&node[nested], &format!("{path}[]"), missing);
                }
            }
        }
        for crd in [NotificationGateway::crd(), NotificationChannel::crd()] {
            let crd = serde_json::to_value(crd).expect("json");
            let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            let root = schema["description"].as_str().unwrap_or_default();
            assert!(!root.is_empty() && !root.contains("Auto-generated"), "{root}");
            let mut missing = Vec::new();
            walk(schema, "", &mut missing);
            missing.retain(|path| !matches!(path.as_str(), ".apiVersion" | ".kind" | ".metadata"));
            assert!(
                missing.is_empty(),
                "{}: no description on {missing:#?}",
                crd["metadata"]["name"]
            );
        }
    }

    #[test]
    fn crds_carry_status_printer_columns_short_names_and_cel_rules() {
        let gateway = serde_json::to_value(NotificationGateway::crd()).expect("json");
        let version = &gateway["spec"]["versions"][0];
        assert_eq!(gateway["spec"]["names"]["shortNames"], serde_json::json!(["ngw"]));
        assert_eq!(gateway["spec"]["names"]["categories"], serde_json::json!(["herald"]));
        assert!(version["subresources"]["status"].is_object());
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            columns,
            ["Replicas", "Ready", "Reason", "Ready Replicas", "Active Key", "Age"]
        );
        assert_eq!(
            version["additionalPrinterColumns"][1]["jsonPath"],
            ".status.conditions[?(@.type==\"Ready\")].status"
        );
        // Conditions are a map keyed by type (server-side apply merges them by type).
        let conditions = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], serde_json::json!(["type"]));
        let text = gateway.to_string();
        assert!(text.contains("self.spec.replicas <= 1"), "cross-field CEL rule present");
        assert_eq!(
            version["subresources"]["scale"]["labelSelectorPath"], ".status.selector",
            "kubectl scale and an HPA work"
        );
        let channel = serde_json::to_value(NotificationChannel::crd()).expect("json");
        assert_eq!(channel["spec"]["names"]["shortNames"], serde_json::json!(["nch"]));
        assert!(channel.to_string().contains("x-kubernetes-list-type"));
    }
}

/// The shipped examples parse as the resources they claim to be.
#[cfg(test)]
mod example_tests {
    use super::*;

    fn documents(path: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(format!(
            "{}/../examples/{path}",
            std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo for the tests it runs")
        ))
        .expect("example");
        text.split("\n---\n")
            .map(|doc| serde_norway::from_str::<serde_json::Value>(doc).expect("YAML"))
            .collect()
    }

    #[test]
    fn examples_are_valid_resources() {
        for file in ["gateway-embedded.yaml", "gateway-cluster.yaml", "channels.yaml"] {
            for document in documents(file) {
                match document["kind"].as_str() {
                    Some("NotificationGateway") => {
                        serde_json::from_value::<NotificationGateway>(document).expect("gateway");
                    }
                    Some("NotificationChannel") => {
                        serde_json::from_value::<NotificationChannel>(document).expect("channel");
                    }
                    Some("Secret") => {}
                    other => panic!("unexpected kind {other:?} in {file}"),
                }
            }
        }
    }
}
