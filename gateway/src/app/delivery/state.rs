//! What delivery keeps per connection: the last `seq` dealt with, what awaits an acknowledgement,
//! and whether the store holds more for it than its window let through (the backlog). It lives in
//! the session's entry of `LocalSessions` (one index of the replica's connections), which is why it
//! is a module of its own: the sessions hold it, delivery reads it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use crate::app::outbox::Frame;
use crate::domain::UnixMs;
use crate::domain::notification::Notification;
use crate::ports::Interest;

/// How much one connection may have in flight (sent and not acknowledged): everything else waits
/// in the store and is sent as acknowledgements come back. It keeps a replay of any size, or a
/// burst, from filling the outbound queue of a client that is reading (closing it as slow), and
/// bounds what a replica holds per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Notifications in flight (at least one).
    pub notifications: usize,
    /// Bytes of their frames in flight; one notification is always allowed, whatever its size.
    pub bytes: usize,
}

pub(super) struct Pending {
    pub(super) frame: Frame,
    pub(super) attempts: u32,
    pub(super) due_at: UnixMs,
    pub(super) expires_at: Option<UnixMs>,
}

pub(in crate::app) struct SessionState {
    /// Shared with the session's other holders: one allocation per id, whoever holds it.
    pub(super) connection_id: Arc<str>,
    pub(super) user_id: Arc<str>,
    pub(super) allowed: Arc<[String]>,
    /// Highest `seq` this connection has dealt with (sent, or skipped as not subscribed).
    pub(super) last_seq: i64,
    /// The store may hold notifications past `last_seq` for this connection that were not sent
    /// because the window was full (or events were lost): they are paged in from the store.
    pub(super) backlog: bool,
    pending: HashMap<Uuid, Pending>,
    /// Bytes of the frames in flight: one window's at most, plus one frame, far below `u32::MAX`.
    /// A `u32` beside `backlog` keeps the state in its allocation size class (see
    /// `the_state_of_a_connection_stays_within_its_allocation_size_class`).
    in_flight_bytes: u32,
    /// Notifications that came ahead of their turn, while the ones before them are on their way
    /// (boxed: most connections never hold any, and an idle one costs a pointer).
    early: Option<Box<Early>>,
    /// Keeps the user's events coming to this replica while the session lives.
    _interest: Interest,
}

impl SessionState {
    /// A connection that has seen nothing yet: everything pending in the store is its backlog.
    pub(super) fn new(connection_id: Arc<str>, user_id: Arc<str>, allowed: Arc<[String]>, interest: Interest) -> Self {
        Self {
            connection_id,
            user_id,
            allowed,
            last_seq: 0,
            backlog: true,
            pending: HashMap::new(),
            in_flight_bytes: 0,
            early: None,
            _interest: interest,
        }
    }

    /// The store holds what this connection is to get next, and it is paged in from there: what
    /// was held for it is in the store too, and let go.
    pub(super) fn fall_back_to_store(&mut self) {
        self.backlog = true;
        self.early = None;
    }

    /// Holds `n`, whose `seq` is past the next one expected (`last_seq + 1`), until the ones before
    /// it arrive; at most `limit` are held. `gap` numbers the gap should this open one.
    pub(super) fn hold(&mut self, n: Arc<Notification>, limit: usize, gap: impl FnOnce() -> u64) -> Held {
        let opened = self.early.is_none();
        let early = self.early.get_or_insert_with(|| {
            Box::new(Early {
                held: BTreeMap::new(),
                gap: gap(),
            })
        });
        if early.held.len() >= limit.max(1) && !early.held.contains_key(&n.seq) {
            return Held::Full;
        }
        early.held.insert(n.seq, n);
        if opened { Held::Opened(early.gap) } else { Held::Waiting }
    }

    /// The held notification that is next in order (`last_seq + 1`), if it is here; what the
    /// connection has dealt with meanwhile is let go.
    pub(super) fn next_early(&mut self) -> Option<Arc<Notification>> {
        let early = self.early.as_mut()?;
        let next = self.last_seq + 1;
        let mut found = None;
        while let Some(entry) = early.held.first_entry() {
            match entry.key().cmp(&next) {
                std::cmp::Ordering::Less => {
                    entry.remove();
                }
                std::cmp::Ordering::Equal => {
                    found = Some(entry.remove());
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        if early.held.is_empty() {
            self.early = None;
        }
        found
    }

    /// Whether the gap numbered `gap` is still open: notifications still wait for it.
    pub(super) fn gap_open(&self, gap: u64) -> bool {
        self.early.as_ref().is_some_and(|early| early.gap == gap)
    }

    /// Whether one more notification may be sent.
    pub(super) fn has_room(&self, window: Window) -> bool {
        self.pending.len() < window.notifications.max(1) && (self.in_flight_bytes as usize) < window.bytes
    }

    /// Whether to page in more of the backlog: half the window has drained, so one store read sends
    /// a page rather than one notification per acknowledgement.
    pub(super) fn wants_more(&self, window: Window) -> bool {
        self.backlog
            && self.pending.len() <= window.notifications / 2
            && self.in_flight_bytes as usize <= window.bytes / 2
    }

    /// `id` was sent and awaits an acknowledgement.
    pub(super) fn track(&mut self, id: Uuid, pending: Pending) {
        self.in_flight_bytes = self.in_flight_bytes.saturating_add(bytes_of(&pending.frame));
        if let Some(replaced) = self.pending.insert(id, pending) {
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes_of(&replaced.frame));
        }
    }

    /// `id` no longer awaits an acknowledgement here; `true` when it did.
    pub(super) fn untrack(&mut self, id: &Uuid) -> bool {
        match self.pending.remove(id) {
            Some(pending) => {
                self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes_of(&pending.frame));
                true
            }
            None => false,
        }
    }

    /// The ids awaiting an acknowledgement whose re-send is due at `now`.
    pub(super) fn due(&self, now: UnixMs) -> Vec<Uuid> {
        self.pending
            .iter()
            .filter(|(_, p)| p.due_at <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    pub(super) fn pending_mut(&mut self, id: &Uuid) -> Option<&mut Pending> {
        self.pending.get_mut(id)
    }

    pub(super) fn awaits(&self, id: &Uuid) -> bool {
        self.pending.contains_key(id)
    }

    /// Notifications in flight.
    pub(super) fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

/// A frame's length as counted in flight.
fn bytes_of(frame: &Frame) -> u32 {
    u32::try_from(frame.len()).unwrap_or(u32::MAX)
}

/// Notifications that came ahead of their turn: their `seq` is past the next one the connection
/// expects. Most often two publishes committed together were put on the bus by two tasks in the
/// other order, and the one before arrives a moment later; waiting for it costs less than reading
/// the gap from the store (docs/architecture.md, "Early notifications wait for the ones before").
pub(super) struct Early {
    /// By `seq`.
    held: BTreeMap<i64, Arc<Notification>>,
    /// Which gap this is: a check scheduled for an earlier gap of the connection finds another.
    gap: u64,
}

/// What [`SessionState::hold`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Held {
    /// Held, and a gap opened: whoever holds it checks later that it closed.
    Opened(u64),
    /// Held beside others waiting for the same gap.
    Waiting,
    /// Not held: as many as allowed already wait.
    Full,
}

pub(in crate::app) type SharedState = Arc<tokio::sync::Mutex<SessionState>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SessionState {
        SessionState::new(
            "c".into(),
            "u".into(),
            Arc::from(Vec::<String>::new()),
            Interest::default(),
        )
    }

    fn pending(bytes: usize) -> Pending {
        Pending {
            frame: Frame::from("x".repeat(bytes)),
            attempts: 1,
            due_at: 0,
            expires_at: None,
        }
    }

    #[test]
    fn the_window_bounds_notifications_and_bytes_and_asks_for_more_at_half() {
        let window = Window {
            notifications: 4,
            bytes: 100,
        };
        let mut s = state();
        assert!(s.has_room(window) && s.wants_more(window));
        for _ in 0..4 {
            s.track(Uuid::new_v4(), pending(10));
        }
        assert!(!s.has_room(window), "four in flight fill a window of four");
        assert!(!s.wants_more(window));
        let ids: Vec<Uuid> = s.pending.keys().copied().collect();
        assert!(s.untrack(&ids[0]) && !s.untrack(&ids[0]), "untracked once");
        assert!(
            s.has_room(window) && !s.wants_more(window),
            "three left: room, but not half drained"
        );
        s.untrack(&ids[1]);
        assert!(s.wants_more(window), "half drained");
        s.backlog = false;
        assert!(!s.wants_more(window), "nothing more in the store");

        let mut big = state();
        big.track(Uuid::new_v4(), pending(500));
        assert!(
            !big.has_room(window),
            "one notification larger than the byte window fills it"
        );
        assert_eq!(big.in_flight_bytes, 500);
        let id = *big.pending.keys().next().expect("one");
        big.track(id, pending(20));
        assert_eq!(big.in_flight_bytes, 20, "a re-tracked id replaces its bytes");
    }

    fn numbered(seq: i64) -> Arc<Notification> {
        Arc::new(Notification {
            id: Uuid::new_v4(),
            user_id: "u".into(),
            seq,
            kind: crate::domain::notification::NotificationType::ALL[0],
            channel: "social".into(),
            title: "t".into(),
            body: None,
            icon: None,
            action_url: None,
            data: None,
            created_at: 0,
            expires_at: None,
            read_at: None,
            delivered_at: None,
            attempts: 0,
        })
    }

    #[test]
    fn early_notifications_are_let_out_in_order_once_the_one_before_arrives() {
        let mut s = state();
        s.last_seq = 1;
        assert!(s.next_early().is_none(), "nothing held");
        assert_eq!(s.hold(numbered(4), 3, || 7), Held::Opened(7), "a gap opens");
        assert_eq!(s.hold(numbered(3), 3, || unreachable!()), Held::Waiting);
        assert_eq!(
            s.hold(numbered(3), 3, || unreachable!()),
            Held::Waiting,
            "the same one twice"
        );
        assert_eq!(s.hold(numbered(6), 3, || unreachable!()), Held::Waiting);
        assert_eq!(
            s.hold(numbered(7), 3, || unreachable!()),
            Held::Full,
            "three held at most"
        );
        assert!(s.gap_open(7) && !s.gap_open(8));
        assert!(s.next_early().is_none(), "2 has not come");
        s.last_seq = 2;
        assert_eq!(s.next_early().map(|n| n.seq), Some(3));
        s.last_seq = 3;
        assert_eq!(s.next_early().map(|n| n.seq), Some(4));
        s.last_seq = 4;
        assert!(s.next_early().is_none(), "5 has not come");
        assert!(s.gap_open(7), "the gap is still open: 6 waits for 5");
        s.last_seq = 6;
        assert!(s.next_early().is_none(), "6 was dealt with meanwhile and is let go");
        assert!(!s.gap_open(7), "nothing waits any more");

        s.hold(numbered(9), 3, || 8);
        s.fall_back_to_store();
        assert!(s.backlog && !s.gap_open(8), "the store has what was held");
    }

    /// Every connection has one, in an `Arc` of its lock: 192 bytes is a size class of the
    /// allocator (jemalloc's next one is 224), so a field that outgrows it costs every connection 32
    /// bytes (measured: `herald-bench idle-memory` rose by about 40 bytes per connection when a
    /// pointer was added here, until `in_flight_bytes` became a `u32`).
    #[test]
    fn the_state_of_a_connection_stays_within_its_allocation_size_class() {
        let arc_counts = 2 * std::mem::size_of::<usize>();
        let allocated = arc_counts + std::mem::size_of::<tokio::sync::Mutex<SessionState>>();
        assert!(allocated <= 192, "{allocated} bytes per connection's delivery state");
    }
}
