//! The operator against a real kube-apiserver and etcd (`scripts/envtest up`, envtest-style): CRDs
//! install and validate, and reconciles produce, update and leave alone the right objects.
//!
//! Reconciles are invoked directly (not through a running controller) so every assertion follows a
//! known reconcile; only the metrics test runs the controllers, whose work it measures. There is no
//! controller-manager: Deployments never get pods, which is fine here.

use std::sync::Arc;
use std::time::Duration;

use herald_operator::admission::{ImagePolicy, SECRET_OPT_IN_LABEL, SECRET_OPT_IN_VALUE};
use herald_operator::app;
use herald_operator::controller::{self, Context};
use herald_operator::crd::{NotificationChannel, NotificationGateway};
use herald_operator::{rotation, signing};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;

/// A client for the test apiserver, or `None` (loudly) outside CI when none is running.
async fn client() -> Option<Client> {
    herald_e2e::service_url("KUBECONFIG")?;
    let client = Client::try_default()
        .await
        .expect("kubeconfig from scripts/envtest is usable");
    install_crds(&client).await;
    Some(client)
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [NotificationGateway::crd(), NotificationChannel::crd()] {
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply("herald-tests").force(), &Patch::Apply(&crd))
            .await
            .expect("CRD applies");
        // Wait until the apiserver serves the new resource.
        for _ in 0..100 {
            let current = crds.get(&name).await.expect("CRD");
            let established = current
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A fresh namespace holding the Secrets `gateway_json` names (`db`, `cache`), opted in for Herald.
async fn namespace(client: &Client) -> String {
    let name = herald_e2e::unique_name("t");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    for secret in ["db", "cache"] {
        create_secret(client, &name, secret, true).await;
    }
    name
}

/// A Secret with a `url` and a `secret` key, with or without Herald's opt-in label.
async fn create_secret(client: &Client, ns: &str, name: &str, opted_in: bool) {
    let labels = if opted_in {
        json!({(SECRET_OPT_IN_LABEL): SECRET_OPT_IN_VALUE})
    } else {
        json!({})
    };
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels},
        "stringData": {"url": "postgres://herald:hunter2-secret-value@db/herald", "secret": SECRET_VALUE},
    });
    create(&Api::<Secret>::namespaced(client.clone(), ns), secret)
        .await
        .expect("Secret created");
}

/// What the test Secrets hold: it must never show up in a status or an event.
const SECRET_VALUE: &str = "an-hs256-secret-that-must-never-leak-0123";

fn context(client: &Client) -> Arc<Context> {
    Arc::new(Context::new(client.clone(), None, ImagePolicy::default()))
}

fn gateway_json(name: &str, replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "NotificationGateway",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "postgres": {"urlSecretRef": {"name": "db", "key": "url"}},
            "redis": {"urlSecretRef": {"name": "cache", "key": "url"}},
            "auth": {"jwksUrl": "https://issuer.example/jwks", "issuer": "https://issuer.example/", "audience": "herald"},
        }
    })
}

fn channel_json(name: &str, gateway: &str, types: &[&str]) -> serde_json::Value {
    json!({
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "NotificationChannel",
        "metadata": {"name": name},
        "spec": {"gatewayRef": {"name": gateway}, "types": types},
    })
}

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let object: K = serde_json::from_value(value).expect("object");
    api.create(&PostParams::default(), &object).await
}

/// Creates an object from raw JSON, bypassing the typed structs, so the apiserver alone judges it.
async fn create_raw<K: kube::Resource<DynamicType = ()>>(
    client: &Client,
    ns: &str,
    value: serde_json::Value,
) -> Result<DynamicObject, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()));
    let object: DynamicObject = serde_json::from_value(value).expect("dynamic object");
    api.create(&PostParams::default(), &object).await
}

async fn reconcile(client: &Client, ns: &str, name: &str) {
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), ns);
    let gateway = gateways.get(name).await.expect("gateway");
    controller::reconcile_gateway(Arc::new(gateway), context(client))
        .await
        .expect("reconcile succeeds");
}

/// Whether the namespaced object `name` of kind `K` exists.
async fn exists<K>(client: &Client, ns: &str, name: &str) -> bool
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get")
        .is_some()
}

/// Merge-patches the gateway `name`, then reconciles it.
async fn change_and_reconcile(client: &Client, ns: &str, name: &str, patch: serde_json::Value) {
    Api::<NotificationGateway>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("gateway patched");
    reconcile(client, ns, name).await;
}

#[tokio::test]
async fn invalid_resources_are_refused_by_the_apiserver() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    // CEL across fields: several replicas need PostgreSQL and Redis.
    let embedded_three = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
        "metadata": {"name": "bad"}, "spec": {"replicas": 3, "auth": {"jwksUrl": "https://issuer/jwks", "issuer": "https://issuer.example/", "audience": "herald"}}});
    let err = create_raw::<NotificationGateway>(&client, &ns, embedded_three)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("cluster mode"), "{err}");
    // CEL inside auth: one of jwksUrl / hs256SecretRef.
    let no_auth = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
        "metadata": {"name": "bad"}, "spec": {"replicas": 1, "auth": {}}});
    let err = create_raw::<NotificationGateway>(&client, &ns, no_auth)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("jwksUrl"), "{err}");
    // The rotation interval: a duration of hours, minutes and seconds, from 1h to 8760h.
    for (interval, expected) in [
        ("30m", "between 1h and 8760h"),
        ("1d", "should match"),
        ("9000h", "between 1h and 8760h"),
    ] {
        let rotation = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
            "metadata": {"name": "rotation"}, "spec": {"replicas": 1, "rotation": {"interval": interval},
            "auth": {"jwksUrl": "https://issuer/jwks", "issuer": "https://issuer.example/", "audience": "herald"}}});
        let err = create_raw::<NotificationGateway>(&client, &ns, rotation)
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(expected), "{interval}: {err}");
    }
    // Traces go to an http(s) collector, and a sample ratio is a share; a ServiceMonitor interval is a
    // Prometheus duration.
    for (spec, expected) in [
        (
            json!({"tracing": {"otlpEndpoint": "grpc://collector:4317"}}),
            "should match",
        ),
        (
            json!({"tracing": {"otlpEndpoint": "http://collector:4318", "sampleRatio": 2}}),
            "less than or equal to 1",
        ),
        (
            json!({"monitoring": {"serviceMonitor": {"enabled": true, "interval": "soon"}}}),
            "should match",
        ),
    ] {
        let mut gateway = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
            "metadata": {"name": "observed"}, "spec": {"replicas": 1,
            "auth": {"jwksUrl": "https://issuer/jwks", "issuer": "https://issuer.example/", "audience": "herald"}}});
        for (key, value) in spec.as_object().expect("spec") {
            gateway["spec"][key] = value.clone();
        }
        let err = create_raw::<NotificationGateway>(&client, &ns, gateway)
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(expected), "{spec}: {err}");
    }
    // CEL inside auth: issuer and audience, or the explicit waiver (issue 10: any issuer's JWT for any
    // audience was accepted); a JWKS URL in plain http only on loopback.
    let auth = |auth: serde_json::Value| {
        json!({"apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
            "metadata": {"name": "auth"}, "spec": {"replicas": 1, "auth": auth}})
    };
    let err = create_raw::<NotificationGateway>(
        &client,
        &ns,
        auth(json!({"jwksUrl": "https://i/j", "issuer": "https://i/"})),
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("allowAnyIssuerAndAudience: true"), "{err}");
    let err = create_raw::<NotificationGateway>(
        &client,
        &ns,
        auth(
            json!({"jwksUrl": "http://issuer.example/jwks", "issuer": "https://issuer.example/", "audience": "herald"}),
        ),
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("an https:// URL"), "{err}");
    for (i, accepted) in [
        json!({"jwksUrl": "http://127.0.0.1:9000/jwks", "issuer": "https://issuer.example/", "audience": "herald"}),
        json!({"jwksUrl": "https://i/j", "allowAnyIssuerAndAudience": true}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut gateway = auth(accepted.clone());
        gateway["metadata"]["name"] = json!(format!("auth-{i}"));
        create_raw::<NotificationGateway>(&client, &ns, gateway)
            .await
            .unwrap_or_else(|e| panic!("{accepted} accepted: {e}"));
    }
    // Schema: an unknown type, a value out of range.
    let teleport = channel_json("c1", "gw", &["teleport"]);
    let err = create_raw::<NotificationChannel>(&client, &ns, teleport)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("teleport"), "{err}");
    let zero_ttl = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
        "metadata": {"name": "bad"}, "spec": {"replicas": 1, "tokenTtlSeconds": 0, "auth": {"jwksUrl": "https://i/j", "issuer": "https://issuer.example/", "audience": "herald"}}});
    assert!(create_raw::<NotificationGateway>(&client, &ns, zero_ttl).await.is_err());
    // A repeated type in one channel (list type set).
    let repeated = channel_json("c3", "gw", &["new_like", "new_like"]);
    assert!(create_raw::<NotificationChannel>(&client, &ns, repeated).await.is_err());
    // CEL on the channel: adminOnly or requiredRole.
    let mut both = channel_json("c2", "gw", &["new_like"]);
    both["spec"]["adminOnly"] = json!(true);
    both["spec"]["requiredRole"] = json!("ops");
    let err = create_raw::<NotificationChannel>(&client, &ns, both)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("not both"), "{err}");
    // CEL on trustedProxies: addresses and CIDR ranges only.
    let mut named_proxy = gateway_json("bad", 1);
    named_proxy["spec"]["trustedProxies"] = json!(["10.0.0.0/8", "ingress.example"]);
    let err = create_raw::<NotificationGateway>(&client, &ns, named_proxy)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("trustedProxies"), "{err}");
    // CEL on link origins: https origins without a path.
    let mut path = gateway_json("bad", 1);
    path["spec"]["links"] = json!({"iconUrlOrigins": ["https://cdn.example.com/icons"]});
    let err = create_raw::<NotificationGateway>(&client, &ns, path)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("without a path"), "{err}");
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    // A valid pair is accepted, with defaults filled by the apiserver.
    let mut good = gateway_json("good", 2);
    good["spec"]["trustedProxies"] = json!(["10.0.0.0/8", "fd00::/8", "192.0.2.10"]);
    good["spec"]["links"] =
        json!({"actionUrlOrigins": ["https://app.example.com"], "iconUrlOrigins": ["https://cdn.example.com:8443/"]});
    let created = create(&gateways, good).await.expect("valid gateway");
    assert_eq!(created.spec.token_ttl_seconds, 60);
    assert_eq!(created.spec.limits.connections_per_user, 5);
    assert_eq!(created.spec.trusted_proxies.len(), 3);
}

#[tokio::test]
async fn a_gateway_produces_every_child_and_a_second_reconcile_changes_nothing() {
    let Some(client) = client().await else { return };
    let (ns, gateways) = reconciled_gateway(&client, "alerts", 2).await;

    let owned_by_gateway = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.kind == "NotificationGateway" && r.name == "alerts"))
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let config = config_maps.get("alerts-config").await.expect("ConfigMap");
    let deployment = deployments.get("alerts").await.expect("Deployment");
    let service = services.get("alerts").await.expect("Service");
    let internal = services.get("alerts-internal").await.expect("internal Service");
    let secret = secrets.get("alerts-signing-keys").await.expect("signing-key Secret");
    let pdb = pdbs.get("alerts").await.expect("PDB with 2 replicas");
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns);
    let migrations = jobs.list(&Default::default()).await.expect("jobs").items;
    assert_eq!(migrations.len(), 1, "one migration Job in cluster mode");
    let migration = migrations[0].clone();
    assert!(migration.name_any().starts_with("alerts-migrate-"));
    for meta in [
        &config.metadata,
        &deployment.metadata,
        &service.metadata,
        &internal.metadata,
        &secret.metadata,
        &pdb.metadata,
        &migration.metadata,
    ] {
        assert!(owned_by_gateway(meta), "{:?} is owned by the gateway", meta.name);
    }
    // Publishing and metrics are on the internal Service only.
    let ports = |service: &Service| -> Vec<(Option<String>, i32)> {
        let spec = service.spec.clone().expect("spec");
        spec.ports
            .expect("ports")
            .into_iter()
            .map(|p| (p.name, p.port))
            .collect()
    };
    assert_eq!(ports(&service), [(Some("http".to_owned()), 80)]);
    assert_eq!(ports(&internal), [(Some("internal".to_owned()), 9090)]);
    assert_eq!(internal.spec.clone().expect("spec").type_.as_deref(), Some("ClusterIP"));
    let status = gateways
        .get_status("alerts")
        .await
        .expect("status")
        .status
        .expect("status written");
    assert!(status.active_key_id.is_some(), "the active key id is reported");
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready"));

    // Second reconcile of the unchanged gateway: nothing is written.
    let versions = |items: Vec<String>| items;
    let before = versions(vec![
        config.resource_version().unwrap_or_default(),
        deployment.resource_version().unwrap_or_default(),
        service.resource_version().unwrap_or_default(),
        internal.resource_version().unwrap_or_default(),
        secret.resource_version().unwrap_or_default(),
        gateways
            .get("alerts")
            .await
            .expect("gateway")
            .resource_version()
            .unwrap_or_default(),
    ]);
    reconcile(&client, &ns, "alerts").await;
    let after = versions(vec![
        config_maps
            .get("alerts-config")
            .await
            .expect("cm")
            .resource_version()
            .unwrap_or_default(),
        deployments
            .get("alerts")
            .await
            .expect("deploy")
            .resource_version()
            .unwrap_or_default(),
        services
            .get("alerts")
            .await
            .expect("svc")
            .resource_version()
            .unwrap_or_default(),
        services
            .get("alerts-internal")
            .await
            .expect("svc")
            .resource_version()
            .unwrap_or_default(),
        secrets
            .get("alerts-signing-keys")
            .await
            .expect("secret")
            .resource_version()
            .unwrap_or_default(),
        gateways
            .get("alerts")
            .await
            .expect("gateway")
            .resource_version()
            .unwrap_or_default(),
    ]);
    assert_eq!(before, after, "a reconcile of an unchanged object writes nothing");
}

#[tokio::test]
async fn a_spec_change_updates_children_and_rolls_the_checksum() {
    let Some(client) = client().await else { return };
    let (ns, _) = reconciled_gateway(&client, "alerts", 2).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let checksum = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("herald.dev/config-checksum").cloned())
            .unwrap_or_default()
    };
    let first = checksum(&deployments.get("alerts").await.expect("deploy"));
    let secret_before = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("alerts-signing-keys")
        .await
        .expect("secret");
    let patch = json!({"spec": {"limits": {"connectionsPerUser": 3}, "replicas": 1}});
    change_and_reconcile(&client, &ns, "alerts", patch).await;
    let deployment = deployments.get("alerts").await.expect("deploy");
    assert_ne!(checksum(&deployment), first, "config change rolls the pods");
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(1));
    let config = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("alerts-config")
        .await
        .expect("cm");
    assert!(config.data.expect("data")["gateway.yaml"].contains("max_connections_per_user: 3"));
    assert!(
        !exists::<PodDisruptionBudget>(&client, &ns, "alerts").await,
        "no PDB for one replica"
    );
    let secret_after = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("alerts-signing-keys")
        .await
        .expect("secret");
    assert_eq!(
        secret_before.data, secret_after.data,
        "the signing key is never overwritten"
    );
}

#[tokio::test]
async fn channel_conflicts_are_refused_and_deleting_a_channel_updates_the_config() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    let channels: Api<NotificationChannel> = Api::namespaced(client.clone(), &ns);
    create(&gateways, gateway_json("alerts", 2)).await.expect("gateway");
    create(
        &channels,
        channel_json("social", "alerts", &["new_like", "new_comment"]),
    )
    .await
    .expect("channel");
    tokio::time::sleep(Duration::from_millis(1_100)).await; // creation timestamps have second precision
    create(&channels, channel_json("likes", "alerts", &["new_like"]))
        .await
        .expect("channel");
    create(&channels, channel_json("uploads", "alerts", &["upload_complete"]))
        .await
        .expect("channel");
    create(&channels, channel_json("orphan", "nobody", &["quota_warning"]))
        .await
        .expect("channel");
    reconcile(&client, &ns, "alerts").await;
    let orphan = channels.get("orphan").await.expect("orphan");
    controller::reconcile_channel(Arc::new(orphan), context(&client))
        .await
        .expect("channel reconcile");

    let accepted = |c: &NotificationChannel| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Accepted"))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    assert_eq!(
        accepted(&channels.get("social").await.expect("c")),
        Some(("True".into(), "Accepted".into()))
    );
    assert_eq!(
        accepted(&channels.get("uploads").await.expect("c")),
        Some(("True".into(), "Accepted".into()))
    );
    assert_eq!(
        accepted(&channels.get("likes").await.expect("c")),
        Some(("False".into(), "TypeConflict".into()))
    );
    assert_eq!(
        accepted(&channels.get("orphan").await.expect("c")),
        Some(("False".into(), "GatewayNotFound".into()))
    );
    // Accepted is not live: no replica is ready here (no kubelet), so none serves the channels yet.
    let programmed = |c: &NotificationChannel| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Programmed"))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    assert_eq!(
        programmed(&channels.get("social").await.expect("c")),
        Some(("False".into(), "NoReadyReplicas".into()))
    );
    assert_eq!(
        programmed(&channels.get("likes").await.expect("c")),
        Some(("False".into(), "TypeConflict".into())),
        "a refused channel is not programmed"
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let yaml = config_maps.get("alerts-config").await.expect("cm").data.expect("data")["gateway.yaml"].clone();
    assert!(
        yaml.contains("name: social") && yaml.contains("name: uploads") && !yaml.contains("name: likes"),
        "{yaml}"
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let template = |d: Deployment| d.spec.expect("spec").template;
    let before = template(deployments.get("alerts").await.expect("deployment"));
    channels
        .delete("uploads", &DeleteParams::default())
        .await
        .expect("delete");
    reconcile(&client, &ns, "alerts").await;
    assert_eq!(
        template(deployments.get("alerts").await.expect("deployment")),
        before,
        "a channel edit does not roll the pods: gateways reload their channels"
    );
    let yaml = config_maps.get("alerts-config").await.expect("cm").data.expect("data")["gateway.yaml"].clone();
    assert!(!yaml.contains("name: uploads"), "a deleted channel leaves the config");
    let (degraded, _, _) = condition(&gateways, "alerts", "Degraded").await;
    assert_eq!(degraded, "True", "a refused channel degrades the gateway");
}

#[tokio::test]
async fn a_leader_that_finds_its_lease_taken_stops_holding_it() {
    use herald_operator::leader::{LeaderElection, Lost, Timing};
    use k8s_openapi::api::coordination::v1::Lease;
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let timing = Timing::new(
        Duration::from_secs(3),
        Duration::from_secs(2),
        Duration::from_millis(500),
    )
    .expect("timing");
    let candidate = |identity: &str| LeaderElection::new(leases.clone(), "lead", identity, timing);
    let a = candidate("a");
    let b = candidate("b");
    let renewed = tokio::time::timeout(Duration::from_secs(10), a.acquire())
        .await
        .expect("a acquires at once");
    assert!(!b.try_lead().await.expect("lease"), "b follows a live lease");

    // Someone else takes the lease over (as after a partition): a's next renewal finds it gone.
    let mut lease = leases.get("lead").await.expect("lease");
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = Some("b".into());
    }
    leases
        .replace("lead", &PostParams::default(), &lease)
        .await
        .expect("taken over");
    let lost = tokio::time::timeout(Duration::from_secs(10), a.hold(renewed))
        .await
        .expect("a notices within a renewal period");
    assert!(matches!(lost, Lost::Taken), "{lost:?}");
    assert!(b.try_lead().await.expect("lease"), "b renews what it holds");

    // b steps down: a takes over at its next look, without waiting for the lease's duration.
    b.release().await.expect("release");
    let released = leases.get("lead").await.expect("lease").spec.expect("spec");
    assert_eq!(released.holder_identity, None);
    assert!(a.try_lead().await.expect("lease"), "a leads at once after the release");
    // A renewal that cannot happen: the leader stops at its deadline, not later.
    let started = tokio::time::Instant::now();
    let stalled = LeaderElection::new(
        Api::namespaced(client.clone(), "no-such-namespace-for-leases"),
        "lead",
        "c",
        timing,
    );
    let lost = tokio::time::timeout(Duration::from_secs(10), stalled.hold(started))
        .await
        .expect("stops");
    assert!(matches!(lost, Lost::DeadlinePassed), "{lost:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "within the 2 s deadline: {:?}",
        started.elapsed()
    );
}

/// The status, reason and message of the gateway's condition `kind`.
async fn condition(gateways: &Api<NotificationGateway>, name: &str, kind: &str) -> (String, String, String) {
    let status = gateways
        .get_status(name)
        .await
        .expect("gateway")
        .status
        .expect("status");
    let condition = status
        .conditions
        .into_iter()
        .find(|c| c.type_ == kind)
        .unwrap_or_else(|| panic!("no {kind} condition"));
    (condition.status, condition.reason, condition.message)
}

async fn ready(gateways: &Api<NotificationGateway>, name: &str) -> (String, String, String) {
    condition(gateways, name, "Ready").await
}

/// The events of `event_type` (`Normal`, `Warning`) recorded about `name`, as `(reason, note)`.
async fn events(client: &Client, ns: &str, name: &str, event_type: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some(event_type))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// The Warning events recorded about `name`, as `(reason, note)`.
async fn warnings(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    events(client, ns, name, "Warning").await
}

/// Asserts that the gateway `name` is refused for `reason` the way every refusal is reported (`Ready`
/// and `Progressing` false, `Degraded` true, all with that reason, and a Warning event), and returns
/// the refusal's message.
async fn refused(client: &Client, ns: &str, name: &str, reason: &str) -> String {
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), ns);
    let (_, _, message) = condition(&gateways, name, "Ready").await;
    for (kind, status) in [("Ready", "False"), ("Progressing", "False"), ("Degraded", "True")] {
        let (actual, actual_reason, _) = condition(&gateways, name, kind).await;
        assert_eq!((actual.as_str(), actual_reason.as_str()), (status, reason), "{kind}");
    }
    let warned = warnings(client, ns, name).await;
    assert!(
        warned.iter().any(|(r, _)| r == reason),
        "a {reason} Warning event: {warned:?}"
    );
    message
}

fn gateway_image(deployment: &Deployment) -> Option<String> {
    deployment.spec.as_ref()?.template.spec.as_ref()?.containers[0]
        .image
        .clone()
}

#[tokio::test]
async fn a_gateway_whose_image_is_not_allowed_gets_no_deployment_and_says_why() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let mut gateway = gateway_json("miner", 2);
    gateway["spec"]["image"] = json!("ghcr.io/herald-dev/herald-gateway-evil:1");
    create(&gateways, gateway).await.expect("gateway");
    reconcile(&client, &ns, "miner").await;

    assert!(!exists::<Deployment>(&client, &ns, "miner").await, "no Deployment");
    assert!(
        !exists::<ConfigMap>(&client, &ns, "miner-config").await,
        "nothing else is rendered either"
    );
    let message = refused(&client, &ns, "miner", "ImageNotAllowed").await;
    assert!(
        message.contains("`ghcr.io/herald-dev/herald-gateway-evil:1`")
            && message.contains("[ghcr.io/herald-dev/herald-gateway]"),
        "names the image and the allowed list: {message}"
    );

    // An allowed image renders; switching back to a refused one changes nothing that runs.
    let image = |image: &str| json!({"spec": {"image": image}});
    change_and_reconcile(&client, &ns, "miner", image("ghcr.io/herald-dev/herald-gateway:0.1.0")).await;
    let deployment = deployments.get("miner").await.expect("Deployment once allowed");
    assert_eq!(
        gateway_image(&deployment).as_deref(),
        Some("ghcr.io/herald-dev/herald-gateway:0.1.0")
    );
    assert_eq!(
        ready(&gateways, "miner").await.1,
        "RolloutPending",
        "no pods here, but not refused"
    );
    change_and_reconcile(&client, &ns, "miner", image("evil.example/herald-gateway:0.1.0")).await;
    let after = deployments.get("miner").await.expect("Deployment");
    assert_eq!(
        after.resource_version(),
        deployment.resource_version(),
        "left as it was"
    );
    assert_eq!(ready(&gateways, "miner").await.1, "ImageNotAllowed");
}

#[tokio::test]
async fn a_gateway_without_an_image_runs_the_operators_default_image_from_any_registry() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    create(&gateways, gateway_json("mirrored", 2)).await.expect("gateway");
    // An operator installed with `gateway.image` pointing at a mirror; its allow-list is left as it
    // is, without the mirror.
    let mirror = "registry.example.com:5000/platform/herald-gateway:0.1.0";
    let policy = ImagePolicy::new(
        vec!["ghcr.io/herald-dev/herald-gateway".parse().expect("pattern")],
        mirror.into(),
    );
    let context = Arc::new(Context::new(client.clone(), None, policy));
    let gateway = gateways.get("mirrored").await.expect("gateway");
    assert_eq!(gateway.spec.image, None, "the CRD sets no image: the operator decides");
    controller::reconcile_gateway(Arc::new(gateway), context.clone())
        .await
        .expect("reconcile");
    let deployment = deployments.get("mirrored").await.expect("Deployment");
    assert_eq!(gateway_image(&deployment).as_deref(), Some(mirror));
    assert_eq!(ready(&gateways, "mirrored").await.1, "RolloutPending", "not refused");

    // Naming another tag of the mirror is a choice of the gateway's author: the allow-list decides.
    let patch = json!({"spec": {"image": "registry.example.com:5000/platform/herald-gateway:9.9.9"}});
    gateways
        .patch("mirrored", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let gateway = gateways.get("mirrored").await.expect("gateway");
    controller::reconcile_gateway(Arc::new(gateway), context)
        .await
        .expect("a refusal is no error");
    assert_eq!(ready(&gateways, "mirrored").await.1, "ImageNotAllowed");
    let after = deployments.get("mirrored").await.expect("Deployment");
    assert_eq!(gateway_image(&after).as_deref(), Some(mirror), "left as it was");
}

#[tokio::test]
async fn a_gateway_naming_a_secret_that_has_not_opted_in_gets_no_deployment_until_it_does() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    create_secret(&client, &ns, "jwt", false).await;
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let mut gateway = gateway_json("alerts", 2);
    gateway["spec"]["auth"] = json!({"hs256SecretRef": {"name": "jwt", "key": "secret"}, "issuer": "https://issuer.example/", "audience": "herald"});
    create(&gateways, gateway).await.expect("gateway");
    reconcile(&client, &ns, "alerts").await;

    assert!(!exists::<Deployment>(&client, &ns, "alerts").await, "no Deployment");
    let message = refused(&client, &ns, "alerts", "SecretNotAllowed").await;
    assert!(
        message.contains("Secret `jwt` (spec.auth.hs256SecretRef)")
            && message.contains(&format!("label secret jwt {SECRET_OPT_IN_LABEL}=true")),
        "names the Secret and the label to add: {message}"
    );
    let warned = warnings(&client, &ns, "alerts").await;
    let gateway = gateways.get("alerts").await.expect("gateway");
    let shown = format!("{:?}{warned:?}", gateway.status);
    assert!(
        !shown.contains(SECRET_VALUE) && !shown.contains("hunter2"),
        "no Secret content leaks"
    );

    // Labelled, the Secret is used.
    let label = json!({"metadata": {"labels": {(SECRET_OPT_IN_LABEL): SECRET_OPT_IN_VALUE}}});
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .patch("jwt", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("label");
    reconcile(&client, &ns, "alerts").await;
    let deployment = deployments.get("alerts").await.expect("Deployment once opted in");
    let reads_jwt = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .is_some_and(|pod| {
                pod.containers[0].env.iter().flatten().any(|var| {
                    var.value_from
                        .as_ref()
                        .and_then(|v| v.secret_key_ref.as_ref())
                        .is_some_and(|r| r.name == "jwt")
                })
            })
    };
    assert!(reads_jwt(&deployment));
    assert_eq!(ready(&gateways, "alerts").await.1, "RolloutPending");

    // Pointed at another Secret that has not opted in (or a missing one), the Deployment stays.
    create_secret(&client, &ns, "payments", false).await;
    let other = json!({"spec": {"auth": {"hs256SecretRef": {"name": "payments", "key": "secret"}},
        "publisherKeysSecretRef": {"name": "nowhere", "key": "keys"}}});
    change_and_reconcile(&client, &ns, "alerts", other).await;
    let after = deployments.get("alerts").await.expect("Deployment");
    assert!(reads_jwt(&after), "still the opted-in Secret");
    assert_eq!(after.resource_version(), deployment.resource_version());
    let (_, reason, message) = ready(&gateways, "alerts").await;
    assert_eq!(reason, "SecretNotAllowed");
    assert!(
        message.contains("`payments`")
            && message.contains("Secret `nowhere` (spec.publisherKeysSecretRef) does not exist"),
        "every refusal at once: {message}"
    );
}

#[tokio::test]
async fn a_gateway_named_after_someone_elses_signing_key_secret_is_refused() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    // Not the operator's: it would be mounted into the gateway's pods as its signing keys.
    create_secret(&client, &ns, "payments-signing-keys", false).await;
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    create(&gateways, gateway_json("payments", 1)).await.expect("gateway");
    reconcile(&client, &ns, "payments").await;
    assert!(!exists::<Deployment>(&client, &ns, "payments").await);
    let (_, reason, message) = ready(&gateways, "payments").await;
    assert_eq!(reason, "SecretNotAllowed");
    assert!(message.contains("payments-signing-keys"), "{message}");
}

/// A Deployment and a ConfigMap somebody else made, named like the children of a gateway `shop`.
async fn create_foreign_objects(client: &Client, ns: &str) -> (Deployment, ConfigMap) {
    let labels = json!({"app": "shop"});
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"},
        "spec": {"replicas": 3, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "shop", "image": "registry.example/shop:7"}]}}},
    });
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-config"},
        "data": {"prices.yaml": "apples: 3"}});
    (
        create(&Api::namespaced(client.clone(), ns), deployment)
            .await
            .expect("Deployment"),
        create(&Api::namespaced(client.clone(), ns), config)
            .await
            .expect("ConfigMap"),
    )
}

#[tokio::test]
async fn a_gateway_named_after_objects_it_does_not_own_takes_none_of_them_over_until_they_are_gone() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let (deployment, config) = create_foreign_objects(&client, &ns).await;
    // A PDB of the gateway's name: a one-replica gateway has none, so this is not in its way.
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "shop"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "shop"}}}});
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let pdb = create(&pdbs, pdb).await.expect("PDB");
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    create(&gateways, gateway_json("shop", 1)).await.expect("gateway");
    let gateway = Arc::new(gateways.get("shop").await.expect("gateway"));
    let action = controller::reconcile_gateway(gateway, context(&client))
        .await
        .expect("a refusal is no error");
    assert_eq!(
        action,
        Action::requeue(controller::REFUSED_RECHECK),
        "looked at again, as other refusals"
    );

    let after = deployments.get("shop").await.expect("Deployment");
    assert_eq!(after.resource_version(), deployment.resource_version(), "not written");
    assert_eq!(after.spec, deployment.spec);
    assert!(after.metadata.owner_references.is_none());
    let config_after = config_maps.get("shop-config").await.expect("ConfigMap");
    assert_eq!(
        config_after.resource_version(),
        config.resource_version(),
        "not written"
    );
    assert_eq!(config_after.data, config.data);
    assert!(
        !exists::<Service>(&client, &ns, "shop").await,
        "nothing is applied for a refused gateway"
    );
    let message = refused(&client, &ns, "shop", "NameConflict").await;
    assert!(
        message.contains("ConfigMap `shop-config`, Deployment `shop` already exist in namespace")
            && message.contains("rename the gateway"),
        "names the objects and what to do: {message}"
    );
    assert!(!message.contains("PodDisruptionBudget"), "{message}");

    // Once the objects are gone, the next look renders the gateway, and leaves the PDB it does not own.
    deployments
        .delete("shop", &DeleteParams::default())
        .await
        .expect("delete");
    config_maps
        .delete("shop-config", &DeleteParams::default())
        .await
        .expect("delete");
    reconcile(&client, &ns, "shop").await;
    let rendered = deployments.get("shop").await.expect("the gateway's Deployment");
    assert_eq!(
        gateway_image(&rendered).as_deref(),
        Some(herald_operator::crd::DEFAULT_GATEWAY_IMAGE)
    );
    let owner = &rendered.metadata.owner_references.expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("NotificationGateway", "shop")
    );
    assert_eq!(ready(&gateways, "shop").await.1, "RolloutPending");
    let pdb_after = pdbs.get("shop").await.expect("the foreign PDB is not deleted");
    assert_eq!(pdb_after.resource_version(), pdb.resource_version());

    // Its own objects are no conflict: a spec change still updates them.
    change_and_reconcile(
        &client,
        &ns,
        "shop",
        json!({"spec": {"limits": {"connectionsPerUser": 2}}}),
    )
    .await;
    let config = config_maps.get("shop-config").await.expect("cm").data.expect("data");
    assert!(config["gateway.yaml"].contains("max_connections_per_user: 2"));
    assert_eq!(ready(&gateways, "shop").await.1, "RolloutPending");
}

#[tokio::test]
async fn a_running_gateway_is_frozen_when_an_object_is_in_the_way_of_a_new_child() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    create(&gateways, gateway_json("alerts", 1)).await.expect("gateway");
    reconcile(&client, &ns, "alerts").await;
    let deployment = deployments.get("alerts").await.expect("Deployment");
    // Somebody else's PDB under the name the gateway's own would take when it scales out.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "alerts"},
        "spec": {"minAvailable": 0, "selector": {"matchLabels": {"app": "other"}}}});
    let pdb = create(&pdbs, pdb).await.expect("PDB");
    change_and_reconcile(&client, &ns, "alerts", json!({"spec": {"replicas": 2}})).await;

    let after = deployments.get("alerts").await.expect("Deployment");
    assert_eq!(
        after.resource_version(),
        deployment.resource_version(),
        "kept as it was"
    );
    let pdb_after = pdbs.get("alerts").await.expect("PDB");
    assert_eq!(pdb_after.resource_version(), pdb.resource_version());
    assert_eq!(pdb_after.spec, pdb.spec);
    let message = refused(&client, &ns, "alerts", "NameConflict").await;
    assert!(message.contains("PodDisruptionBudget `alerts`"), "{message}");
}

#[tokio::test]
async fn objects_left_by_a_deleted_gateway_of_the_same_name_are_not_adopted() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    // As the garbage collector would find them after `shop` was deleted and before it ran (the test
    // apiserver has no garbage collector, so they stay).
    let earlier = "0e0e0e0e-0000-4000-8000-000000000009";
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-config",
        "ownerReferences": [{"apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway", "name": "shop",
                             "uid": earlier, "controller": true, "blockOwnerDeletion": true}]},
        "data": {"gateway.yaml": "old: true"}});
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let config = create(&config_maps, config).await.expect("ConfigMap");
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    create(&gateways, gateway_json("shop", 1)).await.expect("gateway");
    reconcile(&client, &ns, "shop").await;

    let after = config_maps.get("shop-config").await.expect("ConfigMap");
    assert_eq!(after.resource_version(), config.resource_version());
    assert!(!exists::<Deployment>(&client, &ns, "shop").await);
    let message = refused(&client, &ns, "shop", "NameConflict").await;
    assert!(
        message.contains(&format!(
            "ConfigMap `shop-config` (owner uid {earlier}) still belongs to an earlier"
        )),
        "{message}"
    );
    config_maps
        .delete("shop-config", &DeleteParams::default())
        .await
        .expect("collected");
    reconcile(&client, &ns, "shop").await;
    assert!(exists::<Deployment>(&client, &ns, "shop").await);
}

/// Plays the Deployment controller (the test apiserver runs none): it has observed the Deployment's
/// current generation, and `replicas` are updated and ready.
async fn roll_out(client: &Client, ns: &str, name: &str, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let generation = deployments.get(name).await.expect("Deployment").metadata.generation;
    let status = json!({"status": {"observedGeneration": generation, "replicas": replicas,
        "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}});
    deployments
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("Deployment status");
}

/// `(status, reason)` of the gateway's condition `kind`.
async fn condition_of(client: &Client, ns: &str, name: &str, kind: &str) -> (String, String) {
    let gateway = Api::<NotificationGateway>::namespaced(client.clone(), ns)
        .get_status(name)
        .await
        .expect("gateway");
    let status = gateway.status.expect("status");
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap_or_else(|| panic!("no {kind}: {:?}", status.conditions));
    (condition.status.clone(), condition.reason.clone())
}

#[tokio::test]
async fn ready_waits_for_the_deployment_to_roll_out_each_spec_change_and_a_paused_gateway_says_so() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    create(&gateways, gateway_json("shop", 2)).await.expect("gateway");
    reconcile(&client, &ns, "shop").await;
    let ready = |expected: (&str, &str)| (expected.0.to_owned(), expected.1.to_owned());
    assert_eq!(
        condition_of(&client, &ns, "shop", "Ready").await,
        ready(("False", "RolloutPending"))
    );
    roll_out(&client, &ns, "shop", 2).await;
    reconcile(&client, &ns, "shop").await;
    assert_eq!(
        condition_of(&client, &ns, "shop", "Ready").await,
        ready(("True", "ReplicasReady"))
    );

    // A spec change: what `kubectl wait --for=condition=Ready` reads is False until the Deployment
    // has rolled the change out, though its old replicas are all still ready.
    change_and_reconcile(&client, &ns, "shop", json!({"spec": {"replicas": 3}})).await;
    assert_eq!(
        condition_of(&client, &ns, "shop", "Ready").await,
        ready(("False", "RolloutPending"))
    );
    assert_eq!(
        condition_of(&client, &ns, "shop", "Progressing").await,
        ready(("True", "RollingOut"))
    );
    roll_out(&client, &ns, "shop", 3).await;
    reconcile(&client, &ns, "shop").await;
    assert_eq!(
        condition_of(&client, &ns, "shop", "Ready").await,
        ready(("True", "ReplicasReady"))
    );
    assert_eq!(
        condition_of(&client, &ns, "shop", "Progressing").await,
        ready(("False", "Complete"))
    );

    change_and_reconcile(&client, &ns, "shop", json!({"spec": {"paused": true}})).await;
    assert_eq!(
        condition_of(&client, &ns, "shop", "Progressing").await,
        ready(("False", "Paused"))
    );
    assert_eq!(
        condition_of(&client, &ns, "shop", "Ready").await,
        ready(("True", "ReplicasReady"))
    );
}

/// A fresh namespace with the gateway `name` (`gateway_json`) created and reconciled once.
async fn reconciled_gateway(client: &Client, name: &str, replicas: i32) -> (String, Api<NotificationGateway>) {
    let ns = namespace(client).await;
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    create(&gateways, gateway_json(name, replicas)).await.expect("gateway");
    reconcile(client, &ns, name).await;
    (ns, gateways)
}

/// The status of the gateway `name`, which must have one.
async fn status_of(gateways: &Api<NotificationGateway>, name: &str) -> herald_operator::crd::NotificationGatewayStatus {
    gateways
        .get_status(name)
        .await
        .expect("gateway")
        .status
        .expect("a status")
}

/// The key set in the gateway's signing-key Secret, and the Secret's resourceVersion.
async fn signing_keys(client: &Client, ns: &str, gateway: &str) -> (Vec<rotation::Key>, String) {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&format!("{gateway}-signing-keys"))
        .await
        .expect("signing-key Secret");
    (
        signing::read(&secret).expect("a key set"),
        secret.resource_version().unwrap_or_default(),
    )
}

#[tokio::test]
async fn keys_rotate_and_are_revoked_on_request_and_status_shows_them_without_their_secrets() {
    let Some(client) = client().await else { return };
    let (ns, gateways) = reconciled_gateway(&client, "alerts", 2).await;
    let (first, _) = signing_keys(&client, &ns, "alerts").await;
    assert_eq!(first.len(), 1, "one key, signing at once");
    let status = status_of(&gateways, "alerts").await;
    assert_eq!(status.active_key_id.as_deref(), Some(first[0].kid.as_str()));
    assert_eq!(status.keys.len(), 1);
    assert_eq!(status.keys[0].state, "Active");
    let created = status.last_rotation_time.clone().expect("lastRotationTime").0;
    let next = status.next_rotation_time.clone().expect("nextRotationTime").0;
    assert_eq!(
        next.duration_since(first[0].not_before).as_secs(),
        720 * 3600,
        "the default interval"
    );
    assert!(created >= first[0].not_before);

    // "Rotate now": a pending key that signs after the propagation delay (300 s by default).
    change_and_reconcile(
        &client,
        &ns,
        "alerts",
        json!({"metadata": {"annotations": {(signing::ROTATE_ANNOTATION): "r1"}}}),
    )
    .await;
    let (rotated, version) = signing_keys(&client, &ns, "alerts").await;
    assert_eq!(rotated.len(), 2);
    let pending = rotated.iter().find(|k| k.kid != first[0].kid).expect("new key").clone();
    let ahead = pending.not_before.duration_since(Timestamp::now()).as_secs_f64();
    assert!((280.0..=300.0).contains(&ahead), "about 300 s ahead: {ahead}");
    let status = status_of(&gateways, "alerts").await;
    let states: Vec<_> = status.keys.iter().map(|k| (k.kid.clone(), k.state.clone())).collect();
    assert_eq!(
        states,
        [
            (pending.kid.clone(), "Pending".to_owned()),
            (first[0].kid.clone(), "Active".to_owned())
        ]
    );
    assert_eq!(status.rotation_request_handled.as_deref(), Some("r1"));
    let added = events(&client, &ns, "alerts", "Normal").await;
    assert!(
        added
            .iter()
            .any(|(reason, note)| reason == "KeyAdded" && note.contains(&pending.kid)),
        "{added:?}"
    );
    // The annotation stays (GitOps keeps it): handled once, later reconciles write nothing.
    reconcile(&client, &ns, "alerts").await;
    assert_eq!(
        signing_keys(&client, &ns, "alerts").await.1,
        version,
        "the Secret is not written again"
    );

    // Revoking the signing key: gone at once, the pending key signs now.
    change_and_reconcile(
        &client,
        &ns,
        "alerts",
        json!({"metadata": {"annotations": {(signing::REVOKE_ANNOTATION): first[0].kid}}}),
    )
    .await;
    let (after_revoke, _) = signing_keys(&client, &ns, "alerts").await;
    assert_eq!(
        after_revoke.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        [pending.kid.as_str()]
    );
    assert!(after_revoke[0].not_before <= Timestamp::now());
    let status = status_of(&gateways, "alerts").await;
    assert_eq!(status.active_key_id.as_deref(), Some(pending.kid.as_str()));
    assert!(
        events(&client, &ns, "alerts", "Normal")
            .await
            .iter()
            .any(|(reason, note)| reason == "KeyRevoked" && note.contains(&first[0].kid))
    );

    // No secret in status or events.
    let status_json = serde_json::to_string(&status).expect("json");
    let notes = format!("{:?}", events(&client, &ns, "alerts", "Normal").await);
    for key in first.iter().chain(&rotated) {
        assert!(
            !status_json.contains(&key.secret) && !notes.contains(&key.secret),
            "a secret leaked"
        );
    }
}

#[tokio::test]
async fn concurrent_key_runs_lose_no_key() {
    let Some(client) = client().await else { return };
    let (ns, gateways) = reconciled_gateway(&client, "alerts", 2).await;
    let (first, _) = signing_keys(&client, &ns, "alerts").await;
    // Eight operators at once revoke the signing key: each that writes adds a replacement that
    // signs at once. Without compare-and-swap the last writer would drop the others' keys, whose
    // tokens would then be refused; with it, the losers re-read, find the key gone, and add nothing.
    let mut gateway = gateways.get("alerts").await.expect("gateway");
    gateway
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(signing::REVOKE_ANNOTATION.to_owned(), first[0].kid.clone());
    let runs = (0..8).map(|_| {
        let (client, gateway) = (client.clone(), gateway.clone());
        tokio::spawn(
            async move { signing::keep(&client, &gateway, Timestamp::now(), signing::Scope::Everything).await },
        )
    });
    let mut added = Vec::new();
    for run in runs {
        let outcome = run.await.expect("task").expect("every run ends well");
        added.extend(outcome.steps.into_iter().filter_map(|step| match step {
            rotation::Step::Added { kid, .. } => Some(kid),
            _ => None,
        }));
    }
    let (keys, _) = signing_keys(&client, &ns, "alerts").await;
    assert_eq!(added.len(), 1, "one run replaced the key: {added:?}");
    assert_eq!(
        keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(),
        added,
        "and its key is the one kept"
    );
}

#[tokio::test]
async fn an_unreadable_key_set_is_left_alone_and_reported() {
    let Some(client) = client().await else { return };
    let (ns, gateways) = reconciled_gateway(&client, "alerts", 2).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let broken = json!({"stringData": {"keys.json": "{\"keys\": \"hunter2\"}"}});
    let written = secrets
        .patch("alerts-signing-keys", &PatchParams::default(), &Patch::Merge(&broken))
        .await
        .expect("break the key set");
    let gateway = gateways.get("alerts").await.expect("gateway");
    let err = controller::reconcile_gateway(Arc::new(gateway), context(&client))
        .await
        .expect_err("the keys cannot be kept");
    let message = err.to_string();
    assert!(
        message.contains("alerts-signing-keys") && !message.contains("hunter2"),
        "{message}"
    );
    let after = secrets.get("alerts-signing-keys").await.expect("secret");
    assert_eq!(after.resource_version(), written.resource_version(), "not overwritten");

    // The failure reaches status, not only an event: what `kubectl get ngw` and `kubectl wait` read.
    let gateway = gateways.get("alerts").await.expect("gateway");
    controller::gateway_error_policy(Arc::new(gateway), &err, context(&client));
    let deadline = tokio::time::Instant::now() + herald_e2e::WAIT;
    let (_, reason, message) = loop {
        let ready = condition(&gateways, "alerts", "Ready").await;
        if ready.1 == "SigningKeysUnreadable" || tokio::time::Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reason, "SigningKeysUnreadable");
    assert!(
        message.contains("alerts-signing-keys") && !message.contains("hunter2"),
        "{message}"
    );
    let (degraded, degraded_reason, _) = condition(&gateways, "alerts", "Degraded").await;
    assert_eq!(
        (degraded.as_str(), degraded_reason.as_str()),
        ("True", "SigningKeysUnreadable")
    );
}

#[tokio::test]
async fn a_missing_secret_is_reported_as_secret_not_found_until_it_exists() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    let mut gateway = gateway_json("alerts", 2);
    gateway["spec"]["publisherKeysSecretRef"] = json!({"name": "publishers", "key": "keys"});
    create(&gateways, gateway).await.expect("gateway");
    reconcile(&client, &ns, "alerts").await;
    let message = refused(&client, &ns, "alerts", "SecretNotFound").await;
    assert!(
        message.contains("Secret `publishers` (spec.publisherKeysSecretRef) does not exist"),
        "{message}"
    );
    assert!(
        !exists::<Deployment>(&client, &ns, "alerts").await,
        "nothing runs without its Secret"
    );
    create_secret(&client, &ns, "publishers", true).await;
    reconcile(&client, &ns, "alerts").await;
    assert!(exists::<Deployment>(&client, &ns, "alerts").await);
    assert_ne!(ready(&gateways, "alerts").await.1, "SecretNotFound");
}

#[tokio::test]
async fn an_embedded_gateway_runs_one_replica_on_a_claim_and_kubectl_scale_works_in_cluster_mode() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    // Embedded, `replicas` omitted: accepted (no default of 2 to trip the CEL rule), one replica.
    let embedded = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
        "metadata": {"name": "solo"}, "spec": {"auth": {"jwksUrl": "https://issuer/jwks", "issuer": "https://issuer.example/", "audience": "herald"}}});
    create_raw::<NotificationGateway>(&client, &ns, embedded)
        .await
        .expect("an embedded gateway without replicas");
    reconcile(&client, &ns, "solo").await;
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("solo")
        .await
        .expect("deployment");
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.strategy.and_then(|s| s.type_).as_deref(), Some("Recreate"));
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .get("solo-data")
        .await
        .expect("claim");
    assert!(
        claim
            .owner_references()
            .iter()
            .any(|o| o.kind == "NotificationGateway" && o.name == "solo")
    );
    let status = status_of(&gateways, "solo").await;
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/instance=solo,app.kubernetes.io/name=herald-gateway")
    );

    // The scale subresource: `kubectl scale` (and an HPA) set spec.replicas through it.
    let scale = |replicas: i32| json!({"spec": {"replicas": replicas}});
    let err = gateways
        .patch_scale("solo", &PatchParams::default(), &Patch::Merge(&scale(2)))
        .await
        .expect_err("an embedded gateway cannot scale out");
    assert!(err.to_string().contains("cluster mode"), "{err}");
    create(&gateways, gateway_json("fleet", 2))
        .await
        .expect("cluster gateway");
    let scaled = gateways
        .patch_scale("fleet", &PatchParams::default(), &Patch::Merge(&scale(4)))
        .await
        .expect("scale");
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(4));
    reconcile(&client, &ns, "fleet").await;
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("fleet")
        .await
        .expect("deployment");
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(4));
    assert!(
        !exists::<PersistentVolumeClaim>(&client, &ns, "fleet-data").await,
        "cluster mode keeps no data in pods"
    );
}

#[tokio::test]
async fn a_changed_credential_rolls_the_pods_and_a_key_rotation_does_not() {
    let Some(client) = client().await else { return };
    let (ns, _) = reconciled_gateway(&client, "alerts", 2).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let template = || async {
        deployments
            .get("alerts")
            .await
            .expect("deployment")
            .spec
            .expect("spec")
            .template
    };
    let first = template().await;
    let stamp = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        t.metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .expect("annotations")["herald.dev/secrets-checksum"]
            .clone()
    };
    // A rotation changes the signing-key Secret only: pods read it again in place.
    change_and_reconcile(
        &client,
        &ns,
        "alerts",
        json!({"metadata": {"annotations": {(signing::ROTATE_ANNOTATION): "now"}}}),
    )
    .await;
    assert_eq!(template().await, first, "a key rotation rolls nothing");
    // The database password changes: the pods read it from their environment at start only.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let new_url = json!({"stringData": {"url": "postgres://herald:a-new-password@db/herald"}});
    secrets
        .patch("db", &PatchParams::default(), &Patch::Merge(&new_url))
        .await
        .expect("new password");
    reconcile(&client, &ns, "alerts").await;
    let rolled = template().await;
    assert_ne!(stamp(&rolled), stamp(&first), "a changed credential rolls the pods");
    let secret_json = serde_json::to_string(&rolled).expect("json");
    assert!(
        !secret_json.contains("a-new-password"),
        "only versions are hashed, never values"
    );
}

#[tokio::test]
async fn a_leaked_key_is_revoked_at_once_even_while_the_gateway_is_paused() {
    let Some(client) = client().await else { return };
    let (ns, gateways) = reconciled_gateway(&client, "alerts", 2).await;
    let (first, _) = signing_keys(&client, &ns, "alerts").await;
    let leaked = first[0].kid.clone();
    change_and_reconcile(&client, &ns, "alerts", json!({"spec": {"paused": true}})).await;
    change_and_reconcile(
        &client,
        &ns,
        "alerts",
        json!({"metadata": {"annotations": {(signing::REVOKE_ANNOTATION): leaked}}}),
    )
    .await;
    let (keys, _) = signing_keys(&client, &ns, "alerts").await;
    assert!(keys.iter().all(|k| k.kid != leaked), "revoked while paused");
    assert_eq!(
        keys.len(),
        1,
        "a replacement signs at once, and nothing else was rotated"
    );
    let status = status_of(&gateways, "alerts").await;
    assert_eq!(
        status.active_key_id.as_deref(),
        Some(keys[0].kid.as_str()),
        "status shows it"
    );
    let (progressing, reason, _) = condition(&gateways, "alerts", "Progressing").await;
    assert_eq!(
        (progressing.as_str(), reason.as_str()),
        ("False", "Paused"),
        "still paused"
    );
}

/// Waits (at most `herald_e2e::WAIT`) until `metrics` renders a text `check` accepts, and returns it.
async fn scraped(metrics: &herald_operator::metrics::Metrics, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + herald_e2e::WAIT;
    loop {
        let text = metrics.render();
        if check(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the series `series` (name and labels, exactly as rendered), if rendered.
fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Unlike the tests above, this one runs the operator's controllers (`app::controllers`, confined to
/// the test's namespace): what is measured is their reconciles and their cache.
#[tokio::test]
async fn the_controllers_metrics_count_reconciles_and_show_each_gateways_conditions_until_it_is_deleted() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let ctx = context(&client);
    let controllers = tokio::spawn({
        let (client, ctx, scope) = (client.clone(), ctx.clone(), app::Scope::Namespace(ns.clone()));
        async move { app::controllers(&client, &scope, ctx).await }
    });
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    create(&gateways, gateway_json("metered", 1)).await.expect("gateway");
    let total = |result: &str| {
        format!(r#"controller_runtime_reconcile_total{{controller="notificationgateway",result="{result}"}}"#)
    };
    let condition_series = |kind: &str, status: &str| {
        format!(
            r#"herald_operator_gateway_condition{{namespace="{ns}",name="metered",type="{kind}",status="{status}"}}"#
        )
    };

    // Reconciled: periodic looks are controller-runtime's `requeue_after`, and the Ready condition's
    // series says what status says.
    let text = scraped(&ctx.metrics, "a gateway reconcile", |text| {
        series_value(text, &total("requeue_after")).is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(series_value(&text, &total("error")), Some(0.0), "{text}");
    assert!(
        series_value(
            &text,
            r#"controller_runtime_reconcile_time_seconds_count{controller="notificationgateway"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let (ready_status, _, _) = ready(&gateways, "metered").await;
    scraped(&ctx.metrics, "the Ready condition", |text| {
        ["True", "False", "Unknown"].iter().all(|status| {
            let expected = if *status == ready_status { 1.0 } else { 0.0 };
            series_value(text, &condition_series("Ready", status)) == Some(expected)
        })
    })
    .await;
    let text = scraped(&ctx.metrics, "the signing key's age", |text| {
        series_value(
            text,
            &format!(r#"herald_operator_signing_key_age_seconds{{namespace="{ns}",name="metered"}}"#),
        )
        .is_some()
    })
    .await;
    let age = series_value(
        &text,
        &format!(r#"herald_operator_signing_key_age_seconds{{namespace="{ns}",name="metered"}}"#),
    );
    assert!(
        age.is_some_and(|age| (0.0..300.0).contains(&age)),
        "a key added now: {text}"
    );

    // Paused: the reconcile waits for the next change (`success`), and Progressing turns False.
    gateways
        .patch(
            "metered",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": true}})),
        )
        .await
        .expect("pause");
    scraped(
        &ctx.metrics,
        "a paused gateway's reconcile and its Progressing condition",
        |text| {
            series_value(text, &total("success")).is_some_and(|n| n >= 1.0)
                && series_value(text, &condition_series("Progressing", "False")) == Some(1.0)
        },
    )
    .await;

    // Deleted: its series go (the cache forgets it).
    gateways
        .delete("metered", &DeleteParams::default())
        .await
        .expect("delete");
    let text = scraped(&ctx.metrics, "the deleted gateway's series gone", |text| {
        !text.contains(r#"name="metered""#)
    })
    .await;
    assert!(
        series_value(&text, &total("success")).is_some(),
        "the counts stay: {text}"
    );
    controllers.abort();
}

/// Waits (at most 30 s) until the apiserver serves (`true`) or no longer serves ServiceMonitors.
async fn service_monitors_served(client: &Client, ns: &str, served: bool) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &herald_operator::render::service_monitor_resource());
    for _ in 0..300 {
        if api.list(&Default::default()).await.is_ok() == served {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ServiceMonitors still {}served", if served { "not " } else { "" });
}

/// Issue 14: `spec.monitoring.serviceMonitor` renders a ServiceMonitor on the gateway's internal port;
/// without the Prometheus Operator's CRD the gateway runs all the same and an event says why; turned
/// off, the gateway's own ServiceMonitor is deleted.
#[tokio::test]
async fn a_gateway_asks_for_a_service_monitor_and_runs_without_one_where_the_kind_is_missing() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(herald_e2e::service_monitor_crd()).expect("CRD");
    // Only this test touches the kind in this test binary; the chart's tests install it as well.
    let _ = crds.delete(&crd.name_any(), &DeleteParams::default()).await;
    service_monitors_served(&client, &ns, false).await;

    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    let mut gateway = gateway_json("watched", 2);
    gateway["spec"]["monitoring"] =
        json!({"serviceMonitor": {"enabled": true, "interval": "15s", "labels": {"release": "kube-prometheus"}}});
    create(&gateways, gateway).await.expect("gateway");
    reconcile(&client, &ns, "watched").await;
    assert!(
        exists::<Deployment>(&client, &ns, "watched").await,
        "the gateway runs all the same"
    );
    let why = warnings(&client, &ns, "watched").await;
    assert!(
        why.iter()
            .any(|(reason, note)| reason == "ServiceMonitorUnavailable" && note.contains("monitoring.coreos.com")),
        "{why:?}"
    );

    crds.patch(
        &crd.name_any(),
        &PatchParams::apply("herald-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("CRD");
    service_monitors_served(&client, &ns, true).await;
    reconcile(&client, &ns, "watched").await;
    let monitors: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &herald_operator::render::service_monitor_resource(),
    );
    let monitor = monitors.get("watched").await.expect("the ServiceMonitor");
    assert_eq!(
        monitor.labels().get("release").map(String::as_str),
        Some("kube-prometheus")
    );
    assert!(
        monitor
            .owner_references()
            .iter()
            .any(|o| o.kind == "NotificationGateway" && o.name == "watched"),
        "owned by the gateway, so deleted with it"
    );
    let spec = &monitor.data["spec"];
    assert_eq!(
        spec["endpoints"],
        json!([{"port": "internal", "path": "/metrics", "interval": "15s"}])
    );
    // It selects the internal Service, the only one with the `internal` port.
    let internal = Api::<Service>::namespaced(client.clone(), &ns)
        .get("watched-internal")
        .await
        .expect("internal Service");
    for (key, value) in spec["selector"]["matchLabels"].as_object().expect("selector") {
        assert_eq!(internal.labels().get(key).map(String::as_str), value.as_str(), "{key}");
    }
    let ports = internal.spec.expect("spec").ports.expect("ports");
    assert_eq!(ports[0].name.as_deref(), Some("internal"));

    change_and_reconcile(
        &client,
        &ns,
        "watched",
        json!({"spec": {"monitoring": {"serviceMonitor": {"enabled": false}}}}),
    )
    .await;
    assert!(
        monitors.get_opt("watched").await.expect("get").is_none(),
        "turned off: deleted"
    );
}
