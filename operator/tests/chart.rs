//! The Helm chart: it lints, its values schema refuses bad values, and every manifest it renders is
//! accepted by the test kube-apiserver in a server-side dry run. helm is built from its Go module
//! (`scripts/helm`, exported by scripts/test as HERALD_HELM_BIN).

use std::process::Command;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/herald-operator");

fn helm(helm: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(helm).args(args).output().expect("helm runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_chart_lints_and_its_schema_refuses_bad_values() {
    let Some(bin) = herald_e2e::service_url("HERALD_HELM_BIN") else {
        return;
    };
    let (ok, output) = helm(&bin, &["lint", CHART]);
    assert!(ok, "helm lint: {output}");
    let (ok, output) = helm(&bin, &["template", "herald", CHART, "--set", "replicaCount=0"]);
    assert!(
        !ok && output.contains("replicaCount"),
        "values.schema.json refuses replicaCount=0: {output}"
    );
    let (ok, output) = helm(&bin, &["template", "herald", CHART, "--set", "colour=blue"]);
    assert!(!ok, "unknown values are refused: {output}");
}

#[tokio::test]
async fn every_rendered_manifest_passes_a_server_side_dry_run() {
    let Some(bin) = herald_e2e::service_url("HERALD_HELM_BIN") else {
        return;
    };
    if herald_e2e::service_url("KUBECONFIG").is_none() {
        return;
    }
    let namespace = format!("chart-{}", std::process::id());
    let (ok, rendered) = helm(
        &bin,
        &["template", "herald", CHART, "--namespace", &namespace, "--include-crds"],
    );
    assert!(ok, "helm template: {rendered}");
    let client = Client::try_default().await.expect("client");
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).expect("ns");
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;

    let mut kinds = Vec::new();
    for document in rendered.split("\n---").filter(|d| d.contains("kind:")) {
        let object: DynamicObject = serde_norway::from_str(document).expect("rendered YAML is an object");
        let types = object.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("group/version/kind");
        let (resource, capabilities) = pinned_kind(&client, &gvk).await.expect("the apiserver knows the kind");
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), &namespace, &resource),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let name = object.metadata.name.clone().expect("name");
        let params = PatchParams::apply("herald-chart-test").force().dry_run();
        api.patch(&name, &params, &Patch::Apply(&object))
            .await
            .unwrap_or_else(|e| panic!("{} {name} refused: {e}", types.kind));
        kinds.push(types.kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "ServiceAccount"
        ]
    );
}

/// The chart's ClusterRole is enough: a reconcile made as the chart's ServiceAccount (impersonated)
/// succeeds, children and statuses included.
#[tokio::test]
async fn the_least_privilege_cluster_role_is_enough_to_reconcile() {
    use std::sync::Arc;

    use herald_operator::admission::ImagePolicy;
    use herald_operator::controller::{self, Context};
    use herald_operator::crd::{NotificationChannel, NotificationGateway};
    use kube::CustomResourceExt;

    let Some(bin) = herald_e2e::service_url("HERALD_HELM_BIN") else {
        return;
    };
    if herald_e2e::service_url("KUBECONFIG").is_none() {
        return;
    }
    let namespace = format!("rbac-{}", std::process::id());
    let release = format!("r{}", std::process::id());
    let (ok, rendered) = helm(&bin, &["template", &release, CHART, "--namespace", &namespace]);
    assert!(ok, "helm template: {rendered}");
    let admin = Client::try_default().await.expect("client");
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).expect("ns");
    let _ = Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(admin.clone());
    for crd in [NotificationGateway::crd(), NotificationChannel::crd()] {
        let name = kube::ResourceExt::name_any(&crd);
        crds.patch(&name, &PatchParams::apply("herald-tests").force(), &Patch::Apply(&crd))
            .await
            .expect("CRD");
    }
    // Install the chart's RBAC for real.
    let mut account = String::new();
    for document in rendered.split("\n---").filter(|d| d.contains("kind:")) {
        let object: DynamicObject = serde_norway::from_str(document).expect("object");
        let types = object.types.clone().expect("types");
        if !["ServiceAccount", "ClusterRole", "ClusterRoleBinding"].contains(&types.kind.as_str()) {
            continue;
        }
        if types.kind == "ServiceAccount" {
            account = object.metadata.name.clone().expect("name");
        }
        let gvk = GroupVersionKind::try_from(&types).expect("gvk");
        let (resource, capabilities) = pinned_kind(&admin, &gvk).await.expect("kind");
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => Api::namespaced_with(admin.clone(), &namespace, &resource),
            Scope::Cluster => Api::all_with(admin.clone(), &resource),
        };
        let name = object.metadata.name.clone().expect("name");
        api.patch(
            &name,
            &PatchParams::apply("herald-chart-test").force(),
            &Patch::Apply(&object),
        )
        .await
        .expect("apply");
    }
    let mut config = kube::Config::infer().await.expect("config");
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{account}"));
    let operator = Client::try_from(config).expect("impersonating client");

    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), &namespace);
    for name in ["db", "cache"] {
        let secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"herald.dev/gateway-secret": "true"}},
            "stringData": {"url": "redis://cache"}
        }))
        .expect("secret");
        secrets.create(&PostParams::default(), &secret).await.expect("secret");
    }
    let gateways: Api<NotificationGateway> = Api::namespaced(admin.clone(), &namespace);
    let gateway: NotificationGateway = serde_json::from_value(serde_json::json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway", "metadata": {"name": "rbac"},
        "spec": {"replicas": 2, "postgres": {"urlSecretRef": {"name": "db", "key": "url"}},
                 "redis": {"urlSecretRef": {"name": "cache", "key": "url"}}, "auth": {"jwksUrl": "https://i/jwks"}}
    }))
    .expect("gateway");
    gateways
        .create(&PostParams::default(), &gateway)
        .await
        .expect("gateway");
    let channels: Api<NotificationChannel> = Api::namespaced(admin.clone(), &namespace);
    let channel: NotificationChannel = serde_json::from_value(serde_json::json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationChannel", "metadata": {"name": "social"},
        "spec": {"gatewayRef": {"name": "rbac"}, "types": ["new_like"]}
    }))
    .expect("channel");
    channels
        .create(&PostParams::default(), &channel)
        .await
        .expect("channel");
    let context = Arc::new(Context::new(
        operator.clone(),
        None,
        "herald-operator:test".into(),
        ImagePolicy::default(),
    ));
    let gateway = Api::<NotificationGateway>::namespaced(operator.clone(), &namespace)
        .get("rbac")
        .await
        .expect("read as operator");
    controller::reconcile_gateway(Arc::new(gateway), context.clone())
        .await
        .expect("the operator's ClusterRole allows a whole reconcile");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(admin.clone(), &namespace);
    assert!(
        deployments.get_opt("rbac").await.expect("get").is_some(),
        "the gateway was rendered, not refused"
    );
    let channel = Api::<NotificationChannel>::namespaced(operator, &namespace)
        .get("social")
        .await
        .expect("read");
    controller::reconcile_channel(Arc::new(channel), context)
        .await
        .expect("channel reconcile");
}
