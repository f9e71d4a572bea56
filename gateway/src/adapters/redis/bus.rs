use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::{PushInfo, PushKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{Redis, keys, subscriber, unavailable};
use crate::app::metrics::{Backend, BackendMetrics};
use crate::domain::notification::{Notification, UnreadCount};
use crate::error::{Error, Result};
use crate::ports::{BusEvent, EventBus, Interest};

/// Redis sharded pub/sub between replicas, one channel per user (`events:{u:<user>}`, in the
/// user's slot, so on a Redis Cluster each primary carries its own users' traffic). A replica
/// subscribes to the channels of the users connected to it, while they are, and so receives their
/// events and no others: its bus load follows its own users, not the total traffic.
///
/// Pub/sub is at most once. A session reads the store only once its user's subscription is active
/// ([`EventBus::follow`]), so nothing falls between the two; when a subscription is lost (the
/// connection dropped, or Redis ended it as its slot moved in a failover) it is re-established and
/// the user's connections catch up from PostgreSQL, the source of truth
/// ([`BusEvent::ResyncUser`], or [`BusEvent::Resync`] when many users are concerned).
pub struct RedisEventBus {
    redis: Redis,
    local: broadcast::Sender<BusEvent>,
    followers: Arc<Followers>,
}

/// An event as it travels through Redis. `N` is `&Notification` when publishing (serialized from the
/// event's own notifications, not copies of them) and `Notification` when receiving.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Wire<N> {
    Published {
        notifications: Vec<N>,
        unread: Vec<(String, u64)>,
        /// The version of each count of `unread`, in its order. Beside the counts rather than in
        /// them so that replicas of different versions read each other's events during a rolling
        /// upgrade (an event without versions reads as versions not known: 0).
        #[serde(default)]
        versions: Vec<u64>,
        /// The publish's W3C `traceparent` when traces are on (absent otherwise, and from replicas
        /// of earlier versions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<String>,
    },
    UnreadCount {
        user_id: String,
        count: u64,
        #[serde(default)]
        version: u64,
    },
    SubscriptionsChanged {
        user_id: String,
    },
    TokensRevoked {
        user_id: String,
    },
}

/// A subscription attempt that failed is retried after this, doubling up to [`MAX_BACKOFF`]: at
/// most a second after Redis is back, the users' events flow again.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a session waits for its user's subscription before its connect fails.
const FOLLOW_WITHIN: Duration = Duration::from_secs(5);
/// Subscription changes handled in one round, their commands in flight together.
const ROUND: usize = 1_024;
/// More users than this to catch up at once: every connection catches up ([`BusEvent::Resync`]),
/// rather than as many events, which could overrun the local channel.
const RESYNC_ALL_ABOVE: usize = 256;

/// The channel kind in [`keys`].
const EVENTS: &str = "events";

/// How many sessions here follow each user. The subscriber task makes Redis' subscriptions match.
struct Followers {
    counts: Mutex<HashMap<Arc<str>, usize>>,
    requests: mpsc::UnboundedSender<Request>,
}

enum Request {
    /// `user`'s count went from or to zero, or a session waits for the user's subscription: make
    /// the subscription match the count, then answer `ready` (true once it is active).
    Match {
        user: Arc<str>,
        ready: Option<oneshot::Sender<bool>>,
    },
    /// Redis ended the subscription to `user`'s channel (its slot moved: a failover, a resharding),
    /// or confirmed an unsubscription of ours.
    Ended(Arc<str>),
    /// A connection to Redis was lost: the subscriptions on it are gone.
    Lost,
}

impl Followers {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wants(&self, user: &str) -> bool {
        self.counts().contains_key(user)
    }

    /// One more session follows `user`.
    fn hold(&self, user: &Arc<str>) {
        *self.counts().entry(user.clone()).or_insert(0) += 1;
    }

    /// One session less follows `user`; the last one gone, the subscription goes.
    fn release(&self, user: Arc<str>) {
        let last = {
            let mut counts = self.counts();
            match counts.get_mut(&user) {
                Some(1) => counts.remove(&user).is_some(),
                Some(count) => {
                    *count -= 1;
                    false
                }
                None => false,
            }
        };
        if last {
            let _ = self.requests.send(Request::Match { user, ready: None });
        }
    }
}

impl RedisEventBus {
    /// Starts the bus on `redis`'s connection: the reader of what Redis pushes and the task that
    /// keeps the subscriptions matching the sessions here (nothing is subscribed before a session
    /// asks).
    pub fn start(redis: Redis) -> Arc<Self> {
        let (local, _) = broadcast::channel(4_096);
        let (requests, requested) = mpsc::unbounded_channel();
        let followers = Arc::new(Followers {
            counts: Mutex::default(),
            requests: requests.clone(),
        });
        match redis.take_pushes() {
            Some(pushes) => {
                tokio::spawn(read_pushes(
                    pushes,
                    redis.prefix.clone(),
                    local.clone(),
                    requests,
                    redis.metrics.clone(),
                ));
            }
            None => tracing::error!("bus: a second bus on one Redis connection receives nothing"),
        }
        tokio::spawn(keep_subscriptions(
            redis.clone(),
            followers.clone(),
            requested,
            local.clone(),
        ));
        tokio::spawn(check_subscriber(
            Arc::downgrade(&redis.subscriber),
            redis.metrics.clone(),
        ));
        Arc::new(Self {
            redis,
            local,
            followers,
        })
    }

    /// Publishes `wire` on `user_id`'s channel.
    async fn send(&self, user_id: &str, wire: &Wire<&Notification>) -> Result<()> {
        let payload = serde_json::to_string(wire).map_err(Error::backend)?;
        let _: i64 = redis::cmd("SPUBLISH")
            .arg(channel_of(&self.redis.prefix, user_id))
            .arg(payload)
            .query_async(&mut self.redis.connection())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// Turns what Redis pushes into local events and subscription news, until the connection is gone.
async fn read_pushes(
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    prefix: String,
    local: broadcast::Sender<BusEvent>,
    requests: mpsc::UnboundedSender<Request>,
    metrics: BackendMetrics,
) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::SMessage => {
                let Some(payload) = push.data.get(1).and_then(|v| redis::from_redis_value::<String>(v).ok()) else {
                    continue;
                };
                match serde_json::from_str::<Wire<Notification>>(&payload) {
                    Ok(wire) => {
                        let _ = local.send(wire.into_event());
                    }
                    Err(err) => tracing::warn!(error = %err, "bus: unreadable event ignored"),
                }
            }
            PushKind::SUnsubscribe => {
                let channel = push
                    .data
                    .first()
                    .and_then(|v| redis::from_redis_value::<String>(v).ok());
                if let Some(user) = channel.as_deref().and_then(|c| keys::user_of(&prefix, EVENTS, c)) {
                    let _ = requests.send(Request::Ended(Arc::from(user)));
                }
            }
            PushKind::Disconnection => {
                // Counted beside the subscription commands: the subscriptions on it are lost.
                metrics.failed(Backend::Redis, "ssubscribe");
                tracing::warn!("bus: a connection to Redis was lost; subscribing again");
                let _ = requests.send(Request::Lost);
            }
            _ => {}
        }
    }
}

/// Checks the subscription connection every [`subscriber::ALIVE_EVERY`]
/// (`Subscriber::check_alive`) while a Redis handle holds it: in practice for the bus's life, since
/// the bus's other tasks hold one.
async fn check_subscriber(subscriber: std::sync::Weak<subscriber::Subscriber>, metrics: BackendMetrics) {
    let mut every = tokio::time::interval(subscriber::ALIVE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut late = subscriber::Late::default();
    loop {
        every.tick().await;
        let Some(subscriber) = subscriber.upgrade() else {
            return;
        };
        subscriber.check_alive(&metrics, &mut late).await;
    }
}

/// Tells the sessions waiting for a subscription whether it is active.
fn answer(ready: Vec<oneshot::Sender<bool>>, active: bool) {
    for session in ready {
        let _ = session.send(active);
    }
}

/// `user_id`'s bus channel.
fn channel_of(prefix: &str, user_id: &str) -> String {
    keys::tagged(prefix, EVENTS, user_id)
}

/// Makes Redis' subscriptions match the users followed here, round after round: each round takes
/// every request waiting, sends the (un)subscriptions it calls for together, and answers the
/// sessions waiting. Rounds run one after another, so a user's commands keep their order.
async fn keep_subscriptions(
    redis: Redis,
    followers: Arc<Followers>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    local: broadcast::Sender<BusEvent>,
) {
    let command = |name: &'static str, user: Arc<str>| {
        let channel = channel_of(&redis.prefix, &user);
        let redis = &redis;
        async move {
            redis
                .subscription(name, &channel)
                .await
                .map_err(|err| tracing::warn!(user_id = %user, command = name, error = %err, "bus: cannot subscribe"))
                .is_ok()
        }
    };
    // Subscribed and active.
    let mut active: HashSet<Arc<str>> = HashSet::new();
    // Whose subscription failed (retried after `backoff`), and who must catch up once subscribed.
    // A failed `SSUBSCRIBE` may still have reached Redis (or the Cluster client, which repeats it
    // after reconnecting): a user in `failed` who is no longer wanted is unsubscribed all the same.
    let mut failed: HashSet<Arc<str>> = HashSet::new();
    let mut lost: HashSet<Arc<str>> = HashSet::new();
    let mut backoff = MIN_BACKOFF;
    let mut round = Vec::new();
    loop {
        let received = if failed.is_empty() {
            requests.recv_many(&mut round, ROUND).await
        } else {
            tokio::select! {
                received = requests.recv_many(&mut round, ROUND) => received,
                () = tokio::time::sleep(backoff) => usize::MAX,
            }
        };
        if received == 0 {
            return; // The bus is gone.
        }
        let mut waiting: HashMap<Arc<str>, Vec<oneshot::Sender<bool>>> = HashMap::new();
        let tried: HashSet<Arc<str>> = std::mem::take(&mut failed);
        for user in &tried {
            waiting.entry(user.clone()).or_default();
        }
        for request in round.drain(..) {
            match request {
                Request::Match { user, ready } => waiting.entry(user).or_default().extend(ready),
                Request::Ended(user) => {
                    if active.remove(&user) {
                        lost.insert(user.clone());
                    }
                    waiting.entry(user).or_default();
                }
                Request::Lost => {
                    for user in active.drain() {
                        lost.insert(user.clone());
                        waiting.entry(user).or_default();
                    }
                }
            }
        }
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for (user, ready) in waiting {
            if !followers.wants(&user) {
                lost.remove(&user);
                answer(ready, false);
                if active.remove(&user) || tried.contains(&user) {
                    unsubscribe.push(user);
                }
            } else if active.contains(&user) {
                answer(ready, true);
            } else {
                subscribe.push((user, ready));
            }
        }
        // At most a round's worth in flight at once: after a lost connection every user here is
        // subscribed again, and thousands of commands at once would time out together.
        let mut subscribed = Vec::with_capacity(subscribe.len());
        for chunk in subscribe.chunks(ROUND) {
            subscribed.extend(join_all(chunk.iter().map(|(user, _)| command("SSUBSCRIBE", user.clone()))).await);
        }
        let mut caught_up = Vec::new();
        for ((user, ready), ok) in subscribe.into_iter().zip(subscribed) {
            answer(ready, ok);
            if ok {
                if lost.remove(&user) {
                    caught_up.push(user.clone());
                }
                active.insert(user);
            } else {
                failed.insert(user);
            }
        }
        // A failed unsubscription only leaves events coming that no session here wants (dropped on
        // arrival); a lost connection ends it anyway.
        for chunk in unsubscribe.chunks(ROUND) {
            join_all(chunk.iter().map(|user| command("SUNSUBSCRIBE", user.clone()))).await;
        }
        if !caught_up.is_empty() {
            tracing::info!(
                users = caught_up.len(),
                "bus:resubscribed, their connections catch up from the store"
            );
        }
        if caught_up.len() > RESYNC_ALL_ABOVE {
            let _ = local.send(BusEvent::Resync);
        } else {
            for user in caught_up {
                let _ = local.send(BusEvent::ResyncUser {
                    user_id: user.to_string(),
                });
            }
        }
        backoff = if failed.is_empty() {
            MIN_BACKOFF
        } else {
            (backoff * 2).min(MAX_BACKOFF)
        };
    }
}

/// A publish's notifications and counts, by recipient, in the order recipients first appear.
fn by_recipient<'a>(
    notifications: &'a [Arc<Notification>],
    unread: &'a [(String, UnreadCount)],
) -> Vec<(&'a str, Vec<&'a Notification>, Option<UnreadCount>)> {
    let mut by_user: Vec<(&str, Vec<&Notification>, Option<UnreadCount>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut at = |user: &'a str, by_user: &mut Vec<(&'a str, Vec<&'a Notification>, Option<UnreadCount>)>| {
        *index.entry(user).or_insert_with(|| {
            by_user.push((user, Vec::new(), None));
            by_user.len() - 1
        })
    };
    for n in notifications {
        let i = at(&n.user_id, &mut by_user);
        by_user[i].1.push(n);
    }
    for (user, count) in unread {
        let i = at(user, &mut by_user);
        by_user[i].2 = Some(*count);
    }
    by_user
}

impl Wire<Notification> {
    fn into_event(self) -> BusEvent {
        match self {
            Wire::Published {
                notifications,
                unread,
                versions,
                trace,
            } => {
                let notifications = notifications.into_iter().map(Arc::new).collect();
                let versions = versions.into_iter().chain(std::iter::repeat(0));
                let unread = unread
                    .into_iter()
                    .zip(versions)
                    .map(|((user_id, count), version)| (user_id, UnreadCount { count, version }))
                    .collect();
                BusEvent::Published {
                    notifications,
                    unread,
                    trace: trace.map(Arc::from),
                }
            }
            Wire::UnreadCount {
                user_id,
                count,
                version,
            } => BusEvent::UnreadCount {
                user_id,
                count: UnreadCount { count, version },
            },
            Wire::SubscriptionsChanged { user_id } => BusEvent::SubscriptionsChanged { user_id },
            Wire::TokensRevoked { user_id } => BusEvent::TokensRevoked { user_id },
        }
    }
}

#[async_trait]
impl EventBus for RedisEventBus {
    async fn publish(&self, event: BusEvent) -> Result<()> {
        match &event {
            BusEvent::Published {
                notifications,
                unread,
                trace,
            } => {
                // One message per recipient, on the recipient's channel: their notifications, in
                // order, and their count.
                let by_user = by_recipient(notifications, unread);
                let trace = trace.as_deref().map(str::to_owned);
                let sent = join_all(by_user.into_iter().map(|(user, notifications, count)| {
                    let wire = Wire::Published {
                        notifications,
                        unread: count.iter().map(|c| (user.to_owned(), c.count)).collect(),
                        versions: count.iter().map(|c| c.version).collect(),
                        trace: trace.clone(),
                    };
                    async move { self.send(user, &wire).await }
                }))
                .await;
                sent.into_iter().collect()
            }
            BusEvent::UnreadCount { user_id, count } => {
                let wire = Wire::UnreadCount {
                    user_id: user_id.clone(),
                    count: count.count,
                    version: count.version,
                };
                self.send(user_id, &wire).await
            }
            BusEvent::SubscriptionsChanged { user_id } => {
                let wire = Wire::SubscriptionsChanged {
                    user_id: user_id.clone(),
                };
                self.send(user_id, &wire).await
            }
            BusEvent::TokensRevoked { user_id } => {
                let wire = Wire::TokensRevoked {
                    user_id: user_id.clone(),
                };
                self.send(user_id, &wire).await
            }
            BusEvent::Resync | BusEvent::ResyncUser { .. } => Ok(()),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.local.subscribe()
    }

    async fn follow(&self, user_id: &str) -> Result<Interest> {
        let user: Arc<str> = Arc::from(user_id);
        self.followers.hold(&user);
        let interest = Interest::new({
            let (followers, user) = (self.followers.clone(), user.clone());
            move || followers.release(user)
        });
        // Every session waits for the word, even when the user is followed already: the first
        // session's subscription may still be on its way.
        let (ready, subscribed) = oneshot::channel();
        let _ = self.followers.requests.send(Request::Match {
            user,
            ready: Some(ready),
        });
        match tokio::time::timeout(FOLLOW_WITHIN, subscribed).await {
            Ok(Ok(true)) => Ok(interest),
            _ => Err(Error::Unavailable(
                "Redis: cannot subscribe to the user's events, retrying".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{HealthProbe, conformance};

    #[tokio::test]
    async fn conforms_to_event_bus() {
        for (name, redis) in super::super::test_redises().await {
            eprintln!("{name}");
            conformance::event_bus(&*RedisEventBus::start(redis)).await;
        }
    }

    /// Reads `events` until `wanted` says yes to one, or fails after 5 s; returns what came before.
    async fn until(events: &mut broadcast::Receiver<BusEvent>, wanted: impl Fn(&BusEvent) -> bool) -> Vec<BusEvent> {
        let mut before = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
                Ok(Ok(event)) if wanted(&event) => return before,
                Ok(Ok(event)) => before.push(event),
                Ok(Err(err)) => panic!("bus: {err}"),
                Err(_) => panic!("not heard within 5 s; heard {before:?}"),
            }
        }
    }

    fn count_for(user: &str, count: u64) -> BusEvent {
        BusEvent::UnreadCount {
            user_id: user.into(),
            count: UnreadCount { count, version: count },
        }
    }

    /// Two replicas on one Redis: each hears the events of its own users and no others, and stops
    /// hearing a user once its last session let go.
    #[tokio::test]
    async fn a_replica_hears_only_the_users_it_follows() {
        for (name, redises) in super::super::test_redises_sharing(2).await {
            eprintln!("{name}");
            let [a, b] = <[Redis; 2]>::try_from(redises).unwrap_or_else(|_| panic!("two handles"));
            let (a, b) = (RedisEventBus::start(a), RedisEventBus::start(b));
            let (mut heard_a, mut heard_b) = (a.subscribe(), b.subscribe());
            let alice = a.follow("alice").await.expect("follow");
            let bob = b.follow("bob").await.expect("follow");
            let bob_again = b.follow("bob").await.expect("a second session of bob");
            for user in ["carol", "alice", "bob"] {
                a.publish(count_for(user, 1)).await.expect("publish");
            }
            // Each publish is heard after the ones before it on the same replica's connection, so
            // by the time A hears alice's and B hears bob's, carol's would have come.
            assert!(
                until(&mut heard_a, |e| *e == count_for("alice", 1)).await.is_empty(),
                "nothing but alice's"
            );
            assert!(
                until(&mut heard_b, |e| *e == count_for("bob", 1)).await.is_empty(),
                "nothing but bob's"
            );

            // One of bob's sessions leaves: B still hears bob. The other leaves: B no longer does.
            drop(bob_again);
            b.publish(count_for("bob", 2)).await.expect("publish");
            until(&mut heard_b, |e| *e == count_for("bob", 2)).await;
            drop(bob);
            let marker = b.follow("marker").await.expect("follow");
            // The unsubscription is sent before the marker's subscription (rounds keep their order).
            b.publish(count_for("bob", 3)).await.expect("publish");
            b.publish(count_for("marker", 1)).await.expect("publish");
            let before = until(&mut heard_b, |e| *e == count_for("marker", 1)).await;
            assert!(
                !before.contains(&count_for("bob", 3)),
                "bob is not followed any more: {before:?}"
            );
            drop((alice, marker));
        }
    }

    /// The connection holding a replica's subscriptions is lost: they come back by themselves, the
    /// users concerned catch up from the store, and their events flow again. (On a Redis Cluster the
    /// same is proven end to end by a failover: tests/tests/redis_cluster.rs.)
    #[tokio::test]
    async fn a_lost_subscription_comes_back_and_its_users_catch_up() {
        for (name, redises) in super::super::test_redises_sharing(2).await {
            if name != "redis" {
                continue;
            }
            let [replica, admin] = <[Redis; 2]>::try_from(redises).unwrap_or_else(|_| panic!("two handles"));
            let id = replica.subscriber.client_id().await;
            let bus = RedisEventBus::start(replica);
            let mut heard = bus.subscribe();
            let _alice = bus.follow("alice").await.expect("follow");
            let killed: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query_async(&mut admin.connection())
                .await
                .expect("CLIENT KILL");
            assert_eq!(killed, 1);
            until(&mut heard, |e| {
                matches!(e, BusEvent::ResyncUser { user_id } if user_id == "alice") || *e == BusEvent::Resync
            })
            .await;
            bus.publish(count_for("alice", 5)).await.expect("publish");
            until(&mut heard, |e| *e == count_for("alice", 5)).await;
        }
    }

    /// The subscription connection goes silent (a partition that resets nothing): its check finds
    /// it out, it is replaced, the user catches up (what was published meanwhile is in the store),
    /// events flow. Without the check nothing would notice, and the user would hear nothing more here.
    #[tokio::test]
    async fn a_silent_subscription_connection_is_found_out_and_replaced() {
        let Some(url) = herald_e2e::service_url("HERALD_TEST_REDIS_URL") else {
            return;
        };
        let upstream: std::net::SocketAddr = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .parse()
            .expect("the test Redis' address");
        let proxy = herald_e2e::FaultProxy::start(upstream).await;
        let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
        let through_proxy = Redis::connect(&format!("redis://127.0.0.1:{}", proxy.port), false, &prefix, None)
            .await
            .expect("connects through the proxy");
        let direct = Redis::connect(&url, false, &prefix, None).await.expect("connects");
        let bus = RedisEventBus::start(through_proxy);
        let publisher = RedisEventBus::start(direct);
        let mut heard = bus.subscribe();
        let _alice = bus.follow("alice").await.expect("follow");
        publisher.publish(count_for("alice", 1)).await.expect("publish");
        until(&mut heard, |e| *e == count_for("alice", 1)).await;

        // The connections open through the proxy stay open and silent for good; new ones get
        // through: only a check of the open one can find it out.
        proxy.freeze();
        publisher.publish(count_for("alice", 2)).await.expect("publish");
        proxy.restore();
        // Found out within three checks (one every 2 s, 2 s for each answer, two missed), then
        // subscribed again.
        let caught_up = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match heard.recv().await {
                    Ok(BusEvent::ResyncUser { user_id }) if user_id == "alice" => break,
                    Ok(BusEvent::Resync) => break,
                    Ok(_) => {}
                    Err(err) => panic!("bus: {err}"),
                }
            }
        })
        .await;
        assert!(caught_up.is_ok(), "alice catches up once subscribed again");
        publisher.publish(count_for("alice", 3)).await.expect("publish");
        until(&mut heard, |e| *e == count_for("alice", 3)).await;
    }

    /// Redis goes away and comes back (a restart, a crash): the subscriptions come back by
    /// themselves once it answers again, the users concerned catch up, and events flow.
    #[tokio::test]
    async fn subscriptions_come_back_after_redis_restarts() {
        let mut server = herald_e2e::RedisServer::start();
        let redis = Redis::connect(&server.url(), false, "restart:", None)
            .await
            .expect("connects");
        let commands = redis.clone();
        let bus = RedisEventBus::start(redis);
        let mut heard = bus.subscribe();
        let _alice = bus.follow("alice").await.expect("follow");
        server.kill();
        // Commands fail while it is gone, in bounded time (not the crate's minutes of backoff).
        let ping = tokio::time::timeout(Duration::from_secs(10), HealthProbe::check(&commands)).await;
        assert!(matches!(ping, Ok(Err(_))), "fails, within 10 s: {ping:?}");
        // Long enough for several attempts to fail while it is gone.
        tokio::time::sleep(Duration::from_secs(3)).await;
        server.restart();
        // The first command may still meet the reconnect that failed while it was gone; within a
        // few seconds (not minutes) commands are answered again.
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            while HealthProbe::check(&commands).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(answered.is_ok(), "answers again within 5 s");
        let caught_up = tokio::time::timeout(
            Duration::from_secs(10),
            until(&mut heard, |e| {
                matches!(e, BusEvent::ResyncUser { user_id } if user_id == "alice") || *e == BusEvent::Resync
            }),
        )
        .await;
        assert!(caught_up.is_ok(), "alice's subscription came back within 10 s");
        bus.publish(count_for("alice", 7)).await.expect("publish");
        until(&mut heard, |e| *e == count_for("alice", 7)).await;
    }

    /// During a rolling upgrade replicas of both kinds share the bus: each reads the other's events.
    #[test]
    fn events_without_count_versions_read_as_versions_not_known_and_older_replicas_read_ours() {
        let old = r#"{"kind":"published","notifications":[],"unread":[["alice",3]]}"#;
        match serde_json::from_str::<Wire<Notification>>(old) {
            Ok(Wire::Published { unread, versions, .. }) => {
                assert_eq!(unread, [("alice".to_owned(), 3)]);
                assert!(versions.is_empty(), "read as 0 when passed on");
            }
            _ => panic!("an old publish event reads"),
        }
        let old = r#"{"kind":"unread_count","user_id":"alice","count":2}"#;
        assert!(matches!(
            serde_json::from_str::<Wire<Notification>>(old),
            Ok(Wire::UnreadCount {
                count: 2,
                version: 0,
                ..
            })
        ));

        /// What a replica before versions reads: unknown fields are ignored.
        #[derive(Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        enum OldWire {
            Published { unread: Vec<(String, u64)> },
            UnreadCount { user_id: String, count: u64 },
        }
        let ours: Wire<&Notification> = Wire::Published {
            notifications: Vec::new(),
            unread: vec![("alice".into(), 3)],
            versions: vec![9],
            trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        let read: OldWire = serde_json::from_str(&serde_json::to_string(&ours).expect("json")).expect("old reads ours");
        assert!(matches!(read, OldWire::Published { unread } if unread == [("alice".to_owned(), 3)]));
        let ours: Wire<&Notification> = Wire::UnreadCount {
            user_id: "alice".into(),
            count: 2,
            version: 9,
        };
        let read: OldWire = serde_json::from_str(&serde_json::to_string(&ours).expect("json")).expect("old reads ours");
        assert!(matches!(read, OldWire::UnreadCount { user_id, count: 2 } if user_id == "alice"));
    }
}
