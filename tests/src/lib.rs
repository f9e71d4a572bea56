//! Test support shared by every Herald test suite: run the real `herald-gateway` binary as a process
//! and read its logs, temporary directories, and a small WebSocket client over loopback.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

pub mod cluster;
pub mod redis_cluster;

pub use redis_cluster::fail_over_one_primary;

/// How long a test waits for an expected event before failing.
pub const WAIT: Duration = Duration::from_secs(15);

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The gateway binary built by the same `cargo test` run (or `HERALD_GATEWAY_BIN`).
pub fn gateway_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HERALD_GATEWAY_BIN") {
        return PathBuf::from(path);
    }
    // Test binaries live in target/<profile>/deps, other binaries (benchmarks) in target/<profile>;
    // the gateway binary sits in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("herald-gateway"))
        .collect();
    match candidates.iter().find(|path| path.is_file()) {
        Some(binary) => binary.clone(),
        None => panic!(
            "herald-gateway is missing next to {}: build it first (`cargo build -p herald-gateway`), as scripts/test does",
            exe.display()
        ),
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("herald-e2e-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A name no earlier run used either, for objects that outlive a run (the test apiserver keeps its
/// namespaces: it runs no namespace controller). Process ids repeat, so they alone are not enough.
pub fn unique_name(prefix: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    format!("{prefix}-{}-{now}-{}", std::process::id(), unique())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

#[derive(Default)]
struct Output {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

/// A running gateway process; killed when dropped.
/// A directory as kubelet maintains a mounted ConfigMap or Secret holding one file: the file is a
/// symlink `name -> ..data/name`; every update is a new `..<n>` directory, published by renaming a
/// fresh symlink over `..data` (atomic), the previous directory then removed.
pub struct KubeletMount {
    dir: PathBuf,
    name: String,
    updates: usize,
}

impl KubeletMount {
    pub fn new(dir: PathBuf, name: &str, content: &str) -> Self {
        std::fs::create_dir_all(&dir).expect("mount dir");
        let mut mount = Self {
            dir,
            name: name.to_owned(),
            updates: 0,
        };
        mount.update(content);
        std::os::unix::fs::symlink(format!("..data/{name}"), mount.dir.join(name)).expect("file link");
        mount
    }

    /// The path the container reads.
    pub fn file(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    pub fn update(&mut self, content: &str) {
        self.updates += 1;
        let version = format!("..{}", self.updates);
        std::fs::create_dir(self.dir.join(&version)).expect("version dir");
        std::fs::write(self.dir.join(&version).join(&self.name), content).expect("write");
        let link = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &link).expect("new link");
        std::fs::rename(&link, self.dir.join("..data")).expect("swap ..data");
        if self.updates > 1 {
            let _ = std::fs::remove_dir_all(self.dir.join(format!("..{}", self.updates - 1)));
        }
    }
}

pub struct GatewayProcess {
    child: Child,
    output: Arc<Output>,
    /// The public listener.
    pub addr: SocketAddr,
    /// The internal listener (`/api/publish`, `/metrics`); the public one for servers that have no
    /// internal listener (benchmark peers).
    pub internal_addr: SocketAddr,
    _dir: TempDir,
}

impl GatewayProcess {
    /// Starts the binary with `args` and `env` on free ports (public and internal), with its own data
    /// directory, and waits until it says where it listens.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let process = Self::start_binary(&gateway_binary(), args, env);
        let line = process.wait_for_line(|l| l.contains("gateway:listening"));
        assert!(
            listening_addresses(&line).is_some_and(|(_, internal)| internal.is_some()),
            "the gateway names its internal listener: `{line}`"
        );
        process
    }

    /// Like [`GatewayProcess::start`] for another server binary that prints the same
    /// `gateway:listening address=http://…` line (benchmarks start their peers this way); without an
    /// `internal=http://…` field, everything is on the one address.
    pub fn start_binary(binary: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let (child, output, dir, _readers) = spawn(binary, args, env);
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut process = GatewayProcess {
            child,
            output,
            addr: unbound,
            internal_addr: unbound,
            _dir: dir,
        };
        let line = process.wait_for_line(|l| l.contains("gateway:listening"));
        let (addr, internal) = listening_addresses(&line).unwrap_or_else(|| panic!("no address in `{line}`"));
        process.addr = addr;
        process.internal_addr = internal.unwrap_or(addr);
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A URL on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the internal listener, where `/api/publish` and `/metrics` are.
    pub fn internal_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.internal_addr)
    }

    /// The whole `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.internal_url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of the series `series` (name and labels as exported, e.g.
    /// `herald_acks_total{outcome="acked"}`) in `/metrics`, if exported.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Waits (at most [`WAIT`]) until `series` reaches at least `at_least`, and returns its value.
    pub async fn wait_for_metric(&self, series: &str, at_least: f64) -> f64 {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(value) = self.metric(series).await.filter(|v| *v >= at_least) {
                return value;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{series} never reached {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most [`WAIT`]) until `GET /readyz` answers `status` with its check `check`
    /// (`redis`, `postgres`, ...) reporting `state` (`ok`, `unavailable`).
    pub async fn wait_for_readiness(&self, status: u16, check: &str, state: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let answer = reqwest::get(self.url("/readyz")).await.expect("GET /readyz");
            let got = answer.status().as_u16();
            let body: Value = answer.json().await.expect("readiness JSON");
            if (got, body["checks"][check].as_str()) == (status, Some(state)) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: readiness still {got} {body}, expected {status} with {check} {state}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A connection token for the holder of the user JWT `jwt` (`POST /ws/token` must answer 200).
    pub async fn issue_token(&self, jwt: &str) -> String {
        let response = reqwest::Client::new()
            .post(self.url("/ws/token"))
            .bearer_auth(jwt)
            .send()
            .await
            .expect("POST /ws/token");
        assert_eq!(response.status(), 200, "token issuance");
        let body: Value = response.json().await.expect("json");
        body["token"].as_str().expect("token").to_owned()
    }

    /// A user JWT for `sub` minted by a dev-mode gateway's `POST /dev/jwt`.
    pub async fn dev_jwt(&self, sub: &str) -> String {
        let minted: Value = reqwest::Client::new()
            .post(self.url(&format!("/dev/jwt?sub={sub}")))
            .send()
            .await
            .expect("POST /dev/jwt")
            .json()
            .await
            .expect("json");
        minted["jwt"].as_str().expect("jwt").to_owned()
    }

    /// Opens a WebSocket with `token` and reads its `connected` message; a refusal gives the HTTP status
    /// and error code instead.
    pub async fn open_ws(&self, token: &str) -> Result<(Ws, Value), (u16, String)> {
        self.open_ws_with_headers(token, &[]).await
    }

    /// [`GatewayProcess::open_ws`] with extra request headers (`X-Forwarded-For`, as a proxy sends).
    pub async fn open_ws_with_headers(
        &self,
        token: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Ws, Value), (u16, String)> {
        use tokio_tungstenite::tungstenite::Error;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut request = format!("ws://{}/ws?token={token}", self.addr)
            .into_client_request()
            .expect("a valid request");
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        match tokio_tungstenite::connect_async_with_config(request, None, true).await {
            Ok((mut ws, _)) => {
                let connected = recv_json(&mut ws).await;
                assert_eq!(connected["type"], "connected");
                Ok((ws, connected))
            }
            Err(Error::Http(response)) => {
                let body: Value = response
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or_default();
                Err((
                    response.status().as_u16(),
                    body["error"]["code"].as_str().unwrap_or_default().to_owned(),
                ))
            }
            Err(other) => panic!("connection failed without an HTTP answer: {other}"),
        }
    }

    /// Every line printed so far (stdout and stderr).
    pub fn lines(&self) -> Vec<String> {
        self.output.lines.lock().expect("lock").clone()
    }

    /// Waits for a printed line matching `predicate`.
    pub fn wait_for_line(&self, predicate: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut lines = self.output.lines.lock().expect("lock");
        loop {
            if let Some(line) = lines.iter().find(|l| predicate(l)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "expected line never printed; output:\n{}",
                lines.join("\n")
            );
            lines = self.output.changed.wait_timeout(lines, left).expect("lock").0;
        }
    }

    /// Sends SIGTERM, as Kubernetes does.
    pub fn terminate(&self) {
        signal(self.pid(), "TERM");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child, what it prints, its data directory, and the threads reading its output (they end when
/// the process closes its stdout and stderr).
type Spawned = (Child, Arc<Output>, TempDir, [std::thread::JoinHandle<()>; 2]);

fn spawn(binary: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Spawned {
    let dir = TempDir::new();
    let mut command = Command::new(binary);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HERALD_LISTEN", "127.0.0.1:0")
        .env("HERALD_INTERNAL_LISTEN", "127.0.0.1:0")
        .env("HERALD_DATA_DIR", &dir.0)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("gateway binary starts");
    let output = Arc::new(Output::default());
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let readers = [
        collect(BufReader::new(stdout), output.clone()),
        collect(BufReader::new(stderr), output.clone()),
    ];
    (child, output, dir, readers)
}

fn collect(reader: impl BufRead + Send + 'static, output: Arc<Output>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            output.lines.lock().expect("lock").push(line);
            output.changed.notify_all();
        }
    })
}

/// Runs the binary to completion (for commands that exit by themselves).
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let (mut child, output, _dir, readers) = spawn(&gateway_binary(), args, env);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Everything the process printed is read once its pipes close.
    for reader in readers {
        let _ = reader.join();
    }
    let text = output.lines.lock().expect("lock").join("\n");
    (status, text)
}

/// The public address of a `gateway:listening` line (human or JSON), and the internal one if it
/// names one.
fn listening_addresses(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    if let Ok(json) = serde_json::from_str::<Value>(line) {
        let field = |name: &str| json[name].as_str()?.strip_prefix("http://")?.parse().ok();
        return Some((field("address")?, field("internal")));
    }
    let field = |name: &str| -> Option<SocketAddr> {
        let prefix = format!("{name}=http://");
        let start = line.find(&prefix)? + prefix.len();
        line[start..].split_whitespace().next()?.parse().ok()
    };
    Some((field("address")?, field("internal")))
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// The next text message as JSON, skipping control frames.
pub async fn recv_json(ws: &mut Ws) -> Value {
    let next = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str()).expect("JSON");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    })
    .await;
    next.expect("a message within the wait")
}

/// Reads until the server closes; returns the close code and reason.
pub async fn await_close(ws: &mut Ws) -> Option<(u16, String)> {
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await;
    closed.expect("the server closed within the wait")
}

/// A client message in the plan's envelope.
pub fn client_message(kind: &str, payload: Value) -> Message {
    let envelope = serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": kind,
        "timestamp": 1_700_000_000_000_i64,
        "payload": payload,
    });
    Message::text(envelope.to_string())
}

/// A `ping` in the plan's envelope.
pub fn ping_message() -> Message {
    client_message("ping", serde_json::json!({}))
}

/// The URL of a test service from `var` (exported by `scripts/services`). In CI a missing service fails
/// the test; elsewhere the test is skipped, loudly.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("{var} is not set and CI=true: the test services are required (scripts/test starts them)")
        }
        _ => {
            eprintln!("SKIPPED: {var} is not set; run `eval \"$(scripts/services)\"` first to test against it");
            None
        }
    }
}

/// The seed URLs of the test Redis Cluster (`HERALD_TEST_REDIS_CLUSTER_URL`, from `scripts/services`):
/// `redis://127.0.0.1:<port>` of three of its six nodes, comma-separated, the form Herald's `REDIS_URL`
/// takes for a Cluster. The same contract as [`service_url`]: in CI a missing cluster fails the test,
/// elsewhere the test is skipped, loudly. See [`redis_cluster`] for steering it (failovers).
pub fn redis_cluster_url() -> Option<String> {
    service_url("HERALD_TEST_REDIS_CLUSTER_URL")
}

/// A new, empty PostgreSQL database on the test server, for one test.
pub fn fresh_database(admin_url: &str) -> String {
    let name = format!("herald_t_{}", uuid::Uuid::new_v4().simple());
    let status = Command::new("psql")
        .arg(admin_url)
        .args(["-qc", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("psql runs");
    assert!(status.success(), "CREATE DATABASE {name}");
    let (base, _) = admin_url.rsplit_once('/').expect("database URL with a path");
    format!("{base}/{name}")
}

/// A free loopback TCP port (for servers a test starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A Redis server owned by one test (so the test may stop and restart it); stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: TempDir::new(),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        let binary = std::env::var("HERALD_REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(binary)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server abruptly, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The user JWT issuer and audience of the test gateways: outside dev mode a gateway refuses to start
/// without both, and [`hs256_jwt`] puts them in every token it signs.
pub const JWT_ISSUER: &str = "https://issuer.herald.test/";
pub const JWT_AUDIENCE: &str = "herald-tests";
/// The environment that sets them ([`JWT_ISSUER`], [`JWT_AUDIENCE`]).
pub const JWT_ISSUER_AND_AUDIENCE: [(&str, &str); 2] =
    [("HERALD_JWT_ISSUER", JWT_ISSUER), ("HERALD_JWT_AUDIENCE", JWT_AUDIENCE)];

/// An HS256 user JWT for `sub` signed with `secret`, valid for `valid_for_secs` from now (negative:
/// already expired), with `roles` in the default `roles` claim, issued by [`JWT_ISSUER`] for
/// [`JWT_AUDIENCE`].
pub fn hs256_jwt(secret: &str, sub: &str, valid_for_secs: i64, roles: &[&str]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let claims = serde_json::json!({
        "sub": sub, "iat": now, "exp": now + valid_for_secs, "roles": roles,
        "iss": JWT_ISSUER, "aud": JWT_AUDIENCE,
    });
    sign_hs256(secret, &claims)
}

/// An HS256 JWT of exactly `claims`, signed with `secret`.
pub fn sign_hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// A loopback TCP proxy a test can cut, as a network partition or a stopped server would look to
/// the gateway: cutting resets every open connection and refuses new ones until restored. Lets a
/// test take a shared service (the test PostgreSQL) away from one gateway without stopping it for
/// every other test. Freezing is the silent partition: nothing is reset or refused, nothing gets
/// through either.
pub struct FaultProxy {
    pub port: u16,
    state: tokio::sync::watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`FaultProxy`] does to its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Open connections reset, new ones refused.
    Cut,
    /// Open connections (and new ones, accepted) stay open and carry nothing, for good.
    Frozen,
}

impl FaultProxy {
    /// Forwards 127.0.0.1:`port` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().expect("addr").port();
        let (state, watch) = tokio::sync::watch::channel(Fault::None);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let mut watch = watch.clone();
                let fault = *watch.borrow();
                match fault {
                    Fault::Cut => drop(client),
                    Fault::Frozen => {
                        tokio::spawn(async move {
                            let _ = watch.wait_for(|fault| *fault == Fault::Cut).await;
                            let _ = client.set_zero_linger();
                        });
                    }
                    Fault::None => {
                        tokio::spawn(async move {
                            let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                                _ = watch.wait_for(|fault| *fault != Fault::None) => {}
                            }
                            if *watch.borrow() == Fault::Frozen {
                                // Both ends stay open, nothing more is carried: held until cut (or
                                // the proxy goes).
                                let _ = watch.wait_for(|fault| *fault == Fault::Cut).await;
                            }
                            // Reset rather than close: as abrupt as a crash.
                            let _ = client.set_zero_linger();
                        });
                    }
                }
            }
        });
        Self { port, state, task }
    }

    /// Resets every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.state.send_replace(Fault::Cut);
    }

    /// Carries nothing more on the connections open now, and accepts new ones without carrying
    /// anything on them either: a partition that resets nothing. They stay silent after
    /// [`FaultProxy::restore`], as connections through a partition do.
    pub fn freeze(&self) {
        self.state.send_replace(Fault::Frozen);
    }

    /// Lets new connections through again.
    pub fn restore(&self) {
        self.state.send_replace(Fault::None);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `(userId, id)` pairs of a `POST /api/publish` answer's `created` list.
pub fn created_ids(answer: &Value) -> Vec<(String, String)> {
    answer["created"]
        .as_array()
        .expect("created")
        .iter()
        .map(|c| {
            (
                c["userId"].as_str().expect("userId").to_owned(),
                c["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect()
}

/// A stand-in for the Prometheus Operator's ServiceMonitor CRD (`monitoring.coreos.com/v1`): the kind,
/// with its schema left open. Enough for the operator's tests of the ServiceMonitor it renders.
pub fn service_monitor_crd() -> Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"plural": "servicemonitors", "singular": "servicemonitor", "kind": "ServiceMonitor", "listKind": "ServiceMonitorList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    })
}
