//! PostgreSQL adapters (cluster mode): the source of truth shared by every replica. Migrations are
//! embedded from the top-level `migrations/`; sqlx takes an advisory lock while applying them, so
//! replicas starting together apply each migration once.
//!
//! The plan's columns are `TIMESTAMP WITH TIME ZONE`; the domain speaks Unix milliseconds. The
//! conversion happens in SQL (`to_timestamp(ms / 1000)`, `EXTRACT(EPOCH ...) * 1000`), here only.

use std::path::Path;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

use crate::error::{Error, Result};

mod notifications;
mod preferences;
mod subscriptions;
mod writer;

pub use notifications::PostgresNotificationStore;
pub use preferences::PostgresPreferenceStore;
pub use subscriptions::PostgresSubscriptionStore;

/// Readiness of PostgreSQL (`PostgresHealth(pool)`), reported as `postgres`.
pub use super::sql::SqlHealth as PostgresHealth;

/// Reads a nullable timestamp column as Unix milliseconds.
macro_rules! ms {
    ($column:literal) => {
        concat!("(EXTRACT(EPOCH FROM ", $column, ") * 1000)::int8")
    };
}
pub(crate) use ms;

/// A pool to `url`. With `ca_file`, every connection uses TLS and verifies the server against that
/// CA: `sslmode=verify-full`, or `verify-ca` if the URL says so (managed PostgreSQL services hand out
/// their CA for this).
pub async fn connect(url: &str, max_connections: u32, ca_file: Option<&Path>) -> Result<PgPool> {
    let mut options =
        PgConnectOptions::from_str(url).map_err(|e| Error::Backend(format!("invalid DATABASE_URL: {e}")))?;
    if let Some(ca_file) = ca_file {
        // sqlx checks the certificate only in the verify modes: with a CA given, `require`,
        // `prefer` and `allow` (and no mode at all) become `verify-full`, so that the CA is never
        // loaded only to be ignored; `disable` with a CA is a contradiction, refused.
        let mode = match options.get_ssl_mode() {
            PgSslMode::Disable => {
                return Err(Error::Backend(
                    "HERALD_DATABASE_CA_FILE is set but DATABASE_URL says sslmode=disable".into(),
                ));
            }
            PgSslMode::VerifyCa => PgSslMode::VerifyCa,
            _ => PgSslMode::VerifyFull,
        };
        options = options.ssl_root_cert(ca_file).ssl_mode(mode);
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        // No ping before each use of a pooled connection: it was a round trip for every statement
        // (docs/scaling.md). A connection that broke while idle fails its next statement instead,
        // and is dropped: the caller answers 503 (retryable) and the pool opens a fresh one.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot connect to PostgreSQL: {e}")))
}

/// The embedded migrations not applied (successfully) to `pool`'s database yet, by version. Reads
/// sqlx's own table (none yet: every migration is pending); needs no right but `SELECT` on it.
pub async fn pending_migrations(pool: &PgPool) -> Result<Vec<i64>> {
    let applied: Vec<i64> = match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
    {
        Ok(versions) => versions,
        // undefined_table: nothing applied yet.
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P01") => Vec::new(),
        Err(err) => return Err(Error::Unavailable(format!("reading the applied migrations: {err}"))),
    };
    Ok(sqlx::migrate!("../migrations")
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| m.version)
        .collect())
}

/// Applies pending migrations; safe when several replicas run it at once.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    sqlx::migrate!("../migrations")
        .run(pool)
        .await
        .map_err(|e| Error::Backend(format!("PostgreSQL migration failed: {e}")))
}

/// A fresh, migrated database for one test, or `None` (with a loud message) when no test PostgreSQL
/// is configured outside CI. In CI a missing service fails the test.
#[cfg(test)]
pub(crate) async fn test_pool() -> Option<PgPool> {
    let pool = test_database().await?;
    migrate(&pool).await.expect("migrations apply");
    Some(pool)
}

/// A fresh database for one test, not migrated (see [`test_pool`]).
#[cfg(test)]
pub(crate) async fn test_database() -> Option<PgPool> {
    let admin_url = herald_e2e::service_url("HERALD_TEST_DATABASE_URL")?;
    let admin = connect(&admin_url, 1, None).await.expect("test PostgreSQL reachable");
    let name = format!("herald_t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create test database");
    let (base, _) = admin_url.rsplit_once('/').expect("database URL with a path");
    let pool = connect(&format!("{base}/{name}"), 5, None)
        .await
        .expect("test database reachable");
    Some(pool)
}
