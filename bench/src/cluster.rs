//! `cluster-publish`: two release replicas sharing the test PostgreSQL and Redis. Bounded: a fixed
//! number of publishes, a fixed-length paced run, loopback only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use herald_e2e::{GatewayProcess, Ws, fresh_database, recv_json};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::{JWT_SECRET, TOKEN_SECRET};

const PUBLISHER_KEY: &str = "bench-publisher-key-0123456789abcdef";

pub struct Plan {
    pub single: usize,
    pub batched: usize,
    pub concurrency: usize,
    pub rate: u64,
    pub seconds: u64,
    pub users: usize,
}

fn replica(database_url: &str, redis_url: &str, prefix: &str) -> GatewayProcess {
    GatewayProcess::start(
        &[],
        &[
            ("DATABASE_URL", database_url),
            ("REDIS_URL", redis_url),
            ("HERALD_REDIS_PREFIX", prefix),
            ("HERALD_MIGRATE_ON_START", "true"),
            ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
            herald_e2e::JWT_ISSUER_AND_AUDIENCE[0],
            herald_e2e::JWT_ISSUER_AND_AUDIENCE[1],
            ("WEBSOCKET_TOKEN_SECRET", TOKEN_SECRET),
            ("HERALD_PUBLISHER_KEYS", "bench=bench-publisher-key-0123456789abcdef"),
            ("HERALD_MAX_CONNECTS_PER_MINUTE_PER_IP", "100000"),
            ("HERALD_PUBLISHER_NOTIFICATIONS_PER_SECOND", "1000000"),
            ("HERALD_DATABASE_MAX_CONNECTIONS", "20"),
            // Per-notification log lines would measure the terminal, not the gateway.
            ("RUST_LOG", "info,herald_gateway::app=warn"),
        ],
    )
}

fn micros_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// Publishes `requests` requests of `recipients` users each, `concurrency` at a time; notifications/s.
async fn throughput(
    target: &GatewayProcess,
    requests: usize,
    recipients: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    let url = target.internal_url("/api/publish");
    let started = Instant::now();
    let results: Vec<anyhow::Result<usize>> = futures_util::stream::iter(0..requests)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let users: Vec<String> = (0..recipients)
                    .map(|r| format!("tp-{}", (i * recipients + r) % 5_000))
                    .collect();
                let body =
                    json!({"userIds": users, "notification": {"type": "new_like", "title": format!("bench {i}")}});
                let answer: Value = client
                    .post(&url)
                    .bearer_auth(PUBLISHER_KEY)
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                Ok(answer["created"].as_array().map_or(0, Vec::len))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let created: usize = results
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .sum();
    Ok(created as f64 / started.elapsed().as_secs_f64())
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1_000.0
}

pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let admin = std::env::var("HERALD_TEST_DATABASE_URL").context("run `eval \"$(scripts/services)\"` first")?;
    let redis_url = std::env::var("HERALD_TEST_REDIS_URL").context("run `eval \"$(scripts/services)\"` first")?;
    let database_url = fresh_database(&admin);
    let prefix = format!("bench{}:", std::process::id());
    let publisher_side = replica(&database_url, &redis_url, &prefix);
    let receiver_side = replica(&database_url, &redis_url, &prefix);

    let single = throughput(&publisher_side, plan.single, 1, plan.concurrency).await?;
    let batched = throughput(&publisher_side, plan.batched, 100, plan.concurrency).await?;

    // Latency: users connected to the receiving replica, publishes paced on the other one.
    let client = reqwest::Client::new();
    let mut sockets = Vec::new();
    for u in 0..plan.users {
        let token = crate::connection_token(&client, &receiver_side.url("/ws/token"), &format!("lat-{u}")).await?;
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", receiver_side.addr)).await?;
        recv_json(&mut ws).await;
        sockets.push(ws);
    }
    let total = (plan.rate * plan.seconds) as usize;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let deadline = Instant::now() + Duration::from_secs(plan.seconds + 30);
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(read_latencies(ws, latencies.clone(), deadline, total)))
        .collect();

    let url = publisher_side.internal_url("/api/publish");
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / plan.rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let client = client.clone();
        let url = url.clone();
        let user = format!("lat-{}", i % plan.users);
        tokio::spawn(async move {
            let body = json!({"userIds": [user], "notification": {"type": "new_comment", "title": "latency",
                "data": {"sentAtUs": micros_now()}}});
            let _ = client.post(&url).bearer_auth(PUBLISHER_KEY).json(&body).send().await;
            drop(permit);
        });
    }
    let offered = total as f64 / started.elapsed().as_secs_f64();
    for reader in readers {
        let _ = reader.await;
    }
    let mut latencies = latencies.lock().await.clone();
    latencies.sort_unstable();

    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| publish throughput, 1 recipient per request ({} requests, {} concurrent) | {single:.0} notifications/s |",
        plan.single, plan.concurrency
    );
    println!(
        "| publish throughput, 100 recipients per request ({} requests, {} concurrent) | {batched:.0} notifications/s |",
        plan.batched, plan.concurrency
    );
    println!(
        "| latency run: offered rate | {offered:.0} publishes/s for {} s, {} users on the other replica |",
        plan.seconds, plan.users
    );
    println!("| received | {} of {total} |", latencies.len());
    println!("| publish-to-receive p50 | {:.1} ms |", percentile(&latencies, 0.50));
    println!("| publish-to-receive p99 | {:.1} ms |", percentile(&latencies, 0.99));
    println!("| publish-to-receive max | {:.1} ms |", percentile(&latencies, 1.0));
    Ok(())
}

/// Reads notifications until every one was counted or the deadline passes, acknowledging each.
async fn read_latencies(mut ws: Ws, latencies: Arc<Mutex<Vec<i64>>>, deadline: Instant, total: usize) {
    while Instant::now() < deadline {
        let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await else {
            if latencies.lock().await.len() >= total {
                return;
            }
            continue;
        };
        let Ok(text) = message.to_text() else { continue };
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        if value["type"] != "notification" {
            continue;
        }
        if let Some(sent) = value["payload"]["data"]["sentAtUs"].as_i64() {
            latencies.lock().await.push(micros_now() - sent);
        }
        let ack = json!({"id": "00000000-0000-4000-8000-000000000000", "type": "notification:ack", "timestamp": 0,
            "payload": {"notificationId": value["payload"]["id"]}});
        let _ = ws
            .send(tokio_tungstenite::tungstenite::Message::text(ack.to_string()))
            .await;
    }
}
