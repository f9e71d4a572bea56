use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::SqlitePool;

use crate::adapters::sql::Statements;
use crate::adapters::sql::db_error;
use crate::domain::UnixMs;
use crate::error::Result;
use crate::ports::SubscriptionStore;

#[derive(Debug, Clone)]
pub struct SqliteSubscriptionStore {
    pool: SqlitePool,
}

impl SqliteSubscriptionStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl SubscriptionStore for SqliteSubscriptionStore {
    async fn choices(&self, user_id: &str) -> Result<HashMap<String, bool>> {
        Statements::subscription_choices(&self.pool, user_id).await
    }

    async fn set(&self, user_id: &str, channels: &[String], subscribed: bool, at: UnixMs) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        for channel in channels {
            sqlx::query(
                "INSERT INTO channel_subscriptions (user_id, channel, subscribed, updated_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (user_id, channel) DO UPDATE SET subscribed = excluded.subscribed, updated_at = excluded.updated_at",
            )
            .bind(user_id)
            .bind(channel)
            .bind(subscribed)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn conforms_to_subscription_store() {
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        conformance::subscription_store(&SqliteSubscriptionStore::new(pool)).await;
    }
}
