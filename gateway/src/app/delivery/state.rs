//! What delivery keeps per connection: the last `seq` dealt with, what awaits an acknowledgement,
//! and whether the store holds more for it than its window let through (the backlog). It lives in
//! the session's entry of `LocalSessions` (one index of the replica's connections), which is why it
//! is a module of its own: the sessions hold it, delivery reads it.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::app::outbox::Frame;
use crate::domain::UnixMs;
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
    in_flight_bytes: usize,
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
            _interest: interest,
        }
    }

    /// Whether one more notification may be sent.
    pub(super) fn has_room(&self, window: Window) -> bool {
        self.pending.len() < window.notifications.max(1) && self.in_flight_bytes < window.bytes
    }

    /// Whether to page in more of the backlog: half the window has drained, so one store read sends
    /// a page rather than one notification per acknowledgement.
    pub(super) fn wants_more(&self, window: Window) -> bool {
        self.backlog && self.pending.len() <= window.notifications / 2 && self.in_flight_bytes <= window.bytes / 2
    }

    /// `id` was sent and awaits an acknowledgement.
    pub(super) fn track(&mut self, id: Uuid, pending: Pending) {
        self.in_flight_bytes += pending.frame.len();
        if let Some(replaced) = self.pending.insert(id, pending) {
            self.in_flight_bytes -= replaced.frame.len();
        }
    }

    /// `id` no longer awaits an acknowledgement here; `true` when it did.
    pub(super) fn untrack(&mut self, id: &Uuid) -> bool {
        match self.pending.remove(id) {
            Some(pending) => {
                self.in_flight_bytes -= pending.frame.len();
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
}
