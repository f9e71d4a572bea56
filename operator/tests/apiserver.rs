//! The operator against a real kube-apiserver and etcd (`scripts/envtest up`, envtest-style): CRDs
//! install and validate, and reconciles produce, update and leave alone the right objects.
//!
//! Reconciles are invoked directly (not through a running controller) so every assertion follows a
//! known reconcile. There is no controller-manager: Deployments never get pods, which is fine here.

use std::sync::Arc;
use std::time::Duration;

use herald_operator::controller::{self, Context};
use herald_operator::crd::{NotificationChannel, NotificationGateway};
use herald_operator::metrics::Metrics;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
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

async fn namespace(client: &Client) -> String {
    let name = format!("t-{}", &uuid_like());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    name
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst))
}

fn context(client: &Client) -> Arc<Context> {
    Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: controller::MANAGER.into(),
                instance: None,
            },
        ),
        metrics: Arc::new(Metrics::default()),
        operator_image: "herald-operator:test".into(),
    })
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
            "auth": {"jwksUrl": "https://issuer.example/jwks"},
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

#[tokio::test]
async fn invalid_resources_are_refused_by_the_apiserver() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    // CEL across fields: several replicas need PostgreSQL and Redis.
    let embedded_three = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
        "metadata": {"name": "bad"}, "spec": {"replicas": 3, "auth": {"jwksUrl": "https://issuer/jwks"}}});
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
    // Schema: an unknown type, a value out of range.
    let teleport = channel_json("c1", "gw", &["teleport"]);
    let err = create_raw::<NotificationChannel>(&client, &ns, teleport)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("teleport"), "{err}");
    let zero_ttl = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
        "metadata": {"name": "bad"}, "spec": {"replicas": 1, "tokenTtlSeconds": 0, "auth": {"jwksUrl": "https://i/j"}}});
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
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    // A valid pair is accepted, with defaults filled by the apiserver.
    let created = create(&gateways, gateway_json("good", 2)).await.expect("valid gateway");
    assert_eq!(created.spec.token_ttl_seconds, 60);
    assert_eq!(created.spec.limits.connections_per_user, 5);
}

#[tokio::test]
async fn a_gateway_produces_every_child_and_a_second_reconcile_changes_nothing() {
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    create(&gateways, gateway_json("alerts", 2)).await.expect("gateway");
    reconcile(&client, &ns, "alerts").await;

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
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    let config = config_maps.get("alerts-config").await.expect("ConfigMap");
    let deployment = deployments.get("alerts").await.expect("Deployment");
    let service = services.get("alerts").await.expect("Service");
    let secret = secrets.get("alerts-signing-keys").await.expect("signing-key Secret");
    let pdb = pdbs.get("alerts").await.expect("PDB with 2 replicas");
    let cron = cron_jobs.get("alerts-key-rotation").await.expect("CronJob");
    let role = roles.get("alerts-key-rotation").await.expect("Role");
    for meta in [
        &config.metadata,
        &deployment.metadata,
        &service.metadata,
        &secret.metadata,
        &pdb.metadata,
        &cron.metadata,
        &role.metadata,
    ] {
        assert!(owned_by_gateway(meta), "{:?} is owned by the gateway", meta.name);
    }
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
    let ns = namespace(&client).await;
    let gateways: Api<NotificationGateway> = Api::namespaced(client.clone(), &ns);
    create(&gateways, gateway_json("alerts", 2)).await.expect("gateway");
    reconcile(&client, &ns, "alerts").await;
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
    gateways
        .patch("alerts", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("spec change");
    reconcile(&client, &ns, "alerts").await;
    let deployment = deployments.get("alerts").await.expect("deploy");
    assert_ne!(checksum(&deployment), first, "config change rolls the pods");
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(1));
    let config = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("alerts-config")
        .await
        .expect("cm");
    assert!(config.data.expect("data")["gateway.yaml"].contains("max_connections_per_user: 3"));
    assert!(
        Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
            .get_opt("alerts")
            .await
            .expect("get")
            .is_none(),
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
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let yaml = config_maps.get("alerts-config").await.expect("cm").data.expect("data")["gateway.yaml"].clone();
    assert!(
        yaml.contains("name: social") && yaml.contains("name: uploads") && !yaml.contains("name: likes"),
        "{yaml}"
    );

    channels
        .delete("uploads", &DeleteParams::default())
        .await
        .expect("delete");
    reconcile(&client, &ns, "alerts").await;
    let yaml = config_maps.get("alerts-config").await.expect("cm").data.expect("data")["gateway.yaml"].clone();
    assert!(!yaml.contains("name: uploads"), "a deleted channel leaves the config");
    let status = gateways
        .get_status("alerts")
        .await
        .expect("status")
        .status
        .expect("status");
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(degraded.status, "True", "a refused channel degrades the gateway");
}

#[tokio::test]
async fn a_leader_that_finds_its_lease_taken_stops_holding_it() {
    use herald_operator::leader::{LeaderElection, Lost};
    use k8s_openapi::api::coordination::v1::Lease;
    let Some(client) = client().await else { return };
    let ns = namespace(&client).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let candidate = |identity: &str| LeaderElection::new(leases.clone(), "lead", identity, Duration::from_secs(3));
    let a = candidate("a");
    let b = candidate("b");
    tokio::time::timeout(Duration::from_secs(10), a.acquire())
        .await
        .expect("a acquires at once")
        .expect("lease");
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
    let lost = tokio::time::timeout(Duration::from_secs(10), a.hold())
        .await
        .expect("a notices within a renewal period");
    assert!(matches!(lost, Lost::Taken), "{lost:?}");
    assert!(b.try_lead().await.expect("lease"), "b renews what it holds");
}
