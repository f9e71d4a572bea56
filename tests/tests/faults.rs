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
    let url = replica.url("/api/publish");

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
    proxy.cut();
    let outage = Instant::now();
    let mut i = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        record(publish(&client, &url, "kim", &format!("during {i}")).await);
        i += 1;
        // Paces the publisher (an offered load), not a synchronisation.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
