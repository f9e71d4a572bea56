//! NATS with its WebSocket listener as an open-loop target: Debian's `nats-server`, started fresh on
//! loopback. Users subscribe to `user.<n>` over WebSocket with a minimal NATS client written here (the
//! protocol is a few text lines); notifications are published on one shared plain TCP connection.
//! Core NATS neither persists nor acknowledges: a message to an offline user is dropped, and the
//! client's ack (published on `ack.<n>`, which nobody subscribes to) only costs the same wire work.

use std::collections::VecDeque;
use std::fs::File;
use std::net::TcpStream as StdTcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use herald_e2e::{TempDir, Ws, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OnceCell, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message};

use super::target::{Client, Target};

/// How long the server gets to listen on both ports, and a client to complete its handshake.
const START_WITHIN: Duration = Duration::from_secs(10);
/// Publishes queued for the writer of the shared publish connection before `publish` waits.
const PUBLISH_QUEUE: usize = 8192;

/// A running `nats-server` with a client port and a WebSocket port; killed on drop.
pub struct Nats {
    child: Child,
    client_port: u16,
    ws_port: u16,
    /// `major.minor`, from `nats-server --version`.
    version: String,
    /// The shared publish connection, opened by the first `publish` (it needs the runtime that
    /// `start` may not run in).
    publisher: OnceCell<Publisher>,
    dir: TempDir,
}

impl Nats {
    /// Installs Debian's `nats-server` if it is missing (as root only), starts it with a fresh
    /// configuration and waits until both ports accept connections.
    pub fn start() -> anyhow::Result<Self> {
        let version = installed_version()?;
        let dir = TempDir::new();
        let client_port = free_port();
        let ws_port = loop {
            let port = free_port();
            if port != client_port {
                break port;
            }
        };
        let config = dir.path("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{client_port}\n\
                 websocket {{\n  host: 127.0.0.1\n  port: {ws_port}\n  no_tls: true\n}}\n"
            ),
        )
        .context("writing the nats-server configuration")?;
        let log_path = dir.path("nats-server.log");
        let log = File::create(&log_path).context("creating the nats-server log")?;
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting nats-server")?;
        let mut nats = Nats {
            child,
            client_port,
            ws_port,
            version,
            publisher: OnceCell::new(),
            dir,
        };
        let log = |nats: &Nats| std::fs::read_to_string(nats.dir.path("nats-server.log")).unwrap_or_default();
        let deadline = Instant::now() + START_WITHIN;
        for port in [client_port, ws_port] {
            while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = nats.child.try_wait()? {
                    bail!(
                        "nats-server exited ({status}) before listening on {port}:\n{}",
                        log(&nats)
                    );
                }
                if Instant::now() > deadline {
                    bail!(
                        "nats-server did not listen on {port} within {START_WITHIN:?}:\n{}",
                        log(&nats)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(nats)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[async_trait]
impl Target for Nats {
    fn name(&self) -> String {
        format!("NATS {} WebSocket", self.version)
    }

    fn pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }

    fn caveat(&self) -> &'static str {
        "NATS neither persists notifications (one published while its user is offline is lost) nor \
         acknowledges them (clients send the ack anyway, and nobody reads it)"
    }

    async fn connect(&self, user: usize) -> anyhow::Result<Box<dyn Client>> {
        let url = format!("ws://127.0.0.1:{}", self.ws_port);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .with_context(|| format!("NATS WebSocket connection for user {user}"))?;
        let mut client = NatsClient {
            ws,
            parser: Parser::default(),
            ack_subject: format!("ack.{user}"),
            pending: VecDeque::new(),
        };
        tokio::time::timeout(START_WITHIN, client.subscribe(user))
            .await
            .map_err(|_| anyhow!("NATS handshake for user {user} took over {START_WITHIN:?}"))??;
        Ok(Box::new(client))
    }

    async fn publish(&self, users: &[usize], key: u64) -> anyhow::Result<()> {
        let publisher = self
            .publisher
            .get_or_try_init(|| Publisher::connect(self.client_port))
            .await?;
        let payload = format!(r#"{{"k":{key},"type":"new_like","title":"bench"}}"#);
        // Core NATS publishes to one subject at a time: one PUB per recipient, written together.
        let frame: String = users
            .iter()
            .map(|user| format!("PUB user.{user} {}\r\n{payload}\r\n", payload.len()))
            .collect();
        // Core NATS has no per-message accept (with `verbose: false` the server answers nothing): the
        // publish counts as accepted once it is queued for the connection's writer.
        publisher.send(frame.into_bytes()).await
    }
}

/// One user subscribed to `user.<n>` over the WebSocket listener.
struct NatsClient {
    ws: Ws,
    parser: Parser,
    ack_subject: String,
    /// Keys that arrived (and were acked) before `connect` returned.
    pending: VecDeque<u64>,
}

impl NatsClient {
    /// Reads the server's `INFO`, subscribes and waits for the `PONG` that follows the `SUB` (the
    /// server handles a connection's commands in order, so the subscription is then registered).
    async fn subscribe(&mut self, user: usize) -> anyhow::Result<()> {
        match self.next_op().await? {
            Some(Op::Info) => {}
            Some(other) => bail!("NATS greeted with {other:?} instead of INFO"),
            None => bail!("NATS closed the WebSocket before INFO"),
        }
        let hello =
            format!("CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nSUB user.{user} 1\r\nPING\r\n");
        self.ws.send(Message::binary(hello.into_bytes())).await?;
        loop {
            match self.next_op().await? {
                Some(Op::Pong) => return Ok(()),
                Some(Op::Msg { payload, .. }) => {
                    let key = self.ack(&payload).await?;
                    self.pending.push_back(key);
                }
                Some(Op::Err(message)) => bail!("NATS refused the subscription: {message}"),
                Some(_) => {}
                None => bail!("NATS closed the WebSocket during the handshake"),
            }
        }
    }

    /// The next protocol operation, answering `PING`s on the way; `None` once the connection closed.
    async fn next_op(&mut self) -> anyhow::Result<Option<Op>> {
        loop {
            match self.parser.next_op()? {
                Some(Op::Ping) => self.ws.send(Message::binary(&b"PONG\r\n"[..])).await?,
                Some(op) => return Ok(Some(op)),
                None => match self.ws.next().await {
                    Some(Ok(Message::Binary(data))) => self.parser.feed(&data),
                    Some(Ok(Message::Text(text))) => self.parser.feed(text.as_bytes()),
                    Some(Ok(Message::Close(_))) | None => return Ok(None),
                    Some(Ok(_)) => {}
                    Some(Err(error)) if closed(&error) => return Ok(None),
                    Some(Err(error)) => return Err(error.into()),
                },
            }
        }
    }

    /// Publishes the ack of a notification and returns its key.
    async fn ack(&mut self, payload: &[u8]) -> anyhow::Result<u64> {
        let key = key_of(payload)?;
        let body = format!(r#"{{"k":{key}}}"#);
        let frame = format!("PUB {} {}\r\n{body}\r\n", self.ack_subject, body.len());
        self.ws.send(Message::binary(frame.into_bytes())).await?;
        Ok(key)
    }
}

#[async_trait]
impl Client for NatsClient {
    async fn next(&mut self) -> anyhow::Result<Option<u64>> {
        if let Some(key) = self.pending.pop_front() {
            return Ok(Some(key));
        }
        loop {
            match self.next_op().await? {
                Some(Op::Msg { payload, .. }) => return self.ack(&payload).await.map(Some),
                Some(Op::Err(message)) => bail!("NATS error: {message}"),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }
}

/// Whether a WebSocket error only says the connection is gone.
fn closed(error: &tungstenite::Error) -> bool {
    use tungstenite::Error;
    use tungstenite::error::ProtocolError;
    match error {
        Error::ConnectionClosed | Error::AlreadyClosed => true,
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => true,
        Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// The shared plain-TCP publish connection: publishes go through a queue to one writer task, which
/// flushes whenever the queue is momentarily empty; a reader task answers the server's `PING`s so the
/// connection is not dropped as stale.
struct Publisher {
    queue: mpsc::Sender<Vec<u8>>,
    /// Why the connection ended, once it did.
    failure: Arc<Mutex<Option<String>>>,
    tasks: [JoinHandle<()>; 2],
}

impl Publisher {
    async fn connect(port: u16) -> anyhow::Result<Self> {
        tokio::time::timeout(START_WITHIN, Self::handshake(port))
            .await
            .map_err(|_| anyhow!("NATS publish connection handshake took over {START_WITHIN:?}"))?
    }

    async fn handshake(port: u16) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .context("NATS publish connection")?;
        stream.set_nodelay(true)?;
        let (mut read, mut write) = stream.into_split();
        let mut parser = Parser::default();
        match read_op(&mut read, &mut parser).await? {
            Some(Op::Info) => {}
            other => bail!("NATS greeted the publish connection with {other:?} instead of INFO"),
        }
        write
            .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")
            .await?;
        loop {
            match read_op(&mut read, &mut parser).await? {
                Some(Op::Pong) => break,
                Some(Op::Ping) => write.write_all(b"PONG\r\n").await?,
                Some(Op::Err(message)) => bail!("NATS refused the publish connection: {message}"),
                Some(_) => {}
                None => bail!("NATS closed the publish connection during the handshake"),
            }
        }
        let (queue, rx) = mpsc::channel(PUBLISH_QUEUE);
        let failure = Arc::new(Mutex::new(None));
        let writer = tokio::spawn(write_queue(write, rx, failure.clone()));
        let reader = tokio::spawn(answer_pings(read, parser, queue.clone(), failure.clone()));
        Ok(Publisher {
            queue,
            failure,
            tasks: [writer, reader],
        })
    }

    async fn send(&self, frame: Vec<u8>) -> anyhow::Result<()> {
        self.queue.send(frame).await.map_err(|_| {
            let failure = self.failure.lock().ok().and_then(|f| f.clone());
            anyhow!(
                "NATS publish connection is gone: {}",
                failure.as_deref().unwrap_or("unknown reason")
            )
        })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn record_failure(failure: &Mutex<Option<String>>, reason: String) {
    if let Ok(mut slot) = failure.lock() {
        slot.get_or_insert(reason);
    }
}

/// The writer of the publish connection: writes what is queued, flushing when the queue is empty.
async fn write_queue(write: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>, failure: Arc<Mutex<Option<String>>>) {
    let mut out = BufWriter::with_capacity(64 * 1024, write);
    let result: std::io::Result<()> = async {
        while let Some(frame) = rx.recv().await {
            out.write_all(&frame).await?;
            while let Ok(frame) = rx.try_recv() {
                out.write_all(&frame).await?;
            }
            out.flush().await?;
        }
        Ok(())
    }
    .await;
    if let Err(error) = result {
        record_failure(&failure, format!("write failed: {error}"));
    }
}

/// The reader of the publish connection: answers `PING`s through the writer's queue and records a
/// server error or the end of the connection.
async fn answer_pings(
    mut read: OwnedReadHalf,
    mut parser: Parser,
    queue: mpsc::Sender<Vec<u8>>,
    failure: Arc<Mutex<Option<String>>>,
) {
    let reason = loop {
        match read_op(&mut read, &mut parser).await {
            Ok(Some(Op::Ping)) => {
                if queue.send(b"PONG\r\n".to_vec()).await.is_err() {
                    break "writer stopped".to_owned();
                }
            }
            Ok(Some(Op::Err(message))) => {
                // The server closes the connection after most errors; keep reading until it does.
                eprintln!("nats publish connection: -ERR {message}");
                record_failure(&failure, format!("-ERR {message}"));
            }
            Ok(Some(_)) => {}
            Ok(None) => break "closed by the server".to_owned(),
            Err(error) => break format!("read failed: {error:#}"),
        }
    };
    record_failure(&failure, reason);
}

/// The next operation on a plain TCP connection; `None` at end of stream.
async fn read_op(read: &mut OwnedReadHalf, parser: &mut Parser) -> anyhow::Result<Option<Op>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(op) = parser.next_op()? {
            return Ok(Some(op));
        }
        let n = read.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        parser.feed(&chunk[..n]);
    }
}

/// A server-to-client protocol operation.
#[derive(Debug, PartialEq)]
enum Op {
    Info,
    Ping,
    Pong,
    Ok,
    Err(String),
    Msg { subject: String, payload: Vec<u8> },
}

/// The longest control line accepted (the server's `INFO` is well below).
const MAX_LINE: usize = 64 * 1024;

/// Splits the server's byte stream, however it arrives in chunks, into operations.
#[derive(Default)]
struct Parser {
    buf: Vec<u8>,
    /// Where the unparsed bytes start in `buf`.
    start: usize,
}

impl Parser {
    fn feed(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete operation, or `None` until more bytes are fed.
    fn next_op(&mut self) -> anyhow::Result<Option<Op>> {
        let rest = &self.buf[self.start..];
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            if rest.len() > MAX_LINE {
                bail!("NATS control line over {MAX_LINE} bytes");
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..eol]).context("NATS control line is not UTF-8")?;
        let (verb, args) = line.split_once([' ', '\t']).unwrap_or((line, ""));
        let mut consumed = eol + 2;
        let op = match verb.to_ascii_uppercase().as_str() {
            "INFO" => Op::Info,
            "PING" => Op::Ping,
            "PONG" => Op::Pong,
            "+OK" => Op::Ok,
            "-ERR" => Op::Err(args.trim().trim_matches('\'').to_owned()),
            "MSG" => {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let fields: Vec<&str> = args.split_ascii_whitespace().collect();
                let (Some(subject), Some(size), 3..=4) = (fields.first(), fields.last(), fields.len()) else {
                    bail!("malformed NATS line `{line}`");
                };
                let size: usize = size.parse().with_context(|| format!("size in `{line}`"))?;
                let end = consumed + size;
                if rest.len() < end + 2 {
                    return Ok(None);
                }
                if &rest[end..end + 2] != b"\r\n" {
                    bail!("NATS payload of `{line}` is not followed by CRLF");
                }
                let op = Op::Msg {
                    subject: (*subject).to_owned(),
                    payload: rest[consumed..end].to_vec(),
                };
                consumed = end + 2;
                op
            }
            _ => bail!("unexpected NATS line `{line}`"),
        };
        self.start += consumed;
        Ok(Some(op))
    }
}

/// The key of a notification payload `{"k": <key>, ...}`.
fn key_of(payload: &[u8]) -> anyhow::Result<u64> {
    let value: serde_json::Value = serde_json::from_slice(payload).context("NATS payload is not JSON")?;
    value["k"]
        .as_u64()
        .ok_or_else(|| anyhow!("NATS payload without a numeric `k`: {value}"))
}

/// The `major.minor` in `nats-server: v2.9.10`.
fn major_minor(version_output: &str) -> Option<String> {
    let version = version_output.split_ascii_whitespace().find_map(|word| {
        word.strip_prefix('v')
            .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
    })?;
    let mut parts = version.split('.');
    Some(format!("{}.{}", parts.next()?, parts.next()?))
}

/// The installed `nats-server`'s `major.minor`, installing Debian's package first if it is missing.
fn installed_version() -> anyhow::Result<String> {
    let output = match Command::new("nats-server").arg("--version").output() {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            install()?;
            Command::new("nats-server").arg("--version").output()
        }
        other => other,
    }
    .context("running `nats-server --version`")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    major_minor(&text).ok_or_else(|| anyhow!("no version in `nats-server --version`: {text}"))
}

/// `apt-get install -y nats-server`, once, as root, its output on stderr (refreshing the package
/// lists and retrying once if the package is not found).
fn install() -> anyhow::Result<()> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if !root {
        bail!("nats-server is not on PATH; install Debian's package as root first: apt-get install -y nats-server");
    }
    let apt = |args: &[&str]| -> anyhow::Result<bool> {
        eprintln!("nats-server is not on PATH: running apt-get {}", args.join(" "));
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(std::io::stderr())
            .status()
            .context("running apt-get")?;
        Ok(status.success())
    };
    if apt(&["install", "-y", "nats-server"])? {
        return Ok(());
    }
    if apt(&["update"])? && apt(&["install", "-y", "nats-server"])? {
        return Ok(());
    }
    bail!("apt-get could not install nats-server (see its output above)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_ops(parser: &mut Parser) -> Vec<Op> {
        let mut ops = Vec::new();
        while let Some(op) = parser.next_op().expect("valid protocol") {
            ops.push(op);
        }
        ops
    }

    #[test]
    fn a_message_split_anywhere_yields_its_key() {
        let wire = b"MSG user.1 1 8\r\n{\"k\":42}\r\n";
        for split in 0..=wire.len() {
            let mut parser = Parser::default();
            parser.feed(&wire[..split]);
            let mut ops = all_ops(&mut parser);
            parser.feed(&wire[split..]);
            ops.extend(all_ops(&mut parser));
            assert_eq!(ops.len(), 1, "split at {split}");
            let Op::Msg { subject, payload } = &ops[0] else {
                panic!("not a message: {ops:?}");
            };
            assert_eq!(subject, "user.1");
            assert_eq!(key_of(payload).expect("key"), 42, "split at {split}");
        }
    }

    #[test]
    fn a_message_fed_byte_by_byte_yields_its_key() {
        let mut parser = Parser::default();
        let mut ops = Vec::new();
        for byte in b"MSG user.1 1 8\r\n{\"k\":42}\r\n" {
            parser.feed(&[*byte]);
            ops.extend(all_ops(&mut parser));
        }
        assert_eq!(
            ops,
            vec![Op::Msg {
                subject: "user.1".into(),
                payload: b"{\"k\":42}".to_vec()
            }]
        );
    }

    #[test]
    fn ping_and_the_other_control_lines_are_recognised() {
        let mut parser = Parser::default();
        parser.feed(b"INFO {\"server_id\":\"x\"}\r\nPING\r\nPONG\r\n+OK\r\n-ERR 'Stale Connection'\r\nPI");
        assert_eq!(
            all_ops(&mut parser),
            vec![Op::Info, Op::Ping, Op::Pong, Op::Ok, Op::Err("Stale Connection".into())]
        );
        parser.feed(b"NG\r\n");
        assert_eq!(all_ops(&mut parser), vec![Op::Ping]);
    }

    #[test]
    fn two_messages_in_one_chunk_both_come_out() {
        let mut parser = Parser::default();
        parser.feed(
            b"MSG user.1 1 8\r\n{\"k\":42}\r\nPING\r\nMSG user.1 1 _INBOX.r 24\r\n{\"k\":7,\"title\":\"a\\r\\nb\"}\r\n",
        );
        let ops = all_ops(&mut parser);
        let keys: Vec<u64> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Msg { payload, .. } => Some(key_of(payload).expect("key")),
                _ => None,
            })
            .collect();
        assert_eq!(keys, vec![42, 7]);
        assert_eq!(ops[1], Op::Ping);
    }

    #[test]
    fn a_payload_containing_crlf_is_read_by_its_size() {
        let payload = b"{\"k\":5,\r\n\"t\":1}";
        let mut wire = format!("MSG user.3 1 {}\r\n", payload.len()).into_bytes();
        wire.extend_from_slice(payload);
        wire.extend_from_slice(b"\r\n");
        let mut parser = Parser::default();
        parser.feed(&wire);
        let ops = all_ops(&mut parser);
        assert_eq!(ops.len(), 1);
        let Op::Msg { payload, .. } = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(key_of(payload).expect("key"), 5);
    }

    #[test]
    fn malformed_lines_are_errors() {
        let mut parser = Parser::default();
        parser.feed(b"MSG user.1 1 nine\r\n");
        assert!(parser.next_op().is_err());
        let mut parser = Parser::default();
        parser.feed(b"MSG user.1 1 3\r\nabcXY");
        assert!(parser.next_op().is_err());
        let mut parser = Parser::default();
        parser.feed(b"HELLO\r\n");
        assert!(parser.next_op().is_err());
    }

    #[test]
    fn the_version_is_major_minor() {
        assert_eq!(major_minor("nats-server: v2.9.10\n").as_deref(), Some("2.9"));
        assert_eq!(major_minor("nats-server version 2.9.10"), None);
    }
}
