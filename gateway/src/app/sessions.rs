//! The WebSocket sessions this replica holds: each one's bounded outbound queue and a way to close it.
//! Anything that pushes to a client (replies, deliveries, unread counts) goes through [`LocalSessions::send`],
//! which never waits: a full queue means the client is not reading, and it is closed as slow.
//!
//! Each session's delivery state (see `delivery.rs`) lives in the same entry: one index of the
//! replica's connections rather than two, since every idle connection pays for its entries.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use herald_contract::defaults;

use super::delivery::state::SharedState;
pub use super::outbox::{CloseRequest, Frame, Next, SessionInbox};
use super::outbox::{OutboxSender, TrySendError, outbox};
use crate::domain::by_user::ByUser;
use crate::domain::notification::UnreadCount;
use crate::domain::protocol::{ServerEnvelope, close_code};

/// Per-connection limits and buffer sizes; see docs/protocol.md for the defaults and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    pub max_message_bytes: usize,
    pub messages_per_second: u32,
    pub violations_per_minute: u32,
    /// Subscribe/unsubscribe messages per connection per minute (plan: 20).
    pub subscription_changes_per_minute: u32,
    pub outbound_queue: usize,
    pub write_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    /// Longest a session lives before it is told to reconnect (a little less, at random, so that
    /// sessions opened together do not all end together).
    pub max_session_ms: u64,
    /// Upper bound of the random reconnect delay suggested to clients when the replica drains.
    pub reconnect_jitter_ms: u64,
    pub read_buffer_bytes: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            messages_per_second: defaults::MAX_MESSAGES_PER_SECOND,
            violations_per_minute: defaults::MAX_VIOLATIONS_PER_MINUTE,
            subscription_changes_per_minute: defaults::MAX_SUBSCRIPTION_CHANGES_PER_MINUTE,
            outbound_queue: defaults::OUTBOUND_QUEUE,
            write_timeout_ms: defaults::WRITE_TIMEOUT_MS,
            heartbeat_interval_ms: defaults::HEARTBEAT_INTERVAL_SECONDS * 1_000,
            heartbeat_timeout_ms: defaults::HEARTBEAT_TIMEOUT_SECONDS * 1_000,
            max_session_ms: defaults::MAX_SESSION_SECONDS * 1_000,
            reconnect_jitter_ms: 5_000,
            read_buffer_bytes: 256,
        }
    }
}

struct SessionEntry {
    outbound: OutboxSender,
    /// Set by [`LocalSessions::attach_delivery`] once the session is replayed to and receives pushes.
    delivery: Option<SharedState>,
    /// Set once the session queued its `connected` message: user-wide pushes before that would
    /// arrive ahead of it, so they are held back and remembered in `missed_push`.
    ready: bool,
    missed_push: bool,
    /// The version of the newest unread count given to the session: an older one arriving later
    /// (counts travel by several paths) is dropped, so the client's count never goes back.
    unread_version: u64,
    /// When the session has lived long enough, in whole seconds since the replica's epoch (see
    /// [`LocalSessions::with_max_lifetime`]); four bytes that fit beside the flags.
    ends_at: u32,
}

impl SessionEntry {
    fn offer_unread(&mut self, count: UnreadCount, frame: &Frame) {
        if !count.supersedes(self.unread_version) {
            return;
        }
        self.unread_version = self.unread_version.max(count.version);
        let _ = self.outbound.replace_latest(frame.clone());
    }
}

/// What happened to a message handed to [`LocalSessions::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Queued,
    /// The queue was full: the session is being closed as a slow consumer, the message dropped
    /// (anything that matters is replayed from the store on reconnect).
    SlowConsumer,
    /// No such session here.
    Gone,
}

/// How a draining replica sends its sessions away (see [`LocalSessions::go_away_in_waves`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// What the waves are spread over: wave `i` goes at `i * window / waves` (the first at once).
    /// With fewer sessions than waves, there are fewer waves, each of one session.
    pub window: Duration,
    pub waves: usize,
    /// Each client is told to wait a random delay of at most this long before reconnecting.
    pub jitter_ms: u64,
}

impl Drain {
    /// Waves in a drain: enough that each is a small share of the sessions, few enough that each
    /// pause is long enough for the clients of the last wave to have reconnected elsewhere.
    pub const WAVES: usize = 10;

    /// The drain of a replica that must have stopped within `grace`: the waves take its first half,
    /// leaving the second for the last sessions' close handshakes and the writes still in flight.
    pub fn within(grace: Duration, jitter_ms: u64) -> Self {
        Self {
            window: grace / 2,
            waves: Self::WAVES,
            jitter_ms,
        }
    }
}

/// The sessions held at one moment, for `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionStats {
    /// One entry per user: how many connections the user holds here.
    pub connections_per_user: Vec<usize>,
    /// Frames waiting in every session's outbound queue together.
    pub queued_frames: usize,
    /// The longest outbound queue.
    pub most_queued_frames: usize,
}

pub struct LocalSessions {
    sessions: Mutex<ByUser<SessionEntry>>,
    /// What session end times count from.
    epoch: Instant,
    /// Longest a session lives; `None`: as long as it likes.
    max_lifetime: Option<Duration>,
    /// Set when the replica drains, to the largest reconnect delay suggested: every session, and
    /// any opened from then on, is told to go away.
    going_away: OnceLock<u64>,
}

/// The replica is draining: the client is told to reconnect after a random delay of at most
/// `jitter_ms`, so that clients do not all return at once.
fn going_away(jitter_ms: u64) -> CloseRequest {
    let delay = rand::thread_rng().gen_range(0..=jitter_ms);
    CloseRequest::new(close_code::GOING_AWAY, format!("going away: reconnect in {delay} ms"))
}

/// The session lived its maximum: it reconnects at once, with a fresh token (so a role change or a
/// revocation since it connected applies). Same code and hint format as a drain.
fn lifetime_reached() -> CloseRequest {
    CloseRequest::new(close_code::GOING_AWAY, "lifetime reached: reconnect in 0 ms")
}

impl Default for LocalSessions {
    fn default() -> Self {
        Self {
            sessions: Mutex::default(),
            epoch: Instant::now(),
            max_lifetime: None,
            going_away: OnceLock::new(),
        }
    }
}

impl LocalSessions {
    /// Sessions that live at most `max_lifetime` (each a random tenth less at most, so sessions
    /// opened together, after a deploy, do not all reconnect together).
    pub fn with_max_lifetime(max_lifetime: Duration) -> Self {
        Self {
            max_lifetime: Some(max_lifetime),
            ..Self::default()
        }
    }

    /// Whole seconds since the epoch (rounded down), saturating into the entries' four bytes.
    fn seconds_at(&self, at: Instant) -> u32 {
        u32::try_from(at.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    /// When a session opened now ends, rounded up to a whole second: never before its lifetime.
    fn ends_at(&self) -> u32 {
        let Some(max_lifetime) = self.max_lifetime else {
            return u32::MAX;
        };
        let lifetime = max_lifetime.mul_f64(rand::thread_rng().gen_range(0.9..=1.0));
        self.seconds_at(Instant::now() + lifetime + Duration::from_millis(999))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByUser<SessionEntry>> {
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a session with a queue of `capacity` messages.
    pub fn open(
        &self,
        connection_id: impl Into<Arc<str>>,
        user_id: impl Into<Arc<str>>,
        capacity: usize,
    ) -> SessionInbox {
        let (outbound, inbox) = outbox(capacity);
        let entry = SessionEntry {
            outbound,
            delivery: None,
            ready: false,
            missed_push: false,
            unread_version: 0,
            ends_at: self.ends_at(),
        };
        let sender = entry.outbound.clone();
        let mut sessions = self.lock();
        let previous = sessions.insert(connection_id.into(), user_id.into(), entry);
        // Under the lock, after the insert: a drain sets `going_away` before it takes its list of
        // sessions under the same lock, so a session opened meanwhile is either on that list or told
        // here.
        if let Some(jitter_ms) = self.going_away.get() {
            sender.close(going_away(*jitter_ms));
        }
        drop(sessions);
        if let Some(previous) = previous {
            // Ids are fresh UUIDs; should one ever repeat, the older session must not linger unseen.
            previous
                .outbound
                .close(CloseRequest::new(close_code::CONNECTION_EXPIRED, "replaced"));
        }
        inbox
    }

    /// The replica drains: every session, and every one opened from now on, is closed with "going
    /// away" and a random reconnect delay of at most `jitter_ms`.
    pub fn go_away(&self, jitter_ms: u64) {
        let jitter_ms = *self.going_away.get_or_init(|| jitter_ms);
        for entry in self.lock().values() {
            entry.outbound.close(going_away(jitter_ms));
        }
    }

    /// [`LocalSessions::go_away`] in waves: the sessions held now are told to go away in
    /// `drain.waves` groups spread evenly over `drain.window` (the first at once), so that the other
    /// replicas take them over a little at a time rather than all in one instant (each client also
    /// waits its random delay). Sessions opened from now on are told at once. Until its wave a
    /// session gets its notifications as before; its heartbeat deadline is no longer checked (the
    /// sweeper has stopped, and the drain ends within the grace period anyway).
    pub async fn go_away_in_waves(&self, drain: Drain) {
        let jitter_ms = *self.going_away.get_or_init(|| drain.jitter_ms);
        let ids: Vec<Arc<str>> = self.lock().iter().map(|(id, _, _)| id.clone()).collect();
        let waves = drain.waves.max(1);
        let per_wave = ids.len().div_ceil(waves).max(1);
        let pause = drain.window / u32::try_from(waves).unwrap_or(u32::MAX);
        for (i, wave) in ids.chunks(per_wave).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            let sessions = self.lock();
            for id in wave {
                if let Some(entry) = sessions.get(id) {
                    entry.outbound.close(going_away(jitter_ms));
                }
            }
        }
    }

    /// Closes every session whose heartbeat deadline has passed at `now`, and tells every session
    /// that has lived its maximum to reconnect.
    pub fn sweep(&self, now: Instant) {
        let now_seconds = self.seconds_at(now);
        for entry in self.lock().values() {
            if entry.outbound.deadline_passed(now) {
                entry
                    .outbound
                    .close(CloseRequest::new(close_code::HEARTBEAT_TIMEOUT, "heartbeat timeout"));
            } else if entry.ends_at <= now_seconds {
                entry.outbound.close(lifetime_reached());
            }
        }
    }

    /// The replica's heartbeat sweeper: every `period`, closes the sessions that stayed silent past
    /// their deadline or lived their maximum; when `shutdown` fires, tells every session to go away (suggesting a reconnect
    /// within `reconnect_jitter_ms`). One task for all sessions, instead of a timer and a shutdown
    /// future in each (about 200 bytes per idle connection).
    pub async fn watch(self: Arc<Self>, period: Duration, drain: Drain, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = every.tick() => self.sweep(Instant::now()),
            }
        }
        self.go_away_in_waves(drain).await;
    }

    pub fn remove(&self, connection_id: &str) {
        self.lock().remove(connection_id);
    }

    /// Queues `message` for one session without waiting.
    pub fn send(&self, connection_id: &str, message: &ServerEnvelope) -> SendOutcome {
        self.send_frame(connection_id, Frame::from(message.to_json()))
    }

    /// Queues an already serialized message (one serialization shared by every recipient).
    pub fn send_frame(&self, connection_id: &str, message: Frame) -> SendOutcome {
        let sessions = self.lock();
        let Some(entry) = sessions.get(connection_id) else {
            return SendOutcome::Gone;
        };
        match entry.outbound.try_send(message) {
            Ok(()) => SendOutcome::Queued,
            Err(TrySendError::Closed) => SendOutcome::Gone,
            Err(TrySendError::Full) => {
                entry
                    .outbound
                    .close(CloseRequest::new(close_code::SLOW_CONSUMER, "slow consumer"));
                SendOutcome::SlowConsumer
            }
        }
    }

    /// Connection ids of `user_id` held by this replica.
    pub fn for_user(&self, user_id: &str) -> Vec<String> {
        let sessions = self.lock();
        let mut ids: Vec<String> = sessions
            .of_user(user_id)
            .map(|(connection_id, _)| connection_id.to_string())
            .collect();
        ids.sort();
        ids
    }

    /// Sets `frame` as the newest unread count of every ready session of `user_id` (replacing one
    /// not sent yet: only the newest count matters); sessions still starting are marked as having
    /// missed it (see [`LocalSessions::mark_ready`]).
    pub fn push_latest_to_user(&self, user_id: &str, count: UnreadCount, frame: &Frame) {
        self.lock().for_user_mut(user_id, |entry| {
            if !entry.ready {
                entry.missed_push = true;
                return;
            }
            entry.offer_unread(count, frame);
        });
    }

    /// Gives the session of `connection_id` the unread count `count` (as `frame`) unless it was
    /// given a newer one.
    pub fn push_latest(&self, connection_id: &str, count: UnreadCount, frame: &Frame) {
        if let Some(entry) = self.lock().get_mut(connection_id) {
            entry.offer_unread(count, frame);
        }
    }

    /// Tells every session to reconnect (with a fresh token) within `jitter_ms`, for `why`; unlike
    /// [`LocalSessions::go_away`], sessions opened afterwards stay.
    pub fn renew_all(&self, why: &str, jitter_ms: u64) {
        for entry in self.lock().values() {
            let delay = rand::thread_rng().gen_range(0..=jitter_ms);
            entry.outbound.close(CloseRequest::new(
                close_code::GOING_AWAY,
                format!("{why}: reconnect in {delay} ms"),
            ));
        }
    }

    /// Closes every session of `user_id` here with `request`.
    pub fn close_user(&self, user_id: &str, request: &CloseRequest) {
        self.lock()
            .for_user_mut(user_id, |entry| entry.outbound.close(request.clone()));
    }

    /// The session queued its first message, which carried the unread count `counted`: user-wide
    /// pushes reach it from now on. `true` when one was held back meanwhile, so the session sends a
    /// fresh value itself.
    pub fn mark_ready(&self, connection_id: &str, counted: UnreadCount) -> bool {
        self.lock().get_mut(connection_id).is_some_and(|entry| {
            entry.ready = true;
            entry.unread_version = counted.version;
            std::mem::take(&mut entry.missed_push)
        })
    }

    /// Gives the session of `connection_id` its delivery state. Without such a session there is
    /// nothing to keep: nothing could be delivered to it anyway.
    pub(super) fn attach_delivery(&self, connection_id: &str, state: SharedState) {
        if let Some(entry) = self.lock().get_mut(connection_id) {
            entry.delivery = Some(state);
        }
    }

    /// Takes the delivery state away from `connection_id`'s session. `Some(user_id)` when it had one
    /// and no other session of that user here has one.
    pub(super) fn detach_delivery(&self, connection_id: &str) -> Option<Arc<str>> {
        let mut sessions = self.lock();
        let user_id = {
            let (_, user_id, _) = sessions.get_full(connection_id)?;
            user_id.clone()
        };
        sessions.get_mut(connection_id)?.delivery.take()?;
        let others = sessions.of_user(&user_id).any(|(_, entry)| entry.delivery.is_some());
        (!others).then_some(user_id)
    }

    /// The delivery states of `user_id`'s sessions here.
    pub(super) fn deliveries_of(&self, user_id: &str) -> Vec<SharedState> {
        self.lock()
            .of_user(user_id)
            .filter_map(|(_, entry)| entry.delivery.clone())
            .collect()
    }

    /// Every delivery state here.
    pub(super) fn all_deliveries(&self) -> Vec<SharedState> {
        self.lock()
            .values()
            .filter_map(|entry| entry.delivery.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// What `/metrics` reports of the sessions held, read at once (one pass under the lock).
    pub fn stats(&self) -> SessionStats {
        let sessions = self.lock();
        let mut stats = SessionStats {
            connections_per_user: sessions.counts_per_user().collect(),
            ..SessionStats::default()
        };
        for entry in sessions.values() {
            let queued = entry.outbound.queued();
            stats.queued_frames += queued;
            stats.most_queued_frames = stats.most_queued_frames.max(queued);
        }
        stats
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::protocol::ServerMessage;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_full_queue_closes_the_session_as_slow_and_never_blocks() {
        let sessions = LocalSessions::default();
        let mut inbox = sessions.open("c1", "alice", 2);
        let pong = ServerEnvelope::new(ServerMessage::Pong {}, 0);
        let pong = || &pong;
        assert_eq!(sessions.send("c1", pong()), SendOutcome::Queued);
        assert_eq!(sessions.send("c1", pong()), SendOutcome::Queued);
        assert_eq!(sessions.send("c1", pong()), SendOutcome::SlowConsumer);
        let request = inbox.close_requested().await;
        assert_eq!(request.code, close_code::SLOW_CONSUMER);
        assert_eq!(
            inbox.next().await,
            Next::Close(request),
            "the close comes before what is queued"
        );
        assert!(!inbox.recv().await.is_empty(), "queued messages stay readable");
        assert_eq!(sessions.send("nobody", pong()), SendOutcome::Gone);
    }

    #[tokio::test]
    async fn stats_count_connections_per_user_and_queued_frames() {
        let sessions = LocalSessions::default();
        let _a = sessions.open("c1", "alice", 8);
        let _b = sessions.open("c2", "alice", 8);
        let _c = sessions.open("c3", "bob", 8);
        let pong = ServerEnvelope::new(ServerMessage::Pong {}, 0);
        for _ in 0..3 {
            sessions.send("c1", &pong);
        }
        sessions.send("c3", &pong);
        let mut stats = sessions.stats();
        stats.connections_per_user.sort_unstable();
        assert_eq!(
            stats,
            SessionStats {
                connections_per_user: vec![1, 2],
                queued_frames: 4,
                most_queued_frames: 3,
            }
        );
    }

    #[tokio::test]
    async fn sessions_are_found_by_user_and_removed() {
        let sessions = LocalSessions::default();
        let _a = sessions.open("c1", "alice", 4);
        let _b = sessions.open("c2", "alice", 4);
        let _c = sessions.open("c3", "bob", 4);
        let mut ids = sessions.for_user("alice");
        ids.sort();
        assert_eq!(ids, ["c1", "c2"]);
        sessions.remove("c1");
        assert_eq!(sessions.for_user("alice"), ["c2"]);
        assert_eq!(sessions.len(), 2);
    }

    #[tokio::test]
    async fn user_pushes_wait_until_a_session_is_ready_and_are_remembered() {
        let sessions = LocalSessions::default();
        let mut inbox = sessions.open("c1", "alice", 4);
        sessions.push_latest_to_user("alice", count(1, 1), &Frame::from("early"));
        assert!(
            inbox.recv().now_or_never().is_none(),
            "nothing ahead of the first message"
        );
        sessions.send_frame("c1", Frame::from("connected"));
        assert!(sessions.mark_ready("c1", count(0, 0)), "the held-back push is reported");
        assert!(!sessions.mark_ready("c1", count(0, 0)), "only once");
        sessions.push_latest_to_user("alice", count(2, 2), &Frame::from("later"));
        assert_eq!(&*inbox.recv().await, "connected");
        assert_eq!(&*inbox.recv().await, "later");
    }

    fn count(count: u64, version: u64) -> UnreadCount {
        UnreadCount { count, version }
    }

    #[tokio::test]
    async fn an_unread_count_older_than_one_given_is_dropped() {
        let sessions = LocalSessions::default();
        let mut inbox = sessions.open("c1", "alice", 4);
        sessions.send_frame("c1", Frame::from("connected"));
        assert!(!sessions.mark_ready("c1", count(3, 5)));
        sessions.push_latest_to_user("alice", count(4, 4), &Frame::from("older than connected"));
        sessions.push_latest_to_user("alice", count(3, 5), &Frame::from("the same again"));
        assert_eq!(&*inbox.recv().await, "connected");
        assert!(inbox.recv().now_or_never().is_none(), "neither was sent");

        sessions.push_latest_to_user("alice", count(4, 7), &Frame::from("seven"));
        assert_eq!(&*inbox.recv().await, "seven");
        sessions.push_latest("c1", count(3, 6), &Frame::from("six, late"));
        assert!(inbox.recv().now_or_never().is_none(), "overtaken by seven");

        // Held, not sent yet: a newer count replaces it, an older one does not.
        sessions.push_latest_to_user("alice", count(5, 9), &Frame::from("nine"));
        sessions.push_latest_to_user("alice", count(4, 8), &Frame::from("eight, late"));
        assert_eq!(&*inbox.recv().await, "nine");

        // A replica that predates versions: its counts come as before, the latest wins.
        sessions.push_latest_to_user("alice", count(1, 0), &Frame::from("unversioned"));
        assert_eq!(&*inbox.recv().await, "unversioned");
        sessions.push_latest_to_user("alice", count(6, 10), &Frame::from("ten"));
        assert_eq!(&*inbox.recv().await, "ten");
    }

    #[tokio::test]
    async fn sessions_silent_past_their_deadline_are_closed_and_the_others_are_not() {
        let sessions = LocalSessions::default();
        let mut silent = sessions.open("c1", "alice", 4);
        let mut alive = sessions.open("c2", "bob", 4);
        let now = Instant::now();
        silent.set_deadline(now);
        alive.set_deadline(now + Duration::from_secs(30));
        sessions.sweep(now);
        let request = silent.close_requested().await;
        assert_eq!(request.code, close_code::HEARTBEAT_TIMEOUT);
        assert_eq!(request.reason, "heartbeat timeout");
        assert!(alive.try_next().is_none(), "bob proved alive in time");
    }

    #[tokio::test]
    async fn a_session_that_lived_its_maximum_is_told_to_reconnect_at_once() {
        let sessions = LocalSessions::with_max_lifetime(Duration::from_secs(100));
        let opened = Instant::now();
        let mut inbox = sessions.open("c1", "alice", 4);
        inbox.set_deadline(opened + Duration::from_secs(3_600));
        sessions.sweep(opened + Duration::from_secs(89));
        assert!(
            inbox.try_next().is_none(),
            "at least nine tenths of the lifetime are granted"
        );
        sessions.sweep(opened + Duration::from_secs(101));
        let request = inbox.close_requested().await;
        assert_eq!(request.code, close_code::GOING_AWAY);
        assert_eq!(request.reason, "lifetime reached: reconnect in 0 ms");
        let unlimited = LocalSessions::default();
        let mut forever = unlimited.open("c2", "bob", 4);
        forever.set_deadline(opened + Duration::from_secs(u32::MAX.into()));
        unlimited.sweep(opened + Duration::from_secs(10_000_000));
        assert!(forever.try_next().is_none(), "no maximum, no end");
    }

    #[tokio::test]
    async fn draining_sends_every_session_away_with_a_bounded_delay_even_sessions_opened_after() {
        let sessions = LocalSessions::default();
        let mut before = sessions.open("c1", "alice", 4);
        sessions.go_away(5_000);
        let mut after = sessions.open("c2", "bob", 4);
        for inbox in [&mut before, &mut after] {
            let request = inbox.close_requested().await;
            assert_eq!(request.code, close_code::GOING_AWAY);
            let delay: u64 = request
                .reason
                .strip_prefix("going away: reconnect in ")
                .and_then(|r| r.strip_suffix(" ms"))
                .and_then(|ms| ms.parse().ok())
                .expect("a delay hint");
            assert!(delay <= 5_000);
        }
    }

    #[tokio::test]
    async fn the_watch_sweeps_silent_sessions_and_sends_everyone_away_on_shutdown() {
        let sessions = Arc::new(LocalSessions::default());
        let mut silent = sessions.open("c1", "alice", 4);
        let mut alive = sessions.open("c2", "bob", 4);
        silent.set_deadline(Instant::now() + Duration::from_millis(100));
        alive.set_deadline(Instant::now() + Duration::from_secs(3_600));
        let shutdown = CancellationToken::new();
        let drain = Drain {
            window: Duration::ZERO,
            waves: 1,
            jitter_ms: 1_000,
        };
        let watch = tokio::spawn(
            sessions
                .clone()
                .watch(Duration::from_millis(10), drain, shutdown.clone()),
        );
        assert_eq!(silent.close_requested().await.code, close_code::HEARTBEAT_TIMEOUT);
        assert!(alive.try_next().is_none());
        shutdown.cancel();
        watch.await.expect("the watch ends");
        assert_eq!(alive.close_requested().await.code, close_code::GOING_AWAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_sends_sessions_away_in_waves_spread_over_its_window() {
        let sessions = Arc::new(LocalSessions::default());
        let mut inboxes: Vec<SessionInbox> = (0..10)
            .map(|i| sessions.open(format!("c{i}"), format!("user-{i}"), 4))
            .collect();
        let drain = Drain {
            window: Duration::from_secs(10),
            waves: 5,
            jitter_ms: 0,
        };
        let told = |inboxes: &mut Vec<SessionInbox>| {
            inboxes
                .iter_mut()
                .map(|inbox| matches!(inbox.try_next(), Some(Next::Close(_))))
                .filter(|told| *told)
                .count()
        };
        let draining = tokio::spawn({
            let sessions = sessions.clone();
            async move { sessions.go_away_in_waves(drain).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(told(&mut inboxes), 2, "the first wave at once");
        // One opened during the drain is told at once.
        let mut late = sessions.open("late", "user-late", 4);
        assert_eq!(late.close_requested().await.code, close_code::GOING_AWAY);
        tokio::time::sleep(Duration::from_millis(1_999)).await;
        assert_eq!(told(&mut inboxes), 2, "the next wave waits its turn");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(told(&mut inboxes), 4);
        draining.await.expect("the drain ends");
        assert_eq!(told(&mut inboxes), 10, "every session told within the window");
    }

    #[tokio::test]
    async fn a_repeated_id_closes_the_older_session() {
        let sessions = LocalSessions::default();
        let mut first = sessions.open("c1", "alice", 4);
        let _second = sessions.open("c1", "alice", 4);
        assert_eq!(first.close_requested().await.code, close_code::CONNECTION_EXPIRED);
    }
}
