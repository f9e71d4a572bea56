//! Herald as an open-loop target: the embedded default (one release gateway on SQLite), or cluster
//! mode (two release replicas sharing PostgreSQL and Redis; publishes go to the first, clients connect
//! to the second, so every notification crosses the bus). Started as a platform team would run it:
//! default settings, default logging.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use herald_e2e::{GatewayProcess, Ws, client_message, fresh_database};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::target::{Client, Target};
use crate::{JWT_SECRET, TOKEN_SECRET};

const PUBLISHER_KEY: &str = "bench-publisher-key-0123456789abcdef";
/// The gateway closes connections silent for 90 s; a client pings well within that.
const PING_EVERY: Duration = Duration::from_secs(25);

pub struct Herald {
    name: String,
    /// Where publishes go (the first replica in cluster mode).
    publisher: GatewayProcess,
    /// Where clients connect (the second replica in cluster mode; the same process embedded).
    receiver: Option<GatewayProcess>,
    http: reqwest::Client,
}

/// Reads a `--gateway-env` setting: `NAME=VALUE`, NAME a variable's name.
pub fn parse_setting(setting: &str) -> Result<(String, String), String> {
    let (name, value) = setting
        .split_once('=')
        .ok_or_else(|| format!("`{setting}` is not NAME=VALUE"))?;
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("`{name}` is not a variable's name"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// What every gateway of the benchmark is started with, then `extra` (which wins).
fn base_env(extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("HERALD_JWT_HS256_SECRET".to_owned(), JWT_SECRET.to_owned()),
        ("HERALD_JWT_ISSUER".to_owned(), herald_e2e::JWT_ISSUER.to_owned()),
        ("HERALD_JWT_AUDIENCE".to_owned(), herald_e2e::JWT_AUDIENCE.to_owned()),
        ("WEBSOCKET_TOKEN_SECRET".to_owned(), TOKEN_SECRET.to_owned()),
        ("HERALD_PUBLISHER_KEYS".to_owned(), format!("bench={PUBLISHER_KEY}")),
        // Every client connects from 127.0.0.1.
        ("HERALD_MAX_CONNECTS_PER_MINUTE_PER_IP".to_owned(), "1000000".to_owned()),
        // One publisher drives the whole load, beyond the default per-publisher budget.
        (
            "HERALD_PUBLISHER_NOTIFICATIONS_PER_SECOND".to_owned(),
            "1000000".to_owned(),
        ),
    ];
    env.extend(extra.iter().cloned());
    env
}

fn start(env: &[(String, String)]) -> GatewayProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    GatewayProcess::start(&[], &env)
}

impl Herald {
    /// One gateway on its embedded default (SQLite file in a fresh data directory).
    pub fn embedded(extra: &[(String, String)]) -> Self {
        Self {
            name: "herald (embedded, SQLite)".to_owned(),
            publisher: start(&base_env(extra)),
            receiver: None,
            http: reqwest::Client::new(),
        }
    }

    /// Two replicas on a fresh database of the PostgreSQL at `admin_url` and the Redis at `redis_url`.
    pub fn cluster(admin_url: &str, redis_url: &str, extra: &[(String, String)]) -> Self {
        let mut env = base_env(&[]);
        env.extend([
            ("DATABASE_URL".to_owned(), fresh_database(admin_url)),
            ("REDIS_URL".to_owned(), redis_url.to_owned()),
            // A fresh prefix per run, so no state of an earlier run is seen.
            (
                "HERALD_REDIS_PREFIX".to_owned(),
                format!("bench-{}:", std::process::id()),
            ),
            ("HERALD_MIGRATE_ON_START".to_owned(), "true".to_owned()),
        ]);
        env.extend(extra.iter().cloned());
        Self {
            name: "herald (cluster: 2 replicas, PostgreSQL, Redis)".to_owned(),
            publisher: start(&env),
            receiver: Some(start(&env)),
            http: reqwest::Client::new(),
        }
    }

    fn receiver(&self) -> &GatewayProcess {
        self.receiver.as_ref().unwrap_or(&self.publisher)
    }
}

#[async_trait]
impl Target for Herald {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.publisher.pid()];
        pids.extend(self.receiver.as_ref().map(GatewayProcess::pid));
        pids
    }

    fn caveat(&self) -> &'static str {
        ""
    }

    async fn connect(&self, user: usize) -> anyhow::Result<Box<dyn Client>> {
        let receiver = self.receiver();
        let token = crate::connection_token(&self.http, &receiver.url("/ws/token"), &format!("user-{user}")).await?;
        let addr: SocketAddr = receiver.addr;
        // Nagle off, as every client of the benchmark does.
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/ws?token={token}"), None, true).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text)?;
                    if message["type"] == "connected" {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.into()),
                None => bail!("closed before `connected`"),
            }
        }
        Ok(Box::new(HeraldClient {
            ws,
            last_ping: Instant::now(),
        }))
    }

    async fn publish(&self, users: &[usize], key: u64) -> anyhow::Result<()> {
        let body = json!({
            "userIds": users.iter().map(|user| format!("user-{user}")).collect::<Vec<_>>(),
            "notification": {"type": "new_like", "title": "bench", "data": {"k": key}},
        });
        let response = self
            .http
            .post(self.publisher.internal_url("/api/publish"))
            .bearer_auth(PUBLISHER_KEY)
            .json(&body)
            .send()
            .await?;
        if response.status() != reqwest::StatusCode::ACCEPTED {
            bail!(
                "publish answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    async fn own_account(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let replicas = [
            Some(("publisher", &self.publisher)),
            self.receiver.as_ref().map(|r| ("receiver", r)),
        ];
        for (role, replica) in replicas.into_iter().flatten() {
            let text = match self.http.get(replica.internal_url("/metrics")).send().await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(err) => {
                    lines.push(format!("{role}: /metrics unreadable: {err}"));
                    continue;
                }
            };
            lines.extend(backend_times(&text).into_iter().map(|(operation, count, mean_ms)| {
                format!("{role}: {operation} x{count}, mean {mean_ms:.3} ms (since start)")
            }));
        }
        lines
    }
}

/// Each backend operation's count and mean duration in milliseconds, from the
/// `herald_backend_request_duration_seconds` histogram in a `/metrics` text; operations never
/// called are left out.
fn backend_times(metrics: &str) -> Vec<(String, u64, f64)> {
    const FAMILY: &str = "herald_backend_request_duration_seconds";
    let read = |suffix: &str| -> std::collections::BTreeMap<String, f64> {
        let prefix = format!("{FAMILY}_{suffix}{{");
        metrics
            .lines()
            .filter_map(|line| line.strip_prefix(prefix.as_str()))
            .filter_map(|rest| {
                let (labels, value) = rest.split_once("} ")?;
                Some((labels.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    };
    let sums = read("sum");
    read("count")
        .into_iter()
        .filter(|(_, count)| *count > 0.0)
        .map(|(labels, count)| {
            let mean_ms = sums.get(&labels).copied().unwrap_or_default() / count * 1_000.0;
            (labels, count as u64, mean_ms)
        })
        .collect()
}

struct HeraldClient {
    ws: Ws,
    last_ping: Instant,
}

#[async_trait]
impl Client for HeraldClient {
    async fn next(&mut self) -> anyhow::Result<Option<u64>> {
        loop {
            if self.last_ping.elapsed() >= PING_EVERY {
                self.ws.send(herald_e2e::ping_message()).await?;
                self.last_ping = Instant::now();
            }
            let frame = match tokio::time::timeout(PING_EVERY, self.ws.next()).await {
                Err(_) => continue,
                Ok(None) => return Ok(None),
                Ok(Some(frame)) => frame?,
            };
            let Message::Text(text) = frame else { continue };
            let message: Value = serde_json::from_str(&text)?;
            if message["type"] != "notification" {
                continue;
            }
            let payload = &message["payload"];
            let key = payload["data"]["k"]
                .as_u64()
                .context("a notification without its key")?;
            self.ws
                .send(client_message(
                    "notification:ack",
                    json!({"notificationId": payload["id"]}),
                ))
                .await?;
            return Ok(Some(key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{backend_times, parse_setting};

    #[test]
    fn backend_times_are_counts_and_means_of_the_histogram() {
        let text = "\
herald_backend_request_duration_seconds_sum{backend=\"postgres\",operation=\"commit\"} 0.5
herald_backend_request_duration_seconds_count{backend=\"postgres\",operation=\"commit\"} 250
herald_backend_request_duration_seconds_sum{backend=\"redis\",operation=\"spublish\"} 0
herald_backend_request_duration_seconds_count{backend=\"redis\",operation=\"spublish\"} 0
herald_backend_errors_total{backend=\"postgres\",operation=\"commit\"} 3
";
        let times = backend_times(text);
        assert_eq!(times.len(), 1, "never called: left out; {times:?}");
        let (labels, count, mean_ms) = &times[0];
        assert_eq!(
            (labels.as_str(), *count),
            ("backend=\"postgres\",operation=\"commit\"", 250)
        );
        assert!((mean_ms - 2.0).abs() < 1e-9, "{mean_ms}");
    }

    #[test]
    fn a_gateway_setting_is_a_name_and_a_value() {
        assert_eq!(
            parse_setting("HERALD_OUTBOUND_QUEUE=64"),
            Ok(("HERALD_OUTBOUND_QUEUE".to_owned(), "64".to_owned()))
        );
        assert_eq!(
            parse_setting("RUST_LOG=a=b"),
            Ok(("RUST_LOG".to_owned(), "a=b".to_owned()))
        );
        assert_eq!(parse_setting("EMPTY="), Ok(("EMPTY".to_owned(), String::new())));
        assert!(parse_setting("HERALD_OUTBOUND_QUEUE").is_err(), "no value");
        assert!(parse_setting("=64").is_err(), "no name");
        assert!(parse_setting("A-B=1").is_err(), "not a variable's name");
    }
}
