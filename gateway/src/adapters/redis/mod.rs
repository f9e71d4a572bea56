//! Redis adapters (cluster mode): state every replica must share but that may be lost without losing
//! a notification: single-use token claims and revocations, the connection registry, rate limits,
//! and the fan-out bus. Every key starts with a prefix (`herald:` by default), so several gateways,
//! or several tests, can share one Redis.
//!
//! Expiry is logical: callers pass `now` and absolute expiry instants, which are compared inside
//! scripts; Redis TTLs (relative, `PX`) only make sure dead keys disappear.

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::app::metrics::BackendMetrics;
use crate::error::{Error, Result};
use crate::ports::HealthProbe;

mod bus;
mod ledger;
mod limiter;
mod registry;
mod timed;

use timed::Timed;

pub use bus::RedisEventBus;
pub use ledger::RedisTokenLedger;
pub use limiter::RedisRateLimiter;
pub use registry::RedisConnectionRegistry;

/// A connection to Redis shared by the adapters; it reconnects by itself after a failure.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    connection: ConnectionManager,
    prefix: String,
    metrics: BackendMetrics,
}

impl Redis {
    /// Connects to `url`; a `rediss://` URL uses TLS, verified against `ca_file` (PEM) when given,
    /// else against the public web roots.
    pub async fn connect(url: &str, prefix: &str, ca_file: Option<&std::path::Path>) -> Result<Self> {
        let invalid = |e: redis::RedisError| Error::Backend(format!("invalid REDIS_URL: {e}"));
        let client = match ca_file {
            Some(ca_file) => {
                let root_cert = std::fs::read(ca_file)
                    .map_err(|e| Error::Backend(format!("HERALD_REDIS_CA_FILE {}: {e}", ca_file.display())))?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(url, certificates).map_err(invalid)?
            }
            None => redis::Client::open(url).map_err(invalid)?,
        };
        // One plain connection first, bounded: the connection manager retries a failing handshake (a
        // certificate another CA signed) without end, where starting must fail and say why.
        let first = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| Error::Unavailable("cannot connect to Redis: no answer within 5 s".into()))?
        .map_err(|e| Error::Unavailable(format!("cannot connect to Redis: {e}")))?;
        drop(first);
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(std::time::Duration::from_secs(2))
            .set_response_timeout(std::time::Duration::from_secs(2))
            .set_number_of_retries(2);
        let connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot connect to Redis: {e}")))?;
        Ok(Self {
            client,
            connection,
            prefix: prefix.to_owned(),
            metrics: BackendMetrics::default(),
        })
    }

    /// Records every command's latency and failure into `metrics` (`/metrics`).
    pub fn with_metrics(mut self, metrics: BackendMetrics) -> Self {
        // The bus's subscription and publishes, and the scripts every other adapter runs.
        for operation in ["subscribe", "publish", "evalsha"] {
            metrics.declare(crate::app::metrics::Backend::Redis, operation);
        }
        self.metrics = metrics;
        self
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        key.push_str(&parts.join(":"));
        key
    }

    /// The shared connection, timed: every command through it is counted in `/metrics`.
    fn connection(&self) -> Timed {
        Timed::new(self.connection.clone(), self.metrics.clone())
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

    async fn check(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// A Redis handle with a prefix of its own for one test, or `None` (with a loud message) when no
/// test Redis is configured outside CI.
#[cfg(test)]
pub(crate) async fn test_redis() -> Option<Redis> {
    let url = herald_e2e::service_url("HERALD_TEST_REDIS_URL")?;
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    Some(Redis::connect(&url, &prefix, None).await.expect("test Redis reachable"))
}
