//! What the open-loop driver needs of a server under test. Each server (Herald embedded, Herald
//! cluster, Socket.IO, Socket.IO with the Redis adapter, NATS) is one implementation, started fresh
//! for its run and stopped when dropped.

use async_trait::async_trait;

/// A server under test, already started.
#[async_trait]
pub trait Target: Send + Sync {
    /// The row name in the report, e.g. `herald (embedded, SQLite)`.
    fn name(&self) -> String;

    /// The processes whose CPU time and resident memory count as the server's.
    fn pids(&self) -> Vec<u32>;

    /// What this server does not do that Herald does (persistence, acknowledgement), for the note
    /// beside the table; empty for Herald.
    fn caveat(&self) -> &'static str;

    /// Connects user number `user` (users are `0..users`), subscribed to its own notifications, ready
    /// to receive: when this returns, a notification published to the user must reach the client.
    async fn connect(&self, user: usize) -> anyhow::Result<Box<dyn Client>>;

    /// Publishes one notification carrying `key` to every one of `users` (one request where the
    /// server allows it); returns once the server accepted it (for Herald: the `202` after the
    /// commit). `key` must come back out of [`Client::next`] of each of them.
    async fn publish(&self, users: &[usize], key: u64) -> anyhow::Result<()>;

    /// The server's own account of the run, one line per item, printed beside its row (Herald: the
    /// time its backends took per operation, from each replica's `/metrics`); empty for peers.
    async fn own_account(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One connected user.
#[async_trait]
pub trait Client: Send {
    /// Waits for the next notification and returns its key, having acknowledged it the way the
    /// protocol does (Herald: `notification:ack`; peers: an `ack` message, which they ignore). Answers
    /// heartbeats on the way. `Ok(None)` when the connection closed.
    async fn next(&mut self) -> anyhow::Result<Option<u64>>;
}
