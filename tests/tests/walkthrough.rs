//! The walk-through of docs/operations.md ("Try it on a one-node cluster"), done as a platform
//! engineer does it, on the real one-node cluster of `scripts/cluster` with the images of
//! `scripts/images`: the chart installed with helm, the embedded example applied with kubectl, the
//! gateway reached through `kubectl port-forward`; then what a running gateway must survive: its pod
//! deleted under a connected client, a channel edited in place.
//!
//! Needs `scripts/cluster up` (its exports: HERALD_CLUSTER_KUBECONFIG, HERALD_KUBECTL and the
//! cluster's PostgreSQL and Redis URLs), `scripts/images load` and HERALD_HELM_BIN; scripts/test does
//! all three.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use herald_e2e::{Ws, client_message, recv_json, service_url, sign_hs256, unique_name};
use serde_json::{Value, json};

/// How long a rollout, a pod start or a reconcile may take on the one-node cluster.
const ROLLOUT: &str = "180s";

/// The operator's release: each walk-through holds it shared for its whole run; the test that
/// upgrades and uninstalls the chart holds it alone.
static CHART: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
/// Whether this binary installed the chart (`helm upgrade --install` once, not per test).
static INSTALLED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

/// kubectl and helm against the cluster of `scripts/cluster`.
struct Kube {
    kubectl: String,
    helm: String,
    /// The cluster's, not the `KUBECONFIG` of the operator's tests (envtest's apiserver).
    kubeconfig: String,
    repo: PathBuf,
    /// Where the images were loaded from (`HERALD_IMAGE_REGISTRY` of `scripts/images`): unset, the
    /// chart's defaults; set, the chart is pointed at it as docs/operations.md ("Images") says.
    registry: Option<String>,
}

impl Kube {
    /// `None` outside CI when the cluster is not up; in CI its absence fails the test.
    fn new() -> Option<Self> {
        Some(Kube {
            kubeconfig: service_url("HERALD_CLUSTER_KUBECONFIG")?,
            kubectl: service_url("HERALD_KUBECTL")?,
            helm: service_url("HERALD_HELM_BIN")?,
            repo: PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo for the tests it runs"))
                .join(".."),
            registry: std::env::var("HERALD_IMAGE_REGISTRY").ok().filter(|r| !r.is_empty()),
        })
    }

    /// `program` (kubectl or helm) against the cluster, from the repository's root.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("KUBECONFIG", &self.kubeconfig).current_dir(&self.repo);
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let output = self.command(program).args(args).output().expect("runs");
        assert!(
            output.status.success(),
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    }

    /// docs/operations.md, "Install the operator" (images built here, loaded into the node); once
    /// for the tests of this binary, which share the cluster.
    fn install_operator(&self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*installed {
            self.helm_upgrade("charts/herald-operator");
            *installed = true;
        }
    }

    fn helm_upgrade(&self, chart: &str) {
        let mut args = vec![
            "upgrade",
            "--install",
            "herald",
            chart,
            "--namespace",
            "herald-system",
            "--create-namespace",
            "--wait",
            "--timeout",
            ROLLOUT,
        ];
        let images = self.registry.as_ref().map(|registry| {
            [
                format!("image.repository={registry}/herald-operator"),
                format!("gateway.image.repository={registry}/herald-gateway"),
            ]
        });
        for set in images.iter().flatten() {
            args.extend(["--set", set.as_str()]);
        }
        self.helm(&args);
    }

    /// The gateway image the chart was installed with (no `spec.image` in the examples).
    fn gateway_image(&self) -> String {
        let registry = self.registry.as_deref().unwrap_or("ghcr.io/herald-dev");
        format!("{registry}/herald-gateway:{}", env!("CARGO_PKG_VERSION"))
    }

    /// Whether `kubectl args` succeeds (a `get` of something that may be gone).
    fn kubectl_succeeds(&self, args: &[&str]) -> bool {
        self.command(&self.kubectl)
            .args(args)
            .output()
            .expect("runs")
            .status
            .success()
    }

    /// Waits (up to [`ROLLOUT`]) until the gateway's `Ready` condition is true.
    fn wait_ready(&self, namespace: &str, gateway: &str) {
        let resource = format!("notificationgateway/{gateway}");
        let timeout = format!("--timeout={ROLLOUT}");
        self.kubectl(&["-n", namespace, "wait", &resource, "--for=condition=Ready", &timeout]);
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.run(&self.kubectl, args)
    }

    fn helm(&self, args: &[&str]) -> String {
        self.run(&self.helm, args)
    }

    /// A Secret's value, decoded.
    fn secret(&self, namespace: &str, name: &str, key: &str) -> String {
        let encoded = self.kubectl(&[
            "-n",
            namespace,
            "get",
            "secret",
            name,
            "-o",
            &format!("jsonpath={{.data.{key}}}"),
        ]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .expect("base64");
        String::from_utf8(bytes).expect("UTF-8")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&args)).expect("JSON")
    }

    /// `kubectl port-forward` to `target`'s `port` on a free local port, until dropped.
    fn port_forward(&self, namespace: &str, target: &str, port: u16) -> PortForward {
        let mut child = self
            .command(&self.kubectl)
            .args(["-n", namespace, "port-forward", target, &format!(":{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kubectl port-forward starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        // "Forwarding from 127.0.0.1:41234 -> 8080"
        let local = loop {
            let line = lines
                .next()
                .expect("kubectl port-forward printed where it listens")
                .expect("a line");
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                break rest.split_whitespace().next().expect("a port").parse().expect("a port");
            }
        };
        // Later lines ("Handling connection for ...") must not fill the pipe.
        std::thread::spawn(move || lines.for_each(drop));
        PortForward { child, local }
    }
}

struct PortForward {
    child: Child,
    local: u16,
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a user and a publishing service hold (the identity provider's secret, a publisher key),
/// calling a gateway's listeners at local ports (port-forwards).
struct Callers {
    http: reqwest::Client,
    jwt_secret: String,
    publisher_key: String,
}

impl Callers {
    fn new(jwt_secret: &str, publisher_key: &str) -> Self {
        Callers {
            http: client(),
            jwt_secret: jwt_secret.to_owned(),
            publisher_key: publisher_key.to_owned(),
        }
    }

    /// A user JWT as the examples' identity provider would issue it (their issuer and audience).
    fn user_jwt(&self, user: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        sign_hs256(
            &self.jwt_secret,
            &json!({"sub": user, "iat": now, "exp": now + 600, "iss": "https://auth.example.com/", "aud": "herald"}),
        )
    }

    async fn token(&self, public: u16, user: &str) -> String {
        let answer: Value = self
            .http
            .post(format!("http://127.0.0.1:{public}/ws/token"))
            .bearer_auth(self.user_jwt(user))
            .send()
            .await
            .expect("POST /ws/token")
            .error_for_status()
            .expect("a token")
            .json()
            .await
            .expect("JSON");
        answer["token"].as_str().expect("token").to_owned()
    }

    /// Opens a WebSocket with `token`; the gateway must accept it.
    async fn open(&self, public: u16, token: &str) -> (Ws, Value) {
        let url = format!("ws://127.0.0.1:{public}/ws?token={token}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket opens");
        let connected = recv_json(&mut ws).await;
        assert_eq!(connected["type"], "connected", "{connected}");
        (ws, connected)
    }

    async fn connect(&self, public: u16, user: &str) -> (Ws, Value) {
        let token = self.token(public, user).await;
        self.open(public, &token).await
    }

    async fn publish(&self, internal: u16, user: &str, kind: &str, title: &str) -> String {
        let response = self
            .http
            .post(format!("http://127.0.0.1:{internal}/api/publish"))
            .bearer_auth(&self.publisher_key)
            .json(&json!({"userIds": [user], "notification": {"type": kind, "title": title}}))
            .send()
            .await
            .expect("POST /api/publish");
        assert_eq!(response.status(), 202, "publish accepted");
        let answer: Value = response.json().await.expect("JSON");
        answer["created"][0]["id"].as_str().expect("an id").to_owned()
    }
}

/// The embedded example's gateway in `namespace`, reached the way docs/operations.md says.
struct Gateway<'k> {
    kube: &'k Kube,
    namespace: String,
    callers: Callers,
    public: PortForward,
    internal: PortForward,
}

impl<'k> Gateway<'k> {
    fn reach(kube: &'k Kube, namespace: &str) -> Self {
        let publishers = kube.secret(namespace, "demo-publishers", "keys");
        let publisher_key = publishers
            .split(',')
            .next()
            .and_then(|pair| pair.split_once('='))
            .map(|(_, key)| key.to_owned())
            .expect("name=key");
        Gateway {
            kube,
            namespace: namespace.to_owned(),
            callers: Callers::new(&kube.secret(namespace, "demo-jwt", "secret"), &publisher_key),
            public: kube.port_forward(namespace, "svc/demo", 80),
            internal: kube.port_forward(namespace, "svc/demo-internal", 9090),
        }
    }

    async fn token(&self, user: &str) -> String {
        self.callers.token(self.public.local, user).await
    }

    async fn open(&self, token: &str) -> (Ws, Value) {
        self.callers.open(self.public.local, token).await
    }

    async fn connect(&self, user: &str) -> (Ws, Value) {
        self.callers.connect(self.public.local, user).await
    }

    async fn publish(&self, user: &str, kind: &str, title: &str) -> String {
        self.callers.publish(self.internal.local, user, kind, title).await
    }

    async fn channels(&self) -> Value {
        self.callers
            .http
            .get(format!("http://127.0.0.1:{}/channels", self.internal.local))
            .send()
            .await
            .expect("GET /channels")
            .json()
            .await
            .expect("JSON")
    }

    fn pod(&self) -> Value {
        let live = live_pods(self.kube, &self.namespace, "demo");
        assert_eq!(live.len(), 1, "one pod: {live:?}");
        live[0].clone()
    }
}

/// The gateway `instance`'s pods that are not being deleted (a deleted pod drains for a while).
fn live_pods(kube: &Kube, namespace: &str, instance: &str) -> Vec<Value> {
    let selector = format!("app.kubernetes.io/name=herald-gateway,app.kubernetes.io/instance={instance}");
    let pods = kube.json(&["-n", namespace, "get", "pods", "-l", &selector]);
    pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

/// An HTTP client that opens a connection per request: through `kubectl port-forward`, a pooled
/// connection the gateway closed while idle is not seen closed locally, and reusing it fails.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// The next `notification`, skipping unread counts and the like.
async fn next_notification(ws: &mut Ws) -> Value {
    loop {
        let message = recv_json(ws).await;
        if message["type"] == "notification" {
            return message;
        }
    }
}

/// Acknowledges a notification, as every client does.
async fn ack(ws: &mut Ws, id: &str) {
    use futures_util::SinkExt;
    ws.send(client_message("notification:ack", json!({"notificationId": id})))
        .await
        .expect("ack sent");
}

/// Waits until `ws` ends (the pod behind it went away): a close frame, an error or the end.
async fn await_end(ws: &mut Ws) {
    use futures_util::StreamExt;
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection outlived its pod");
}

/// Waits until the channel's `Programmed` condition is true for its current generation.
async fn await_programmed(kube: &Kube, namespace: &str, channel: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let current = kube.json(&["-n", namespace, "get", "notificationchannel", channel]);
        let generation = &current["metadata"]["generation"];
        let programmed = current["status"]["conditions"]
            .as_array()
            .and_then(|conditions| conditions.iter().find(|c| c["type"] == "Programmed"));
        if programmed.is_some_and(|c| c["status"] == "True" && &c["observedGeneration"] == generation) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel} not Programmed for generation {generation}: {}",
            current["status"]
        );
        // The operator rechecks every 10 s; nothing to wait on but its status.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn the_walk_through_on_a_real_cluster() {
    let Some(kube) = Kube::new() else {
        return;
    };
    let _chart = CHART.read().await;
    kube.install_operator();

    // "Run a gateway": the embedded example, in a namespace of its own.
    let namespace = unique_name("walk");
    kube.kubectl(&["create", "namespace", &namespace]);
    kube.kubectl(&["-n", &namespace, "apply", "-f", "examples/gateway-embedded.yaml"]);
    kube.wait_ready(&namespace, "demo");

    // The pods run the gateway image the chart names (scripts/test loads it under a registry of
    // its own, so a pod of any other image could not start: nothing is pulled from outside).
    let image = kube.kubectl(&[
        "-n",
        &namespace,
        "get",
        "deployment/demo",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, kube.gateway_image());

    // A user connects, a service publishes, the user receives.
    let gateway = Gateway::reach(&kube, &namespace);
    let (mut ws, connected) = gateway.connect("alice").await;
    assert_eq!(connected["payload"]["userId"], "alice");
    let first = gateway.publish("alice", "new_like", "Bob likes your photo").await;
    let received = next_notification(&mut ws).await;
    assert_eq!(received["payload"]["id"], first.as_str());
    assert_eq!(received["payload"]["title"], "Bob likes your photo");
    ack(&mut ws, &first).await;

    // The gateway's pod is deleted under the connected client: the client is cut off, the
    // Deployment starts another pod on the same volume, the client reconnects and gets what it
    // had not acknowledged.
    let unacked = gateway.publish("alice", "new_comment", "Carol commented").await;
    assert_eq!(next_notification(&mut ws).await["payload"]["id"], unacked.as_str());
    let old_pod = gateway.pod()["metadata"]["name"].as_str().expect("name").to_owned();
    kube.kubectl(&["-n", &namespace, "delete", "pod", &old_pod, "--wait=false"]);
    await_end(&mut ws).await;
    kube.wait_ready(&namespace, "demo");
    kube.kubectl(&[
        "-n",
        &namespace,
        "rollout",
        "status",
        "deployment/demo",
        &format!("--timeout={ROLLOUT}"),
    ]);
    // Until the old pod has drained and gone, a port-forward to the Service could still pick it.
    kube.kubectl(&[
        "-n",
        &namespace,
        "wait",
        "--for=delete",
        &format!("pod/{old_pod}"),
        "--timeout=90s",
    ]);
    drop(gateway);
    let gateway = Gateway::reach(&kube, &namespace);
    assert_ne!(gateway.pod()["metadata"]["name"], old_pod.as_str(), "a new pod");
    let (mut ws, _) = gateway.connect("alice").await;
    let replayed = next_notification(&mut ws).await;
    assert_eq!(
        replayed["payload"]["id"],
        unacked.as_str(),
        "replayed from the volume: nothing lost"
    );
    ack(&mut ws, &unacked).await;

    // A channel added, then edited in place: the running pod serves each version without a
    // restart, and the channel's `Programmed` condition (the operator asks every ready pod) turns
    // true for that version only once the pod serves it.
    let pod_uid = gateway.pod()["metadata"]["uid"].clone();
    let mut served_before = gateway.channels().await["checksum"].clone();
    for types in [
        vec!["new_follower", "new_like"],
        vec!["new_follower", "new_like", "new_comment"],
    ] {
        let channel = json!({
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "NotificationChannel",
            "metadata": {"name": "social", "namespace": namespace},
            "spec": {"gatewayRef": {"name": "demo"}, "description": "Followers, likes and comments", "types": types},
        });
        let file = std::env::temp_dir().join(format!("{namespace}-channel.json"));
        std::fs::write(&file, channel.to_string()).expect("write");
        kube.kubectl(&["apply", "-f", file.to_str().expect("UTF-8")]);
        await_programmed(&kube, &namespace, "social").await;
        let served = gateway.channels().await;
        let config = kube.json(&["-n", &namespace, "get", "configmap", "demo-config"]);
        assert_eq!(
            served["checksum"], config["metadata"]["annotations"]["herald.dev/channels-checksum"],
            "the pod serves the rendered channels"
        );
        assert_ne!(served["checksum"], served_before, "a new version");
        assert!(
            served["channels"]
                .as_array()
                .is_some_and(|c| c.contains(&json!("social"))),
            "{served}"
        );
        served_before = served["checksum"].clone();
    }
    assert_eq!(gateway.pod()["metadata"]["uid"], pod_uid, "served without a restart");
    let liked = gateway.publish("alice", "new_like", "Dave likes your photo").await;
    assert_eq!(next_notification(&mut ws).await["payload"]["id"], liked.as_str());

    // A key rotation for real (docs/operations.md, "Signing-key rotation"): the operator adds a key, the
    // pods read it from their mounted Secret, it signs once propagated; a token signed before is
    // still accepted after, and tokens are then signed by the new key.
    let status = kube.json(&["-n", &namespace, "get", "notificationgateway", "demo"]);
    let old_key = status["status"]["activeKeyId"]
        .as_str()
        .expect("an active key")
        .to_owned();
    kube.kubectl(&[
        "-n",
        &namespace,
        "patch",
        "notificationgateway",
        "demo",
        "--type=merge",
        "-p",
        r#"{"spec":{"rotation":{"propagationSeconds":30}}}"#,
    ]);
    let before = gateway.token(&unique_name("bob")).await;
    assert_eq!(kid(&before), old_key, "signed by the active key");
    kube.kubectl(&[
        "-n",
        &namespace,
        "annotate",
        "--overwrite",
        "notificationgateway",
        "demo",
        &format!("herald.dev/rotate-keys={}", unique_name("now")),
    ]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let new_key = loop {
        let status = kube.json(&["-n", &namespace, "get", "notificationgateway", "demo"]);
        match status["status"]["activeKeyId"].as_str() {
            Some(active) if active != old_key => break active.to_owned(),
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new key: {}",
            status["status"]
        );
        // The operator's next step comes when the key has propagated; only its status says so.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    gateway.open(&before).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        // A user per token: each user may ask for ten a minute.
        let token = gateway.token(&unique_name("bob")).await;
        if kid(&token) == new_key {
            break token;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pod never signed with {new_key}"
        );
        // The pod follows its mounted Secret (refreshed by the kubelet): nothing to wait on.
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    gateway.open(&after).await;

    drop(gateway);
    kube.kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
}

/// The key id a connection token names in its header.
fn kid(token: &str) -> String {
    let header = token.split('.').next().expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url");
    let header: Value = serde_json::from_slice(&bytes).expect("JSON");
    header["kid"].as_str().expect("a kid").to_owned()
}

/// The cluster example (examples/secrets.yaml and gateway-cluster.yaml) as the docs tell a team to
/// use it: the Secrets filled with their own PostgreSQL and Redis (here the ones `scripts/cluster`
/// runs outside the cluster behind Services) and keys, and user JWTs signed with a secret of theirs
/// instead of the example's identity provider (unreachable here). A client on one pod receives
/// what is published through another; its pod deleted, it reconnects to another and loses nothing.
#[tokio::test]
async fn the_cluster_example_on_a_real_cluster() {
    let Some(kube) = Kube::new() else {
        return;
    };
    let (Some(postgres_url), Some(redis_url)) = (
        service_url("HERALD_CLUSTER_POSTGRES_URL"),
        service_url("HERALD_CLUSTER_REDIS_URL"),
    ) else {
        return;
    };
    let _chart = CHART.read().await;
    kube.install_operator();
    let namespace = unique_name("walk-cluster");
    kube.kubectl(&["create", "namespace", &namespace]);
    let jwt_secret = "walk-through-user-jwt-secret-0123456789abcdef";
    let publisher_key = "walk-through-publisher-key-0123456789";
    let secrets = [
        ("herald-postgres", format!("url={postgres_url}")),
        ("herald-redis", format!("url={redis_url}")),
        ("herald-publishers", format!("keys=walk={publisher_key}")),
        ("herald-jwt", format!("secret={jwt_secret}")),
    ];
    for (name, literal) in &secrets {
        kube.kubectl(&[
            "-n",
            &namespace,
            "create",
            "secret",
            "generic",
            name,
            &format!("--from-literal={literal}"),
        ]);
        kube.kubectl(&[
            "-n",
            &namespace,
            "label",
            "secret",
            name,
            "herald.dev/gateway-secret=true",
        ]);
    }
    let example = std::fs::read_to_string(kube.repo.join("examples/gateway-cluster.yaml")).expect("example");
    let jwks = "    jwksUrl: https://auth.example.com/.well-known/jwks.json\n";
    assert!(example.contains(jwks), "the example names a JWKS URL");
    let manifest = example.replace(jwks, "    hs256SecretRef: {name: herald-jwt, key: secret}\n");
    let file = std::env::temp_dir().join(format!("{namespace}-gateway.yaml"));
    std::fs::write(&file, manifest).expect("write");
    kube.kubectl(&["-n", &namespace, "apply", "-f", file.to_str().expect("UTF-8")]);
    kube.wait_ready(&namespace, "notifications");

    let names: Vec<String> = live_pods(&kube, &namespace, "notifications")
        .iter()
        .map(|pod| pod["metadata"]["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names.len(), 3, "the example's three replicas: {names:?}");
    let (a, b) = (&names[0], &names[1]);
    let callers = Callers::new(jwt_secret, publisher_key);
    // The cluster's PostgreSQL outlives this namespace (a reused cluster): a user of this run only.
    let user = unique_name("alice");
    let connect = |public: u16| {
        let (callers, user) = (&callers, &user);
        async move { callers.connect(public, user).await.0 }
    };
    let publish = |internal: u16, title: &'static str| {
        let (callers, user) = (&callers, &user);
        async move { callers.publish(internal, user, "new_comment", title).await }
    };

    // A client on pod A, a publish through pod B: Redis carries it across.
    let public_a = kube.port_forward(&namespace, &format!("pod/{a}"), 8080);
    let internal_b = kube.port_forward(&namespace, &format!("pod/{b}"), 9090);
    let mut ws = connect(public_a.local).await;
    let first = publish(internal_b.local, "through another pod").await;
    assert_eq!(next_notification(&mut ws).await["payload"]["id"], first.as_str());
    ack(&mut ws, &first).await;

    // Pod A deleted under the client; published meanwhile through B; the client reconnects to B.
    let unacked = publish(internal_b.local, "before the pod goes").await;
    assert_eq!(next_notification(&mut ws).await["payload"]["id"], unacked.as_str());
    kube.kubectl(&["-n", &namespace, "delete", "pod", a, "--wait=false"]);
    await_end(&mut ws).await;
    drop(public_a);
    let while_away = publish(internal_b.local, "while the client is away").await;
    let public_b = kube.port_forward(&namespace, &format!("pod/{b}"), 8080);
    let mut ws = connect(public_b.local).await;
    for expected in [&unacked, &while_away] {
        let replayed = next_notification(&mut ws).await;
        assert_eq!(replayed["payload"]["id"], expected.as_str(), "nothing lost, in order");
        ack(&mut ws, expected).await;
    }
    drop((public_b, internal_b));
    kube.kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
}

/// docs/operations.md, "Install the operator": the CRDs are chart templates, so `helm upgrade` with a
/// chart whose CRD changed changes it on the cluster; `helm uninstall` removes the operator and its
/// RBAC and keeps the CRDs (`helm.sh/resource-policy: keep`).
#[tokio::test]
async fn helm_upgrades_the_crds_and_uninstall_keeps_them() {
    let Some(kube) = Kube::new() else {
        return;
    };
    let _alone = CHART.write().await;
    kube.install_operator();
    let crd = "customresourcedefinition/notificationchannels.herald.dev";
    let description = |kube: &Kube| {
        let live = kube.json(&["get", crd]);
        live["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["gatewayRef"]
            ["description"]
            .as_str()
            .expect("a description")
            .to_owned()
    };
    let shipped = "The NotificationGateway (same namespace) that serves this channel.";
    assert_eq!(description(&kube), shipped);

    // The next version of the chart, whose CRD says something new.
    let chart = std::env::temp_dir().join(unique_name("chart"));
    let copied = Command::new("cp")
        .args(["-r"])
        .arg(kube.repo.join("charts/herald-operator"))
        .arg(&chart)
        .status()
        .expect("cp");
    assert!(copied.success());
    let template = chart.join("templates/crds/notificationchannels.herald.dev.yaml");
    let text = std::fs::read_to_string(&template).expect("template");
    let changed = "The NotificationGateway (same namespace) that serves this channel, in the next version.";
    assert!(text.contains(shipped));
    std::fs::write(&template, text.replace(shipped, changed)).expect("write");
    kube.helm_upgrade(chart.to_str().expect("UTF-8"));
    assert_eq!(description(&kube), changed, "helm upgrade changed the CRD");
    kube.helm_upgrade("charts/herald-operator");
    assert_eq!(description(&kube), shipped, "and back");
    let _ = std::fs::remove_dir_all(&chart);

    kube.helm(&[
        "uninstall",
        "herald",
        "--namespace",
        "herald-system",
        "--wait",
        "--timeout",
        ROLLOUT,
    ]);
    *INSTALLED.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = false;
    assert!(
        !kube.kubectl_succeeds(&["-n", "herald-system", "get", "deployment", "herald-herald-operator"]),
        "the operator is gone"
    );
    let leftovers = kube.json(&[
        "get",
        "clusterrole,clusterrolebinding",
        "-l",
        "app.kubernetes.io/instance=herald",
    ]);
    assert_eq!(
        leftovers["items"].as_array().map(Vec::len),
        Some(0),
        "its RBAC too: {leftovers}"
    );
    for kept in ["notificationgateways.herald.dev", "notificationchannels.herald.dev"] {
        assert!(kube.kubectl_succeeds(&["get", "crd", kept]), "{kept} is kept");
    }
}
