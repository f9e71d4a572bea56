//! Group commit for the embedded store. SQLite runs one write transaction at a time and commits each
//! with an fsync; concurrent writers would queue on its busy handler, which sleeps and is unfair, and
//! pay one fsync each. The hot writes (publishes, acknowledgements, attempt counts) are sent to one
//! writer task instead: it takes everything waiting (up to [`MAX_BATCH`]), applies it in one
//! transaction, each write under a savepoint of its own so that one failing write fails alone,
//! commits once, and only then answers every write. Durability is unchanged (nothing is answered
//! before its commit); the fsync is shared by the batch.

use futures_util::future::BoxFuture;
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::notifications::publish;
use crate::domain::UnixMs;
use crate::domain::publish::PublishReceipt;
use crate::error::{Error, Result};
use crate::ports::{IdempotencyKey, NewNotification, PublishOutcome};

/// Most writes in one transaction: bounds how long one commit keeps the others waiting.
pub const MAX_BATCH: usize = 512;
/// Writes waiting for the writer at most; past it senders wait (back-pressure, not memory growth).
const QUEUE: usize = 4_096;

/// A write, and where its result goes once the batch holding it has committed.
pub enum Write {
    Publish {
        batch: Vec<NewNotification>,
        idempotency: Option<(IdempotencyKey, PublishReceipt)>,
        now: UnixMs,
        reply: oneshot::Sender<Result<PublishOutcome>>,
    },
    /// Sets the timestamp `column` unless already set; `true` when the user has such a notification.
    Stamp {
        column: &'static str,
        user_id: String,
        id: Uuid,
        at: UnixMs,
        reply: oneshot::Sender<Result<bool>>,
    },
    RecordAttempt {
        ids: Vec<Uuid>,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// The sending side; cheap to clone. The task ends when every sender is gone.
#[derive(Debug, Clone)]
pub struct Writer {
    sender: mpsc::Sender<Write>,
}

impl Writer {
    pub fn start(pool: SqlitePool) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, receiver));
        Self { sender }
    }

    /// Queues `write`; the caller then awaits the reply it put in it.
    pub async fn send(&self, write: Write) -> Result<()> {
        self.sender
            .send(write)
            .await
            .map_err(|_| Error::Backend("the SQLite writer has stopped".into()))
    }
}

async fn run(pool: SqlitePool, mut receiver: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&pool, std::mem::take(&mut batch)).await;
    }
}

/// A result waiting for its batch's commit.
enum Answer {
    Publish(oneshot::Sender<Result<PublishOutcome>>, Result<PublishOutcome>),
    Stamp(oneshot::Sender<Result<bool>>, Result<bool>),
    RecordAttempt(oneshot::Sender<Result<()>>, Result<()>),
}

impl Answer {
    /// The batch did not commit: every write of it failed.
    fn failed(self, message: &str) -> Self {
        fn err<T>(message: &str) -> Result<T> {
            Err(Error::Backend(message.to_owned()))
        }
        match self {
            Answer::Publish(reply, _) => Answer::Publish(reply, err(message)),
            Answer::Stamp(reply, _) => Answer::Stamp(reply, err(message)),
            Answer::RecordAttempt(reply, _) => Answer::RecordAttempt(reply, err(message)),
        }
    }

    fn send(self) {
        // A caller that gave up waiting (its request was dropped) needs no answer.
        let _ = match self {
            Answer::Publish(reply, result) => reply.send(result).map_err(drop),
            Answer::Stamp(reply, result) => reply.send(result).map_err(drop),
            Answer::RecordAttempt(reply, result) => reply.send(result).map_err(drop),
        };
    }
}

async fn commit(pool: &SqlitePool, writes: Vec<Write>) {
    let mut answers = Vec::with_capacity(writes.len());
    let outcome = async {
        let mut tx = pool.begin().await.map_err(Error::backend)?;
        apply_all(&mut tx, writes, &mut answers).await;
        tx.commit().await.map_err(Error::backend)
    }
    .await;
    match outcome {
        Ok(()) => answers.into_iter().for_each(Answer::send),
        Err(err) => {
            tracing::error!(error = %err, writes = answers.len(), "sqlite:batch-failed");
            let message = format!("the write could not be committed: {err}");
            answers.into_iter().for_each(|answer| answer.failed(&message).send());
        }
    }
}

/// Applies a batch with as few statements as it takes, since every statement is a round trip to
/// SQLite's worker thread: publishes one by one, in order (each is two statements: its users'
/// `seq` and its rows); every attempt count of the batch in one statement; every acknowledgement
/// (or other stamp) of the batch in one statement per column.
///
/// No savepoints: a failing statement undoes itself in SQLite and only its writes fail. The one
/// partial effect possible is a publish whose rows fail after its `seq` bump, which leaves a gap in
/// that user's sequence; delivery fills gaps from the store, so a gap costs one query, nothing more.
fn apply_all<'a>(
    tx: &'a mut Transaction<'static, Sqlite>,
    writes: Vec<Write>,
    answers: &'a mut Vec<Answer>,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let mut attempts = Vec::new();
        let mut stamps: Vec<Stamp> = Vec::new();
        for write in writes {
            match write {
                Write::Publish {
                    batch,
                    idempotency,
                    now,
                    reply,
                } => {
                    let idempotency = idempotency.as_ref().map(|(key, receipt)| (key, receipt));
                    answers.push(Answer::Publish(reply, publish(tx, &batch, idempotency, now).await));
                }
                Write::Stamp {
                    column,
                    user_id,
                    id,
                    at,
                    reply,
                } => stamps.push(Stamp {
                    column,
                    user_id,
                    id,
                    at,
                    reply,
                }),
                Write::RecordAttempt { ids, reply } => attempts.push((ids, reply)),
            }
        }
        if !attempts.is_empty() {
            let ids: Vec<Uuid> = attempts.iter().flat_map(|(ids, _)| ids.iter().copied()).collect();
            let counted = record_attempt(tx, &ids).await;
            for (_, reply) in attempts {
                answers.push(Answer::RecordAttempt(reply, clone_result(&counted)));
            }
        }
        while !stamps.is_empty() {
            let column = stamps[0].column;
            let (same, rest): (Vec<Stamp>, Vec<Stamp>) = stamps.into_iter().partition(|s| s.column == column);
            stamps = rest;
            let stamped = stamp_all(tx, column, &same).await;
            for write in same {
                let found = stamped
                    .as_ref()
                    .map(|found| found.contains(&(write.user_id.clone(), write.id)))
                    .map_err(|err| Error::Backend(err.to_string()));
                answers.push(Answer::Stamp(write.reply, found));
            }
        }
    })
}

fn clone_result(result: &Result<()>) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(err) => Err(Error::Backend(err.to_string())),
    }
}

/// A timestamp to set once on one of a user's notifications.
struct Stamp {
    column: &'static str,
    user_id: String,
    id: Uuid,
    at: UnixMs,
    reply: oneshot::Sender<Result<bool>>,
}

/// Sets `column` on every stamped notification that has none yet (first time wins; the batch's
/// earliest time, a few milliseconds apart at most) and returns which `(user, id)` pairs exist: a
/// stamp of another user's notification finds nothing.
fn stamp_all<'a>(
    conn: &'a mut SqliteConnection,
    column: &'static str,
    stamps: &'a [Stamp],
) -> BoxFuture<'a, Result<std::collections::HashSet<(String, Uuid)>>> {
    Box::pin(async move {
        let mut found = std::collections::HashSet::new();
        for chunk in stamps.chunks(250) {
            let at = chunk.iter().map(|s| s.at).min().unwrap_or_default();
            let mut sql =
                sqlx::QueryBuilder::<Sqlite>::new(format!("UPDATE notifications SET {column} = COALESCE({column}, "));
            sql.push_bind(at);
            // `id IN` finds the rows by primary key; the pairs keep each user to their own.
            sql.push(") WHERE id IN (");
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
    use super::*;
    use crate::domain::notification::NotificationType;

    fn notification(id: Uuid) -> NewNotification {
        NewNotification {
            id,
            user_id: "alice".into(),
            kind: NotificationType::NewLike,
            channel: "social".into(),
            title: "hello".into(),
            body: None,
            icon: None,
            action_url: None,
            data: None,
            created_at: 1_000,
            expires_at: None,
        }
    }

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
            batch: vec![notification(id)],
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
            Ok(PublishOutcome::Created(created)) if created.len() == 1 && created[0].seq == 1
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
        let writer = Writer::start(pool.clone());
        let answers = futures_util::future::join_all((0..200).map(|_| {
            let writer = writer.clone();
            async move {
                let (reply, answer) = oneshot::channel();
                writer
                    .send(Write::Publish {
                        batch: vec![notification(Uuid::new_v4())],
                        idempotency: None,
                        now: 1_000,
                        reply,
                    })
                    .await
                    .expect("queued");
                answer.await.expect("answered")
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
}
