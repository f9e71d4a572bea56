//! The embedded default's store: one SQLite file through sqlx, migrations embedded from
//! `migrations/sqlite/`.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::error::{Error, Result};

mod notifications;
mod preferences;
mod subscriptions;
mod writer;

pub use notifications::SqliteNotificationStore;
pub use preferences::SqlitePreferenceStore;
pub use subscriptions::SqliteSubscriptionStore;

/// Readiness of the SQLite database (`SqliteHealth(pool)`), reported as `sqlite`.
pub use super::sql::SqlHealth as SqliteHealth;

/// Opens (creating if needed) the database at `url` (`sqlite://PATH` or `sqlite::memory:`) and brings
/// its schema up to date.
pub async fn connect(url: &str) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::Backend(format!("invalid SQLite URL `{url}`: {e}")))?
        .create_if_missing(true)
        // WAL lets HTTP reads proceed while a write commits.
        .journal_mode(SqliteJournalMode::Wal)
        // Checkpoints run beside the writes (`checkpoint_in_background`), not inside the commit
        // that happens to cross the WAL's size threshold, which would stall every write of it.
        .pragma("wal_autocheckpoint", "0")
        .busy_timeout(std::time::Duration::from_secs(5));
    // An in-memory database lives as long as its one connection, so it must not be pooled wider.
    let max = if url.contains(":memory:") { 1 } else { 4 };
    let pool = SqlitePoolOptions::new()
        .max_connections(max)
        .connect_with(options)
        .await
        .map_err(|e| Error::Backend(format!("cannot open SQLite database `{url}`: {e}")))?;
    sqlx::migrate!("../migrations/sqlite")
        .run(&pool)
        .await
        .map_err(|e| Error::Backend(format!("SQLite migration failed: {e}")))?;
    if !url.contains(":memory:") {
        tokio::spawn(checkpoint_in_background(pool.clone()));
    }
    Ok(pool)
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Copies the WAL back into the database (a passive checkpoint: it never blocks a writer or a
/// reader, and what it cannot copy now it copies next time) until the pool is closed.
async fn checkpoint_in_background(pool: SqlitePool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    while !pool.is_closed() {
        every.tick().await;
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            tracing::warn!(error = %err, "sqlite:checkpoint-failed");
        }
    }
}
