//! Issue "Security and faults": faults with real processes. A publisher keeps publishing while a
//! dependency goes away; a checker then counts that every notification the API accepted reaches its
//! recipient (duplicates by id allowed, loss never), and that nothing refused was stored.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use herald_e2e::cluster::{Cluster, PUBLISHER_KEY, connect, token};
use herald_e2e::{FaultProxy, Ws, client_message, fresh_database, ping_message, recv_json, service_url};
use serde_json::{Value, json};

/// What one publish answered: the created ids when it was accepted, the `Retry-After` when refused.
enum Answer {
    Accepted(Vec<String>),
    Unavailable { retry_after: Option<String> },
}

async fn publish(client: &reqwest::Client, url: &str, user: &str, title: &str) -> Answer {
    let response = client
        .post(url)
        .bearer_auth(PUBLISHER_KEY)
        .json(&json!({"userIds": [user], "notification": {"type": "new_comment", "title": title}}))
        .send()
        .await
        .expect("the gateway answers even while PostgreSQL is gone");
    match response.status().as_u16() {
        202 => {
            let body: Value = response.json().await.expect("json");
            let ids = body["created"]
                .as_array()
                .expect("created")
                .iter()
                .map(|c| c["id"].as_str().expect("id").to_owned())
                .collect();
            Answer::Accepted(ids)
        }
        503 => Answer::Unavailable {
            retry_after: response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        },
        other => panic!(
            "publish answered {other}: {}",
            response.text().await.unwrap_or_default()
        ),
    }
}

/// Reads and acknowledges notifications until every id of `expected` arrived (duplicates allowed).
async fn receive_all(ws: &mut Ws, expected: &BTreeSet<String>) {
    let mut seen = BTreeSet::new();
    let mut pinged = Instant::now();
    while !expected.is_subset(&seen) {
        let message = recv_json(ws).await;
        if message["type"] != "notification" {
            continue;
        }
        let id = message["payload"]["id"].as_str().expect("id").to_owned();
        ws.send(client_message("notification:ack", json!({"notificationId": id})))
            .await
            .expect("ack");
        seen.insert(id);
        if pinged.elapsed() > Duration::from_secs(10) {
            ws.send(ping_message()).await.expect("ping");
            pinged = Instant::now();
        }
    }
}

/// (c) PostgreSQL gone for 10 s: publishes answer 503 with `Retry-After` (never 202 for what was not
/// stored), connected clients keep their connections, and everything accepted is delivered.
// Multi-threaded: starting the replica blocks a thread while the proxy must keep forwarding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_gone_for_ten_seconds_loses_nothing_accepted() {
    let (Some(admin), Some(redis_url)) = (
        service_url("HERALD_TEST_DATABASE_URL"),
        service_url("HERALD_TEST_REDIS_URL"),
    ) else {
        return;
    };
    let database = fresh_database(&admin);
    let authority = database
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(authority, _)| authority.to_owned())
        .expect("host:port in the database URL");
    let upstream: SocketAddr = authority.parse().expect("a loopback address");
    let proxy = FaultProxy::start(upstream).await;
    let cluster = Cluster {
        database_url: database.replace(&authority, &format!("127.0.0.1:{}", proxy.port)),
        redis_url,
        prefix: format!("faults{}:", uuid::Uuid::new_v4().simple()),
    };
    let replica = cluster.replica(&[]);
    let mut ws = connect(&replica, &token(&replica, "kim").await)
        .await
        .expect("connects");
    let client = reqwest::Client::new();
    let url = replica.internal_url("/api/publish");

    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    let mut record = |answer: Answer| match answer {
        Answer::Accepted(ids) => accepted.extend(ids),
        Answer::Unavailable { retry_after } => {
            assert!(
                retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)),
                "503 says when to retry"
            );
            refused += 1;
        }
    };
    for i in 0..10 {
        record(publish(&client, &url, "kim", &format!("before {i}")).await);
    }
    let readiness = || {
        let client = client.clone();
        let url = replica.url("/readyz");
        async move {
            let answer = client.get(&url).send().await.expect("readyz");
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.expect("json");
            (
                status,
                body["checks"]["postgres"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    assert_eq!(readiness().await, (200, "ok".to_owned()), "ready before the outage");
    proxy.cut();
    let outage = Instant::now();
    let mut i = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        record(publish(&client, &url, "kim", &format!("during {i}")).await);
        i += 1;
        // Paces the publisher (an offered load), not a synchronisation.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Readiness says so (a Kubernetes Service stops sending this pod new clients), and the failed
    // database calls are counted for the alert (HeraldBackendErrors).
    assert_eq!(
        readiness().await,
        (503, "unavailable".to_owned()),
        "not ready without PostgreSQL"
    );
    let metrics = replica.metrics().await;
    let failures: f64 = metrics
        .lines()
        .filter(|line| line.starts_with(r#"herald_backend_errors_total{backend="postgres""#))
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, value)| value.parse::<f64>().ok()))
        .sum();
    assert!(
        failures > 0.0,
        "the refused publishes' database calls failed:\n{metrics}"
    );
    proxy.restore();
    // Once PostgreSQL is back, publishes are accepted again.
    let back = Instant::now();
    let mut after = 0;
    while after < 10 {
        match publish(&client, &url, "kim", &format!("after {after}")).await {
            answer @ Answer::Accepted(_) => {
                record(answer);
                after += 1;
            }
            answer => {
                record(answer);
                assert!(back.elapsed() < herald_e2e::WAIT, "publishes are accepted again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(refused > 0, "the outage was noticed");
    assert_eq!(readiness().await, (200, "ok".to_owned()), "ready again");

    // The connection opened before the outage is still open and receives every accepted one.
    ws.send(ping_message()).await.expect("ping");
    receive_all(&mut ws, &accepted).await;

    // Nothing refused was stored: the history holds exactly what was accepted.
    let history: Value = client
        .get(replica.url("/notifications?limit=100"))
        .bearer_auth(herald_e2e::cluster::user_jwt("kim"))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    let stored: BTreeSet<String> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(stored, accepted, "stored exactly what was accepted");
}

const JWT_SECRET: &str = "faults-user-jwt-secret-0123456789-abcdefgh";
const TOKEN_SECRET: &str = "faults-token-secret-0123456789-ABCDEFGHIJ";
const EMBEDDED_PUBLISHER_KEY: &str = "faults-publisher-key-0123456789abcdefghij";

/// The embedded default, configured as in production, with the per-IP connect limit raised (every
/// client of these tests is 127.0.0.1).
fn embedded(extra: &[(&str, &str)]) -> herald_e2e::GatewayProcess {
    let publishers = format!("faults={EMBEDDED_PUBLISHER_KEY}");
    let mut env = vec![
        ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
        herald_e2e::JWT_ISSUER_AND_AUDIENCE[0],
        herald_e2e::JWT_ISSUER_AND_AUDIENCE[1],
        ("WEBSOCKET_TOKEN_SECRET", TOKEN_SECRET),
        ("HERALD_PUBLISHER_KEYS", publishers.as_str()),
        ("HERALD_MAX_CONNECTS_PER_MINUTE_PER_IP", "100000"),
    ];
    env.extend_from_slice(extra);
    herald_e2e::GatewayProcess::start(&[], &env)
}

async fn open(gateway: &herald_e2e::GatewayProcess, user: &str) -> Ws {
    let jwt = herald_e2e::hs256_jwt(JWT_SECRET, user, 600, &[]);
    let token = gateway.issue_token(&jwt).await;
    gateway.open_ws(&token).await.expect("websocket opens").0
}

/// Publishes one notification to each of `users`; the created id of each user.
async fn publish_to(
    client: &reqwest::Client,
    gateway: &herald_e2e::GatewayProcess,
    users: &[String],
    title: &str,
) -> Vec<(String, String)> {
    let mut created = Vec::new();
    for chunk in users.chunks(1_000) {
        let response = client
            .post(gateway.internal_url("/api/publish"))
            .bearer_auth(EMBEDDED_PUBLISHER_KEY)
            .json(&json!({"userIds": chunk, "notification": {"type": "new_comment", "title": title}}))
            .send()
            .await
            .expect("publish");
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("json");
        created.extend(herald_e2e::created_ids(&body));
    }
    created
}

/// (d) A slow consumer (connected, never reading) harms no one and loses nothing: the client next
/// to it gets everything at once, and once it reads again (after a reconnect) it gets all of its own.
#[tokio::test]
async fn a_slow_consumer_harms_no_one_and_loses_nothing() {
    let gateway = embedded(&[("HERALD_OUTBOUND_QUEUE", "4")]);
    let client = reqwest::Client::new();
    let stalled = open(&gateway, "slow").await;
    let mut fast = open(&gateway, "fast").await;
    let (mut for_slow, mut for_fast) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..50 {
        let users = ["slow".to_owned(), "fast".to_owned()];
        for (user, id) in publish_to(&client, &gateway, &users, &format!("n{i}")).await {
            if user == "slow" {
                for_slow.insert(id)
            } else {
                for_fast.insert(id)
            };
        }
    }
    receive_all(&mut fast, &for_fast).await;
    // The stalled client's socket never read a byte; it goes away, comes back and reads.
    drop(stalled);
    let mut again = open(&gateway, "slow").await;
    receive_all(&mut again, &for_slow).await;
}

/// (e) 2,000 clients reconnect at once while notifications keep coming: every one reaches its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_reconnecting_at_once_lose_nothing() {
    const CLIENTS: usize = 2_000;
    let gateway = std::sync::Arc::new(embedded(&[]));
    let client = reqwest::Client::new();
    let users: Vec<String> = (0..CLIENTS).map(|i| format!("storm-{i}")).collect();
    let connect_all = |gateway: std::sync::Arc<herald_e2e::GatewayProcess>| {
        let users = users.clone();
        async move {
            let tasks: Vec<_> = users
                .into_iter()
                .map(|user| {
                    let gateway = gateway.clone();
                    tokio::spawn(async move { (user.clone(), open(&gateway, &user).await) })
                })
                .collect();
            let mut sockets = std::collections::BTreeMap::new();
            for task in tasks {
                let (user, ws) = task.await.expect("client task");
                sockets.insert(user, ws);
            }
            sockets
        }
    };
    let mut expected: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    let mut sockets = connect_all(gateway.clone()).await;
    for (user, id) in publish_to(&client, &gateway, &users, "before").await {
        expected.entry(user).or_default().insert(id);
    }
    // Every client drops at once; one more round is published while they are away, all reconnect
    // at the same moment, and a last round goes out while they do.
    drop(std::mem::take(&mut sockets));
    for (user, id) in publish_to(&client, &gateway, &users, "while away").await {
        expected.entry(user).or_default().insert(id);
    }
    let reconnecting = tokio::spawn(connect_all(gateway.clone()));
    for (user, id) in publish_to(&client, &gateway, &users, "during the storm").await {
        expected.entry(user).or_default().insert(id);
    }
    let mut sockets = reconnecting.await.expect("reconnects");
    assert_eq!(sockets.len(), CLIENTS, "every client reconnected");
    for (user, ids) in &expected {
        // None of the three rounds was acknowledged before the drop: each client gets all three.
        receive_all(sockets.get_mut(user).expect("socket"), ids).await;
    }
}
