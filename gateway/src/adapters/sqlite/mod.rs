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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use sqlx::migrate::Migrator;

    use super::*;
    use crate::ports::NotificationStore;

    static MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");

    #[tokio::test]
    async fn upgrading_to_kept_unread_counts_counts_what_is_there() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("sqlite");
        // The schema before migration 0006, with notifications stored under it.
        let before = Migrator {
            migrations: Cow::Owned(
                MIGRATIONS
                    .migrations
                    .iter()
                    .filter(|m| m.version < 6)
                    .cloned()
                    .collect(),
            ),
            ..Migrator::DEFAULT
        };
        before.run(&pool).await.expect("migrations 1-5");
        for (id, user, seq, read_at) in [
            ("a1", "alice", 1, None),
            ("a2", "alice", 2, Some(5_i64)),
            ("a3", "alice", 3, None),
            ("b1", "bob", 1, None),
        ] {
            sqlx::query(
                "INSERT INTO notifications (id, user_id, seq, type, channel, title, read_at, created_at)
                 VALUES (?, ?, ?, 'new_like', 'social', 't', ?, 1)",
            )
            .bind(id)
            .bind(user)
            .bind(seq)
            .bind(read_at)
            .execute(&pool)
            .await
            .expect("insert");
        }
        MIGRATIONS.run(&pool).await.expect("migration 0006");
        let store = SqliteNotificationStore::new(pool.clone()).expect("store");
        let alice = store.unread_count("alice", 10).await.expect("count");
        let bob = store.unread_count("bob", 10).await.expect("count");
        assert_eq!((alice.count, bob.count), (2, 1));
        // Kept from here on: a read mark takes one off.
        sqlx::query("UPDATE notifications SET read_at = 9 WHERE id = 'a1'")
            .execute(&pool)
            .await
            .expect("read");
        assert_eq!(store.unread_count("alice", 10).await.expect("count").count, 1);
    }
}
