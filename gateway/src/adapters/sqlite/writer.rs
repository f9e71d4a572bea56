//! The embedded store's group commit (`adapters::group_commit`). SQLite runs one write transaction
//! at a time; concurrent writers would queue on its busy handler, which sleeps and is unfair, and pay
//! one fsync each, and every statement is a round trip to the connection's worker thread. So a batch
//! runs as: each publish (one statement per notification: its `seq` is computed in the insert and
//! recorded by a trigger), every attempt count in one statement, every stamp of a column in one
//! statement, the unread counts of every recipient in one query; one commit.
//!
//! Savepoints only where a write is several statements (a publish to several recipients, or with an
//! idempotency key): a single failing statement undoes itself in SQLite and only its write fails.

use std::collections::HashSet;

use futures_util::future::BoxFuture;
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use uuid::Uuid;

use crate::adapters::group_commit::{Answer, Committer, Publish, Sorted, Stamp, Write, answer_all, clone_result};
use crate::adapters::sql::{Statements, stored_notification};
use crate::domain::UnixMs;
use crate::domain::publish::PublishReceipt;
use crate::error::{Error, Result};
use crate::ports::{IdempotencyKey, NewNotification, PublishOutcome, UnreadCounts};

/// Records an `Idempotency-Key`; returns no row when the key is already there
/// (`Statements::record_idempotency_key`).
const INSERT_IDEMPOTENCY_KEY: &str = "INSERT INTO idempotency_keys (publisher, key, request_hash, response, created_at)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (publisher, key) DO NOTHING RETURNING publisher";

/// One publish's statements, inside the writer's transaction: the idempotency record (a repeated key
/// answers the first receipt and writes nothing), then each notification with the next `seq` of its
/// user.
///
/// Boxed as `Send` here, where its lifetimes are concrete: the idempotency statements are generic over
/// the database, and the compiler cannot otherwise prove the future `Send` for every lifetime.
pub(super) fn publish<'a>(
    tx: &'a mut Transaction<'static, Sqlite>,
    batch: &'a [NewNotification],
    idempotency: Option<(&'a IdempotencyKey, &'a PublishReceipt)>,
    now: UnixMs,
) -> BoxFuture<'a, Result<PublishOutcome>> {
    Box::pin(async move {
        if let Some((key, receipt)) = idempotency {
            if let Some(repeated) =
                Statements::record_idempotency_key(tx, INSERT_IDEMPOTENCY_KEY, key, receipt, now).await?
            {
                return Ok(repeated);
            }
        }
        let mut created = Vec::with_capacity(batch.len());
        for n in batch {
            // The trigger of migration 0003 records the new `seq` as the user's last.
            let seq: i64 = sqlx::query_scalar(
                "INSERT INTO notifications
                     (id, user_id, seq, type, channel, title, body, icon, action_url, data, created_at, expires_at)
                 VALUES (?, ?, COALESCE((SELECT last_seq FROM user_sequences WHERE user_id = ?), 0) + 1,
                         ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 RETURNING seq",
            )
            .bind(n.id.to_string())
            .bind(&n.user_id)
            .bind(&n.user_id)
            .bind(n.kind.as_str())
            .bind(&n.channel)
            .bind(&n.title)
            .bind(&n.body)
            .bind(&n.icon)
            .bind(&n.action_url)
            .bind(n.data.as_ref().map(sqlx::types::Json))
            .bind(n.created_at)
            .bind(n.expires_at)
            .fetch_one(&mut **tx)
            .await
            .map_err(Error::backend)?;
            created.push(stored_notification(n, seq));
        }
        Ok(PublishOutcome::Created(created, UnreadCounts::new()))
    })
}

/// The unread counts of `users` at `now`, in one statement (read inside the batch's transaction, so
/// they include what the batch wrote).
fn unread_counts<'a>(
    tx: &'a mut SqliteConnection,
    users: &'a [String],
    now: UnixMs,
) -> BoxFuture<'a, Result<UnreadCounts>> {
    Box::pin(async move {
        let mut counts = UnreadCounts::new();
        for chunk in users.chunks(500) {
            let mut sql = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT user_id, COUNT(*) FROM notifications WHERE read_at IS NULL AND (expires_at IS NULL OR expires_at > ",
            );
            sql.push_bind(now);
            sql.push(") AND user_id IN (");
            let mut ids = sql.separated(", ");
            for user in chunk {
                ids.push_bind(user.as_str());
            }
            sql.push(") GROUP BY user_id");
            let rows: Vec<(String, i64)> = sql.build_query_as().fetch_all(&mut *tx).await.map_err(Error::backend)?;
            counts.extend(
                rows.into_iter()
                    .map(|(user, n)| (user, u64::try_from(n).unwrap_or_default())),
            );
        }
        Ok(counts)
    })
}

/// A statement without parameters (savepoints).
fn statement<'a>(tx: &'a mut SqliteConnection, sql: &'static str) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move { sqlx::query(sql).execute(tx).await.map(drop).map_err(Error::backend) })
}

/// Fills the unread counts of every publish that stored something, from one query for the batch.
/// Without them (the query failed) the fan-out counts for itself.
fn add_unread_counts<'a>(
    tx: &'a mut SqliteConnection,
    published: &'a mut [(Publish, Result<PublishOutcome>)],
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let mut users: Vec<String> = published
            .iter()
            .filter_map(|(_, outcome)| match outcome {
                Ok(PublishOutcome::Created(created, _)) => Some(created.iter().map(|n| n.user_id.clone())),
                _ => None,
            })
            .flatten()
            .collect();
        if users.is_empty() {
            return;
        }
        users.sort_unstable();
        users.dedup();
        let now = published.iter().map(|(write, _)| write.now).max().unwrap_or_default();
        let Ok(counts) = unread_counts(tx, &users, now).await else {
            return;
        };
        for (_, outcome) in published.iter_mut() {
            if let Ok(PublishOutcome::Created(created, unread)) = outcome {
                for n in created.iter() {
                    let count = counts.get(&n.user_id).copied().unwrap_or_default();
                    unread.insert(n.user_id.clone(), count);
                }
            }
        }
    })
}

/// The embedded store's committer.
pub struct SqliteCommitter(pub SqlitePool);

impl Committer for SqliteCommitter {
    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, ()> {
        Box::pin(commit(&self.0, writes))
    }
}

async fn commit(pool: &SqlitePool, writes: Vec<Write>) {
    let mut answers = Vec::with_capacity(writes.len());
    let committed = async {
        // IMMEDIATE takes the write lock at once: no statement of the batch can then meet another
        // writer's lock and have SQLite roll the whole transaction back under it.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(Error::backend)?;
        apply_all(&mut tx, writes, &mut answers).await;
        tx.commit().await.map_err(Error::backend)
    }
    .await;
    answer_all(answers, committed, "sqlite");
}

/// Applies a batch with as few statements as it takes, since every statement is a round trip.
fn apply_all<'a>(
    tx: &'a mut Transaction<'static, Sqlite>,
    writes: Vec<Write>,
    answers: &'a mut Vec<Answer>,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let mut sorted = Sorted::of(writes);
        let mut published = Vec::with_capacity(sorted.publishes.len());
        for write in std::mem::take(&mut sorted.publishes) {
            let idempotency = write.idempotency.as_ref().map(|(key, receipt)| (key, receipt));
            // One statement stands or falls alone; a publish of several (recipients, or a key and
            // its rows) stands or falls whole, under a savepoint.
            let several = write.batch.len() > 1 || idempotency.is_some();
            let outcome = if several {
                match statement(tx, "SAVEPOINT publish").await {
                    Err(err) => Err(err),
                    Ok(()) => {
                        let outcome = publish(tx, &write.batch, idempotency, write.now).await;
                        let closed = if outcome.is_ok() {
                            statement(tx, "RELEASE publish").await
                        } else {
                            let undone = statement(tx, "ROLLBACK TO publish").await;
                            undone.and(statement(tx, "RELEASE publish").await)
                        };
                        closed.and(outcome)
                    }
                }
            } else {
                publish(tx, &write.batch, idempotency, write.now).await
            };
            published.push((write, outcome));
        }
        add_unread_counts(tx, &mut published).await;
        for (write, outcome) in published {
            answers.push(Answer::Publish(write.reply, outcome));
        }
        if !sorted.attempts.is_empty() {
            let mut counted = Ok(());
            for round in sorted.attempt_rounds() {
                counted = counted.and(record_attempt(tx, &round).await);
            }
            for (_, reply) in std::mem::take(&mut sorted.attempts) {
                answers.push(Answer::RecordAttempt(reply, clone_result(&counted)));
            }
        }
        for group in sorted.stamps_by_column() {
            let stamped = stamp_all(tx, group[0].column, &group).await;
            for write in group {
                let found = stamped
                    .as_ref()
                    .map(|found| found.contains(&(write.user_id.clone(), write.id)))
                    .map_err(|err| Error::Backend(err.to_string()));
                answers.push(Answer::Stamp(write.reply, found));
            }
        }
    })
}

/// Sets `column` on every stamped notification that has none yet (first time wins) to its own
/// stamp's time, and returns which `(user, id)` pairs exist: a stamp of another user's notification
/// finds nothing.
fn stamp_all<'a>(
    conn: &'a mut SqliteConnection,
    column: &'static str,
    stamps: &'a [Stamp],
) -> BoxFuture<'a, Result<HashSet<(String, Uuid)>>> {
    Box::pin(async move {
        let mut found = HashSet::new();
        // Five parameters a stamp: well under SQLite's oldest limit of 999 per statement.
        for chunk in stamps.chunks(150) {
            let mut sql = sqlx::QueryBuilder::<Sqlite>::new(format!(
                "UPDATE notifications SET {column} = COALESCE({column}, CASE id"
            ));
            // Each row gets its own stamp's time.
            for stamp in chunk {
                sql.push(" WHEN ").push_bind(stamp.id.to_string());
                sql.push(" THEN ").push_bind(stamp.at);
            }
            // `id IN` finds the rows by primary key; the pairs keep each user to their own.
            sql.push(" END) WHERE id IN (");
            let mut ids = sql.separated(", ");
            for stamp in chunk {
                ids.push_bind(stamp.id.to_string());
            }
            sql.push(") AND (user_id, id) IN (VALUES ");
            let mut pairs = sql.separated(", ");
            for stamp in chunk {
                pairs.push("(");
                pairs.push_bind_unseparated(stamp.user_id.clone());
                pairs.push_unseparated(", ");
                pairs.push_bind_unseparated(stamp.id.to_string());
                pairs.push_unseparated(")");
            }
            sql.push(") RETURNING user_id, id");
            let rows: Vec<(String, String)> = sql
                .build_query_as()
                .fetch_all(&mut *conn)
                .await
                .map_err(Error::backend)?;
            found.extend(
                rows.into_iter()
                    .filter_map(|(user, id)| Some((user, Uuid::parse_str(&id).ok()?))),
            );
        }
        Ok(found)
    })
}

fn record_attempt<'a>(conn: &'a mut SqliteConnection, ids: &'a [Uuid]) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        for chunk in ids.chunks(500) {
            let mut sql =
                sqlx::QueryBuilder::<Sqlite>::new("UPDATE notifications SET attempts = attempts + 1 WHERE id IN (");
            let mut separated = sql.separated(", ");
            for id in chunk {
                separated.push_bind(id.to_string());
            }
            sql.push(")");
            sql.build().execute(&mut *conn).await.map_err(Error::backend)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::adapters::group_commit::{Writer, test_notification};
    use crate::ports::PublishOutcome;

    #[tokio::test]
    async fn a_failing_write_fails_alone_and_the_rest_of_its_batch_commits() {
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        let id = Uuid::new_v4();
        let (first, first_answer) = oneshot::channel();
        let (again, again_answer) = oneshot::channel();
        let (ack, ack_answer) = oneshot::channel();
        let (foreign_ack, foreign_ack_answer) = oneshot::channel();
        let (attempt, attempt_answer) = oneshot::channel();
        let publish = |reply| Write::Publish {
            batch: vec![test_notification(id, "alice")],
            idempotency: None,
            now: 1_000,
            reply,
        };
        let stamp = |user_id: &str, reply| Write::Stamp {
            column: "delivered_at",
            user_id: user_id.into(),
            id,
            at: 2_000,
            reply,
        };
        // One batch: the second publish repeats the id (a primary-key violation); the writes after
        // it must still apply, and another user's acknowledgement of the same id must find nothing.
        let writes = vec![
            publish(first),
            publish(again),
            stamp("alice", ack),
            stamp("mallory", foreign_ack),
            Write::RecordAttempt {
                ids: vec![id],
                reply: attempt,
            },
        ];
        commit(&pool, writes).await;
        assert!(matches!(
            first_answer.await.expect("answered"),
            Ok(PublishOutcome::Created(created, unread)) if created.len() == 1 && created[0].seq == 1
                && unread.get("alice") == Some(&1)
        ));
        assert!(again_answer.await.expect("answered").is_err(), "the duplicate fails");
        assert!(ack_answer.await.expect("answered").expect("acknowledged"));
        assert!(
            !foreign_ack_answer.await.expect("answered").expect("answered"),
            "not mallory's"
        );
        attempt_answer.await.expect("answered").expect("counted");
        let (delivered_at, attempts): (Option<i64>, i64) =
            sqlx::query_as("SELECT delivered_at, attempts FROM notifications")
                .fetch_one(&pool)
                .await
                .expect("the one row");
        assert_eq!((delivered_at, attempts), (Some(2_000), 1));
    }

    #[tokio::test]
    async fn concurrent_writes_through_the_writer_are_all_answered() {
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        let writer = Writer::start(SqliteCommitter(pool.clone()));
        let answers = futures_util::future::join_all((0..200).map(|_| {
            let writer = writer.clone();
            async move {
                writer
                    .publish(&[test_notification(Uuid::new_v4(), "alice")], None, 1_000)
                    .await
            }
        }))
        .await;
        assert!(answers.iter().all(Result::is_ok));
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(count, 200);
        let last_seq: i64 = sqlx::query_scalar("SELECT last_seq FROM user_sequences WHERE user_id = 'alice'")
            .fetch_one(&pool)
            .await
            .expect("sequence");
        assert_eq!(last_seq, 200, "every publish got its own seq");
    }

    #[tokio::test]
    async fn a_publish_of_several_stands_or_falls_whole() {
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        let taken = Uuid::new_v4();
        let (first, first_answer) = oneshot::channel();
        let (pair, pair_answer) = oneshot::channel();
        let fresh = Uuid::new_v4();
        commit(
            &pool,
            vec![
                Write::Publish {
                    batch: vec![test_notification(taken, "alice")],
                    idempotency: None,
                    now: 1_000,
                    reply: first,
                },
                // Two recipients; the second row repeats an id, so the first must not stay.
                Write::Publish {
                    batch: vec![test_notification(fresh, "bob"), test_notification(taken, "carol")],
                    idempotency: None,
                    now: 1_000,
                    reply: pair,
                },
            ],
        )
        .await;
        assert!(first_answer.await.expect("answered").is_ok());
        assert!(pair_answer.await.expect("answered").is_err());
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(rows, 1, "bob's row went with the failed publish");
        let bob: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM user_sequences WHERE user_id = 'bob'")
            .fetch_optional(&pool)
            .await
            .expect("sequence");
        assert_eq!(bob, None, "and so did bob's sequence");
    }

    #[tokio::test]
    async fn stamps_keep_their_own_times_and_repeated_attempts_all_count() {
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        let store = super::super::SqliteNotificationStore::new(pool.clone());
        crate::adapters::group_commit::stamps_keep_their_own_times_and_repeated_attempts_all_count(
            &SqliteCommitter(pool),
            &store,
        )
        .await;
    }
}
