//! What delivery keeps per connection: the last `seq` dealt with and what awaits an
//! acknowledgement. It lives in the session's entry of `LocalSessions` (one index of the replica's
//! connections), which is why it is a module of its own: the sessions hold it, delivery reads it.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::app::outbox::Frame;
use crate::domain::UnixMs;

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
    pub(super) pending: HashMap<Uuid, Pending>,
}

pub(in crate::app) type SharedState = Arc<tokio::sync::Mutex<SessionState>>;
