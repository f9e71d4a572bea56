//! Shared helpers of the gateway's socket tests: an in-process gateway on a free loopback port with
//! its own SQLite file, user JWTs, and a small WebSocket client.
#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
pub use herald_e2e::{TempDir, WAIT, Ws, await_close, client_message, ping_message, recv_json};
use herald_gateway::adapters::clock::{ManualClock, SystemClock};
use herald_gateway::config::{Config, Options};
use herald_gateway::ports::Clock;
use herald_gateway::server::RunningGateway;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

pub const JWT_SECRET: &str = "integration-test-user-jwt-secret-0123456789";
pub const TOKEN_SECRET: &str = "integration-test-token-secret-abcdefghijklmn";
pub const PUBLISHER_KEY: &str = "integration-test-publisher-key-0123456789";
pub struct TestGateway {
    pub running: RunningGateway,
    pub addr: SocketAddr,
    /// The internal listener (`/api/publish`, `/metrics`).
    pub internal_addr: SocketAddr,
    pub http: reqwest::Client,
    pub database_url: String,
    _dir: TempDir,
}

/// Options of a non-dev gateway with known secrets, a free port and a fresh database.
pub fn options(dir: &TempDir) -> Options {
    Options {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        internal_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        database_url: Some(format!("sqlite://{}", dir.0.join("herald.db").display()).into()),
        jwt_hs256_secret: Some(JWT_SECRET.into()),
        jwt_issuer: Some(herald_e2e::JWT_ISSUER.into()),
        jwt_audience: Some(herald_e2e::JWT_AUDIENCE.into()),
        token_secret: Some(TOKEN_SECRET.into()),
        publisher_keys: Some(format!("tests={PUBLISHER_KEY}").into()),
        // Tests open many connections from 127.0.0.1; the per-IP limit has tests of its own.
        max_connects_per_minute_per_ip: Some(1_000),
        ..Options::default()
    }
}

pub async fn start() -> TestGateway {
    start_with(|_| {}).await
}

pub async fn start_with(adjust: impl FnOnce(&mut Options)) -> TestGateway {
    let dir = TempDir::new();
    let mut options = options(&dir);
    adjust(&mut options);
    start_config(dir, Config::resolve(options).expect("valid test config")).await
}

/// A gateway whose services read time from `clock`, which the test moves instead of sleeping.
/// (User JWTs are still checked against the system clock, so start `clock` at the system time.)
pub async fn start_at(clock: Arc<ManualClock>) -> TestGateway {
    let dir = TempDir::new();
    let config = Config::resolve(options(&dir)).expect("valid test config");
    launch(dir, config, clock).await
}

/// The system time now, where a manual clock starts.
pub fn system_now_ms() -> i64 {
    SystemClock.now_ms()
}

/// Starts a gateway for a configuration a test resolved itself; `dir` lives as long as the gateway.
pub async fn start_config(dir: TempDir, config: Config) -> TestGateway {
    launch(dir, config, Arc::new(SystemClock)).await
}

async fn launch(dir: TempDir, config: Config, clock: Arc<dyn Clock>) -> TestGateway {
    let database_url = match &config.store {
        herald_gateway::config::StoreConfig::Sqlite { url } => url.clone(),
        herald_gateway::config::StoreConfig::Cluster { database_url, .. } => database_url.expose().clone(),
    };
    let running = RunningGateway::start_with_clock(config, clock)
        .await
        .expect("gateway starts");
    let addr = running.addr;
    let internal_addr = running.internal_addr;
    TestGateway {
        running,
        addr,
        internal_addr,
        http: reqwest::Client::new(),
        database_url,
        _dir: dir,
    }
}

/// An HS256 user JWT for `sub`, expiring `exp_in_secs` from now (negative: already expired).
pub fn user_jwt(sub: &str, exp_in_secs: i64) -> String {
    user_jwt_with_roles(sub, exp_in_secs, &[])
}

/// Like [`user_jwt`], with roles in the default `roles` claim.
pub fn user_jwt_with_roles(sub: &str, exp_in_secs: i64, roles: &[&str]) -> String {
    herald_e2e::hs256_jwt(JWT_SECRET, sub, exp_in_secs, roles)
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the internal listener, where `/api/publish` and `/metrics` are.
    pub fn internal_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.internal_addr)
    }

    /// The whole `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.internal_url("/metrics")).send().await;
        response.expect("GET /metrics").text().await.expect("metrics text")
    }

    pub async fn post_token(&self, jwt: Option<&str>) -> reqwest::Response {
        let mut request = self.http.post(self.url("/ws/token"));
        if let Some(jwt) = jwt {
            request = request.bearer_auth(jwt);
        }
        request.send().await.expect("POST /ws/token")
    }

    /// A fresh connection token for `user`.
    pub async fn token(&self, user: &str) -> String {
        let response = self.post_token(Some(&user_jwt(user, 300))).await;
        assert_eq!(response.status(), 200, "token issuance");
        let body: Value = response.json().await.expect("json");
        body["token"].as_str().expect("token").to_owned()
    }

    /// `POST /api/publish` with the test publisher's key.
    pub async fn publish(&self, body: &Value) -> reqwest::Response {
        self.publish_as(Some(PUBLISHER_KEY), body).await
    }

    /// `POST /api/publish` with `key` as the bearer, or no Authorization at all.
    pub async fn publish_as(&self, key: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.http.post(self.internal_url("/api/publish")).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.expect("POST /api/publish")
    }

    /// Publishes one notification of `kind` to `users`; returns the created ids in order.
    pub async fn publish_to(&self, users: &[&str], kind: &str, title: &str) -> Vec<String> {
        let response = self
            .publish(&json!({"userIds": users, "notification": {"type": kind, "title": title}}))
            .await;
        assert_eq!(response.status(), 202, "publish accepted");
        let answer: Value = response.json().await.expect("json");
        answer["created"]
            .as_array()
            .expect("created")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// `GET path` as `user`, answered with JSON.
    pub async fn get_json(&self, path: &str, user: &str) -> Value {
        let response = self
            .as_user(reqwest::Method::GET, path, user)
            .send()
            .await
            .expect("GET");
        response.json().await.expect("JSON answer")
    }

    /// A user's HTTP request with a fresh user JWT.
    pub fn as_user(&self, method: reqwest::Method, path: &str, user: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(user_jwt(user, 300))
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.addr)
    }

    /// Connects with `token` in the query string.
    pub async fn connect(&self, token: &str) -> Result<Ws, Refusal> {
        connect_request(self.ws_url(token).into_client_request().expect("request")).await
    }

    /// Connects as `user` with a fresh token and reads the `connected` message.
    pub async fn connect_user(&self, user: &str) -> (Ws, Value) {
        let token = self.token(user).await;
        let mut ws = self.connect(&token).await.expect("connects");
        let connected = recv_json(&mut ws).await;
        assert_eq!(connected["type"], "connected");
        (ws, connected)
    }

    /// Waits until `user` has `count` registered connections.
    pub async fn await_connection_count(&self, user: &str, count: usize) {
        let connections = self.running.gateway.connections.clone();
        let outcome = tokio::time::timeout(WAIT, async {
            loop {
                if connections.list_for_user(user).await.expect("list").len() == count {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(outcome.is_ok(), "{user} never reached {count} registered connections");
    }
}

/// An HTTP refusal of a WebSocket upgrade: status and JSON body.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub body: Value,
}

impl Refusal {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

pub async fn connect_request(request: tungstenite::handshake::client::Request) -> Result<Ws, Refusal> {
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err(Refusal { status, body })
        }
        Err(other) => panic!("connection failed without an HTTP answer: {other}"),
    }
}

pub async fn send(ws: &mut Ws, message: Message) {
    ws.send(message).await.expect("send");
}

pub async fn ping(ws: &mut Ws) -> Value {
    send(ws, ping_message()).await;
    recv_type(ws, "pong").await
}

/// The next message of type `kind`, skipping others (such as `unread_count` updates).
pub async fn recv_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let message = recv_json(ws).await;
        if message["type"] == kind {
            return message;
        }
    }
}

/// Asserts that no message of type `kind` arrives within `window`.
pub async fn assert_no_message(ws: &mut Ws, kind: &str, window: Duration) {
    use futures_util::StreamExt;
    let seen = tokio::time::timeout(window, async {
        while let Some(Ok(Message::Text(text))) = ws.next().await {
            let message: Value = serde_json::from_str(text.as_str()).expect("json");
            if message["type"] == kind {
                return message;
            }
        }
        Value::Null
    })
    .await;
    assert!(seen.is_err(), "unexpected {kind}: {seen:?}");
}

/// Acknowledges a notification the way a client does.
pub async fn ack(ws: &mut Ws, notification_id: &str) {
    send(
        ws,
        client_message("notification:ack", json!({ "notificationId": notification_id })),
    )
    .await;
}
