//! A cluster of real `herald-gateway` replicas sharing the test PostgreSQL and Redis, and the client
//! calls the cluster and security suites make against its replicas.

use serde_json::{Value, json};

use crate::{GatewayProcess, Ws, fresh_database, recv_json, service_url};

pub const JWT_SECRET: &str = "cluster-user-jwt-secret-0123456789-abcdefgh";
pub const TOKEN_SECRET: &str = "cluster-token-secret-0123456789-ABCDEFGHIJ";
pub const PUBLISHER_KEY: &str = "cluster-publisher-key-0123456789abcdef";

pub fn user_jwt(sub: &str) -> String {
    crate::hs256_jwt(JWT_SECRET, sub, 600, &[])
}

/// The environment of a replica of one cluster: same secrets, same database, same Redis and prefix.
pub struct Cluster {
    pub database_url: String,
    pub redis_url: String,
    pub prefix: String,
}

impl Cluster {
    /// `None` when the test services are not configured (outside CI).
    pub fn new(redis_url: Option<String>) -> Option<Self> {
        let admin = service_url("HERALD_TEST_DATABASE_URL")?;
        let redis_url = match redis_url {
            Some(url) => url,
            None => service_url("HERALD_TEST_REDIS_URL")?,
        };
        Some(Cluster {
            database_url: fresh_database(&admin),
            redis_url,
            prefix: format!("e2e{}:", uuid::Uuid::new_v4().simple()),
        })
    }

    pub fn replica(&self, extra: &[(&str, &str)]) -> GatewayProcess {
        let mut env = vec![
            ("DATABASE_URL", self.database_url.as_str()),
            ("REDIS_URL", self.redis_url.as_str()),
            ("HERALD_REDIS_PREFIX", self.prefix.as_str()),
            ("HERALD_MIGRATE_ON_START", "true"),
            ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
            crate::JWT_ISSUER_AND_AUDIENCE[0],
            crate::JWT_ISSUER_AND_AUDIENCE[1],
            ("WEBSOCKET_TOKEN_SECRET", TOKEN_SECRET),
            ("HERALD_PUBLISHER_KEYS", "e2e=cluster-publisher-key-0123456789abcdef"),
            ("HERALD_MAX_CONNECTS_PER_MINUTE_PER_IP", "1000"),
        ];
        env.extend_from_slice(extra);
        GatewayProcess::start(&[], &env)
    }

    /// Starts `count` replicas at once (they race to apply the migrations).
    pub fn replicas(&self, count: usize) -> Vec<GatewayProcess> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..count).map(|_| scope.spawn(|| self.replica(&[]))).collect();
            handles.into_iter().map(|h| h.join().expect("replica starts")).collect()
        })
    }
}

pub async fn post_token(replica: &GatewayProcess, user: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(replica.url("/ws/token"))
        .bearer_auth(user_jwt(user))
        .send()
        .await
        .expect("POST /ws/token")
}

pub async fn token(replica: &GatewayProcess, user: &str) -> String {
    replica.issue_token(&user_jwt(user)).await
}

pub async fn connect(replica: &GatewayProcess, token: &str) -> Result<Ws, (u16, String)> {
    replica.open_ws(token).await.map(|(ws, _)| ws)
}

pub async fn publish(replica: &GatewayProcess, users: &[&str], title: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(replica.internal_url("/api/publish"))
        .bearer_auth(PUBLISHER_KEY)
        .json(&json!({"userIds": users, "notification": {"type": "new_comment", "title": title}}))
        .send()
        .await
        .expect("POST /api/publish")
}

/// The next `notification` message (skipping unread counts and the like).
pub async fn next_notification(ws: &mut Ws) -> Value {
    loop {
        let message = recv_json(ws).await;
        if message["type"] == "notification" {
            return message;
        }
    }
}
