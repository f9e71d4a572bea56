//! Live delivery on this replica (AC11, AC13, AC22, AC25): pushes stored notifications to the
//! connections it holds, replays what a connection missed, fills sequence gaps from the store, and
//! re-sends what is not acknowledged in time.
//!
//! Each connection has a delivery state behind an async lock, kept in its [`LocalSessions`] entry: the replay on attach, live pushes,
//! gap fills and retries of one connection are serialized, so each notification reaches a
//! connection once per round and in `seq` order. Cross-connection work never waits on a client: all
//! sends go through [`LocalSessions`], which never blocks.
//!
//! Flow control: a connection has at most one [`Window`] of notifications in flight (sent, not yet
//! acknowledged). What does not fit stays in the store, the connection's backlog, and is paged in
//! as acknowledgements drain the window: a replay of 100,000 notifications, or a burst, reaches a
//! client that reads and acknowledges without ever filling its outbound queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herald_contract::defaults;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::app::catalog::LiveCatalog;
use crate::domain::UnixMs;
use crate::domain::notification::{Notification, UnreadCount};
use crate::domain::protocol::{ServerEnvelope, ServerMessage, close_code};
use crate::error::Result;
use crate::ports::{BusEvent, Clock, EventBus, Interest, NotificationStore};

use super::metrics::Metrics;
use super::sessions::{CloseRequest, Frame, LocalSessions, SendOutcome};
use super::subscriptions::SubscriptionService;

pub(super) mod state;
pub use state::Window;
use state::{Held, Pending, SessionState, SharedState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySettings {
    /// How long a client has to acknowledge before the notification is sent again.
    pub ack_timeout_ms: i64,
    /// Delivery rounds per connection before `notification:failed` (the first push counts).
    pub max_attempts: u32,
    /// What one connection may have in flight; the rest is paged in from the store.
    pub window: Window,
    /// How long a notification that came ahead of its turn waits for the ones before it
    /// ([`GAP_WAIT`]).
    pub gap_wait: std::time::Duration,
}

/// Bytes of notification frames one connection may have in flight: about ten of the largest a
/// publisher may send (see `domain::notification`), hundreds of typical ones.
pub const WINDOW_BYTES: usize = 256 * 1024;

impl DeliverySettings {
    /// The notification window for an outbound queue of `capacity` frames: half of it, so re-sends,
    /// replies and counts fit beside a full window and only a client that stops reading fills it.
    pub fn window_for_queue(capacity: usize) -> Window {
        Window {
            notifications: (capacity / 2).max(1),
            bytes: WINDOW_BYTES,
        }
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            ack_timeout_ms: defaults::ACK_TIMEOUT_MS as i64,
            max_attempts: defaults::MAX_DELIVERY_ATTEMPTS,
            window: Self::window_for_queue(defaults::OUTBOUND_QUEUE),
            gap_wait: GAP_WAIT,
        }
    }
}

/// What a delivery worker does for one of its users.
enum Work {
    /// A published notification, with the publish's trace (when traces are on).
    Deliver(Arc<Notification>, Option<Arc<str>>),
    Unread(String, UnreadCount),
}

/// Delivery workers per replica: users are spread over them, each user's events stay in order.
const DELIVERY_WORKERS: usize = 16;

pub struct DeliveryService {
    store: Arc<dyn NotificationStore>,
    subscriptions: Arc<SubscriptionService>,
    sessions: Arc<LocalSessions>,
    catalog: Arc<LiveCatalog>,
    /// Where the events of the users connected here are followed.
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    settings: DeliverySettings,
    metrics: Arc<Metrics>,
    /// Delivery rounds not recorded yet, by notification: delivery never waits on a store write; the
    /// recorder task writes them in batches, or an acknowledgement takes them along (a count lost to
    /// a crash only understates an informational column).
    attempts: Mutex<HashMap<Uuid, u32>>,
    attempts_ready: tokio::sync::Notify,
    /// Numbers the gaps connections wait on (see [`GAP_WAIT`]).
    gaps: std::sync::atomic::AtomicU64,
}

/// How long a notification that came ahead of its turn waits for the ones before it before the
/// connection's gap is read from the store. Two publishes committed together reach the bus from two
/// tasks, in either order: the one before follows within microseconds, or milliseconds on a busy
/// replica. A lost event (which the next one reveals) is filled this much later than it was.
pub const GAP_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// How long the attempt recorder gathers delivery rounds before writing them: long enough for most
/// acknowledgements to come back and take their notification's rounds along (one row update instead
/// of two), short enough that a crash loses little of an informational count.
pub const ATTEMPTS_GATHER: std::time::Duration = std::time::Duration::from_millis(50);

impl DeliveryService {
    // Each is a collaborator of its own, wired once in `server::build`; a struct of them would only
    // rename the list.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn NotificationStore>,
        subscriptions: Arc<SubscriptionService>,
        sessions: Arc<LocalSessions>,
        catalog: Arc<LiveCatalog>,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        settings: DeliverySettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            subscriptions,
            sessions,
            catalog,
            bus,
            clock,
            settings,
            metrics,
            attempts: Mutex::default(),
            attempts_ready: tokio::sync::Notify::new(),
            gaps: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn states_of(&self, user_id: &str) -> Vec<SharedState> {
        self.sessions.deliveries_of(user_id)
    }

    fn all_states(&self) -> Vec<SharedState> {
        self.sessions.all_deliveries()
    }

    fn created_since(&self, now: UnixMs) -> UnixMs {
        now - self.catalog.current().max_retention_ms()
    }

    /// Whether `n` goes to this connection now: unexpired, unacknowledged, within its channel's
    /// retention, in a channel the user is subscribed to and the connection may receive (its token
    /// allows it, or it is open to every user).
    fn eligible(&self, state: &SessionState, n: &Notification, subscribed: &[String], now: UnixMs) -> bool {
        let catalog = self.catalog.current();
        !n.is_expired(now)
            && n.delivered_at.is_none()
            && n.created_at >= now - catalog.retention_ms(&n.channel)
            && subscribed.contains(&n.channel)
            && catalog.admits(&state.allowed, &n.channel)
    }

    fn send(&self, state: &mut SessionState, n: &Notification, now: UnixMs) -> bool {
        let frame = Frame::from(ServerEnvelope::new(ServerMessage::Notification(n.payload()), now).to_json());
        match self.sessions.send_frame(&state.connection_id, frame.clone()) {
            SendOutcome::Queued => {
                self.metrics.messages_delivered.inc_by(1);
                let due_at = now + self.settings.ack_timeout_ms;
                state.track(
                    n.id,
                    Pending {
                        frame,
                        attempts: 1,
                        due_at,
                        expires_at: n.expires_at,
                    },
                );
                true
            }
            SendOutcome::SlowConsumer | SendOutcome::Gone => false,
        }
    }

    /// Sends this connection what the store holds for it past `last_seq`, page by page, while its
    /// window has room; the backlog is cleared once the store has nothing more. Returns how many
    /// were sent. Each page is at most the window's room, so what a replica reads for one
    /// connection at a time is bounded too.
    async fn fill(&self, state: &mut SessionState, now: UnixMs) -> Result<usize> {
        let window = self.settings.window;
        let mut subscribed: Option<Arc<[String]>> = None;
        let mut sent = 0;
        while state.backlog && state.has_room(window) {
            let room = window.notifications.max(1) - state.in_flight();
            let page = self
                .store
                .pending(&state.user_id, state.last_seq, room, self.created_since(now), now)
                .await?;
            if page.len() < room {
                state.backlog = false;
            }
            for n in &page {
                if !state.has_room(window) {
                    // The byte window filled within the page: the rest is read again later.
                    state.backlog = true;
                    return Ok(sent);
                }
                let subscribed = match &subscribed {
                    Some(list) => list,
                    None => subscribed.insert(self.subscriptions.remembered(&state.user_id).await?),
                };
                if self.eligible(state, n, subscribed, now) && self.send(state, n, now) {
                    sent += 1;
                }
                state.last_seq = n.seq;
            }
        }
        Ok(sent)
    }

    /// Pages in more of the backlog once the window has drained enough; failures are logged and
    /// repaired by the next acknowledgement or retry round.
    async fn refill(&self, state: &mut SessionState, now: UnixMs) {
        if state.wants_more(self.settings.window) {
            if let Err(err) = self.fill(state, now).await {
                tracing::warn!(connection_id = %state.connection_id, error = %err, "delivery: backlog not paged in, will retry");
            }
        }
    }

    /// Starts delivering to a connection: replays, in `seq` order, the unacknowledged notifications
    /// it should see (AC13), one window at a time, then live ones follow. Returns how many were sent
    /// now (the rest follows as they are acknowledged). The ids and channels are kept as given:
    /// pass the session's own `Arc`s to share them rather than copy them.
    pub async fn attach(
        &self,
        connection_id: impl Into<Arc<str>>,
        user_id: impl Into<Arc<str>>,
        allowed: impl Into<Arc<[String]>>,
        interest: Interest,
    ) -> Result<usize> {
        let (connection_id, user_id) = (connection_id.into(), user_id.into());
        // `interest` came first (`follow`): the user's events come here, then the store is read, so
        // a notification is either in the replay or in an event that arrives after it (ordered by
        // seq), never in neither.
        let state = Arc::new(tokio::sync::Mutex::new(SessionState::new(
            connection_id.clone(),
            user_id.clone(),
            allowed.into(),
            interest,
        )));
        // Hold the state while replaying: live pushes for this connection wait, then skip what the
        // replay already covered (by seq).
        let mut guard = state.clone().lock_owned().await;
        self.sessions.attach_delivery(&connection_id, state);
        let now = self.clock.now_ms();
        // Read before the replay: whatever is stored later arrives as an event with a higher seq.
        let max_seq = self.store.max_seq(&user_id).await?;
        let replayed = self.fill(&mut guard, now).await?;
        if !guard.backlog {
            // Caught up: later events follow on from the user's last seq without a gap read.
            guard.last_seq = guard.last_seq.max(max_seq);
        }
        self.metrics.observe_replay(replayed, guard.backlog);
        if replayed > 0 {
            let backlog = guard.backlog;
            tracing::info!(connection_id = %connection_id, user_id = %user_id, replayed, backlog, "notification:replayed");
        }
        Ok(replayed)
    }

    /// Makes `user_id`'s events reach this replica while the returned interest is held; returns once
    /// they will. A session follows its user before it reads anything of the user's, and hands the
    /// interest to [`DeliveryService::attach`].
    pub async fn follow(&self, user_id: &str) -> Result<Interest> {
        self.bus.follow(user_id).await
    }

    /// The connection leaves delivery; call it before the session is removed from [`LocalSessions`].
    pub fn detach(&self, connection_id: &str) {
        if let Some(user_id) = self.sessions.detach_delivery(connection_id) {
            // The user's last connection here: nothing of theirs needs remembering any more.
            self.subscriptions.forget(&user_id);
        }
    }

    /// Pushes a freshly stored notification to every connection of its user here (AC11), in `seq`
    /// order: one that came ahead of its turn waits a moment ([`GAP_WAIT`]) for the ones before
    /// it, and a gap still open then (events were lost) is filled from the store.
    pub async fn deliver(self: &Arc<Self>, n: &Arc<Notification>) -> Result<usize> {
        let states = self.states_of(&n.user_id);
        if states.is_empty() {
            return Ok(0);
        }
        let window = self.settings.window;
        let mut subscribed: Option<Arc<[String]>> = None;
        let mut connections = 0;
        // Held notifications sent after this one, on any of the user's connections.
        let mut followers: Vec<(Uuid, UnixMs)> = Vec::new();
        for shared in states {
            let mut state = shared.lock().await;
            if n.seq <= state.last_seq {
                continue;
            }
            let now = self.clock.now_ms();
            if !state.backlog && n.seq == state.last_seq + 1 && state.has_room(window) {
                // The common case: the next one in order, and room for it.
                let subscribed = match &subscribed {
                    Some(list) => list,
                    None => subscribed.insert(self.subscriptions.remembered(&n.user_id).await?),
                };
                state.last_seq = n.seq;
                if self.eligible(&state, n, subscribed, now) && self.send(&mut state, n, now) {
                    connections += 1;
                }
                // Those that came early, waiting for this one, follow it.
                while let Some(next) = state.next_early() {
                    if !state.has_room(window) {
                        state.fall_back_to_store();
                        break;
                    }
                    state.last_seq = next.seq;
                    if self.eligible(&state, &next, subscribed, now) && self.send(&mut state, &next, now) {
                        followers.push((next.id, next.created_at));
                    }
                }
                continue;
            }
            if !state.backlog && n.seq > state.last_seq + 1 {
                let held = state.hold(n.clone(), window.notifications, || {
                    self.gaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                });
                match held {
                    Held::Opened(gap) => {
                        self.metrics.notifications_held.inc();
                        self.close_gap_later(Arc::downgrade(&shared), gap);
                        continue;
                    }
                    Held::Waiting => {
                        self.metrics.notifications_held.inc();
                        continue;
                    }
                    Held::Full => self.metrics.gaps_read.inc(),
                };
            }
            // A gap that holding cannot bridge, or a full window: the store holds it, it is paged
            // in from there, now if the window has room, else as acknowledgements drain it.
            state.fall_back_to_store();
            if state.wants_more(window) {
                self.fill(&mut state, now).await?;
                if state.awaits(&n.id) {
                    connections += 1;
                }
            }
        }
        if connections > 0 {
            followers.push((n.id, n.created_at));
        }
        followers.sort_unstable();
        followers.dedup();
        let now = self.clock.now_ms();
        for (id, created_at) in followers {
            self.metrics.observe_delivery_latency(now - created_at);
            self.count_attempt(id);
        }
        if connections > 0 {
            // Per notification: a debug event (counted in /metrics), not an info line by default.
            tracing::debug!(notification_id = %n.id, user_id = %n.user_id, connection_count = connections, "notification:delivered");
        }
        Ok(connections)
    }

    /// After the gap wait ([`GAP_WAIT`]), fills the connection's gap numbered `gap` from the store
    /// if it is still open: the notifications before the held ones were lost on the way, or are
    /// that late.
    fn close_gap_later(self: &Arc<Self>, state: std::sync::Weak<tokio::sync::Mutex<SessionState>>, gap: u64) {
        let delivery = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delivery.settings.gap_wait).await;
            let Some(state) = state.upgrade() else {
                return;
            };
            let mut state = state.lock().await;
            if !state.gap_open(gap) {
                return;
            }
            delivery.metrics.gaps_read.inc();
            state.fall_back_to_store();
            delivery.refill(&mut state, delivery.clock.now_ms()).await;
        });
    }

    /// The user acknowledged `id`: no connection here re-sends it. `Some` when it was awaiting an
    /// acknowledgement here, i.e. this replica sent it to this user and it exists, with its delivery
    /// rounds not recorded yet, for the acknowledgement's write to record.
    pub async fn acknowledged(&self, user_id: &str, id: Uuid) -> Option<u32> {
        let mut pending = false;
        for state in self.states_of(user_id) {
            let mut state = state.lock().await;
            pending |= state.untrack(&id);
            self.refill(&mut state, self.clock.now_ms()).await;
        }
        pending.then(|| self.take_attempts(&id))
    }

    /// Re-sends what is due and unacknowledged; gives up after `max_attempts` with
    /// `notification:failed` (the notification stays unacknowledged and is replayed on reconnect).
    /// What that frees of a window, or a backlog read that failed before, is paged in here too.
    pub async fn retry_due(&self) -> Result<()> {
        let states = self.all_states();
        for state in states {
            let mut state = state.lock().await;
            let now = self.clock.now_ms();
            let due = state.due(now);
            if due.is_empty() {
                self.refill(&mut state, now).await;
                continue;
            }
            let acknowledged = self.store.acknowledged(&due).await?;
            let mut resent = Vec::new();
            for id in due {
                if acknowledged.contains(&id) {
                    state.untrack(&id);
                    continue;
                }
                let Some(pending) = state.pending_mut(&id) else {
                    continue;
                };
                if pending.expires_at.is_some_and(|at| at <= now) {
                    // Expired notifications are never delivered, not even again.
                    state.untrack(&id);
                    continue;
                }
                if pending.attempts >= self.settings.max_attempts {
                    let attempts = pending.attempts;
                    state.untrack(&id);
                    self.metrics.notifications_failed.inc_by(1);
                    tracing::error!(
                        notification_id = %id,
                        user_id = %state.user_id,
                        connection_id = %state.connection_id,
                        attempts,
                        error = "not acknowledged",
                        "notification:failed"
                    );
                    continue;
                }
                pending.attempts += 1;
                pending.due_at = now + self.settings.ack_timeout_ms;
                let frame = pending.frame.clone();
                if self.sessions.send_frame(&state.connection_id, frame) == SendOutcome::Queued {
                    resent.push(id);
                }
            }
            if !resent.is_empty() {
                self.metrics.messages_retried.inc_by(resent.len() as u64);
                tracing::info!(user_id = %state.user_id, connection_id = %state.connection_id, count = resent.len(), "notification:retried");
                for id in resent {
                    self.count_attempt(id);
                }
            }
            self.refill(&mut state, now).await;
        }
        Ok(())
    }

    /// After events were lost (the bus lagged or reconnected): every connection catches up from the
    /// store, within its window (the rest as it acknowledges).
    pub async fn resync(&self) -> Result<()> {
        self.catch_up(self.all_states()).await
    }

    /// `states` catch up from the store, within their windows.
    async fn catch_up(&self, states: Vec<SharedState>) -> Result<()> {
        for state in states {
            let mut state = state.lock().await;
            state.fall_back_to_store();
            if state.wants_more(self.settings.window) {
                self.fill(&mut state, self.clock.now_ms()).await?;
            }
        }
        Ok(())
    }

    /// Tells every connection of `user_id` here its new unread count.
    pub fn push_unread(&self, user_id: &str, count: UnreadCount) {
        self.sessions
            .push_latest_to_user(user_id, count, &self.unread_frame(count));
    }

    /// Tells the session of `connection_id` its unread count, unless it was told a newer one.
    pub fn push_unread_to(&self, connection_id: &str, count: UnreadCount) {
        self.sessions
            .push_latest(connection_id, count, &self.unread_frame(count));
    }

    fn unread_frame(&self, count: UnreadCount) -> Frame {
        let message = ServerMessage::UnreadCount {
            unread_count: count.count,
        };
        Frame::from(ServerEnvelope::new(message, self.clock.now_ms()).to_json())
    }

    /// Consumes the bus until shutdown: the replica's delivery loop. Events are spread over
    /// [`DELIVERY_WORKERS`] workers by user, so users are served concurrently while each user's events
    /// (a notification, then the unread count it changed) keep their order.
    pub async fn run(
        self: Arc<Self>,
        mut events: tokio::sync::broadcast::Receiver<BusEvent>,
        shutdown: CancellationToken,
    ) {
        let workers: Vec<tokio::sync::mpsc::Sender<Work>> = (0..DELIVERY_WORKERS)
            .map(|_| {
                let (sender, receiver) = tokio::sync::mpsc::channel(1_024);
                tokio::spawn(self.clone().work(receiver));
                sender
            })
            .collect();
        let worker_of = |user_id: &str| {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            user_id.hash(&mut hasher);
            &workers[(hasher.finish() % DELIVERY_WORKERS as u64) as usize]
        };
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => break,
                event = events.recv() => event,
            };
            // Waiting on a full worker slows the bus receiver down; if it falls too far behind, the
            // broadcast reports a lag and everything is resynchronized.
            let outcome = match event {
                Ok(BusEvent::Published {
                    notifications,
                    unread,
                    trace,
                }) => {
                    // Each user's notifications, then their count, to that user's worker in order.
                    for n in notifications {
                        let _ = worker_of(&n.user_id).send(Work::Deliver(n, trace.clone())).await;
                    }
                    for (user_id, count) in unread {
                        let _ = worker_of(&user_id).send(Work::Unread(user_id, count)).await;
                    }
                    Ok(())
                }
                Ok(BusEvent::UnreadCount { user_id, count }) => {
                    let _ = worker_of(&user_id).send(Work::Unread(user_id, count)).await;
                    Ok(())
                }
                // Applied here, before any later event is handed to a worker, so a push that
                // follows the change in the bus sees it.
                Ok(BusEvent::SubscriptionsChanged { user_id }) => {
                    self.subscriptions.invalidate(&user_id);
                    Ok(())
                }
                Ok(BusEvent::TokensRevoked { user_id }) => {
                    let revoked = CloseRequest::new(close_code::CONNECTION_EXPIRED, "tokens revoked");
                    self.sessions.close_user(&user_id, &revoked);
                    Ok(())
                }
                Ok(BusEvent::Resync) => {
                    self.subscriptions.invalidate_all();
                    self.resync().await
                }
                Ok(BusEvent::ResyncUser { user_id }) => {
                    self.subscriptions.invalidate(&user_id);
                    self.catch_up(self.states_of(&user_id)).await
                }
                Err(RecvError::Lagged(missed)) => {
                    self.metrics.bus_events_missed.inc_by(missed);
                    tracing::warn!(missed, "bus:lagged, catching up from the store");
                    self.subscriptions.invalidate_all();
                    self.resync().await
                }
                Err(RecvError::Closed) => break,
            };
            if let Err(err) = outcome {
                tracing::warn!(error = %err, "delivery: will be repaired by replay or retry");
            }
        }
    }

    /// One delivery worker: its users' notifications and counts, in order.
    async fn work(self: Arc<Self>, mut work: tokio::sync::mpsc::Receiver<Work>) {
        while let Some(item) = work.recv().await {
            match item {
                Work::Deliver(n, trace) => {
                    // Traced only where the user is connected: every replica sees every event.
                    let here = trace.filter(|_| !self.states_of(&n.user_id).is_empty());
                    let span = crate::telemetry::trace::deliver_span(here.as_deref());
                    if let Err(err) = self.deliver(&n).instrument(span).await {
                        tracing::warn!(error = %err, "delivery: will be repaired by replay or retry");
                    }
                }
                Work::Unread(user_id, count) => self.push_unread(&user_id, count),
            }
        }
    }

    /// Counts one delivery round of `id`; the recorder writes the counts in batches.
    fn count_attempt(&self, id: Uuid) {
        *self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id)
            .or_default() += 1;
        self.attempts_ready.notify_one();
    }

    /// The delivery rounds of `id` not recorded yet, which the caller now records (with the
    /// acknowledgement): the recorder will not.
    fn take_attempts(&self, id: &Uuid) -> u32 {
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id)
            .unwrap_or(0)
    }

    /// Records the attempt counts gathered so far; the recorder does it continuously.
    pub async fn flush_attempts(&self) -> Result<()> {
        let counts = std::mem::take(&mut *self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if counts.is_empty() {
            return Ok(());
        }
        // An id counted twice is listed twice (the store counts each).
        let ids: Vec<Uuid> = counts
            .into_iter()
            .flat_map(|(id, rounds)| std::iter::repeat_n(id, rounds as usize))
            .collect();
        self.store.record_attempt(&ids).await
    }

    /// Writes attempt counts in batches, each [`ATTEMPTS_GATHER`] after the first round it holds, and
    /// what is left when the replica stops.
    pub async fn run_attempt_recorder(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let mut stopping = tokio::select! {
                () = shutdown.cancelled() => true,
                () = self.attempts_ready.notified() => false,
            };
            if !stopping {
                // Most notifications are acknowledged within this time: their rounds then ride on
                // the acknowledgement's write, and the recorder writes only the others.
                stopping = tokio::select! {
                    () = shutdown.cancelled() => true,
                    () = tokio::time::sleep(ATTEMPTS_GATHER) => false,
                };
            }
            if let Err(err) = self.flush_attempts().await {
                tracing::warn!(error = %err, "delivery: attempt counts not recorded");
            }
            if stopping {
                break;
            }
        }
    }

    /// Runs [`DeliveryService::retry_due`] periodically until shutdown.
    pub async fn run_retries(self: Arc<Self>, shutdown: CancellationToken) {
        let period = std::time::Duration::from_millis((self.settings.ack_timeout_ms / 4).clamp(50, 5_000) as u64);
        let mut every = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = every.tick() => {
                    if let Err(err) = self.retry_due().await {
                        tracing::warn!(error = %err, "delivery: retry round failed");
                    }
                }
            }
        }
    }
}
