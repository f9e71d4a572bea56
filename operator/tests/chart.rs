//! The Helm chart: it lints, its values schema refuses bad values, every manifest it renders is
//! accepted by the test kube-apiserver in a server-side dry run, its RBAC (cluster-wide, or per
//! watched namespace) is enough for a whole reconcile and no more than it says, and its NetworkPolicy
//! admits only the metrics port. helm is built from its Go module (`scripts/helm`, exported by
//! scripts/test as HERALD_HELM_BIN). The test apiserver authorizes with RBAC
//! (`--authorization-mode=RBAC`), so SubjectAccessReviews and impersonated calls are real verdicts.

use std::process::Command;
use std::sync::Arc;

use herald_operator::admission::{ImagePolicy, SECRET_OPT_IN_LABEL, SECRET_OPT_IN_VALUE};
use herald_operator::controller::{self, Context};
use herald_operator::crd::{DEFAULT_GATEWAY_IMAGE, NotificationChannel, NotificationGateway};
use herald_operator::signing;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

/// The chart, read where the test runs (the checkout cargo runs it from), not built in with `env!`:
/// a build reused from a checkout elsewhere would read that checkout's chart.
fn chart() -> String {
    format!(
        "{}/../charts/herald-operator",
        std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo for the tests it runs")
    )
}

fn helm(helm: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(helm).args(args).output().expect("helm runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `helm template` of the chart as release `release` in `namespace`, with `extra` arguments, as
/// objects (the CRDs among them: they are templates).
fn render(bin: &str, release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", release, chart.as_str(), "--namespace", namespace];
    args.extend_from_slice(extra);
    let (ok, rendered) = helm(bin, &args);
    assert!(ok, "helm template: {rendered}");
    rendered
        .split("\n---")
        .filter(|d| d.contains("kind:"))
        .map(|document| serde_norway::from_str(document).expect("rendered YAML is an object"))
        .collect()
}

/// The chart as release `herald` in `herald-system`, with each of `sets` as a `--set`.
fn render_with(bin: &str, sets: &[&str]) -> Vec<Value> {
    let args: Vec<&str> = sets.iter().flat_map(|set| ["--set", set]).collect();
    render(bin, "herald", "herald-system", &args)
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The verbs a set of RBAC rules grants on `resource` (`secrets`, `deployments`, ...).
fn verbs_on(rules: &Value, resource: &str) -> Vec<String> {
    let mut verbs: Vec<String> = rules
        .as_array()
        .expect("rules")
        .iter()
        .filter(|rule| {
            rule["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == resource))
        })
        .flat_map(|rule| rule["verbs"].as_array().cloned().unwrap_or_default())
        .map(|verb| verb.as_str().expect("verb").to_owned())
        .collect();
    verbs.sort();
    verbs
}

fn env_of(objects: &[Value], name: &str) -> Option<String> {
    let deployment = of_kind(objects, "Deployment")[0];
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|var| var["name"] == name)
        .map(|var| var["value"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn the_chart_lints_and_its_schema_refuses_bad_values() {
    let Some(bin) = herald_e2e::service_url("HERALD_HELM_BIN") else {
        return;
    };
    let (ok, output) = helm(&bin, &["lint", &chart()]);
    assert!(ok, "helm lint: {output}");
    for (set, field) in [
        ("replicaCount=0", "replicaCount"),
        ("gateway.allowedImages=null", "allowedImages"),
        ("gateway.allowedImages={a b}", "allowedImages"),
        ("gateway.image.repository=registry.example.com/herald:1.0", "repository"),
        ("gateway.image.tag=-bad", "tag"),
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("networkPolicy.enabled=maybe", "enabled"),
    ] {
        let (ok, output) = helm(&bin, &["template", "herald", &chart(), "--set", set]);
        assert!(
            !ok && output.contains(field),
            "values.schema.json refuses {set}: {output}"
        );
    }
    let (ok, output) = helm(&bin, &["template", "herald", &chart(), "--set", "colour=blue"]);
    assert!(!ok, "unknown values are refused: {output}");
}

#[test]
fn cluster_wide_rbac_grants_only_the_calls_the_operator_makes() {
    let Some(bin) = herald_e2e::service_url("HERALD_HELM_BIN") else {
        return;
    };
    let objects = render_with(&bin, &[]);
    let cluster_roles = of_kind(&objects, "ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    let rules = &cluster_roles[0]["rules"];
    assert_eq!(
        verbs_on(rules, "secrets"),
        ["create", "get", "patch"],
        "no list or watch of Secrets"
    );
    // get: each child's metadata is read before it is written, so a gateway cannot be named after an
    // object it does not control and have the operator take it over.
    for owned in ["configmaps", "services", "deployments"] {
        assert_eq!(
            verbs_on(rules, owned),
            ["create", "get", "list", "patch", "watch"],
            "{owned}"
        );
    }
    // The operator rotates keys itself: no rotation job, so no right to make identities or roles.
    for absent in ["serviceaccounts", "cronjobs", "roles", "rolebindings"] {
        assert!(verbs_on(rules, absent).is_empty(), "{absent}");
    }
    for owned in ["jobs", "persistentvolumeclaims"] {
        assert_eq!(
            verbs_on(rules, owned),
            ["create", "get", "list", "patch", "watch"],
            "{owned}"
        );
    }
    assert_eq!(
        verbs_on(rules, "poddisruptionbudgets"),
        ["create", "delete", "get", "list", "patch", "watch"]
    );
    assert_eq!(
        verbs_on(rules, "servicemonitors"),
        ["create", "delete", "get", "patch"],
        "a gateway's ServiceMonitor, never listed or watched (the kind may not exist)"
    );
    assert_eq!(verbs_on(rules, "notificationgateways/finalizers"), ["update"]);
    assert_eq!(
        verbs_on(rules, "endpointslices"),
        ["list"],
        "which pods to ask for Programmed"
    );
    assert!(
        verbs_on(rules, "leases").is_empty(),
        "the Lease is granted in one namespace only"
    );
    let granted = |field: &str| -> Vec<String> {
        rules
            .as_array()
            .expect("rules")
            .iter()
            .flat_map(|rule| rule[field].as_array().cloned().unwrap_or_default())
            .map(|v| v.as_str().expect("string").to_owned())
            .collect()
    };
    let verbs = granted("verbs");
    for never in ["*", "escalate", "bind", "impersonate", "deletecollection"] {
        assert!(!verbs.iter().any(|v| v == never), "{never} in {verbs:?}");
    }
    let resources = granted("resources");
    for never in [
        "*",
        "pods",
        "nodes",
        "namespaces",
        "clusterroles",
        "clusterrolebindings",
    ] {
        assert!(!resources.iter().any(|r| r == never), "{never} in {resources:?}");
    }
    let roles = of_kind(&objects, "Role");
    assert_eq!(roles.len(), 1, "only the leader-election Role");
    assert_eq!(roles[0]["metadata"]["namespace"], "herald-system");
    assert_eq!(verbs_on(&roles[0]["rules"], "leases"), ["create", "get", "update"]);
    assert_eq!(env_of(&objects, "HERALD_OPERATOR_WATCH_NAMESPACES"), None);
    assert_eq!(
        env_of(&objects, "HERALD_OPERATOR_DEFAULT_GATEWAY_IMAGE").as_deref(),
        Some(DEFAULT_GATEWAY_IMAGE),
        "the published gateway image of the chart's version, the one the operator defaults to"
    );
    assert_eq!(
        env_of(&objects, "HERALD_OPERATOR_ALLOWED_IMAGES").as_deref(),
        Some("ghcr.io/herald-dev/herald-gateway"),
        "the default allows the operator's own gateway image only"
    );
    let list = "gateway.allowedImages={registry.local/herald/*,ghcr.io/herald-dev/herald-gateway}";
    let objects = render_with(&bin, &[list]);
    assert_eq!(
        env_of(&objects, "HERALD_OPERATOR_ALLOWED_IMAGES").as_deref(),
        Some("registry.local/herald/*,ghcr.io/herald-dev/herald-gateway")
    );
}

#[test]
fn gateway_image_points_every_gateway_at_another_registry() {
    let Some(bin) = herald_e2e::service_url("HERALD_HELM_BIN") else {
        return;
    };
    let mirror = "gateway.image.repository=registry.example.com:5000/platform/herald-gateway";
    let objects = render_with(&bin, &[mirror]);
    let version = DEFAULT_GATEWAY_IMAGE.rsplit_once(':').expect("tagged").1;
    assert_eq!(
        env_of(&objects, "HERALD_OPERATOR_DEFAULT_GATEWAY_IMAGE"),
        Some(format!("registry.example.com:5000/platform/herald-gateway:{version}")),
    );
    assert_eq!(
        env_of(&objects, "HERALD_OPERATOR_ALLOWED_IMAGES").as_deref(),
        Some("registry.example.com:5000/platform/herald-gateway"),
        "the allow-list follows the registry"
    );
    let objects = render_with(
        &bin,
        &[mirror, "gateway.image.tag=0.1.0-patched", "gateway.allowedImages={*}"],
    );
    assert_eq!(
        env_of(&objects, "HERALD_OPERATOR_DEFAULT_GATEWAY_IMAGE").as_deref(),
        Some("registry.example.com:5000/platform/herald-gateway:0.1.0-patched")
    );
    assert_eq!(env_of(&objects, "HERALD_OPERATOR_ALLOWED_IMAGES").as_deref(), Some("*"));
}

#[test]
fn watched_namespaces_get_a_role_each_and_nothing_cluster_wide() {
    let Some(bin) = herald_e2e::service_url("HERALD_HELM_BIN") else {
        return;
    };
    let objects = render_with(&bin, &["watchNamespaces={apps,web,apps}"]);
    assert!(of_kind(&objects, "ClusterRole").is_empty());
    assert!(of_kind(&objects, "ClusterRoleBinding").is_empty());
    let namespaces = |kind: &str| -> Vec<String> {
        let mut namespaces: Vec<String> = of_kind(&objects, kind)
            .iter()
            .map(|o| o["metadata"]["namespace"].as_str().expect("namespace").to_owned())
            .collect();
        namespaces.sort();
        namespaces
    };
    assert_eq!(
        namespaces("Role"),
        ["apps", "herald-system", "web"],
        "the Lease's Role besides"
    );
    assert_eq!(namespaces("RoleBinding"), ["apps", "herald-system", "web"]);
    for binding in of_kind(&objects, "RoleBinding") {
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["subjects"][0]["name"], "herald-herald-operator");
        assert_eq!(binding["subjects"][0]["namespace"], "herald-system");
    }
    assert_eq!(
        env_of(&objects, "HERALD_OPERATOR_WATCH_NAMESPACES").as_deref(),
        Some("apps,web")
    );
}

#[test]
fn the_network_policy_admits_only_the_metrics_port() {
    let Some(bin) = herald_e2e::service_url("HERALD_HELM_BIN") else {
        return;
    };
    let objects = render_with(&bin, &[]);
    let policies = of_kind(&objects, "NetworkPolicy");
    assert_eq!(policies.len(), 1, "on by default");
    let spec = &policies[0]["spec"];
    let pod_labels = &of_kind(&objects, "Deployment")[0]["spec"]["template"]["metadata"]["labels"];
    for (key, value) in spec["podSelector"]["matchLabels"].as_object().expect("selector") {
        assert_eq!(&pod_labels[key], value, "selects the operator's pods");
    }
    assert_eq!(spec["policyTypes"], json!(["Ingress"]));
    let ingress = spec["ingress"].as_array().expect("ingress");
    assert_eq!(ingress.len(), 1);
    assert_eq!(ingress[0]["ports"], json!([{"port": "metrics", "protocol": "TCP"}]));
    assert!(ingress[0].get("from").is_none(), "any source, on that port only");
    let container = &of_kind(&objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["ports"], json!([{"name": "metrics", "containerPort": 8080}]));

    let scraper =
        r#"networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name=monitoring"#;
    let objects = render_with(&bin, &[scraper]);
    let from = &of_kind(&objects, "NetworkPolicy")[0]["spec"]["ingress"][0]["from"];
    assert_eq!(
        from,
        &json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
    );
    let objects = render_with(&bin, &["networkPolicy.enabled=false"]);
    assert!(of_kind(&objects, "NetworkPolicy").is_empty());
}

#[test]
fn monitoring_plug_ins_render_only_when_asked_and_carry_the_tested_files() {
    let Some(bin) = herald_e2e::service_url("HERALD_HELM_BIN") else {
        return;
    };
    let objects = render_with(&bin, &[]);
    for kind in ["Service", "ServiceMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(of_kind(&objects, kind).is_empty(), "no {kind} by default");
    }
    let objects = render_with(
        &bin,
        &[
            "monitoring.serviceMonitor.enabled=true",
            "monitoring.serviceMonitor.labels.release=kube-prometheus",
            "monitoring.prometheusRule.enabled=true",
            "monitoring.grafanaDashboard.enabled=true",
            "monitoring.grafanaDashboard.namespace=monitoring",
        ],
    );
    // The Service selects the operator's pods and targets their metrics port; the ServiceMonitor
    // selects that Service and carries the label a Prometheus selects by.
    let pod_labels = &of_kind(&objects, "Deployment")[0]["spec"]["template"]["metadata"]["labels"];
    let service = of_kind(&objects, "Service")[0];
    for (key, value) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod_labels[key], value, "selects the operator's pods");
    }
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}])
    );
    let monitor = of_kind(&objects, "ServiceMonitor")[0];
    assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "selects the metrics Service"
        );
    }
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{"port": "metrics", "path": "/metrics", "interval": "30s", "honorLabels": true}])
    );
    // The PrometheusRule holds the rule file promtool tests, unchanged (its Prometheus templates
    // are not Helm's).
    let file = |name: &str| std::fs::read_to_string(format!("{}/files/{name}", chart())).expect("chart file");
    let rules: Value = serde_norway::from_str(&file("prometheus-rules.yaml")).expect("rule file");
    let rule = of_kind(&objects, "PrometheusRule")[0];
    assert_eq!(rule["spec"], rules);
    assert!(
        rule["spec"].to_string().contains("{{ $labels.namespace }}"),
        "alert templates kept for Prometheus"
    );
    let dashboard = of_kind(&objects, "ConfigMap")[0];
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value =
        serde_json::from_str(dashboard["data"]["herald.json"].as_str().expect("dashboard")).expect("JSON");
    assert_eq!(
        json,
        serde_json::from_str::<Value>(&file("grafana-dashboard.json")).expect("file")
    );

    let (ok, output) = helm(
        &bin,
        &["lint", &chart(), "--set", "monitoring.serviceMonitor.interval=soon"],
    );
    assert!(
        !ok && output.contains("interval"),
        "a malformed interval is refused: {output}"
    );
}

/// A client for the test apiserver and helm, or `None` (loudly) when either is missing.
async fn apiserver_and_helm() -> Option<(Client, String)> {
    let bin = herald_e2e::service_url("HERALD_HELM_BIN")?;
    herald_e2e::service_url("KUBECONFIG")?;
    Some((Client::try_default().await.expect("client"), bin))
}

async fn create_namespace(admin: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    let _ = Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await;
}

/// Server-side applies `object` (or only dry-runs it) in its own namespace, else in `namespace`.
async fn apply(admin: &Client, namespace: &str, object: &Value, dry_run: bool) -> Result<(), kube::Error> {
    let object: DynamicObject = serde_json::from_value(object.clone()).expect("object");
    let types = object.types.clone().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("group/version/kind");
    let (resource, capabilities) = pinned_kind(admin, &gvk).await.expect("the apiserver knows the kind");
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            let namespace = object
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| namespace.to_owned());
            Api::namespaced_with(admin.clone(), &namespace, &resource)
        }
        Scope::Cluster => Api::all_with(admin.clone(), &resource),
    };
    let params = PatchParams::apply("herald-chart-test").force();
    let params = if dry_run { params.dry_run() } else { params };
    api.patch(&object.name_any(), &params, &Patch::Apply(&object))
        .await
        .map(|_| ())
}

/// The CRDs are chart templates (so `helm upgrade` upgrades them), identical to what the types
/// render, kept on uninstall unless told otherwise, and absent when the chart is told to leave them.
#[test]
fn the_chart_templates_the_crds_and_keeps_them_on_uninstall() {
    let Some(bin) = herald_e2e::service_url("HERALD_HELM_BIN") else {
        return;
    };
    let rendered = render_with(&bin, &[]);
    let crds = of_kind(&rendered, "CustomResourceDefinition");
    assert_eq!(crds.len(), 2);
    for crd in &crds {
        assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
        assert_eq!(crd["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm");
        let name = crd["metadata"]["name"].as_str().expect("name");
        let typed = [NotificationGateway::crd(), NotificationChannel::crd()]
            .into_iter()
            .find(|c| c.name_any() == name)
            .expect("a CRD of the types");
        assert_eq!(
            crd["spec"],
            serde_json::to_value(&typed).expect("json")["spec"],
            "{name} is the types' CRD"
        );
    }
    let unkept = render_with(&bin, &["crds.keep=false"]);
    assert!(
        of_kind(&unkept, "CustomResourceDefinition")
            .iter()
            .all(|c| c["metadata"]["annotations"].is_null())
    );
    assert!(of_kind(&render_with(&bin, &["crds.enabled=false"]), "CustomResourceDefinition").is_empty());
}

#[tokio::test]
async fn every_rendered_manifest_passes_a_server_side_dry_run() {
    let Some((client, bin)) = apiserver_and_helm().await else {
        return;
    };
    let namespace = herald_e2e::unique_name("chart");
    let watched = herald_e2e::unique_name("chart-w");
    create_namespace(&client, &namespace).await;
    create_namespace(&client, &watched).await;
    let watching = format!("watchNamespaces={{{watched}}}");
    for (values, expected) in [
        (
            "watchNamespaces=null",
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "CustomResourceDefinition",
                "CustomResourceDefinition",
                "Deployment",
                "NetworkPolicy",
                "Role",
                "RoleBinding",
                "ServiceAccount",
            ],
        ),
        (
            watching.as_str(),
            [
                "CustomResourceDefinition",
                "CustomResourceDefinition",
                "Deployment",
                "NetworkPolicy",
                "Role",
                "Role",
                "RoleBinding",
                "RoleBinding",
                "ServiceAccount",
            ],
        ),
    ] {
        let objects = render(&bin, "herald", &namespace, &["--set", values]);
        let mut kinds = Vec::new();
        for object in &objects {
            apply(&client, &namespace, object, true)
                .await
                .unwrap_or_else(|e| panic!("{} {} refused: {e}", object["kind"], object["metadata"]["name"]));
            kinds.push(object["kind"].as_str().expect("kind").to_owned());
        }
        kinds.sort();
        assert_eq!(kinds, expected, "{values}");
    }
}

/// The operator as the chart installs it: its RBAC applied for real in `namespace` (the release's),
/// and a client impersonating its ServiceAccount. Returns that client and the account's user name.
async fn install_operator_rbac(admin: &Client, bin: &str, namespace: &str, extra: &[&str]) -> (Client, String) {
    let release = format!("r{}", std::process::id());
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    // The Prometheus Operator's ServiceMonitor kind too: the reconcile applies the gateway's.
    let monitors: CustomResourceDefinition =
        serde_json::from_value(herald_e2e::service_monitor_crd()).expect("ServiceMonitor CRD");
    for crd in [NotificationGateway::crd(), NotificationChannel::crd(), monitors] {
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("herald-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("CRD");
    }
    let served: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        namespace,
        &herald_operator::render::service_monitor_resource(),
    );
    for _ in 0..300 {
        if served.list(&Default::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let objects = render(bin, &release, namespace, extra);
    let mut account = String::new();
    for object in &objects {
        let kind = object["kind"].as_str().expect("kind");
        if kind == "ServiceAccount" {
            account = object["metadata"]["name"].as_str().expect("name").to_owned();
        }
        if [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ]
        .contains(&kind)
        {
            apply(admin, namespace, object, false).await.expect("RBAC applies");
        }
    }
    let user = format!("system:serviceaccount:{namespace}:{account}");
    let mut config = kube::Config::infer().await.expect("config");
    config.auth_info.impersonate = Some(user.clone());
    (Client::try_from(config).expect("impersonating client"), user)
}

/// A gateway in `namespace` with opted-in Secrets and a channel, reconciled as `operator`: every
/// call of a whole reconcile (children, signing keys and a requested rotation, statuses, events).
async fn reconcile_as(operator: &Client, admin: &Client, namespace: &str) {
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), namespace);
    for name in ["db", "cache"] {
        let secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {(SECRET_OPT_IN_LABEL): SECRET_OPT_IN_VALUE}},
            "stringData": {"url": "redis://cache"}
        }))
        .expect("secret");
        secrets.create(&PostParams::default(), &secret).await.expect("secret");
    }
    let gateway: NotificationGateway = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway", "metadata": {"name": "rbac"},
        "spec": {"replicas": 2, "postgres": {"urlSecretRef": {"name": "db", "key": "url"}},
                 "redis": {"urlSecretRef": {"name": "cache", "key": "url"}}, "auth": {"jwksUrl": "https://i/jwks", "issuer": "https://issuer.example/", "audience": "herald"},
                 "monitoring": {"serviceMonitor": {"enabled": true}}}
    }))
    .expect("gateway");
    Api::<NotificationGateway>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &gateway)
        .await
        .expect("gateway");
    let channel: NotificationChannel = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationChannel", "metadata": {"name": "social"},
        "spec": {"gatewayRef": {"name": "rbac"}, "types": ["new_like"]}
    }))
    .expect("channel");
    Api::<NotificationChannel>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &channel)
        .await
        .expect("channel");

    let context = Arc::new(Context::new(operator.clone(), None, ImagePolicy::default()));
    let reconcile = |why: &'static str| {
        let (operator, context) = (operator.clone(), context.clone());
        async move {
            let gateway = Api::<NotificationGateway>::namespaced(operator, namespace)
                .get("rbac")
                .await
                .expect("read as operator");
            controller::reconcile_gateway(Arc::new(gateway), context)
                .await
                .expect(why);
        }
    };
    reconcile("the chart's RBAC allows a whole reconcile").await;
    assert!(
        Api::<Deployment>::namespaced(admin.clone(), namespace)
            .get_opt("rbac")
            .await
            .expect("get")
            .is_some(),
        "the gateway was rendered, not refused"
    );
    let monitors: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        namespace,
        &herald_operator::render::service_monitor_resource(),
    );
    assert!(
        monitors.get_opt("rbac").await.expect("get").is_some(),
        "the chart's RBAC allows the gateway's ServiceMonitor"
    );
    // A requested rotation: the operator patches the signing-key Secret (compare-and-swap).
    let gateways = Api::<NotificationGateway>::namespaced(admin.clone(), namespace);
    let annotate = json!({"metadata": {"annotations": {(signing::ROTATE_ANNOTATION): "1"}}});
    gateways
        .patch("rbac", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .expect("annotate");
    reconcile("the chart's RBAC allows a rotation").await;
    let keys = Api::<Secret>::namespaced(admin.clone(), namespace)
        .get("rbac-signing-keys")
        .await
        .expect("signing keys");
    assert_eq!(
        signing::read(&keys).expect("key set").len(),
        2,
        "a pending key was added"
    );
    let channel = Api::<NotificationChannel>::namespaced(operator.clone(), namespace)
        .get("social")
        .await
        .expect("read");
    controller::reconcile_channel(Arc::new(channel), context)
        .await
        .expect("channel reconcile");
}

/// What `kubectl auth can-i --as=<user> <verb> <resource> -n <namespace>` answers, by a
/// SubjectAccessReview. `resource` is `plural` or `plural.group`.
async fn can(admin: &Client, user: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {"user": user, "resourceAttributes": {
            "verb": verb, "group": group, "resource": resource, "namespace": namespace}}
    }))
    .expect("review");
    Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

async fn create_secret(admin: &Client, namespace: &str, name: &str) {
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"password": "x"}})).expect("secret");
    Api::<Secret>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
}

#[tokio::test]
async fn the_cluster_wide_rbac_is_enough_to_reconcile_and_to_lead_and_no_more() {
    use herald_operator::leader::{LeaderElection, Timing};
    use k8s_openapi::api::coordination::v1::Lease;

    let Some((admin, bin)) = apiserver_and_helm().await else {
        return;
    };
    let namespace = herald_e2e::unique_name("rbac");
    create_namespace(&admin, &namespace).await;
    let (operator, user) = install_operator_rbac(&admin, &bin, &namespace, &[]).await;
    reconcile_as(&operator, &admin, &namespace).await;

    let election = LeaderElection::new(
        Api::<Lease>::namespaced(operator.clone(), &namespace),
        "herald-operator",
        "a",
        Timing::DEFAULT,
    );
    assert!(
        election.try_lead().await.expect("the Lease Role allows leading"),
        "leads at once"
    );
    election.release().await.expect("the Lease Role allows releasing");

    let elsewhere = Some("default");
    for (verb, resource, namespace) in [
        ("list", "secrets", elsewhere),
        ("watch", "secrets", elsewhere),
        ("list", "secrets", None),
        ("delete", "secrets", elsewhere),
        ("delete", "deployments.apps", elsewhere),
        ("create", "pods", elsewhere),
        ("escalate", "roles.rbac.authorization.k8s.io", elsewhere),
        ("bind", "clusterroles.rbac.authorization.k8s.io", None),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
        ("get", "leases.coordination.k8s.io", elsewhere),
        ("update", "leases.coordination.k8s.io", elsewhere),
    ] {
        assert!(
            !can(&admin, &user, verb, resource, namespace).await,
            "the operator may not {verb} {resource} in {namespace:?}"
        );
    }
}

#[tokio::test]
async fn with_watched_namespaces_the_operator_can_not_touch_any_other_namespace() {
    let Some((admin, bin)) = apiserver_and_helm().await else {
        return;
    };
    let release_namespace = herald_e2e::unique_name("nsrbac");
    let watched = herald_e2e::unique_name("nsrbac-w");
    let other = herald_e2e::unique_name("nsrbac-o");
    for namespace in [&release_namespace, &watched, &other] {
        create_namespace(&admin, namespace).await;
    }
    let values = format!("watchNamespaces={{{watched}}}");
    let (operator, user) = install_operator_rbac(&admin, &bin, &release_namespace, &["--set", &values]).await;
    reconcile_as(&operator, &admin, &watched).await;

    // A real read, refused: a Secret of a namespace the operator does not watch.
    create_secret(&admin, &other, "payments").await;
    let err = Api::<Secret>::namespaced(operator.clone(), &other)
        .get_metadata("payments")
        .await
        .expect_err("forbidden");
    assert!(matches!(&err, kube::Error::Api(status) if status.code == 403), "{err}");
    let err = Api::<NotificationGateway>::all(operator.clone())
        .list(&Default::default())
        .await
        .expect_err("no cluster-wide watch");
    assert!(matches!(&err, kube::Error::Api(status) if status.code == 403), "{err}");

    for resource in [
        "secrets",
        "deployments.apps",
        "notificationgateways.herald.dev",
        "roles.rbac.authorization.k8s.io",
    ] {
        for verb in ["get", "create", "patch", "list"] {
            assert!(
                !can(&admin, &user, verb, resource, Some(&other)).await,
                "may not {verb} {resource} in an unwatched namespace"
            );
            assert!(
                !can(&admin, &user, verb, resource, None).await,
                "may not {verb} {resource} cluster-wide"
            );
        }
    }
    assert!(can(&admin, &user, "get", "secrets", Some(&watched)).await);
    assert!(!can(&admin, &user, "list", "secrets", Some(&watched)).await);
}
