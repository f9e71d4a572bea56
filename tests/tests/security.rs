//! Issue "Security and faults": a regression test for each hole an attacker's probes found, through
//! real sockets against the real binary.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use herald_e2e::cluster::Cluster;
use herald_e2e::{GatewayProcess, JWT_ISSUER_AND_AUDIENCE, Ws, client_message, ping_message, recv_json, run_to_exit};
use serde_json::{Value, json};

const JWT_SECRET: &str = "security-user-jwt-secret-0123456789-abcdef";
const TOKEN_SECRET: &str = "security-token-secret-0123456789-ABCDEFGHI";
const PUBLISHER_KEY: &str = "security-publisher-key-0123456789abcdefgh";

/// The embedded default (SQLite in its data directory), configured as in production.
fn embedded(extra: &[(&str, &str)]) -> GatewayProcess {
    let publishers = format!("security={PUBLISHER_KEY}");
    let mut env = vec![
        ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
        JWT_ISSUER_AND_AUDIENCE[0],
        JWT_ISSUER_AND_AUDIENCE[1],
        ("WEBSOCKET_TOKEN_SECRET", TOKEN_SECRET),
        ("HERALD_PUBLISHER_KEYS", publishers.as_str()),
    ];
    env.extend_from_slice(extra);
    GatewayProcess::start(&[], &env)
}

async fn open(gateway: &GatewayProcess, user: &str) -> Ws {
    let token = gateway
        .issue_token(&herald_e2e::hs256_jwt(JWT_SECRET, user, 600, &[]))
        .await;
    gateway.open_ws(&token).await.expect("websocket opens").0
}

/// Publishes `count` notifications to `user`, eight requests at a time; each must be accepted.
async fn publish_many(gateway: &GatewayProcess, user: &str, count: usize) {
    let client = reqwest::Client::new();
    futures_util::stream::iter(0..count)
        .map(|i| {
            let request = client
                .post(gateway.internal_url("/api/publish"))
                .bearer_auth(PUBLISHER_KEY)
                .json(&json!({"userIds": [user], "notification": {"type": "new_like", "title": format!("like {i}")}}));
            async move { request.send().await.expect("POST /api/publish").status() }
        })
        .buffer_unordered(8)
        .for_each(|status| async move { assert_eq!(status, 202, "publish accepted") })
        .await;
}

/// The next `notification` message, skipping unread counts; any close fails the test (with its code).
async fn next_notification(ws: &mut Ws) -> Value {
    loop {
        let message = recv_json(ws).await;
        if message["type"] == "notification" {
            return message;
        }
    }
}

async fn ack(ws: &mut Ws, notification: &Value) {
    let id = notification["payload"]["id"].clone();
    ws.send(client_message("notification:ack", json!({"notificationId": id})))
        .await
        .expect("ack sent");
}

/// Reads `total` notifications, acknowledging each as it arrives and sending the heartbeat, as the
/// SDK does (a long replay outlasts the heartbeat timeout); their seqs.
async fn receive_acknowledging(ws: &mut Ws, total: usize) -> Vec<i64> {
    let mut seqs = Vec::with_capacity(total);
    let mut pinged = Instant::now();
    while seqs.len() < total {
        let message = next_notification(ws).await;
        seqs.push(message["payload"]["seq"].as_i64().expect("seq"));
        ack(ws, &message).await;
        if pinged.elapsed() > HEARTBEAT {
            ws.send(ping_message()).await.expect("ping");
            pinged = Instant::now();
        }
    }
    seqs
}

/// How often the test clients ping: the gateway's default heartbeat interval is 30 s.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Issue item 1: a user with 64 or more unacknowledged notifications was closed as a slow consumer
/// (4003) on every connect, because the whole replay was queued at once.
#[tokio::test]
async fn a_user_with_hundreds_unacknowledged_connects_and_receives_them_all() {
    let gateway = embedded(&[]);
    publish_many(&gateway, "alice", 300).await;
    let mut ws = open(&gateway, "alice").await;
    let seqs = receive_acknowledging(&mut ws, 300).await;
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>(), "every one, in order, once");
    // Still open and live: a ping is answered and a new notification follows.
    ws.send(ping_message()).await.expect("ping");
    assert_eq!(recv_json(&mut ws).await["type"], "pong");
    publish_many(&gateway, "alice", 1).await;
    assert_eq!(next_notification(&mut ws).await["payload"]["seq"], 301);
}

/// A client that reads but does not acknowledge gets one window (half the outbound queue), stays
/// connected, and gets the rest as it acknowledges.
#[tokio::test]
async fn a_client_that_does_not_acknowledge_gets_one_window_and_stays_connected() {
    let gateway = embedded(&[("HERALD_OUTBOUND_QUEUE", "16")]);
    publish_many(&gateway, "bob", 40).await;
    let mut ws = open(&gateway, "bob").await;
    let mut window = Vec::new();
    for _ in 0..8 {
        window.push(next_notification(&mut ws).await);
    }
    // The ninth is held in the store: the ping sent now is answered next, not closed as slow.
    ws.send(ping_message()).await.expect("ping");
    loop {
        let message = recv_json(&mut ws).await;
        match message["type"].as_str() {
            Some("pong") => break,
            Some("notification") => panic!("more than the window of 8 in flight: {message}"),
            _ => continue,
        }
    }
    for message in &window {
        ack(&mut ws, message).await;
    }
    let rest = receive_acknowledging(&mut ws, 32).await;
    assert_eq!(rest, (9..=40).collect::<Vec<_>>());
}

/// The issue's bar: 100,000 pending notifications (seeded straight into PostgreSQL) reach a client
/// that connects, over one connection, in order.
#[tokio::test]
async fn a_user_with_100000_pending_notifications_connects_and_receives_them_all() {
    const PENDING: i64 = 100_000;
    let Some(cluster) = Cluster::new(None) else {
        return;
    };
    let replica = cluster.replica(&[]);
    let seeded = std::process::Command::new("psql")
        .arg(&cluster.database_url)
        .args(["-qv", "ON_ERROR_STOP=1", "-c"])
        .arg(format!(
            "INSERT INTO notifications (user_id, type, title, seq, channel) \
             SELECT 'heavy', 'new_like', 'like ' || g, g, 'social' FROM generate_series(1, {PENDING}) g; \
             INSERT INTO user_sequences (user_id, last_seq) VALUES ('heavy', {PENDING});"
        ))
        .status()
        .expect("psql runs");
    assert!(seeded.success(), "seeded");
    let token = herald_e2e::cluster::token(&replica, "heavy").await;
    let mut ws = herald_e2e::cluster::connect(&replica, &token).await.expect("connects");
    let started = Instant::now();
    let seqs = receive_acknowledging(&mut ws, PENDING as usize).await;
    let elapsed = started.elapsed();
    assert!(seqs.iter().copied().eq(1..=PENDING), "every one, in order, once");
    eprintln!("{PENDING} replayed and acknowledged in {elapsed:?}");
}

/// Issue item 4: re-acknowledging an acknowledged id was free and wrote each time (100,000 re-acks
/// in 28 s). Now only acks of what the server awaits are exempt from the message rate, and a
/// duplicate is answered without a write.
#[tokio::test]
async fn re_acknowledging_is_rate_limited_and_writes_nothing() {
    let gateway = embedded(&[]);
    let mut ws = open(&gateway, "carol").await;
    publish_many(&gateway, "carol", 1).await;
    let notification = next_notification(&mut ws).await;
    ack(&mut ws, &notification).await;
    for _ in 0..100 {
        if ws
            .send(client_message(
                "notification:ack",
                json!({"notificationId": notification["payload"]["id"]}),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = herald_e2e::await_close(&mut ws).await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (4002, "too many messages per second"));
    let metrics = reqwest::get(gateway.internal_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let count = |outcome: &str| -> u64 {
        let prefix = format!("herald_acks_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map_or(0, |n| n.parse().expect("a count"))
    };
    assert_eq!(count("awaited"), 1, "{metrics}");
    assert!(count("duplicate") >= 1, "{metrics}");
    assert!(
        count("duplicate") + count("recorded") <= 25,
        "at most the message budget's burst reached the store: {metrics}"
    );
}

/// Issue item 4: WebSocket ping frames cost a read and a pong write but were not counted.
#[tokio::test]
async fn websocket_ping_frames_count_toward_the_message_rate() {
    use tokio_tungstenite::tungstenite::Message;
    let gateway = embedded(&[]);
    let mut ws = open(&gateway, "dave").await;
    for _ in 0..100 {
        if ws.send(Message::Ping(b"flood".to_vec().into())).await.is_err() {
            break;
        }
    }
    let (code, _) = herald_e2e::await_close(&mut ws).await.expect("a close frame");
    assert_eq!(code, 4002);
}

/// Reads until the server closes the connection; what it sent before closing.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    tokio::time::timeout(herald_e2e::WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the server closed the connection within the wait")
        .expect("read");
    String::from_utf8_lossy(&received).into_owned()
}

async fn tcp(gateway: &GatewayProcess) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(gateway.addr).await.expect("tcp connect")
}

/// A connection to the internal listener, where `/api/publish` is.
async fn internal_tcp(gateway: &GatewayProcess) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(gateway.internal_addr)
        .await
        .expect("tcp connect")
}

/// Issue item 3: half-sent requests and idle sockets were held forever (200 stayed open past 70 s).
#[tokio::test]
async fn slow_headers_and_idle_sockets_are_cut_off_by_the_http_timeout() {
    use tokio::io::AsyncWriteExt;
    let gateway = embedded(&[("HERALD_HTTP_TIMEOUT_SECONDS", "1")]);
    let mut idle = tcp(&gateway).await;
    let mut slow = tcp(&gateway).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n")
        .await
        .expect("half the headers");
    let started = Instant::now();
    for stream in [&mut idle, &mut slow] {
        read_until_closed(stream).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed after about the timeout, not held"
    );
    // A keep-alive connection idle after its request is closed the same way.
    let mut kept = tcp(&gateway).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
        .await
        .expect("request");
    let answer = read_until_closed(&mut kept).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

/// Issue item 3: `/api/publish` read up to 2 MB before checking the key, and bodies had no deadline.
#[tokio::test]
async fn the_publisher_key_is_checked_before_the_body_which_has_a_deadline() {
    use tokio::io::AsyncWriteExt;
    let gateway = embedded(&[("HERALD_HTTP_TIMEOUT_SECONDS", "1")]);
    let head = |key: &str| {
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n"
        )
    };
    // A wrong key with a body announced but never sent: refused at once, nothing read.
    let mut wrong = internal_tcp(&gateway).await;
    wrong
        .write_all(head("not-a-publisher-key").as_bytes())
        .await
        .expect("head");
    let answer = read_until_closed(&mut wrong).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("invalid_publisher_key"), "{answer}");
    // The right key with a body that trickles: 408 after the timeout.
    let mut trickle = internal_tcp(&gateway).await;
    trickle.write_all(head(PUBLISHER_KEY).as_bytes()).await.expect("head");
    trickle.write_all(b"{\"userIds\": [").await.expect("a little body");
    let answer = read_until_closed(&mut trickle).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

/// Issue item 3: 3,000 idle TCP sockets were held; there was no per-replica connection cap.
#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed_at_once() {
    let gateway = embedded(&[("HERALD_MAX_CONNECTIONS", "1")]);
    // The token's connection must have ended on the server before the WebSocket gets the one place,
    // so the first attempts may be refused: retry until one connects (bounded by the wait).
    let token = gateway
        .issue_token(&herald_e2e::hs256_jwt(JWT_SECRET, "erin", 600, &[]))
        .await;
    let url = format!("ws://{}/ws?token={token}", gateway.addr);
    let mut ws = tokio::time::timeout(herald_e2e::WAIT, async {
        loop {
            if let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
                return ws;
            }
        }
    })
    .await
    .expect("the WebSocket gets the one place");
    assert_eq!(recv_json(&mut ws).await["type"], "connected");
    // The upgraded WebSocket keeps its place: another connection is closed before anything is read.
    let mut refused = tcp(&gateway).await;
    assert_eq!(read_until_closed(&mut refused).await, "", "closed without an answer");
    // A place given back is usable again (once the server has ended the session).
    drop(ws);
    let served = async {
        loop {
            if let Ok(response) = reqwest::get(gateway.url("/healthz")).await {
                return response.status();
            }
        }
    };
    let status = tokio::time::timeout(herald_e2e::WAIT, served)
        .await
        .expect("served again once the WebSocket closed");
    assert_eq!(status, 200);
}

/// Issue item 3: a WebSocket lived as long as its client liked, so a role change or a revocation
/// never reached it. Now it is told to reconnect once it has lived its maximum.
#[tokio::test]
async fn a_session_is_told_to_reconnect_after_its_maximum_lifetime() {
    let gateway = embedded(&[("HERALD_MAX_SESSION_SECONDS", "2")]);
    let mut ws = open(&gateway, "grace").await;
    let started = Instant::now();
    let (code, reason) = herald_e2e::await_close(&mut ws).await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (1001, "lifetime reached: reconnect in 0 ms"));
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "not before nine tenths of it"
    );
}

/// Issue item 8: configuration and connection errors must not echo the passwords of the database
/// and Redis URLs (they end up in logs and in `kubectl describe`).
#[tokio::test]
async fn configuration_errors_never_echo_url_passwords() {
    const PASSWORD: &str = "hunter2-s3cret";
    let database = format!("mysql://admin:{PASSWORD}@db.example/herald");
    let redis = format!("http://user:{PASSWORD}@cache.example");
    let postgres = format!("postgres://admin:{PASSWORD}@127.0.0.1:1/herald");
    let cases: [(&[&str], &str); 2] = [
        (&["check-config", "--database-url", &database], "DATABASE_URL"),
        (
            &["check-config", "--database-url", &postgres, "--redis-url", &redis],
            "REDIS_URL",
        ),
    ];
    let publishers = format!("security={PUBLISHER_KEY}");
    let env = [
        ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
        ("WEBSOCKET_TOKEN_SECRET", TOKEN_SECRET),
        ("HERALD_PUBLISHER_KEYS", publishers.as_str()),
    ];
    for (args, variable) in cases {
        let (status, output) = herald_e2e::run_to_exit(args, &env);
        assert!(!status.success(), "{args:?} is refused");
        assert!(output.contains(&format!("configuration error: {variable}")), "{output}");
        assert!(output.contains("***"), "the URL is shown redacted: {output}");
        assert!(!output.contains(PASSWORD), "the password is printed: {output}");
    }
}

/// Issue item 8: an optional Origin allow-list on upgrades (cross-site WebSocket hijacking).
#[tokio::test]
async fn only_allowed_origins_may_open_a_websocket() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let gateway = embedded(&[("HERALD_ALLOWED_ORIGINS", "https://app.example.com")]);
    let attempt = |origin: Option<&'static str>| {
        let gateway = &gateway;
        async move {
            let token = gateway
                .issue_token(&herald_e2e::hs256_jwt(JWT_SECRET, "heidi", 600, &[]))
                .await;
            let mut request = format!("ws://{}/ws?token={token}", gateway.addr)
                .into_client_request()
                .expect("request");
            if let Some(origin) = origin {
                request.headers_mut().insert("origin", origin.parse().expect("header"));
            }
            match tokio_tungstenite::connect_async(request).await {
                Ok(_) => 101,
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
                    assert!(body.contains("origin_not_allowed"), "{body}");
                    response.status().as_u16()
                }
                Err(err) => panic!("{err}"),
            }
        }
    };
    assert_eq!(attempt(Some("https://evil.example")).await, 403);
    assert_eq!(attempt(Some("https://app.example.com.evil.example")).await, 403);
    assert_eq!(attempt(Some("https://app.example.com")).await, 101);
    assert_eq!(attempt(None).await, 101, "not a browser: no Origin, not concerned");
}

async fn revoke_tokens(gateway: &GatewayProcess, jwt: &str) {
    let response = reqwest::Client::new()
        .delete(gateway.url("/ws/token"))
        .bearer_auth(jwt)
        .send()
        .await
        .expect("DELETE /ws/token");
    assert_eq!(response.status(), 204);
}

/// Issue item 8: `DELETE /ws/token` left live sockets open. Now every replica closes the user's live
/// sessions (4004 `tokens revoked`), and only the user's.
#[tokio::test]
async fn revoking_tokens_closes_the_users_live_sessions_on_every_replica() {
    let Some(cluster) = Cluster::new(None) else {
        return;
    };
    let [here, there] = <[GatewayProcess; 2]>::try_from(cluster.replicas(2)).unwrap_or_else(|_| unreachable!());
    let jwt = herald_e2e::cluster::user_jwt("ivan");
    let mut on_here = herald_e2e::cluster::connect(&here, &herald_e2e::cluster::token(&here, "ivan").await)
        .await
        .expect("connects");
    let mut on_there = herald_e2e::cluster::connect(&there, &herald_e2e::cluster::token(&there, "ivan").await)
        .await
        .expect("connects");
    let mut bystander = herald_e2e::cluster::connect(&there, &herald_e2e::cluster::token(&there, "judy").await)
        .await
        .expect("connects");
    revoke_tokens(&here, &jwt).await;
    for ws in [&mut on_here, &mut on_there] {
        let (code, reason) = herald_e2e::await_close(ws).await.expect("a close frame");
        assert_eq!((code, reason.as_str()), (4004, "tokens revoked"));
    }
    bystander.send(ping_message()).await.expect("ping");
    assert_eq!(
        recv_json(&mut bystander).await["type"],
        "pong",
        "another user's session stays"
    );
}

/// Issue item 3: header buffers are bounded (hyper's default, about 400 KiB per connection, would let
/// a few thousand slow senders take gigabytes).
#[tokio::test]
async fn oversized_headers_are_refused() {
    use tokio::io::AsyncWriteExt;
    let gateway = embedded(&[]);
    let mut stream = tcp(&gateway).await;
    let huge = "a".repeat(40 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: herald\r\nX-Padding: {huge}\r\n\r\n");
    // The server may close before it has read everything: a failed write is an answer too.
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A normal request still works.
    assert_eq!(
        reqwest::get(gateway.url("/healthz")).await.expect("healthz").status(),
        200
    );
}

/// Issue item 5 ("User JWTs"): a JWKS URL in plain `http://` was accepted, so the key set that decides
/// who is who could be replaced in transit. Only `https://`, or `http://` to loopback, starts.
#[tokio::test]
async fn a_plain_http_jwks_url_is_refused_at_startup_unless_it_is_loopback() {
    let env = |url: &'static str| {
        [
            ("HERALD_JWT_JWKS_URL", url),
            JWT_ISSUER_AND_AUDIENCE[0],
            JWT_ISSUER_AND_AUDIENCE[1],
            ("WEBSOCKET_TOKEN_SECRET", TOKEN_SECRET),
        ]
    };
    let (status, output) = run_to_exit(&[], &env("http://issuer.example/.well-known/jwks.json"));
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("HERALD_JWT_JWKS_URL must be an https:// URL"),
        "{output}"
    );
    for loopback in [
        "http://127.0.0.1:9/jwks.json",
        "http://[::1]:9/jwks.json",
        "http://localhost:9/jwks.json",
    ] {
        let (status, output) = run_to_exit(&["check-config"], &env(loopback));
        assert!(status.success(), "{loopback}: {output}");
    }
}

/// Issue item 5: without `HERALD_JWT_ISSUER`/`AUDIENCE` any issuer's JWT for any audience was
/// accepted. Both are now required outside dev mode, unless waived by name.
#[tokio::test]
async fn without_issuer_and_audience_the_gateway_refuses_to_start_unless_explicitly_waived() {
    let unchecked = [
        ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
        ("WEBSOCKET_TOKEN_SECRET", TOKEN_SECRET),
    ];
    let (status, output) = run_to_exit(&[], &unchecked);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("HERALD_JWT_ISSUER and HERALD_JWT_AUDIENCE not set")
            && output.contains("HERALD_JWT_ALLOW_ANY_ISSUER_AND_AUDIENCE=true"),
        "{output}"
    );
    let (status, output) = run_to_exit(&[], &[unchecked[0], unchecked[1], JWT_ISSUER_AND_AUDIENCE[0]]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("HERALD_JWT_AUDIENCE not set"), "{output}");
    let waived = [
        unchecked[0],
        unchecked[1],
        ("HERALD_JWT_ALLOW_ANY_ISSUER_AND_AUDIENCE", "true"),
    ];
    let (status, output) = run_to_exit(&["check-config"], &waived);
    assert!(status.success(), "{output}");

    // Configured, they are enforced: a JWT signed with the right key for another audience or from
    // another issuer is refused.
    let gateway = embedded(&[]);
    for (claim, value) in [("aud", "another-app"), ("iss", "https://another-issuer.example/")] {
        let mut claims = user_claims("alice");
        claims[claim] = json!(value);
        let (status, code) = token_request(&gateway, &hs256(&claims)).await;
        assert_eq!((status, code.as_str()), (401, "jwt_invalid"), "{claim}");
    }
    let (status, _) = token_request(&gateway, &hs256(&user_claims("alice"))).await;
    assert_eq!(status, 200);
}

/// Issue item 5: with the issuer not answering, every forged JWT (unknown `kid`) made its own JWKS
/// fetch, one after the other (8 took 5 to 40 s). Now they share one fetch bounded by its timeout,
/// and a failed fetch is not retried for a while.
#[tokio::test]
async fn forged_kids_against_a_silent_issuer_share_one_fetch_bounded_by_its_timeout() {
    let issuer = SilentIssuer::start().await;
    let url = issuer.url();
    let gateway = GatewayProcess::start(
        &[],
        &[
            ("HERALD_JWT_JWKS_URL", url.as_str()),
            JWT_ISSUER_AND_AUDIENCE[0],
            JWT_ISSUER_AND_AUDIENCE[1],
            ("WEBSOCKET_TOKEN_SECRET", TOKEN_SECRET),
        ],
    );
    let forged = |i: usize| unsigned_rs256(&format!("forged-{i}"), &user_claims("mallory"));
    let started = Instant::now();
    let answers = futures_util::future::join_all((0..16).map(|i| {
        let jwt = forged(i);
        let gateway = &gateway;
        async move { token_request(gateway, &jwt).await }
    }))
    .await;
    let first_wave = started.elapsed();
    for (status, code) in &answers {
        assert_eq!((*status, code.as_str()), (503, "unavailable"));
    }
    // One 5 s fetch timeout, not sixteen of them.
    assert!(first_wave < Duration::from_secs(10), "{first_wave:?}");
    assert_eq!(issuer.connections(), 1, "one shared fetch");

    // The failure is remembered: more forged tokens are answered at once, without a fetch.
    let started = Instant::now();
    for i in 16..24 {
        let (status, _) = token_request(&gateway, &forged(i)).await;
        assert_eq!(status, 503);
    }
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(issuer.connections(), 1, "no refetch within the interval");
}

/// Issue item 5: `--dev` with a real HS256 secret let `POST /dev/jwt` mint JWTs that production
/// accepts. Dev mode now refuses any configured user JWT key.
#[tokio::test]
async fn dev_mode_refuses_to_start_with_a_real_user_jwt_key() {
    for configured in [
        ("HERALD_JWT_HS256_SECRET", JWT_SECRET),
        ("HERALD_JWT_JWKS_URL", "https://issuer.example/.well-known/jwks.json"),
    ] {
        let (status, output) = run_to_exit(&["--dev"], &[configured]);
        assert_eq!(status.code(), Some(2), "{output}");
        assert!(
            output.contains("--dev (HERALD_DEV) cannot be combined with") && output.contains("/dev/jwt"),
            "{output}"
        );
    }
    // Dev mode's own secret: a JWT it mints is no good on a production gateway.
    let minted = GatewayProcess::start(&["--dev"], &[]).dev_jwt("alice").await;
    let production = embedded(&[]);
    let (status, _) = token_request(&production, &minted).await;
    assert_eq!(status, 401);
}

/// Issue item 5: a `sub` containing a newline was accepted and split human log lines. User ids now
/// follow one rule everywhere (1-255 bytes, no control, separator or bidi-override characters).
#[tokio::test]
async fn a_sub_or_recipient_that_could_forge_log_lines_is_refused() {
    let gateway = embedded(&[]);
    for sub in [
        "alice\nINFO forged-log-line",
        "alice\r",
        "alice\u{2028}forged",
        "alice\u{202e}nimda",
        "",
    ] {
        let (status, code) = token_request(&gateway, &hs256(&user_claims(sub))).await;
        assert_eq!((status, code.as_str()), (401, "jwt_invalid"), "{sub:?}");
    }
    let (status, code) = token_request(&gateway, &hs256(&user_claims(&"x".repeat(256)))).await;
    assert_eq!((status, code.as_str()), (401, "jwt_invalid"));
    assert!(
        !gateway
            .lines()
            .iter()
            .any(|line| line.starts_with("INFO forged-log-line")),
        "no forged line"
    );
    // The publish API's recipients follow the same rule.
    let response = reqwest::Client::new()
        .post(gateway.internal_url("/api/publish"))
        .bearer_auth(PUBLISHER_KEY)
        .json(&json!({"userIds": ["alice\nINFO forged-log-line"], "notification": {"type": "new_like", "title": "t"}}))
        .send()
        .await
        .expect("POST /api/publish");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    assert!(body.to_string().contains("userIds[0]"), "{body}");
}

/// The claims of a valid user JWT for the test gateways (issuer, audience, ten minutes).
fn user_claims(sub: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    json!({"sub": sub, "iss": herald_e2e::JWT_ISSUER, "aud": herald_e2e::JWT_AUDIENCE, "exp": now + 600})
}

fn hs256(claims: &Value) -> String {
    herald_e2e::sign_hs256(JWT_SECRET, claims)
}

/// An RS256 JWT naming `kid` with a meaningless signature: the gateway must find the key before it
/// can even check the signature, which is what a forger exploits.
fn unsigned_rs256(kid: &str, claims: &Value) -> String {
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    format!("{}.{}.c2lnbmF0dXJl", b64(&header), b64(claims))
}

/// `POST /ws/token` with `jwt`: the status and the error code (empty on success).
async fn token_request(gateway: &GatewayProcess, jwt: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(gateway.url("/ws/token"))
        .bearer_auth(jwt)
        .send()
        .await
        .expect("POST /ws/token");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
}

/// An issuer that accepts connections and never answers, counting them.
struct SilentIssuer {
    addr: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SilentIssuer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Kept open and never answered, as an issuer that hangs.
                held.push(socket);
            }
        });
        Self { addr, connections }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Through a trusted proxy (the test itself, at 127.0.0.1) that forwards `forwarded_for`: the error
/// code of a connect with a token that is never valid, so that only the per-IP limit decides between
/// `rate_limited` and a token error (and no user's token budget is spent).
async fn connect_from(gateway: &GatewayProcess, forwarded_for: &str) -> String {
    let refused = gateway
        .open_ws_with_headers("not-a-token", &[("x-forwarded-for", forwarded_for)])
        .await
        .expect_err("the token is refused");
    refused.1
}

fn behind_a_proxy() -> GatewayProcess {
    embedded(&[("HERALD_TRUSTED_PROXIES", "127.0.0.1")])
}

/// The default budget: 5 connects per minute per client.
const CONNECTS_PER_MINUTE: usize = 5;

/// Issue 10 item 6: behind an ingress every client has its own connect budget, including clients
/// whose proxy writes `ip:port` entries.
#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_connect_budget() {
    let gateway = behind_a_proxy();
    for _ in 0..CONNECTS_PER_MINUTE {
        assert_ne!(connect_from(&gateway, "203.0.113.1").await, "rate_limited");
    }
    assert_eq!(
        connect_from(&gateway, "203.0.113.1:40000").await,
        "rate_limited",
        "same client, with a port"
    );
    assert_ne!(
        connect_from(&gateway, "203.0.113.2").await,
        "rate_limited",
        "another client"
    );
    assert_ne!(
        connect_from(&gateway, "198.51.100.9, 203.0.113.3:51000").await,
        "rate_limited",
        "the proxy's entry with a port is the client, not skipped for the spoofed one"
    );
}

/// Issue 10 item 6: an unreadable entry was skipped, so `X-Forwarded-For: <victim>, garbage` spent the
/// victim's budget. Now the junk stops the walk at the proxy that passed it on.
#[tokio::test]
async fn a_client_cannot_spend_another_clients_budget_with_an_unreadable_entry() {
    let gateway = behind_a_proxy();
    let victim = "198.51.100.1";
    for junk in ["garbage", "unknown", "", "[::1", "198.51.100.1:99999", "x", "y"] {
        let _ = connect_from(&gateway, &format!("{victim}, {junk}")).await;
    }
    assert_eq!(
        connect_from(&gateway, &format!("{victim}, junk")).await,
        "rate_limited",
        "the attempts were counted, against the proxy"
    );
    assert_ne!(
        connect_from(&gateway, victim).await,
        "rate_limited",
        "the victim's budget is whole"
    );
}

/// Issue 10 item 6: an IPv6 host chooses among 2^64 addresses of its /64, which share one budget.
#[tokio::test]
async fn ipv6_clients_of_one_64_share_a_connect_budget() {
    let gateway = behind_a_proxy();
    for host in 1..=CONNECTS_PER_MINUTE {
        let client = format!("[2001:db8:1:2::{host:x}]:443");
        assert_ne!(connect_from(&gateway, &client).await, "rate_limited", "{client}");
    }
    assert_eq!(connect_from(&gateway, "2001:db8:1:2:ffff:1:2:3").await, "rate_limited");
    assert_ne!(
        connect_from(&gateway, "2001:db8:1:3::1").await,
        "rate_limited",
        "the next /64"
    );
}

/// A gateway whose links may go to the app and whose icons may come from its CDN.
fn with_link_origins() -> GatewayProcess {
    embedded(&[
        ("HERALD_ACTION_URL_ORIGINS", "https://app.example.com"),
        ("HERALD_ICON_URL_ORIGINS", "https://cdn.example.com"),
    ])
}

/// `POST /api/publish` of `notification` to `user`: the status and the body.
async fn publish(gateway: &GatewayProcess, user: &str, notification: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(gateway.internal_url("/api/publish"))
        .bearer_auth(PUBLISHER_KEY)
        .json(&json!({"userIds": [user], "notification": notification}))
        .send()
        .await
        .expect("POST /api/publish");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Issue 10 item 7: HTML-free rendering needs text that shows what it says and links that go where
/// the deployment allows. Each forbidden thing is refused (400) with its field named.
#[tokio::test]
async fn notification_content_that_could_mislead_or_lead_elsewhere_is_refused_by_field() {
    let gateway = with_link_origins();
    let cases = [
        ("title", json!("invoice\u{202E}fdp.exe")),
        ("title", json!("ad\u{200B}min")),
        ("title", json!("two\nlines")),
        ("title", json!("a\u{2028}b")),
        ("body", json!("a\u{2029}b")),
        ("body", json!("isolate \u{2067}x\u{2069}")),
        ("body", json!("\u{FEFF}bom")),
        ("body", json!("bell\u{7}")),
        ("actionUrl", json!("https://evil.example/login")),
        ("actionUrl", json!("https://app.example.com.evil.example/")),
        ("actionUrl", json!("javascript:alert(1)")),
        ("actionUrl", json!("https://user:pw@app.example.com/")),
        ("actionUrl", json!("//evil.example/x")),
        ("icon", json!("<img src=x onerror=alert(1)>")),
        ("icon", json!("https://evil.example/i.png")),
        ("icon", json!("https://app.example.com/i.png")),
    ];
    for (field, value) in cases {
        let mut notification = json!({"type": "new_like", "title": "t"});
        notification[field] = value.clone();
        let (status, body) = publish(&gateway, "erin", notification).await;
        assert_eq!(status, 400, "{field} = {value}: {body}");
        assert_eq!(body["error"]["code"], "validation_failed");
        let fields = body["error"]["fields"].as_object().expect("fields");
        assert_eq!(
            fields.keys().collect::<Vec<_>>(),
            [&format!("notification.{field}")],
            "{value}: {body}"
        );
    }
}

/// Issue 10 item 7: what is allowed is stored and delivered exactly as sent: HTML-looking text is text,
/// scripts of any direction and emoji sequences keep their marks and joiners.
#[tokio::test]
async fn allowed_content_reaches_the_client_unchanged() {
    let gateway = with_link_origins();
    let mut ws = open(&gateway, "frank").await;
    let sent = json!({
        "type": "new_comment",
        "title": "<b>Bob</b> & \"Ann\" said: a < b \u{200F}تم 👩\u{200D}💻",
        "body": "line 1\n\tline 2 <script>alert(1)</script>\nمی\u{200C}خواهم",
        "icon": "https://cdn.example.com/icons/comment.png",
        "actionUrl": "https://app.example.com/mocs/42?tab=comments#c7",
        "data": {"html": "<img src=x onerror=alert(1)>"},
    });
    let (status, body) = publish(&gateway, "frank", sent.clone()).await;
    assert_eq!(status, 202, "{body}");
    let payload = next_notification(&mut ws).await["payload"].clone();
    for field in ["type", "title", "body", "icon", "actionUrl", "data"] {
        assert_eq!(payload[field], sent[field], "{field}");
    }
    let (status, body) = publish(
        &gateway,
        "frank",
        json!({"type": "new_like", "title": "t", "icon": "upload-complete", "actionUrl": "/mocs/42"}),
    )
    .await;
    assert_eq!(status, 202, "names and relative paths: {body}");
    let payload = next_notification(&mut ws).await["payload"].clone();
    assert_eq!(
        (&payload["icon"], &payload["actionUrl"]),
        (&json!("upload-complete"), &json!("/mocs/42"))
    );
}

/// Issue item 8: `/metrics` and `/api/publish` shared the public listener, so anyone who could open
/// a WebSocket could read the replica's traffic figures and try publisher keys. Now they are served
/// on the internal listener only, and the public one answers 404 for both.
#[tokio::test]
async fn publishing_and_metrics_are_on_the_internal_listener_only() {
    let gateway = embedded(&[]);
    assert_ne!(gateway.addr, gateway.internal_addr);
    let client = reqwest::Client::new();
    let publish = |url: String| {
        client
            .post(url)
            .bearer_auth(PUBLISHER_KEY)
            .json(&json!({"userIds": ["ivy"], "notification": {"type": "new_like", "title": "hello"}}))
            .send()
    };
    let error_code = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("a JSON error");
        (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
    };

    // The public port: neither route exists, whatever the key.
    let public_publish = publish(gateway.url("/api/publish")).await.expect("POST");
    assert_eq!(error_code(public_publish).await, (404, "not_found".to_owned()));
    let public_metrics = client.get(gateway.url("/metrics")).send().await.expect("GET");
    assert_eq!(error_code(public_metrics).await, (404, "not_found".to_owned()));

    // The internal port: both work, and what was published there reaches a client of the public one.
    let mut ws = open(&gateway, "ivy").await;
    let accepted = publish(gateway.internal_url("/api/publish")).await.expect("POST");
    assert_eq!(accepted.status(), 202);
    assert_eq!(next_notification(&mut ws).await["payload"]["title"], "hello");
    let metrics = client.get(gateway.internal_url("/metrics")).send().await.expect("GET");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    assert!(text.contains("herald_notifications_published_total"), "{text}");

    // Health is on both, for probes; the user API is not on the internal port.
    for url in [gateway.url("/healthz"), gateway.internal_url("/healthz")] {
        assert_eq!(client.get(url).send().await.expect("GET").status(), 200);
    }
    let internal_token = client
        .post(gateway.internal_url("/ws/token"))
        .bearer_auth(herald_e2e::hs256_jwt(JWT_SECRET, "ivy", 600, &[]))
        .send()
        .await
        .expect("POST");
    assert_eq!(internal_token.status(), 404);
}
