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
