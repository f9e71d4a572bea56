//! Exact request shapes, verified with a tower-test mock apiserver (as controller-rs does): the
//! reconcile lists the gateway's channels, reads the metadata (only) of the Secrets the gateway would
//! read and of every child it would write (one GET each, before any write), then server-side-applies
//! its ConfigMap with the operator's field manager, forced, as an apply patch.

use std::sync::Arc;

use herald_operator::admission::ImagePolicy;
use herald_operator::controller::{self, Context};
use herald_operator::crd::NotificationGateway;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::json;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn gateway() -> NotificationGateway {
    let mut gateway: NotificationGateway = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationGateway",
        "metadata": {"name": "alerts", "namespace": "apps", "uid": "8d3b7c6a-0000-4000-8000-000000000001", "generation": 1},
        "spec": {"replicas": 1, "auth": {"jwksUrl": "https://issuer.example/jwks", "issuer": "https://issuer.example/", "audience": "herald"}}
    }))
    .expect("gateway");
    gateway.metadata.generation = Some(1);
    gateway
}

async fn body_json(request: Request<Body>) -> serde_json::Value {
    let bytes = request.into_body().collect_bytes().await.expect("body");
    if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    }
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: serde_json::Value) {
    let response = Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(&body).expect("json")))
        .expect("response");
    send.send_response(response);
}

const NOT_FOUND: &str =
    r#"{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}"#;

/// The mock apiserver: answers the expected requests in order, asserting each one's shape.
async fn apiserver(mut handle: Handle) {
    let (request, send) = handle.next_request().await.expect("a LIST of channels");
    assert_eq!(request.method(), http::Method::GET);
    assert_eq!(
        request.uri().path(),
        "/apis/herald.dev/v1alpha1/namespaces/apps/notificationchannels"
    );
    respond(
        send,
        200,
        json!({"apiVersion": "herald.dev/v1alpha1", "kind": "NotificationChannelList", "metadata": {}, "items": []}),
    );

    // Admission, before anything is written: the Secrets the pods would read, then every child the
    // reconcile would write (embedded, one replica: no PodDisruptionBudget, a claim for its data), each
    // looked at as metadata only.
    for path in [
        "/api/v1/namespaces/apps/secrets/alerts-signing-keys",
        "/api/v1/namespaces/apps/configmaps/alerts-config",
        "/apis/apps/v1/namespaces/apps/deployments/alerts",
        "/api/v1/namespaces/apps/services/alerts",
        "/api/v1/namespaces/apps/services/alerts-internal",
        "/api/v1/namespaces/apps/persistentvolumeclaims/alerts-data",
    ] {
        let (request, send) = handle.next_request().await.expect("a metadata GET");
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(request.uri().path(), path);
        let accept = request.headers()["accept"].to_str().expect("accept").to_owned();
        assert!(accept.contains("as=PartialObjectMetadata"), "{path}: {accept}");
        respond(send, 404, serde_json::from_str(NOT_FOUND).expect("status"));
    }

    let (request, send) = handle.next_request().await.expect("the ConfigMap apply");
    assert_eq!(request.method(), http::Method::PATCH);
    assert_eq!(request.uri().path(), "/api/v1/namespaces/apps/configmaps/alerts-config");
    let query = request.uri().query().unwrap_or_default().to_owned();
    assert!(query.contains("fieldManager=herald-operator"), "{query}");
    assert!(query.contains("force=true"), "{query}");
    assert_eq!(request.headers()["content-type"], "application/apply-patch+yaml");
    let body = body_json(request).await;
    assert_eq!(body["kind"], "ConfigMap");
    assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "NotificationGateway");
    assert_eq!(body["metadata"]["ownerReferences"][0]["controller"], true);
    assert!(
        body["data"]["gateway.yaml"]
            .as_str()
            .is_some_and(|y| y.contains("jwt_jwks_url"))
    );
    // End the reconcile here: the error must surface, not be swallowed.
    respond(
        send,
        500,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "stop", "code": 500}),
    );
}

#[tokio::test]
async fn a_reconcile_lists_channels_reads_metadata_then_applies_the_config_map() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "apps");
    let server = tokio::spawn(apiserver(handle));
    let context = Arc::new(Context::new(client, None, ImagePolicy::default()));
    let outcome = controller::reconcile_gateway(Arc::new(gateway()), context).await;
    assert!(matches!(outcome, Err(controller::Error::Kube(_))), "{outcome:?}");
    server.await.expect("every expected request arrived in order");
}
