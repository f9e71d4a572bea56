//! OpenTelemetry traces across replicas (issue 14): with an OTLP collector configured, a publish on
//! one replica and its delivery on another are one trace, and the publishing replica's log lines
//! within it name the trace id. The collector here is a small OTLP/HTTP (JSON) receiver on loopback.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_e2e::cluster::{Cluster, connect, next_notification, publish, token};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A span as exported: the replica (`service.instance.id`), its name, trace, id and parent.
#[derive(Debug, Clone)]
struct Exported {
    instance: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// Accepts `POST /v1/traces` (OTLP/HTTP, JSON) and keeps every span.
async fn collector() -> (u16, Arc<Mutex<Vec<Exported>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                // One request after another on a kept-alive connection.
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if let Ok(request) = serde_json::from_slice::<Value>(&body) {
                        kept.lock().expect("spans").extend(spans_of(&request));
                    }
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, spans)
}

/// The spans of one OTLP `ExportTraceServiceRequest` in JSON.
fn spans_of(request: &Value) -> Vec<Exported> {
    let mut spans = Vec::new();
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        let instance = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.instance.id")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
                spans.push(Exported {
                    instance: instance.clone(),
                    name: text("name"),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                });
            }
        }
    }
    spans
}

#[tokio::test]
async fn a_publish_and_its_delivery_on_another_replica_are_one_trace() {
    let Some(cluster) = Cluster::new(None) else { return };
    publish_and_delivery_are_one_trace(cluster).await;
}

/// The same over a Redis Cluster: the trace context crosses it in the sharded message.
#[tokio::test]
async fn a_publish_and_its_delivery_across_a_redis_cluster_are_one_trace() {
    let Some(url) = herald_e2e::redis_cluster_url() else {
        return;
    };
    let Some(cluster) = Cluster::new(Some(url)) else { return };
    publish_and_delivery_are_one_trace(cluster).await;
}

/// Two traced replicas of `cluster`: a publish on one and its delivery on the other are one trace.
async fn publish_and_delivery_are_one_trace(cluster: Cluster) {
    let (port, spans) = collector().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let traced = |instance: &str| -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("OTEL_RESOURCE_ATTRIBUTES", format!("service.instance.id={instance}")),
            ("HERALD_LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "info,herald_gateway=debug".to_owned()),
        ]
    };
    let (a, b) = (traced("replica-a"), traced("replica-b"));
    let a_env: Vec<(&str, &str)> = a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let b_env: Vec<(&str, &str)> = b.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let publisher_side = cluster.replica(&a_env);
    let client_side = cluster.replica(&b_env);

    let mut ws = connect(&client_side, &token(&client_side, "traced").await)
        .await
        .expect("connects");
    let answer: Value = publish(&publisher_side, &["traced"], "followed")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(herald_e2e::created_ids(&answer).len(), 1, "{answer}");
    let delivered = next_notification(&mut ws).await;
    assert_eq!(delivered["payload"]["title"], "followed");

    // The replicas export in batches (every 100 ms here).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (publish, deliver, children) = loop {
        let all = spans.lock().expect("spans").clone();
        let root = all
            .iter()
            .find(|s| s.instance == "replica-a" && s.name == "publish")
            .cloned();
        if let Some(root) = root {
            let deliver = all
                .iter()
                .find(|s| s.instance == "replica-b" && s.name == "deliver" && s.trace_id == root.trace_id)
                .cloned();
            let children: Vec<Exported> = all
                .iter()
                .filter(|s| s.instance == "replica-a" && s.parent_span_id == root.span_id)
                .cloned()
                .collect();
            if let Some(deliver) = deliver {
                if children.len() >= 2 {
                    break (root, deliver, children);
                }
            }
        }
        assert!(Instant::now() < deadline, "no complete trace; spans received: {all:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        publish.parent_span_id.is_empty(),
        "the request's span is the root: {publish:?}"
    );
    assert_eq!(
        deliver.parent_span_id, publish.span_id,
        "the delivery continues the publish"
    );
    let mut names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["bus.publish", "store.publish"]);
    assert!(children.iter().all(|s| s.trace_id == publish.trace_id));
    // Only the publish path is traced: the token issue and the connect before it are not.
    let exported = ["publish", "store.publish", "bus.publish", "deliver"];
    let others: Vec<Exported> = spans
        .lock()
        .expect("spans")
        .iter()
        .filter(|s| !exported.contains(&s.name.as_str()))
        .cloned()
        .collect();
    assert!(others.is_empty(), "spans of other operations exported: {others:#?}");

    // Log lines within the publish name its trace.
    let logged = publisher_side
        .lines()
        .into_iter()
        .find(|line| line.contains("notification:published"))
        .expect("the publish logged (debug)");
    assert!(
        logged.contains(&format!("\"trace_id\":\"{}\"", publish.trace_id)),
        "the trace id in the log line: {logged}"
    );
}

#[tokio::test]
async fn without_a_collector_nothing_is_traced() {
    let Some(cluster) = Cluster::new(None) else { return };
    let replica = cluster.replica(&[("HERALD_LOG_FORMAT", "json"), ("RUST_LOG", "info,herald_gateway=debug")]);
    let answer: Value = publish(&replica, &["untraced"], "plain")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(herald_e2e::created_ids(&answer).len(), 1, "{answer}");
    let logged = replica.wait_for_line(|line| line.contains("notification:published"));
    assert!(!logged.contains("trace_id"), "no trace, no trace id: {logged}");
}
