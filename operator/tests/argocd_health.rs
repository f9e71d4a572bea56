//! The Argo CD health checks of `examples/argocd/argocd-cm-health.yaml`, run in Lua 5.1 (Argo CD runs
//! them in gopher-lua, a Lua 5.1) against objects whose status the operator's own status functions
//! wrote: each verdict Argo CD would show for each state the operator reports.

use herald_operator::crd::{NotificationChannel, NotificationGateway};
use herald_operator::programmed::Verdict;
use herald_operator::status::{self, ChannelOutcome, GatewayObservation, KeysObservation, Refusal, Rollout};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use mlua::LuaSerdeExt;
use serde_json::{Value, json};

fn health_script(kind: &str) -> String {
    let text = std::fs::read_to_string(format!(
        "{}/../examples/argocd/argocd-cm-health.yaml",
        std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo for the tests it runs")
    ))
    .expect("the example");
    let document: Value = serde_norway::from_str(&text).expect("YAML");
    document["data"][format!("resource.customizations.health.herald.dev_{kind}")]
        .as_str()
        .unwrap_or_else(|| panic!("a health check for {kind}"))
        .to_owned()
}

/// What Argo CD shows for `object`: `(status, message)`.
fn health(kind: &str, object: &Value) -> (String, String) {
    let lua = mlua::Lua::new();
    lua.globals()
        .set("obj", lua.to_value(object).expect("object as Lua"))
        .expect("obj");
    let verdict: mlua::Table = lua.load(health_script(kind)).eval().expect("the script runs");
    (
        verdict.get::<String>("status").expect("status"),
        verdict
            .get::<Option<String>>("message")
            .expect("message")
            .unwrap_or_default(),
    )
}

fn now() -> Time {
    Time(Timestamp::from_second(1_800_000_000).expect("time"))
}

fn gateway(generation: i64, paused: bool, status: Option<Value>) -> Value {
    let mut object = json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
        "metadata": {"name": "alerts", "namespace": "apps", "generation": generation},
        "spec": {"paused": paused, "auth": {"jwksUrl": "https://issuer/jwks"}},
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    serde_json::from_value::<NotificationGateway>(object.clone()).expect("a valid gateway");
    object
}

fn observed(ready: i32, observed_generation: i64, deadline_exceeded: bool, refused: usize) -> GatewayObservation {
    GatewayObservation {
        generation: Some(3),
        desired_replicas: 2,
        ready_replicas: ready,
        updated_replicas: ready,
        total_replicas: ready,
        selector: "app=x".into(),
        refused_channels: refused,
        keys: KeysObservation::default(),
        rollout: Rollout {
            generation: Some(7),
            observed_generation: Some(observed_generation),
            deadline_exceeded,
        },
    }
}

fn written(status: &impl serde::Serialize) -> Option<Value> {
    Some(serde_json::to_value(status).expect("json"))
}

#[test]
fn gateway_health_follows_the_operators_conditions() {
    let kind = "NotificationGateway";
    assert_eq!(
        health(kind, &gateway(1, false, None)).0,
        "Progressing",
        "not reconciled yet"
    );

    let ready = status::gateway_status(None, observed(2, 7, false, 0), &now());
    let (verdict, message) = health(kind, &gateway(3, false, written(&ready)));
    assert_eq!(
        (verdict.as_str(), message.as_str()),
        ("Healthy", "ReplicasReady: 2 of 2 replicas ready")
    );
    assert_eq!(
        health(kind, &gateway(4, false, written(&ready))).0,
        "Progressing",
        "a newer spec the operator has not applied yet"
    );

    let rolling = status::gateway_status(None, observed(2, 6, false, 0), &now());
    let (verdict, message) = health(kind, &gateway(3, false, written(&rolling)));
    assert_eq!(verdict, "Progressing");
    assert!(message.starts_with("RolloutPending"), "{message}");

    let stuck = status::gateway_status(None, observed(1, 7, true, 0), &now());
    assert_eq!(
        health(kind, &gateway(3, false, written(&stuck))).0,
        "Degraded",
        "ProgressDeadlineExceeded"
    );
    let refused_channels = status::gateway_status(None, observed(2, 7, false, 1), &now());
    assert_eq!(
        health(kind, &gateway(3, false, written(&refused_channels))).0,
        "Degraded"
    );

    let refusal = Refusal {
        reason: "SecretNotFound",
        message: "Secret `db` (spec.postgres.urlSecretRef) does not exist".into(),
    };
    let refused = status::refused_gateway_status(None, Some(3), &refusal, &now());
    let (verdict, message) = health(kind, &gateway(3, false, written(&refused)));
    assert_eq!(verdict, "Degraded");
    assert!(message.starts_with("SecretNotFound: Secret `db`"), "{message}");

    let failure = Refusal {
        reason: "Forbidden",
        message: "reconcile failed (retried with backoff): forbidden".into(),
    };
    let failed = status::failed_gateway_status(Some(&ready), Some(3), &failure, &now());
    assert_eq!(health(kind, &gateway(3, false, written(&failed))).0, "Degraded");
    // A new spec (generation 4) the apiserver rejects: the status still describes generation 3,
    // but the failure is about 4.
    let rejected = status::failed_gateway_status(Some(&ready), Some(4), &failure, &now());
    assert_eq!(health(kind, &gateway(4, false, written(&rejected))).0, "Degraded");

    let paused = status::paused_gateway_status(Some(&ready), Some(4), &now());
    assert_eq!(health(kind, &gateway(4, true, written(&paused))).0, "Suspended");
}

fn channel(generation: i64, status: Option<Value>) -> Value {
    let mut object = json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationChannel",
        "metadata": {"name": "social", "namespace": "apps", "generation": generation},
        "spec": {"gatewayRef": {"name": "alerts"}, "types": ["new_like"]},
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    serde_json::from_value::<NotificationChannel>(object.clone()).expect("a valid channel");
    object
}

#[test]
fn channel_health_follows_accepted_and_programmed() {
    let kind = "NotificationChannel";
    assert_eq!(health(kind, &channel(1, None)).0, "Progressing");
    let verdict = |programmed: bool, reason: &'static str| Verdict {
        programmed,
        reason,
        message: "1 of 2 ready replicas serve the current channel set".into(),
    };
    let live = status::channel_status(
        None,
        Some(1),
        ChannelOutcome::Accepted(&verdict(true, "Programmed")),
        &now(),
    );
    assert_eq!(health(kind, &channel(1, written(&live))).0, "Healthy");
    assert_eq!(
        health(kind, &channel(2, written(&live))).0,
        "Progressing",
        "an edit not judged yet"
    );
    let pending = status::channel_status(
        None,
        Some(1),
        ChannelOutcome::Accepted(&verdict(false, "Pending")),
        &now(),
    );
    let (state, message) = health(kind, &channel(1, written(&pending)));
    assert_eq!(state, "Progressing");
    assert!(message.starts_with("Pending: 1 of 2"), "{message}");
    let refusal = Refusal {
        reason: "GatewayNotFound",
        message: "no NotificationGateway `alerts` in namespace `apps`".into(),
    };
    let orphan = status::channel_status(None, Some(1), ChannelOutcome::Refused(&refusal), &now());
    let (state, message) = health(kind, &channel(1, written(&orphan)));
    assert_eq!(state, "Degraded");
    assert!(message.starts_with("GatewayNotFound"), "{message}");
}
