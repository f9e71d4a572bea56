//! Redis adapters (cluster mode): state every replica must share but that may be lost without losing
//! a notification: single-use token claims and revocations, the connection registry, rate limits,
//! and the fan-out bus. Every key starts with a prefix (`herald:` by default), so several gateways,
//! or several tests, can share one Redis.
//!
//! Expiry is logical: callers pass `now` and absolute expiry instants, which are compared inside
//! scripts; Redis TTLs (relative, `PX`) only make sure dead keys disappear.
//!
//! Everything runs on one Redis or on a Redis Cluster alike: a user's keys and bus channel carry the
//! user as a hash tag (`keys`), so they live in one slot, and every script names all its keys in
//! `KEYS` (none is built inside Lua), so a script touches one slot only.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo};
use tokio::sync::mpsc;

use crate::app::metrics::BackendMetrics;
use crate::error::{Error, Result};
use crate::ports::HealthProbe;

mod bus;
mod connection;
mod keys;
mod ledger;
mod limiter;
mod registry;
mod subscriber;
mod timed;

use connection::{Connection, Target};
use subscriber::SharedSubscriber;
use timed::Timed;

pub use bus::RedisEventBus;
pub use ledger::RedisTokenLedger;
pub use limiter::RedisRateLimiter;
pub use registry::RedisConnectionRegistry;

/// A connection to Redis shared by the adapters, to one server or to a Redis Cluster; it reconnects
/// by itself after a failure (and, on a Cluster, follows slots as they move).
#[derive(Clone)]
pub struct Redis {
    connection: Connection,
    /// The bus's subscriptions, alone (see `connect`).
    subscriber: SharedSubscriber,
    prefix: String,
    metrics: BackendMetrics,
    /// What Redis pushes (RESP3): sharded pub/sub messages, subscription changes, and the client's
    /// word that a connection was lost. Taken by the bus, the one reader.
    pushes: Arc<Mutex<Option<mpsc::UnboundedReceiver<PushInfo>>>>,
}

impl Redis {
    /// Connects to `urls`: one `redis://` (or `rediss://`, TLS) URL, or with `cluster` the seed
    /// nodes of a Redis Cluster, comma-separated (one is enough: the client learns the others). TLS
    /// is verified against `ca_file` (PEM) when given, else against the public web roots.
    ///
    /// The connection speaks RESP3, so that sharded pub/sub messages arrive on it as pushes, and
    /// starting fails unless the server has sharded pub/sub (Redis 7.0 or later): the bus needs it.
    pub async fn connect(urls: &str, cluster: bool, prefix: &str, ca_file: Option<&std::path::Path>) -> Result<Self> {
        let invalid = |e: redis::RedisError| Error::Backend(format!("invalid REDIS_URL: {e}"));
        let mut seeds = Vec::new();
        for url in urls.split(',').map(str::trim).filter(|url| !url.is_empty()) {
            let mut info = url.into_connection_info().map_err(invalid)?;
            info.redis.protocol = ProtocolVersion::RESP3;
            seeds.push(info);
        }
        let certificates = match ca_file {
            Some(ca_file) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(
                    std::fs::read(ca_file)
                        .map_err(|e| Error::Backend(format!("HERALD_REDIS_CA_FILE {}: {e}", ca_file.display())))?,
                ),
            }),
            None => None,
        };
        if !cluster && seeds.len() != 1 {
            return Err(Error::Backend(format!(
                "invalid REDIS_URL: {} URLs name the seed nodes of a Redis Cluster, and cluster mode is off",
                seeds.len()
            )));
        }
        let target = Target {
            seeds,
            cluster,
            certificates,
        };
        // Two connections: subscriptions on one, every other command on the other. Redis may end a
        // sharded subscription by itself (its slot moved), and the client takes that unasked
        // `sunsubscribe` for the reply to the oldest command in flight on its connection; on a
        // connection of its own it can only meet a subscription command, never another's reply.
        let connection = target.open().await?;
        let (push_sender, pushes) = mpsc::unbounded_channel();
        let subscriber = Arc::new(target.open_subscriber(push_sender).await?);
        let redis = Self {
            connection,
            subscriber,
            prefix: prefix.to_owned(),
            metrics: BackendMetrics::default(),
            pushes: Arc::new(Mutex::new(Some(pushes))),
        };
        redis.require_sharded_pubsub().await?;
        Ok(redis)
    }

    /// Sharded pub/sub came with Redis 7.0; on an older server every session's subscription would
    /// fail, so starting does instead, saying why.
    async fn require_sharded_pubsub(&self) -> Result<()> {
        let probe = keys::tagged(&self.prefix, "probe", "herald");
        let answer: redis::RedisResult<i64> = redis::cmd("SPUBLISH")
            .arg(probe)
            .arg("")
            .query_async(&mut self.connection())
            .await;
        match answer {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == redis::ErrorKind::ResponseError || err.code() == Some("ERR") => {
                Err(Error::Unavailable(format!(
                    "Redis does not offer sharded pub/sub (SPUBLISH: {err}); Herald needs Redis 7.0 or later"
                )))
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    /// Records every command's latency and failure into `metrics` (`/metrics`).
    pub fn with_metrics(mut self, metrics: BackendMetrics) -> Self {
        // The bus's subscriptions and publishes, and the scripts every other adapter runs.
        for operation in ["ssubscribe", "sunsubscribe", "spublish", "evalsha"] {
            metrics.declare(crate::app::metrics::Backend::Redis, operation);
        }
        self.metrics = metrics;
        self
    }

    /// The shared connection, timed: every command through it is counted in `/metrics`.
    fn connection(&self) -> Timed<Connection> {
        Timed::new(self.connection.clone(), self.metrics.clone())
    }

    /// Sends a subscription command (`SSUBSCRIBE`, `SUNSUBSCRIBE`) for `channel` on the
    /// subscription connection.
    async fn subscription(&self, name: &'static str, channel: &str) -> std::result::Result<(), String> {
        self.subscriber.send(name, channel, &self.metrics).await
    }

    /// The receiver of what Redis pushes; `None` once taken (there is one bus per connection).
    fn take_pushes(&self) -> Option<mpsc::UnboundedReceiver<PushInfo>> {
        self.pushes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

fn unavailable(err: redis::RedisError) -> Error {
    Error::Unavailable(format!("Redis: {err}"))
}

/// Milliseconds from `now` until `at`, at least 1 (Redis refuses a zero TTL).
fn ttl_ms(now: i64, at: i64) -> i64 {
    (at - now).max(1)
}

#[async_trait]
impl HealthProbe for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    /// Whether this replica reaches Redis: on a Cluster, one node of it (see
    /// `Connection::ping_one_node`); a slot whose primary fails shows in `herald_backend_errors_total`.
    async fn check(&self) -> Result<()> {
        self.connection().ping_one_node().await.map_err(unavailable)?;
        Ok(())
    }
}

/// Redis handles with a prefix of their own for one test: the test Redis, then the test Redis
/// Cluster (3 primaries). A service not configured is left out outside CI, with a loud message;
/// in CI it fails the test.
#[cfg(test)]
pub(crate) async fn test_redises() -> Vec<(&'static str, Redis)> {
    test_redises_sharing(1)
        .await
        .into_iter()
        .map(|(name, mut handles)| (name, handles.remove(0)))
        .collect()
}

/// Like [`test_redises`], `handles` connections sharing one prefix for each service: replicas of
/// one gateway.
#[cfg(test)]
pub(crate) async fn test_redises_sharing(handles: usize) -> Vec<(&'static str, Vec<Redis>)> {
    let mut redises = Vec::new();
    for (name, variable, cluster) in [
        ("redis", "HERALD_TEST_REDIS_URL", false),
        ("redis cluster", "HERALD_TEST_REDIS_CLUSTER_URL", true),
    ] {
        if let Some(url) = herald_e2e::service_url(variable) {
            let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
            let mut connected = Vec::new();
            for _ in 0..handles {
                let redis = Redis::connect(&url, cluster, &prefix, None)
                    .await
                    .unwrap_or_else(|err| panic!("test {name} at {url} reachable: {err}"));
                connected.push(redis);
            }
            redises.push((name, connected));
        }
    }
    redises
}
