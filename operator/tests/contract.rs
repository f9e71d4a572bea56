//! Contract test: the Deployment and ConfigMap the operator renders for a sample gateway, run for real.
//! The container's args, its environment (Secret references resolved to test values) and its mounted
//! files (ConfigMap and Secret volumes, written to a temporary root) start the real `herald-gateway`
//! binary against the test PostgreSQL and Redis, and a token -> connect -> publish -> receive round trip
//! goes through it. This proves the operator configures a gateway that works.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use herald_e2e::{GatewayProcess, TempDir, fresh_database, recv_json, run_to_exit, service_url};
use herald_operator::crd::{DEFAULT_GATEWAY_IMAGE, NotificationChannel, NotificationGateway};
use herald_operator::render;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, PodSpec, Secret};
use serde_json::json;

const JWT_SECRET: &str = "contract-user-jwt-secret-0123456789-abcdef";
const PUBLISHER_KEY: &str = "contract-publisher-key-0123456789abcdef";

fn sample(database_secret: &str, redis_secret: &str) -> (NotificationGateway, NotificationChannel) {
    let mut gateway: NotificationGateway = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
        "metadata": {"name": "contract", "namespace": "apps", "uid": "7c1c7d2e-0000-4000-8000-00000000c0de"},
        "spec": {
            "replicas": 2,
            "postgres": {"urlSecretRef": {"name": database_secret, "key": "url"}},
            "redis": {"urlSecretRef": {"name": redis_secret, "key": "url"}},
            "auth": {"hs256SecretRef": {"name": "jwt", "key": "secret"},
                     "issuer": herald_e2e::JWT_ISSUER, "audience": herald_e2e::JWT_AUDIENCE},
            "publisherKeysSecretRef": {"name": "publishers", "key": "keys"},
        }
    }))
    .expect("gateway");
    gateway.metadata.generation = Some(1);
    let channel: NotificationChannel = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationChannel",
        "metadata": {"name": "social", "namespace": "apps"},
        "spec": {"gatewayRef": {"name": "contract"}, "types": ["new_like", "new_comment"]},
    }))
    .expect("channel");
    (gateway, channel)
}

/// Maps a container path onto the temporary root.
fn host_path(root: &Path, container_path: &str) -> PathBuf {
    root.join(container_path.trim_start_matches('/'))
}

/// Rewrites container paths inside a value (env, file content) to their place under `root`.
fn relocate(root: &Path, text: &str) -> String {
    text.replace(
        "/etc/herald/",
        &format!("{}/", host_path(root, "/etc/herald").display()),
    )
    .replace(
        "/var/lib/herald",
        &host_path(root, "/var/lib/herald").display().to_string(),
    )
}

/// Writes every volume the container mounts, as the kubelet would, under `root`.
fn mount_volumes(root: &Path, pod: &PodSpec, container: &Container, config: &ConfigMap, keys: &Secret) {
    for mount in container.volume_mounts.clone().unwrap_or_default() {
        let volume = pod
            .volumes
            .as_ref()
            .and_then(|v| v.iter().find(|v| v.name == mount.name))
            .expect("every mount has a volume");
        let dir = host_path(root, &mount.mount_path);
        std::fs::create_dir_all(&dir).expect("mount dir");
        let files: Vec<(String, String)> = if volume.config_map.is_some() {
            config.data.clone().unwrap_or_default().into_iter().collect()
        } else if volume.secret.is_some() {
            keys.string_data.clone().unwrap_or_default().into_iter().collect()
        } else {
            Vec::new() // emptyDir
        };
        for (name, content) in files {
            std::fs::write(dir.join(name), relocate(root, &content)).expect("write mounted file");
        }
    }
}

/// The container's environment with every Secret reference resolved from `secrets`.
fn resolve_env(root: &Path, env: &[EnvVar], secrets: &HashMap<(&str, &str), String>) -> Vec<(String, String)> {
    env.iter()
        .map(|var| {
            let value = match (
                &var.value,
                var.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()),
            ) {
                (Some(value), _) => relocate(root, value),
                (None, Some(reference)) => secrets
                    .get(&(reference.name.as_str(), reference.key.as_str()))
                    .unwrap_or_else(|| panic!("no test value for Secret {}/{}", reference.name, reference.key))
                    .clone(),
                (None, None) => panic!("{} has neither a value nor a Secret reference", var.name),
            };
            (var.name.clone(), value)
        })
        .collect()
}

/// A container's args and resolved environment, with its volumes mounted under `root`.
fn invocation(
    root: &Path,
    pod: &PodSpec,
    container: &Container,
    config: &ConfigMap,
    keys: &Secret,
    secrets: &HashMap<(&str, &str), String>,
) -> (Vec<String>, Vec<(String, String)>) {
    mount_volumes(root, pod, container, config, keys);
    let env = resolve_env(root, container.env.as_deref().unwrap_or_default(), secrets);
    (container.args.clone().unwrap_or_default(), env)
}

fn borrowed(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The signing-key Secret as the operator first creates it: one key, signing at once.
fn first_signing_keys(gateway: &NotificationGateway) -> k8s_openapi::api::core::v1::Secret {
    let policy = herald_operator::signing::policy(gateway).expect("policy");
    let mut new_key = || {
        (
            herald_operator::keys::new_kid(),
            herald_operator::keys::random_secret_base64(),
        )
    };
    let (keys, _) =
        herald_operator::rotation::rotate(&[], k8s_openapi::jiff::Timestamp::now(), &policy, false, &mut new_key);
    render::signing_keys(gateway, &herald_operator::keys::to_json(&keys))
}

fn user_jwt(sub: &str) -> String {
    herald_e2e::hs256_jwt(JWT_SECRET, sub, 300, &[])
}

#[tokio::test]
async fn the_rendered_deployment_runs_a_working_gateway() {
    let Some(admin) = service_url("HERALD_TEST_DATABASE_URL") else {
        return;
    };
    let Some(redis_url) = service_url("HERALD_TEST_REDIS_URL") else {
        return;
    };
    let (gateway, channel) = sample("db", "cache");
    let (config, checksum) = render::config_map(&gateway, &[&channel]);
    let keys = first_signing_keys(&gateway);
    let deployment = render::deployment(&gateway, DEFAULT_GATEWAY_IMAGE, &checksum);
    let pod = deployment.spec.expect("spec").template.spec.expect("pod");
    let secrets: HashMap<(&str, &str), String> = HashMap::from([
        (("db", "url"), fresh_database(&admin)),
        (("cache", "url"), redis_url),
        (("jwt", "secret"), JWT_SECRET.to_owned()),
        (("publishers", "keys"), format!("contract={PUBLISHER_KEY}")),
    ]);
    let root = TempDir::new();

    // The migration Job first, then the init container (it finds the schema), then the gateway
    // container, each with its own args, environment and mounts.
    let job = render::migration_job(&gateway, DEFAULT_GATEWAY_IMAGE, &[]).expect("a migration Job in cluster mode");
    let job_pod = job.spec.expect("spec").template.spec.expect("pod");
    let (job_args, job_env) = invocation(&root.0, &job_pod, &job_pod.containers[0], &config, &keys, &secrets);
    let (status, output) = run_to_exit(&borrowed(&job_args), &pairs(&job_env));
    assert!(status.success(), "the migration Job succeeds: {output}");
    let init = &pod.init_containers.clone().expect("the pods wait for the schema")[0];
    let (init_args, init_env) = invocation(&root.0, &pod, init, &config, &keys, &secrets);
    let (status, output) = run_to_exit(&borrowed(&init_args), &pairs(&init_env));
    assert!(
        status.success(),
        "the init container finds the schema applied: {output}"
    );
    let (args, env) = invocation(&root.0, &pod, &pod.containers[0], &config, &keys, &secrets);
    let gateway_process = GatewayProcess::start(&borrowed(&args), &pairs(&env));

    // Token -> connect -> publish -> receive, through the gateway the operator configured.
    let token = gateway_process.issue_token(&user_jwt("alice")).await;
    let (mut ws, connected) = gateway_process.open_ws(&token).await.expect("websocket");
    assert_eq!(
        connected["payload"]["subscriptions"],
        json!(["social"]),
        "the CR's channel reached the gateway"
    );
    let notification = publish_and_receive(&gateway_process, &mut ws, "from the contract test").await;
    assert_eq!(notification["payload"]["channel"], "social");
    drop(ws);
}

#[tokio::test]
async fn the_embedded_example_gateway_runs_from_its_rendered_deployment() {
    // The shipped example, as a newcomer applies it: one replica, embedded default, HS256 user JWTs.
    let text = std::fs::read_to_string(format!(
        "{}/../examples/gateway-embedded.yaml",
        std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo for the tests it runs")
    ))
    .expect("example");
    let document = text
        .split("\n---\n")
        .find(|d| d.contains("kind: NotificationGateway"))
        .expect("gateway document");
    let mut gateway: NotificationGateway = serde_norway::from_str(document).expect("gateway");
    gateway.metadata.namespace = Some("default".into());
    gateway.metadata.uid = Some("0b1e0e0e-0000-4000-8000-00000000e3bd".into());
    let (config, checksum) = render::config_map(&gateway, &[]);
    let keys = first_signing_keys(&gateway);
    let pod = render::deployment(&gateway, DEFAULT_GATEWAY_IMAGE, &checksum)
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod");
    assert!(pod.init_containers.is_none(), "no migrations for the embedded default");
    let secrets: HashMap<(&str, &str), String> = HashMap::from([
        (("demo-jwt", "secret"), JWT_SECRET.to_owned()),
        (("demo-publishers", "keys"), format!("demo={PUBLISHER_KEY}")),
    ]);
    let root = TempDir::new();
    let (args, env) = invocation(&root.0, &pod, &pod.containers[0], &config, &keys, &secrets);
    let gateway_process = GatewayProcess::start(&borrowed(&args), &pairs(&env));
    // A JWT as the example's identity provider would issue it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let auth = &gateway.spec.auth;
    let jwt = herald_e2e::sign_hs256(
        JWT_SECRET,
        &json!({"sub": "alice", "exp": now + 300, "iss": auth.issuer, "aud": auth.audience}),
    );
    let token = gateway_process.issue_token(&jwt).await;
    let (mut ws, connected) = gateway_process.open_ws(&token).await.expect("websocket");
    assert_eq!(connected["type"], "connected");
    assert_eq!(
        connected["payload"]["subscriptions"],
        json!(["uploads", "social", "mocs", "quota", "system"])
    );
    // The example's publisher key publishes.
    publish_and_receive(&gateway_process, &mut ws, "from the example").await;
}

/// Publishes a `new_like` to alice with the test publisher key and returns it as `ws` receives it.
async fn publish_and_receive(gateway: &GatewayProcess, ws: &mut herald_e2e::Ws, title: &str) -> serde_json::Value {
    let published = reqwest::Client::new()
        .post(gateway.internal_url("/api/publish"))
        .bearer_auth(PUBLISHER_KEY)
        .json(&json!({"userIds": ["alice"], "notification": {"type": "new_like", "title": title}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 202);
    let notification = loop {
        let message = recv_json(ws).await;
        if message["type"] == "notification" {
            break message;
        }
    };
    assert_eq!(notification["payload"]["title"], title);
    notification
}
