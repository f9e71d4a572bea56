//! Cluster mode on a Redis Cluster (3 primaries, each with a replica, from `scripts/services`):
//! several gateway replicas, users spread over them, publishes through any replica; a replica killed
//! and a Redis primary failed over lose nothing (issue 15).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use herald_e2e::cluster::{Cluster, connect, next_notification, publish, token};
use herald_e2e::{GatewayProcess, Ws, client_message};
use serde_json::{Value, json};

const REPLICAS: usize = 4;
const USERS: usize = 40;

/// A client: its user, and its socket (replaced when it reconnects).
struct Client {
    user: String,
    ws: Ws,
    received: BTreeSet<String>,
}

impl Client {
    /// Reads notifications (acknowledging each) until it holds all of `expected`, or fails after 30 s.
    async fn receive_all(&mut self, expected: &BTreeSet<String>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !expected.is_subset(&self.received) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(message) = tokio::time::timeout(left, next_notification(&mut self.ws)).await else {
                let missing: Vec<_> = expected.difference(&self.received).collect();
                panic!("{} never received {missing:?}", self.user);
            };
            let id = message["payload"]["id"].as_str().expect("id").to_owned();
            if self.received.insert(id.clone()) {
                self.ws
                    .send(client_message("notification:ack", json!({"notificationId": id})))
                    .await
                    .expect("ack");
            }
        }
    }
}

/// Publishes one notification to every user through `replica`; returns what was created, by user.
async fn publish_to_all(
    replica: &GatewayProcess,
    users: &[&str],
    title: &str,
    created: &mut BTreeMap<String, BTreeSet<String>>,
) {
    let response = publish(replica, users, title).await;
    assert_eq!(response.status(), 202, "{title}");
    let answer: Value = response.json().await.expect("json");
    for (user, id) in herald_e2e::created_ids(&answer) {
        created.entry(user).or_default().insert(id);
    }
}

/// Every replica answers `/readyz` with 200, its `redis` check `ok` (each polled, at most the wait).
async fn every_replica_is_ready(replicas: &[GatewayProcess]) {
    futures_util::future::join_all(
        replicas
            .iter()
            .map(|replica| replica.wait_for_readiness(200, "redis", "ok")),
    )
    .await;
}

async fn everyone_received_everything(clients: &mut [Client], created: &BTreeMap<String, BTreeSet<String>>) {
    futures_util::future::join_all(clients.iter_mut().map(|client| {
        let expected = created.get(&client.user).cloned().unwrap_or_default();
        async move { client.receive_all(&expected).await }
    }))
    .await;
}

#[tokio::test]
async fn replicas_on_a_redis_cluster_lose_nothing_when_a_replica_dies_and_a_primary_fails_over() {
    let Some(url) = herald_e2e::service_url("HERALD_TEST_REDIS_CLUSTER_URL") else {
        return;
    };
    let Some(cluster) = Cluster::new(Some(url.clone())) else {
        return;
    };
    let mut replicas = cluster.replicas(REPLICAS);
    every_replica_is_ready(&replicas).await;
    let users: Vec<String> = (0..USERS).map(|i| format!("spread-{i}")).collect();
    let recipients: Vec<&str> = users.iter().map(String::as_str).collect();
    // User i on replica i % 4: every replica holds users of every Redis primary.
    let mut clients = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let replica = &replicas[i % REPLICAS];
        let ws = connect(replica, &token(replica, user).await).await.expect("connects");
        clients.push(Client {
            user: user.clone(),
            ws,
            received: BTreeSet::new(),
        });
    }

    // Through each replica in turn: every recipient, wherever connected, gets every notification.
    let mut created = BTreeMap::new();
    for (i, replica) in replicas.iter().enumerate() {
        publish_to_all(replica, &recipients, &format!("through replica {i}"), &mut created).await;
    }
    everyone_received_everything(&mut clients, &created).await;

    // Replica 3 dies: its users reconnect to the others and get what was published meanwhile.
    let mut dead = replicas.pop().expect("replica 3");
    herald_e2e::signal(dead.pid(), "KILL");
    dead.wait_exit(Duration::from_secs(10));
    publish_to_all(&replicas[0], &recipients, "while replica 3 is gone", &mut created).await;
    for (i, client) in clients.iter_mut().enumerate() {
        if i % REPLICAS == REPLICAS - 1 {
            let replica = &replicas[i % (REPLICAS - 1)];
            client.ws = connect(replica, &token(replica, &client.user).await)
                .await
                .expect("reconnects elsewhere");
        }
    }
    publish_to_all(&replicas[1], &recipients, "after the reconnects", &mut created).await;
    everyone_received_everything(&mut clients, &created).await;

    // A Redis primary fails over to its replica while publishes go on through every replica.
    let publishing = async {
        let mut created = created.clone();
        for round in 0..12 {
            publish_to_all(
                &replicas[round % replicas.len()],
                &recipients,
                &format!("failover round {round}"),
                &mut created,
            )
            .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        created
    };
    let failing_over = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::spawn_blocking({
            let url = url.clone();
            move || herald_e2e::fail_over_one_primary(&url)
        })
        .await
        .expect("failover")
    };
    let (all, (old_primary, new_primary)) = tokio::join!(publishing, failing_over);
    created = all;
    assert_ne!(old_primary, new_primary);
    // Every replica is ready once the failover completed (readiness asks whether a replica reaches
    // the Cluster, one node of it: docs/architecture.md).
    every_replica_is_ready(&replicas).await;
    // And after it, through the new primary's slots as well.
    publish_to_all(&replicas[2], &recipients, "after the failover", &mut created).await;
    everyone_received_everything(&mut clients, &created).await;
    // The failover ended the subscriptions on the old primary; they came back by themselves (and
    // the users concerned caught up), and no reply went to the wrong command: Redis' unasked
    // `sunsubscribe` arrives on the subscription connection only.
    let logs: Vec<String> = replicas.iter().flat_map(GatewayProcess::lines).collect();
    assert!(
        logs.iter().any(|line| line.contains("bus:resubscribed")),
        "the failover moved subscribed users' slots"
    );
    let confused: Vec<&String> = logs.iter().filter(|line| line.contains("incompatible type")).collect();
    assert!(confused.is_empty(), "a reply taken for another command's: {confused:?}");
    assert_eq!(created.len(), USERS);
    let per_user = created.values().map(BTreeSet::len).collect::<BTreeSet<_>>();
    assert_eq!(
        per_user,
        BTreeSet::from([REPLICAS + 2 + 12 + 1]),
        "every publish reached every user"
    );
}
