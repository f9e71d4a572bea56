//! Cluster mode with real processes: several `herald-gateway` replicas sharing one PostgreSQL and one
//! Redis behave as one service (issue "Production backends").

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use herald_e2e::cluster::{Cluster, connect, next_notification, post_token, publish, token, user_jwt};
use herald_e2e::{RedisServer, client_message};
use serde_json::{Value, json};

#[tokio::test]
async fn three_replicas_share_tokens_connections_limits_and_fan_out() {
    let Some(cluster) = Cluster::new(None) else { return };
    let replicas = cluster.replicas(3);
    let (r1, r2, r3) = (&replicas[0], &replicas[1], &replicas[2]);

    // A token issued by replica 1 connects on replica 2, once: replica 3 refuses it as used.
    let shared = token(r1, "alice").await;
    let mut alice_on_2 = connect(r2, &shared).await.expect("token from r1 works on r2");
    assert_eq!(connect(r3, &shared).await.err(), Some((401, "token_used".to_owned())));

    // One publish to replica 1 reaches the user's connections on replicas 2 and 3.
    let mut alice_on_3 = connect(r3, &token(r1, "alice").await).await.expect("connects");
    let answer: Value = publish(r1, &["alice"], "hello from r1")
        .await
        .json()
        .await
        .expect("json");
    let id = answer["created"][0]["id"].clone();
    for ws in [&mut alice_on_2, &mut alice_on_3] {
        assert_eq!(next_notification(ws).await["payload"]["id"], id);
    }

    // The 5-connection cap is global: 5 spread over the replicas, the 6th refused on any of them.
    let mut bobs = Vec::new();
    for (i, replica) in [r1, r2, r3, r1, r2].into_iter().enumerate() {
        bobs.push(
            connect(replica, &token(r3, "bob").await)
                .await
                .unwrap_or_else(|e| panic!("bob #{i}: {e:?}")),
        );
    }
    let sixth = token(r1, "bob").await;
    assert_eq!(
        connect(r3, &sixth).await.err(),
        Some((429, "too_many_connections".to_owned()))
    );

    // The token rate limit counts across replicas: bob already took 6 of his 10 this minute.
    for replica in [r1, r2, r3, r1] {
        assert_eq!(post_token(replica, "bob").await.status(), 200);
    }
    assert_eq!(post_token(r2, "bob").await.status(), 429);

    // DELETE /ws/token on one replica refuses the user's older tokens on all.
    let older = [token(r2, "carol").await, token(r3, "carol").await];
    let revoked = reqwest::Client::new()
        .delete(r1.url("/ws/token"))
        .bearer_auth(user_jwt("carol"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(revoked.status(), 204);
    assert_eq!(
        connect(r2, &older[0]).await.err(),
        Some((401, "token_revoked".to_owned()))
    );
    assert_eq!(
        connect(r3, &older[1]).await.err(),
        Some((401, "token_revoked".to_owned()))
    );
    assert!(
        connect(r3, &token(r2, "carol").await).await.is_ok(),
        "newer tokens work"
    );
}

#[tokio::test]
async fn redis_restart_loses_no_notification() {
    let mut redis = RedisServer::start();
    let Some(cluster) = Cluster::new(Some(redis.url())) else {
        return;
    };
    let publisher_side = cluster.replica(&[]);
    let client_side = cluster.replica(&[]);
    // M users, each connected to the other replica; every publish goes to all of them.
    const USERS: usize = 10;
    let users: Vec<String> = (0..USERS).map(|i| format!("user-{i}")).collect();
    let mut sockets = Vec::new();
    for user in &users {
        sockets.push(
            connect(&client_side, &token(&client_side, user).await)
                .await
                .expect("connects"),
        );
    }

    // The publisher keeps publishing, one every 25 ms, while Redis goes away and comes back.
    const TOTAL: usize = 60;
    let recipients: Vec<&str> = users.iter().map(String::as_str).collect();
    let publisher = async {
        let mut created: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        // The bus's failed publishes are counted for the alert (HeraldBackendErrors).
        const SPUBLISH_ERRORS: &str = r#"herald_backend_errors_total{backend="redis",operation="spublish"}"#;
        for i in 0..TOTAL {
            if i == 20 {
                assert_eq!(
                    publisher_side.metric(SPUBLISH_ERRORS).await,
                    Some(0.0),
                    "no failure while Redis is up"
                );
                redis.kill();
                // Readiness says so: the probe asks Redis itself.
                publisher_side.wait_for_readiness(503, "redis", "unavailable").await;
            }
            if i == 40 {
                publisher_side.wait_for_metric(SPUBLISH_ERRORS, 1.0).await;
                redis.restart();
                publisher_side.wait_for_readiness(200, "redis", "ok").await;
            }
            let response = publish(&publisher_side, &recipients, &format!("n{i}")).await;
            assert_eq!(response.status(), 202, "publishing answers while Redis is down");
            let answer: Value = response.json().await.expect("json");
            for (user, id) in herald_e2e::created_ids(&answer) {
                created.entry(user).or_default().insert(id);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        created
    };
    let receivers = futures_util::future::join_all(users.iter().zip(sockets.iter_mut()).map(|(user, ws)| async move {
        let mut received = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while received.len() < TOTAL && Instant::now() < deadline {
            let message = next_notification(ws).await;
            let id = message["payload"]["id"].as_str().expect("id").to_owned();
            if received.insert(id.clone()) {
                ws.send(client_message("notification:ack", json!({"notificationId": id})))
                    .await
                    .expect("ack");
            }
        }
        (user.clone(), received)
    }));
    let (created, received) = tokio::join!(publisher, receivers);
    let received: BTreeMap<String, BTreeSet<String>> = received.into_iter().collect();
    assert_eq!(created.len(), USERS);
    assert!(created.values().all(|ids| ids.len() == TOTAL));
    assert_eq!(
        received, created,
        "every notification reaches every recipient after recovery (deduplicated by id)"
    );
}

#[tokio::test]
async fn a_replica_killed_while_delivering_loses_nothing_unacknowledged() {
    let Some(cluster) = Cluster::new(None) else { return };
    let mut doomed = cluster.replica(&[]);
    let survivor = cluster.replica(&[]);
    // M users on the doomed replica; N notifications to all of them, published on the survivor,
    // some before the kill and the rest while the users are reconnecting.
    const USERS: usize = 10;
    const TOTAL: usize = 40;
    const BEFORE_KILL: usize = 15;
    let users: Vec<String> = (0..USERS).map(|i| format!("killed-{i}")).collect();
    let recipients: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut sockets = Vec::new();
    for user in &users {
        sockets.push(connect(&doomed, &token(&survivor, user).await).await.expect("connects"));
    }
    let mut created: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut publish_round = |answer: Value| {
        for (user, id) in herald_e2e::created_ids(&answer) {
            created.entry(user).or_default().insert(id);
        }
    };
    for i in 0..BEFORE_KILL {
        publish_round(
            publish(&survivor, &recipients, &format!("n{i}"))
                .await
                .json()
                .await
                .expect("json"),
        );
    }
    // Delivery has begun on the doomed replica (each user acknowledges its first one), then it dies.
    let mut received: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (user, ws) in users.iter().zip(sockets.iter_mut()) {
        let id = next_notification(ws).await["payload"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        ws.send(client_message("notification:ack", json!({"notificationId": id})))
            .await
            .expect("ack");
        received.entry(user.clone()).or_default().insert(id);
    }
    herald_e2e::signal(doomed.pid(), "KILL");
    doomed.wait_exit(Duration::from_secs(10));
    drop(sockets);
    for i in BEFORE_KILL..TOTAL {
        publish_round(
            publish(&survivor, &recipients, &format!("n{i}"))
                .await
                .json()
                .await
                .expect("json"),
        );
    }
    // Every client reconnects to the other replica and gets everything it had not acknowledged.
    for user in &users {
        let mut again = connect(&survivor, &token(&survivor, user).await)
            .await
            .expect("reconnects");
        let expected = &created[user];
        let seen = received.entry(user.clone()).or_default();
        let mut last_seq = 0;
        while !expected.is_subset(seen) {
            let message = next_notification(&mut again).await;
            let seq = message["payload"]["seq"].as_i64().expect("seq");
            assert!(seq > last_seq, "replayed in order: {seq} after {last_seq}");
            last_seq = seq;
            let id = message["payload"]["id"].as_str().expect("id").to_owned();
            again
                .send(client_message("notification:ack", json!({"notificationId": id})))
                .await
                .expect("ack");
            seen.insert(id);
        }
    }
    assert_eq!(created.len(), USERS);
    assert!(created.values().all(|ids| ids.len() == TOTAL));
}

/// A pod's init container waits for the schema (reading only) while a migration Job applies it: the
/// waiting process sees the migrations missing, and exits once `migrate` has run.
#[tokio::test]
async fn await_migrations_waits_until_another_process_has_applied_them() {
    use std::io::{BufRead, BufReader};
    let Some(admin) = herald_e2e::service_url("HERALD_TEST_DATABASE_URL") else {
        return;
    };
    let Some(redis) = herald_e2e::service_url("HERALD_TEST_REDIS_URL") else {
        return;
    };
    let database = herald_e2e::fresh_database(&admin);
    let env = [("DATABASE_URL", database.as_str()), ("REDIS_URL", redis.as_str())];
    let mut waiting = std::process::Command::new(herald_e2e::gateway_binary())
        .arg("await-migrations")
        .envs(env)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("await-migrations starts");
    let mut lines = BufReader::new(waiting.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("text");
    assert!(
        first.contains("migrations:waiting"),
        "it waits for the schema first: {first}"
    );
    assert!(waiting.try_wait().expect("wait").is_none(), "still waiting");

    let (status, output) = herald_e2e::run_to_exit(&["migrate"], &env);
    assert!(status.success(), "{output}");
    let deadline = std::time::Instant::now() + herald_e2e::WAIT;
    let exited = loop {
        if let Some(status) = waiting.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "await-migrations did not notice the schema"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(exited.success());
}

/// What the clients of the drain test saw: each user's notifications, and each close the draining
/// replica sent (when, code, reason).
#[derive(Default)]
struct DrainSeen {
    received: BTreeMap<String, BTreeSet<String>>,
    closes: Vec<(Instant, u16, String)>,
    reconnected: usize,
}

/// Reads notifications from `ws` (acknowledging each) until the server closes, and returns the close.
async fn read_until_closed(user: &str, ws: &mut herald_e2e::Ws, seen: &std::sync::Mutex<DrainSeen>) -> (u16, String) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if message["type"] == "notification" {
                    let id = message["payload"]["id"].as_str().expect("id").to_owned();
                    // The session may be closing: a lost ack only means a replay, deduplicated by id.
                    let _ = ws
                        .send(client_message("notification:ack", json!({"notificationId": id})))
                        .await;
                    seen.lock()
                        .expect("seen")
                        .received
                        .entry(user.to_owned())
                        .or_default()
                        .insert(id);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return frame.map_or((0, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("{user}: the connection failed instead of closing: {err}"),
            None => panic!("{user}: the connection ended without a close frame"),
        }
    }
}

/// Issue 14: SIGTERM on a replica holding 500 live connections turns its readiness false at once,
/// sends the sessions away in waves within its grace period (each with the reconnect hint), and
/// every client, reconnecting to the other replica after the hinted delay, gets every notification
/// published before, during and after the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_of_500_connections_hands_every_client_over_in_waves_and_loses_nothing() {
    use std::sync::{Arc, Mutex};
    let Some(cluster) = Cluster::new(None) else { return };
    const USERS: usize = 500;
    const GRACE_SECONDS: u64 = 6;
    // 1,000 connects from one address in a minute, shared by both replicas through Redis.
    let connects = ("HERALD_MAX_CONNECTS_PER_MINUTE_PER_IP", "10000");
    let mut draining = cluster.replica(&[("HERALD_SHUTDOWN_GRACE_SECONDS", "6"), connects]);
    let other = Arc::new(cluster.replica(&[("HERALD_PUBLISHER_NOTIFICATIONS_PER_SECOND", "100000"), connects]));
    let users: Vec<String> = (0..USERS).map(|i| format!("drained-{i}")).collect();
    let recipients: Vec<&str> = users.iter().map(String::as_str).collect();
    let seen = Arc::new(Mutex::new(DrainSeen::default()));
    let (done, finished) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for user in &users {
        let mut ws = connect(&draining, &token(&other, user).await).await.expect("connects");
        let (user, seen, other, mut finished) = (user.clone(), seen.clone(), other.clone(), finished.clone());
        clients.push(tokio::spawn(async move {
            let (code, reason) =
                tokio::time::timeout(Duration::from_secs(60), read_until_closed(&user, &mut ws, &seen))
                    .await
                    .expect("sent away within a minute");
            seen.lock()
                .expect("seen")
                .closes
                .push((Instant::now(), code, reason.clone()));
            // As a client does: wait the hinted delay, then reconnect (to the replica left).
            let delay: u64 = reason
                .strip_prefix("going away: reconnect in ")
                .and_then(|rest| rest.strip_suffix(" ms"))
                .and_then(|ms| ms.parse().ok())
                .unwrap_or_else(|| panic!("{user}: no reconnect hint in {reason:?} ({code})"));
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let mut again = connect(&other, &token(&other, &user).await).await.expect("reconnects");
            seen.lock().expect("seen").reconnected += 1;
            tokio::select! {
                _ = finished.wait_for(|done| *done) => {}
                closed = read_until_closed(&user, &mut again, &seen) => panic!("{user}: closed again: {closed:?}"),
            }
        }));
    }
    let mut created: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut publish_round = |answer: Value| {
        let ids = herald_e2e::created_ids(&answer);
        assert_eq!(ids.len(), USERS, "{answer}");
        for (user, id) in ids {
            created.entry(user).or_default().insert(id);
        }
    };
    for round in 0..2 {
        publish_round(
            publish(&other, &recipients, &format!("before {round}"))
                .await
                .json()
                .await
                .expect("json"),
        );
    }

    herald_e2e::signal(draining.pid(), "TERM");
    let signalled = Instant::now();
    // Not ready as soon as the signal is handled: the probe is refused (the listener stopped
    // accepting) or answers 503, before the first session is sent away.
    let probe = reqwest::Client::new();
    let not_ready = loop {
        match probe.get(draining.url("/readyz")).send().await {
            Ok(answer) if answer.status() == 200 => {}
            Ok(answer) => {
                assert_eq!(answer.status(), 503, "readiness false while draining");
                break Instant::now();
            }
            Err(_) => break Instant::now(),
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(3),
            "still ready 3 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Publishes go on while the waves run, and after the replica is gone.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        publish_round(
            publish(&other, &recipients, &format!("during {round}"))
                .await
                .json()
                .await
                .expect("json"),
        );
    }
    let status = tokio::task::block_in_place(|| draining.wait_exit(Duration::from_secs(GRACE_SECONDS + 5)));
    assert!(status.success(), "a drain ends in a clean exit: {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(GRACE_SECONDS + 1),
        "within its grace period"
    );
    publish_round(publish(&other, &recipients, "after").await.json().await.expect("json"));

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: usize = {
            let seen = seen.lock().expect("seen");
            created
                .iter()
                .map(|(user, ids)| {
                    ids.difference(seen.received.get(user).unwrap_or(&BTreeSet::new()))
                        .count()
                })
                .sum()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} notifications never reached their user"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.send(true).expect("clients listen");
    for client in clients {
        client.await.expect("a client ended cleanly");
    }

    let seen = seen.lock().expect("seen");
    assert_eq!(seen.reconnected, USERS, "every client reconnected to the other replica");
    assert_eq!(seen.closes.len(), USERS);
    assert!(
        seen.closes.iter().all(|(_, code, _)| *code == 1001),
        "every session told to go away"
    );
    let first = seen.closes.iter().map(|(at, _, _)| *at).min().expect("closes");
    let last = seen.closes.iter().map(|(at, _, _)| *at).max().expect("closes");
    // Ten waves over half the grace (3 s): the last is told about 2.7 s after the first.
    assert!(
        last - first >= Duration::from_millis(2_000),
        "sent away in waves, not at once: {:?} from first to last",
        last - first
    );
    assert!(
        last - signalled < Duration::from_secs(GRACE_SECONDS),
        "all told within the grace period"
    );
    // Readiness went with the first wave, not after the waves (which take 2.7 s; the margin is the
    // probe's own polling among 500 clients on a busy machine).
    assert!(
        not_ready <= first + Duration::from_secs(1),
        "not ready {:?} after the first close",
        not_ready.saturating_duration_since(first)
    );
    assert!(created.values().all(|ids| ids.len() == 6));
}

/// A replica remembers its recipients' preferences and does not read them for every publish; a
/// change made through another replica still holds for the very next publish, which the commit's
/// check sends back to read them again.
#[tokio::test]
async fn a_preference_changed_through_one_replica_holds_for_the_next_publish_on_another() {
    let Some(cluster) = Cluster::new(None) else { return };
    let replicas = cluster.replicas(2);
    let (r1, r2) = (&replicas[0], &replicas[1]);
    let reads =
        "herald_backend_request_duration_seconds_count{backend=\"postgres\",operation=\"preferences_get_many\"}";
    let answer = |title: &'static str| async move {
        let answer: Value = publish(r2, &["alice"], title).await.json().await.expect("json");
        answer
    };
    assert_eq!(answer("one").await["created"].as_array().map(Vec::len), Some(1));
    let read_once = r2.metric(reads).await.expect("preference reads timed");
    assert_eq!(answer("two").await["created"].as_array().map(Vec::len), Some(1));
    assert_eq!(r2.metric(reads).await, Some(read_once), "remembered, not read again");

    // Alice turns the type off through the other replica.
    let muted = reqwest::Client::new()
        .patch(r1.url("/notifications/preferences"))
        .bearer_auth(user_jwt("alice"))
        .json(&json!({"types": {"new_comment": {"inApp": false}}}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(muted.status(), 200, "{:?}", muted.text().await);
    let skipped = answer("three").await;
    assert_eq!(skipped["created"], json!([]), "{skipped}");
    assert_eq!(skipped["skipped"][0]["userId"], "alice");
    assert!(r2.metric(reads).await > Some(read_once), "read again after the check");
}
