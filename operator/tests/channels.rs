//! A channel edit reaches a running gateway without a restart: the operator's rendering of the
//! settings file, mounted the way kubelet mounts a ConfigMap (`..data` symlink swaps), is changed
//! under a real gateway process with a client connected. The client keeps its connection and
//! receives the new channel's notifications; the gateway reports the new channel set (what the
//! operator's `Programmed` condition reads); a channel made admin-only makes connections renew
//! their tokens; a file the gateway refuses leaves the channels in force.

use std::time::Duration;

use herald_contract::{ChannelEntry, channels_checksum};
use herald_e2e::{GatewayProcess, JWT_ISSUER_AND_AUDIENCE, KubeletMount, TempDir, await_close, recv_json};
use herald_operator::crd::{NotificationChannel, NotificationGateway};
use herald_operator::{programmed, render};
use serde_json::{Value, json};

const JWT_SECRET: &str = "channels-test-user-jwt-secret-0123456789-abcdef";
const PUBLISHER_KEY: &str = "channels-test-publisher-key-0123456789abcdef";

fn gateway() -> NotificationGateway {
    let mut gateway: NotificationGateway = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
        "metadata": {"name": "alerts", "namespace": "apps", "uid": "0b1e0e0e-0000-4000-8000-00000000c4a1"},
        "spec": {"replicas": 1, "auth": {"hs256SecretRef": {"name": "jwt", "key": "secret"},
                 "issuer": JWT_ISSUER_AND_AUDIENCE[0].1, "audience": JWT_ISSUER_AND_AUDIENCE[1].1}},
    }))
    .expect("gateway");
    gateway.metadata.namespace = Some("apps".into());
    gateway
}

fn channel(name: &str, types: &[&str], admin_only: bool) -> NotificationChannel {
    serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationChannel",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"gatewayRef": {"name": "alerts"}, "types": types, "adminOnly": admin_only},
    }))
    .expect("channel")
}

/// The settings file the operator renders for `channels`, less what a pod gets from its mounts and
/// ports (the test process sets those).
fn settings(channels: &[&NotificationChannel]) -> (String, String) {
    let mut options = render::gateway_options(&gateway(), channels);
    options.listen = None;
    options.internal_listen = None;
    options.signing_keys_file = None;
    let entries: Vec<ChannelEntry> = options.channels.clone().unwrap_or_default();
    (options.to_yaml(), channels_checksum(&entries))
}

async fn served(gateway: &GatewayProcess) -> Value {
    reqwest::get(gateway.internal_url("/channels"))
        .await
        .expect("GET /channels")
        .json()
        .await
        .expect("json")
}

/// Waits (polling `/channels`, at most 15 s) until the gateway serves the channel set `checksum`.
async fn until_served(gateway: &GatewayProcess, checksum: &str) -> Value {
    let deadline = tokio::time::Instant::now() + herald_e2e::WAIT;
    loop {
        let now = served(gateway).await;
        if now["checksum"] == checksum {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served {checksum}: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish(gateway: &GatewayProcess, kind: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(gateway.internal_url("/api/publish"))
        .bearer_auth(PUBLISHER_KEY)
        .json(&json!({"userIds": ["alice"], "notification": {"type": kind, "title": format!("a {kind}")}}))
        .send()
        .await
        .expect("publish")
        .status()
}

#[tokio::test]
async fn a_channel_edit_reaches_a_running_gateway_and_its_connected_client() {
    let social = channel("social", &["new_like"], false);
    let uploads = channel("uploads", &["upload_complete"], false);
    let (first, first_checksum) = settings(&[&social]);
    let dir = TempDir::new();
    let mut mount = KubeletMount::new(dir.path("config"), "gateway.yaml", &first);
    let config_file = mount.file().to_string_lossy().into_owned();
    let publishers = format!("tests={PUBLISHER_KEY}");
    let gateway = GatewayProcess::start(
        &[],
        &[
            ("HERALD_CONFIG", config_file.as_str()),
            ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
            ("WEBSOCKET_TOKEN_SECRET", "channels-test-token-secret-0123456789abcdef"),
            ("HERALD_PUBLISHER_KEYS", publishers.as_str()),
        ],
    );
    let now = served(&gateway).await;
    assert_eq!(now["checksum"], first_checksum.as_str());
    assert_eq!(now["channels"], json!(["social"]));

    let token = gateway
        .issue_token(&herald_e2e::hs256_jwt(JWT_SECRET, "alice", 300, &[]))
        .await;
    let (mut ws, connected) = gateway.open_ws(&token).await.expect("connect");
    assert_eq!(connected["payload"]["subscriptions"], json!(["social"]), "{connected}");
    assert_eq!(
        publish(&gateway, "upload_complete").await,
        400,
        "no channel has the type yet"
    );

    // The edit: a second channel. kubelet swaps the mounted file; the gateway takes it in.
    let (second, second_checksum) = settings(&[&social, &uploads]);
    mount.update(&second);
    assert_eq!(
        until_served(&gateway, &second_checksum).await["channels"],
        json!(["social", "uploads"])
    );
    // What the operator's Programmed condition reads from each ready replica.
    let reports = programmed::probe(&programmed::client(), &[gateway.internal_addr]).await;
    assert!(
        programmed::verdict(&second_checksum, &reports).programmed,
        "{reports:?}"
    );
    assert!(!programmed::verdict(&first_checksum, &reports).programmed);
    assert_eq!(publish(&gateway, "upload_complete").await, 202);
    let notification = loop {
        let message = recv_json(&mut ws).await;
        if message["type"] == "notification" {
            break message;
        }
    };
    assert_eq!(
        notification["payload"]["channel"], "uploads",
        "the connection opened before the edit receives it: {notification}"
    );
    assert!(
        gateway.lines().iter().any(|l| l.contains("channels:reloaded")),
        "the reload is logged"
    );

    // A file the gateway refuses (an unknown type) leaves the channels in force.
    mount.update(&second.replace("upload_complete", "no_such_type"));
    let failed = gateway
        .wait_for_metric("herald_channel_reloads_total{result=\"failed\"}", 1.0)
        .await;
    assert_eq!(failed, 1.0);
    assert_eq!(served(&gateway).await["checksum"], second_checksum.as_str());

    // Tightened: `uploads` becomes admin-only. Alice's token allowed it (it was open): she must
    // reconnect with a token issued under the new rule, which no longer lists it.
    // A token issued now, under the open rule, and used only after the change.
    let early = gateway
        .issue_token(&herald_e2e::hs256_jwt(JWT_SECRET, "alice", 300, &[]))
        .await;
    let admins_only = channel("uploads", &["upload_complete"], true);
    let (third, third_checksum) = settings(&[&social, &admins_only]);
    mount.update(&third);
    until_served(&gateway, &third_checksum).await;
    let (code, reason) = await_close(&mut ws).await.expect("closed");
    assert_eq!(code, 1001, "{reason}");
    assert!(reason.starts_with("channel access changed: reconnect in"), "{reason}");
    let token = gateway
        .issue_token(&herald_e2e::hs256_jwt(JWT_SECRET, "alice", 300, &[]))
        .await;
    let (_ws, connected) = gateway.open_ws(&token).await.expect("reconnect");
    assert_eq!(
        connected["payload"]["allowedChannels"],
        json!(["social"]),
        "{connected}"
    );
    let (_early_ws, connected) = gateway.open_ws(&early).await.expect("the early token connects");
    assert_eq!(
        connected["payload"]["allowedChannels"],
        json!(["social"]),
        "a token issued before the change no longer grants the tightened channel: {connected}"
    );
}
