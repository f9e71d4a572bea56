use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::PgPool;

use crate::adapters::sql::Statements;
use crate::adapters::sql::db_error;
use crate::domain::UnixMs;
use crate::error::Result;
use crate::ports::SubscriptionStore;

#[derive(Debug, Clone)]
pub struct PostgresSubscriptionStore {
    pool: PgPool,
}

impl PostgresSubscriptionStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl SubscriptionStore for PostgresSubscriptionStore {
    async fn choices(&self, user_id: &str) -> Result<HashMap<String, bool>> {
        Statements::subscription_choices(&self.pool, user_id).await
    }

    async fn set(&self, user_id: &str, channels: &[String], subscribed: bool, at: UnixMs) -> Result<()> {
        // One statement for every channel of the request.
        sqlx::query(
            "INSERT INTO channel_subscriptions (user_id, channel, subscribed, updated_at)
             SELECT $1, channel, $3, to_timestamp($4::float8 / 1000) FROM UNNEST($2::text[]) AS channel
             ON CONFLICT (user_id, channel) DO UPDATE SET subscribed = EXCLUDED.subscribed, updated_at = EXCLUDED.updated_at",
        )
        .bind(user_id)
        .bind(channels)
        .bind(subscribed)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn conforms_to_subscription_store() {
        let Some(pool) = super::super::test_pool().await else {
            return;
        };
        conformance::subscription_store(&PostgresSubscriptionStore::new(pool)).await;
    }
}
