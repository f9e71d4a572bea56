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
    fn is_ok(&self) -> bool {
        match self {
            Answer::Publish(_, result) => result.is_ok(),
            Answer::Stamp(_, result) => result.is_ok(),
            Answer::RecordAttempt(_, result) => result.is_ok(),
        }
    }

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
        for write in writes {
            answers.push(apply(&mut tx, write).await);
        }
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

/// Runs one write. A publish (several statements) runs under a savepoint: kept when it succeeds,
/// undone alone when it fails. An acknowledgement or attempt count is one statement, which SQLite
/// undoes by itself when it fails, so it needs none (two fewer round trips to the database).
fn apply<'a>(tx: &'a mut Transaction<'static, Sqlite>, write: Write) -> BoxFuture<'a, Answer> {
    Box::pin(async move {
        match write {
            Write::Publish {
                batch,
                idempotency,
                now,
                reply,
            } => {
                if let Err(err) = statement(tx, "SAVEPOINT publish").await {
                    return Answer::Publish(reply, Err(err));
                }
                let idempotency = idempotency.as_ref().map(|(key, receipt)| (key, receipt));
                let answer = Answer::Publish(reply, publish(tx, &batch, idempotency, now).await);
                let undone = if answer.is_ok() {
                    Ok(())
                } else {
                    statement(tx, "ROLLBACK TO publish").await
                };
                match undone.and(statement(tx, "RELEASE publish").await) {
                    Ok(()) => answer,
                    Err(err) => answer.failed(&format!("savepoint: {err}")),
                }
            }
            Write::Stamp {
                column,
                user_id,
                id,
                at,
                reply,
            } => Answer::Stamp(reply, stamp(tx, column, &user_id, id, at).await),
            Write::RecordAttempt { ids, reply } => Answer::RecordAttempt(reply, record_attempt(tx, &ids).await),
        }
    })
}

/// A statement without parameters (savepoints).
fn statement<'a>(tx: &'a mut SqliteConnection, sql: &'static str) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move { sqlx::query(sql).execute(tx).await.map(drop).map_err(Error::backend) })
}

fn stamp<'a>(
    conn: &'a mut SqliteConnection,
    column: &'static str,
    user_id: &'a str,
    id: Uuid,
    at: UnixMs,
) -> BoxFuture<'a, Result<bool>> {
    Box::pin(async move {
        let sql = format!("UPDATE notifications SET {column} = COALESCE({column}, ?) WHERE user_id = ? AND id = ?");
        let result = sqlx::query(&sql)
            .bind(at)
            .bind(user_id)
            .bind(id.to_string())
            .execute(conn)
            .await
            .map_err(Error::backend)?;
        Ok(result.rows_affected() > 0)
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
    async fn a_failing_write_is_undone_alone_and_the_rest_of_its_batch_commits() {
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        let id = Uuid::new_v4();
        let (first, first_answer) = oneshot::channel();
        let (again, again_answer) = oneshot::channel();
        let (ack, ack_answer) = oneshot::channel();
        let publish = |reply| Write::Publish {
            batch: vec![notification(id)],
            idempotency: None,
            now: 1_000,
            reply,
        };
        // One batch: the second publish repeats the id (a primary-key violation) after its `seq`
        // bump, which its savepoint must undo; the acknowledgement after it must still apply.
        let writes = vec![
            publish(first),
            publish(again),
            Write::Stamp {
                column: "delivered_at",
                user_id: "alice".into(),
                id,
                at: 2_000,
                reply: ack,
            },
        ];
        commit(&pool, writes).await;
        assert!(matches!(
            first_answer.await.expect("answered"),
            Ok(PublishOutcome::Created(created)) if created.len() == 1 && created[0].seq == 1
        ));
        assert!(again_answer.await.expect("answered").is_err(), "the duplicate fails");
        assert!(ack_answer.await.expect("answered").expect("acknowledged"));
        let last_seq: i64 = sqlx::query_scalar("SELECT last_seq FROM user_sequences WHERE user_id = 'alice'")
            .fetch_one(&pool)
            .await
            .expect("sequence");
        assert_eq!(last_seq, 1, "the failed publish left no sequence bump behind");
        let delivered_at: Option<i64> = sqlx::query_scalar("SELECT delivered_at FROM notifications")
            .fetch_one(&pool)
            .await
            .expect("row");
        assert_eq!(delivered_at, Some(2_000));
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
