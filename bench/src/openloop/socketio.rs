//! Socket.IO 4 as an open-loop target: one node, or two nodes forming one cluster through the Redis
//! adapter (publishes go to the first, clients connect to the second, so every notification crosses
//! Redis). The server is `bench/peers/socketio/server.js`, run with the `node` on PATH; the client is a
//! minimal Socket.IO v5 / Engine.IO v4 client over WebSocket, so no JavaScript runs on the client side.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use herald_e2e::{GatewayProcess, Ws};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

use super::target::{Client, Target};

/// How long the one-time `npm ci` may take before it is given up.
const NPM_CI_LIMIT: Duration = Duration::from_secs(300);

/// The largest integer a JavaScript number holds exactly: keys travel through the server's
/// `JSON.parse`/`JSON.stringify`, so larger ones would come back changed.
const MAX_SAFE_KEY: u64 = (1 << 53) - 1;

/// Running Socket.IO node(s); stopped (killed) when dropped.
pub struct SocketIo {
    /// One node, or two: publishes go to the first, clients connect to the last.
    nodes: Vec<GatewayProcess>,
    http: reqwest::Client,
    publish_url: String,
}

impl SocketIo {
    /// Starts one node (`redis_url` None) or two nodes sharing the Redis at `redis_url`, installing the
    /// peer's npm dependencies first if they are missing. Blocks until every node listens (panics, with
    /// the node's output, if one does not within `herald_e2e::WAIT`).
    pub fn start(redis_url: Option<&str>) -> anyhow::Result<Self> {
        let dir = peer_dir();
        let script = dir.join("server.js");
        anyhow::ensure!(script.is_file(), "the Socket.IO peer is missing: {}", script.display());
        let node =
            on_path("node").context("`node` (Node.js 18 or later) is not on PATH; the Socket.IO peer needs it")?;
        ensure_dependencies(&dir)?;
        let script = script.to_str().context("the peer's path is not UTF-8")?;
        let mut env = vec![("NODE_ENV", "production")];
        if let Some(url) = redis_url {
            env.push(("REDIS_URL", url));
        }
        let count = if redis_url.is_some() { 2 } else { 1 };
        let nodes: Vec<GatewayProcess> = (0..count)
            .map(|_| GatewayProcess::start_binary(&node, &[script], &env))
            .collect();
        let publish_url = nodes[0].url("/publish");
        Ok(Self {
            nodes,
            http: reqwest::Client::new(),
            publish_url,
        })
    }

    fn clustered(&self) -> bool {
        self.nodes.len() > 1
    }
}

#[async_trait]
impl Target for SocketIo {
    fn name(&self) -> String {
        if self.clustered() {
            "socket.io 4 (two nodes + Redis adapter)".to_owned()
        } else {
            "socket.io 4 (one node)".to_owned()
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(GatewayProcess::pid).collect()
    }

    fn caveat(&self) -> &'static str {
        "Socket.IO neither persists nor acknowledges: a notification to a user who is not connected is \
         lost, and the clients' `ack` events are ignored"
    }

    async fn connect(&self, user: usize) -> anyhow::Result<Box<dyn Client>> {
        let node = self.nodes.last().context("no node")?;
        let url = format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket&userId=user-{user}",
            node.addr
        );
        let handshake = async {
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
                .await
                .context("WebSocket connection")?;
            // Engine.IO open, then the Socket.IO CONNECT to the default namespace and its answer. The
            // server joins the user's room in the same tick as it writes the answer, so once it is read
            // a publish reaches this client.
            match read_packet(&mut ws).await? {
                Some(Packet::Open) => {}
                other => bail!("expected the Engine.IO open packet, got {other:?}"),
            }
            ws.send(Message::text("40")).await?;
            loop {
                match read_packet(&mut ws).await? {
                    Some(Packet::Connect) => return Ok(ws),
                    Some(Packet::Ping(payload)) => ws.send(Message::text(format!("3{payload}"))).await?,
                    Some(Packet::ConnectError(error)) => bail!("connection refused: {error}"),
                    None => bail!("closed during the handshake"),
                    Some(_) => {}
                }
            }
        };
        let ws = tokio::time::timeout(herald_e2e::WAIT, handshake)
            .await
            .map_err(|_| anyhow::anyhow!("no Socket.IO handshake within {:?}", herald_e2e::WAIT))?
            .with_context(|| format!("connecting user {user} to socket.io at {}", node.addr))?;
        Ok(Box::new(SocketIoClient { ws }))
    }

    async fn publish(&self, users: &[usize], key: u64) -> anyhow::Result<()> {
        anyhow::ensure!(key <= MAX_SAFE_KEY, "key {key} does not survive a JavaScript number");
        let body = json!({
            "userIds": users.iter().map(|user| format!("user-{user}")).collect::<Vec<_>>(),
            "notification": {"k": key, "type": "new_like", "title": "bench"},
        });
        self.http
            .post(&self.publish_url)
            .json(&body)
            .send()
            .await
            .context("POST /publish")?
            .error_for_status()
            .context("POST /publish")?;
        Ok(())
    }
}

struct SocketIoClient {
    ws: Ws,
}

#[async_trait]
impl Client for SocketIoClient {
    async fn next(&mut self) -> anyhow::Result<Option<u64>> {
        loop {
            match read_packet(&mut self.ws).await? {
                Some(Packet::Notification(key)) => {
                    self.ws.send(Message::text(ack_message(key))).await?;
                    return Ok(Some(key));
                }
                Some(Packet::Ping(payload)) => self.ws.send(Message::text(format!("3{payload}"))).await?,
                Some(Packet::Close | Packet::Disconnect) | None => return Ok(None),
                Some(_) => {}
            }
        }
    }
}

/// The next Engine.IO packet; `None` once the WebSocket closed.
async fn read_packet(ws: &mut Ws) -> anyhow::Result<Option<Packet>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return parse_packet(text.as_str()).map(Some),
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            // A reset (the server process ended) closes the connection too, only less politely.
            Some(Err(
                tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed
                | tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake),
            )) => return Ok(None),
            Some(Err(error)) => return Err(error.into()),
            // Binary attachments are not used; WebSocket pings are answered by tungstenite.
            Some(Ok(_)) => {}
        }
    }
}

/// What the client acts on among Engine.IO / Socket.IO packets.
#[derive(Debug, PartialEq)]
enum Packet {
    /// Engine.IO `0{...}`: the session is open.
    Open,
    /// Engine.IO `2` (with an optional payload): to be answered with `3` and the same payload.
    Ping(String),
    /// Engine.IO `1`: the server closes the session.
    Close,
    /// Socket.IO `40` / `40{...}`: connected to the default namespace.
    Connect,
    /// Socket.IO `41`: disconnected from the namespace.
    Disconnect,
    /// Socket.IO `44{...}`: the connection was refused.
    ConnectError(String),
    /// Socket.IO `42["notification",{"k":…}]`, with its key.
    Notification(u64),
    /// Anything else (other events, noops), ignored.
    Other,
}

fn parse_packet(text: &str) -> anyhow::Result<Packet> {
    let mut chars = text.chars();
    let packet = match chars.next() {
        Some('0') => Packet::Open,
        Some('1') => Packet::Close,
        Some('2') => Packet::Ping(chars.as_str().to_owned()),
        Some('4') => {
            let message = chars.as_str();
            match message.chars().next() {
                Some('0') => Packet::Connect,
                Some('1') => Packet::Disconnect,
                Some('2') => parse_event(&message[1..])?,
                Some('4') => Packet::ConnectError(message[1..].to_owned()),
                _ => Packet::Other,
            }
        }
        _ => Packet::Other,
    };
    Ok(packet)
}

/// A Socket.IO EVENT after its type: `[/namespace,][ack id]["name",args…]`.
fn parse_event(event: &str) -> anyhow::Result<Packet> {
    let event = match event.strip_prefix('/') {
        Some(namespaced) => namespaced.split_once(',').map_or("", |(_, rest)| rest),
        None => event,
    };
    let payload = event.trim_start_matches(|c: char| c.is_ascii_digit());
    if !payload.starts_with("[\"notification\"") {
        return Ok(Packet::Other);
    }
    let args: Value = serde_json::from_str(payload).with_context(|| format!("a notification event: {payload}"))?;
    let key = args[1]["k"]
        .as_u64()
        .with_context(|| format!("a notification without a numeric key: {payload}"))?;
    Ok(Packet::Notification(key))
}

/// The `ack` event the client sends for `key`.
fn ack_message(key: u64) -> String {
    format!(r#"42["ack",{{"k":{key}}}]"#)
}

/// `bench/peers/socketio`.
fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers").join("socketio")
}

/// The executable `name` in a PATH directory.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `npm ci` in `dir` unless an install completed there (npm writes
/// `node_modules/.package-lock.json` last); bounded by [`NPM_CI_LIMIT`].
fn ensure_dependencies(dir: &Path) -> anyhow::Result<()> {
    if dir.join("node_modules").join(".package-lock.json").is_file() {
        return Ok(());
    }
    let npm = on_path("npm").context("the Socket.IO peer's dependencies are not installed and `npm` is not on PATH")?;
    eprintln!(
        "socket.io peer: installing its npm dependencies (pinned by package-lock.json): `npm ci --no-audit --no-fund` in {}",
        dir.display()
    );
    let mut child = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .spawn()
        .context("starting npm ci")?;
    let deadline = Instant::now() + NPM_CI_LIMIT;
    loop {
        if let Some(status) = child.try_wait().context("waiting for npm ci")? {
            anyhow::ensure!(status.success(), "npm ci failed ({status}) in {}", dir.display());
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("npm ci did not finish within {NPM_CI_LIMIT:?} in {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Packet {
        parse_packet(text).expect("parses")
    }

    #[test]
    fn a_notification_gives_its_key() {
        assert_eq!(parse(r#"42["notification",{"k":7}]"#), Packet::Notification(7));
        assert_eq!(
            parse(r#"42["notification",{"k":9007199254740991,"type":"new_like","title":"bench"}]"#),
            Packet::Notification(9_007_199_254_740_991)
        );
        // With an acknowledgement id, and in a namespace.
        assert_eq!(parse(r#"4212["notification",{"k":3}]"#), Packet::Notification(3));
        assert_eq!(parse(r#"42/admin,["notification",{"k":4}]"#), Packet::Notification(4));
    }

    #[test]
    fn a_notification_without_a_numeric_key_is_an_error() {
        assert!(parse_packet(r#"42["notification",{"type":"new_like"}]"#).is_err());
        assert!(parse_packet(r#"42["notification",{"k":"7"}]"#).is_err());
        assert!(parse_packet(r#"42["notification",{"k":-1}]"#).is_err());
        assert!(parse_packet(r#"42["notification",{"k":7}"#).is_err());
    }

    #[test]
    fn other_events_are_ignored() {
        assert_eq!(parse(r#"42["ready"]"#), Packet::Other);
        assert_eq!(parse(r#"42["notifications",{"k":7}]"#), Packet::Other);
        assert_eq!(parse("6"), Packet::Other);
        assert_eq!(parse(""), Packet::Other);
    }

    #[test]
    fn engine_io_packets_are_recognised() {
        assert_eq!(parse("2"), Packet::Ping(String::new()));
        assert_eq!(parse("2probe"), Packet::Ping("probe".to_owned()));
        assert_eq!(
            parse(r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#),
            Packet::Open
        );
        assert_eq!(parse("1"), Packet::Close);
    }

    #[test]
    fn socket_io_connection_packets_are_recognised() {
        assert_eq!(parse("40"), Packet::Connect);
        assert_eq!(parse(r#"40{"sid":"xyz"}"#), Packet::Connect);
        assert_eq!(parse("41"), Packet::Disconnect);
        assert_eq!(
            parse(r#"44{"message":"Invalid namespace"}"#),
            Packet::ConnectError(r#"{"message":"Invalid namespace"}"#.to_owned())
        );
    }

    #[test]
    fn the_ack_names_the_key() {
        assert_eq!(ack_message(7), r#"42["ack",{"k":7}]"#);
        let sent: Value = serde_json::from_str(&ack_message(7)[2..]).expect("JSON");
        assert_eq!(sent, json!(["ack", {"k": 7}]));
    }
}
