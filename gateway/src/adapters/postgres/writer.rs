//! The cluster store's group commit (`adapters::group_commit`). Each commit waits for PostgreSQL's
//! WAL flush (fsync on), and every statement is a round trip; a batch shares both: one transaction
//! with each keyed publish's idempotency record, every batched notification in one `UNNEST` insert,
//! every attempt count in one statement and every stamp of a column in one statement.
//!
//! A failing statement aborts a PostgreSQL transaction, so a batch that fails is redone one write
//! per transaction: the writes that can succeed still do, and each failure stays its own.

use std::collections::{HashMap, HashSet};

use futures_util::future::BoxFuture;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::adapters::group_commit::{
    Answer, Committer, Publish, Sorted, Stamp, Write, answer_all, answer_attempts, answer_stamps, clone_result,
};
use crate::adapters::sql::{Statements, db_error, stored_notification, unread_count};
use crate::app::metrics::Backend;
use crate::domain::UnixMs;
use crate::domain::publish::PublishReceipt;
use crate::error::{Error, Result};
use crate::ports::{IdempotencyKey, UnreadCounts};
use crate::ports::{NewNotification, PreferenceVersions, PublishOutcome};

/// Records an `Idempotency-Key`; returns no row when the key is already there
/// (`Statements::record_idempotency_key`).
const INSERT_IDEMPOTENCY_KEY: &str = "INSERT INTO idempotency_keys (publisher, key, request_hash, response, created_at)
     VALUES ($1, $2, $3, $4, to_timestamp($5::float8 / 1000))
     ON CONFLICT (publisher, key) DO NOTHING RETURNING publisher";

/// The rows of a batch: eleven arrays unnested, numbered in the order given.
const INPUT: &str = "SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                              $7::text[], $8::text[], $9::text[], $10::int8[], $11::int8[])
             WITH ORDINALITY AS t(id, user_id, type, channel, title, body, icon, action_url, data,
                                  created_at, expires_at, ord)";

/// After `input`: every recipient's sequence bumped, the rows inserted; `inserted` holds each row's
/// id, user, seq and expiry.
const INSERT_TAIL: &str = "counts AS (SELECT user_id, count(*)::int8 AS n FROM input GROUP BY user_id),
     bumped AS (
         INSERT INTO user_sequences AS s (user_id, last_seq) SELECT user_id, n FROM counts ORDER BY user_id
         ON CONFLICT (user_id) DO UPDATE SET last_seq = s.last_seq + EXCLUDED.last_seq
         RETURNING s.user_id, s.last_seq, s.unread_removals, s.unread
     ),
     inserted AS (
         INSERT INTO notifications
             (id, user_id, seq, type, channel, title, body, icon, action_url, data, created_at, expires_at)
         SELECT i.id, i.user_id,
                b.last_seq - c.n + row_number() OVER (PARTITION BY i.user_id ORDER BY i.ord),
                i.type, i.channel, i.title, i.body, i.icon, i.action_url, i.data::jsonb,
                to_timestamp(i.created_at::float8 / 1000), to_timestamp(i.expires_at::float8 / 1000)
         FROM input i JOIN counts c USING (user_id) JOIN bumped b USING (user_id)
         RETURNING id, user_id, seq, expires_at
     )";

/// The common head of both inserts (see [`INPUT`] and [`INSERT_TAIL`]).
fn insert_cte() -> String {
    format!("WITH input AS ({INPUT}), {INSERT_TAIL}")
}

/// The recipients (`users`, an SQL `text[]`) whose preferences are no longer the `versions` read
/// (`text[]`, each the row's `xmin`, `NULL` for none stored): a write or a delete of a row gives it
/// another `xmin`, a new row one where there was none.
fn changed_preferences(users: &str, versions: &str) -> String {
    format!(
        "SELECT c.user_id FROM UNNEST({users}::text[], {versions}::text[]) AS c(user_id, version)
         LEFT JOIN notification_preferences p USING (user_id)
         WHERE p.xmin::text IS DISTINCT FROM c.version"
    )
}

/// [`insert_cte`] that inserts nothing if a recipient's preferences changed since they were read
/// (parameters `$13` and `$14`); `changed` names those recipients then.
fn checked_insert_cte() -> String {
    let changed = changed_preferences("$13", "$14");
    format!(
        "WITH changed AS ({changed}),
     input AS ({INPUT} WHERE NOT EXISTS (SELECT 1 FROM changed)), {INSERT_TAIL}"
    )
}

/// Binds the recipients and versions of every publish in `publishes` (checked by
/// [`checked_insert_cte`] and [`changed_preferences`]).
fn bind_checked<'q, 'p, O>(
    query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    publishes: impl IntoIterator<Item = &'p PreferenceVersions>,
) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    let checked = publishes.into_iter().flat_map(|checked| checked.0.iter());
    let (users, versions): (Vec<String>, Vec<Option<String>>) = checked.cloned().unzip();
    query.bind(users).bind(versions)
}

/// Whether `checked` names one of `changed`.
fn touches(checked: &PreferenceVersions, changed: &HashSet<String>) -> bool {
    checked.0.iter().any(|(user, _)| changed.contains(user))
}

/// The recipients among `checked` whose preferences changed since they were read, in `executor`
/// (no query when nothing is to be checked).
async fn changed_recipients<'c, 'p>(
    executor: impl sqlx::PgExecutor<'c>,
    checked: impl IntoIterator<Item = &'p PreferenceVersions>,
) -> Result<HashSet<String>> {
    let checked: Vec<&PreferenceVersions> = checked.into_iter().filter(|c| !c.is_empty()).collect();
    if checked.is_empty() {
        return Ok(HashSet::new());
    }
    let sql = changed_preferences("$1", "$2");
    let rows: Vec<(String,)> = bind_checked(sqlx::query_as(&sql), checked)
        .fetch_all(executor)
        .await
        .map_err(db_error)?;
    Ok(rows.into_iter().map(|(user,)| user).collect())
}

/// The unread notifications of user `user` (an SQL expression) past their expiry at `now` (a
/// parameter in Unix milliseconds), which the kept count `user_sequences.unread` still includes
/// (migration 0003); most notifications have no expiry, and the partial index holds only those that
/// do.
pub(super) fn expired_unread(user: &str, now: &str) -> String {
    format!(
        "SELECT count(*) FROM notifications n WHERE n.user_id = {user} AND n.read_at IS NULL
         AND n.expires_at IS NOT NULL AND n.expires_at <= to_timestamp({now}::float8 / 1000)"
    )
}

/// Binds the rows of `batch` as the eleven arrays of [`INPUT`].
fn bind_rows<'q, O>(
    query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    batch: &[&NewNotification],
) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(batch.iter().map(|n| n.id).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.user_id.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.kind.as_str().to_owned()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.channel.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.title.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.body.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.icon.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.action_url.clone()).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|n| {
                    n.data
                        .as_ref()
                        .map(|d| serde_json::Value::Object(d.clone()).to_string())
                })
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|n| n.created_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.expires_at).collect::<Vec<_>>())
}

/// Inserts `batch` in one statement inside `tx`; returns each notification's `seq`.
fn insert_notifications<'a>(
    tx: &'a mut Transaction<'static, Postgres>,
    batch: &'a [&'a NewNotification],
) -> BoxFuture<'a, Result<HashMap<Uuid, i64>>> {
    Box::pin(async move {
        if batch.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!("{} SELECT id, seq FROM inserted", insert_cte());
        let rows: Vec<(Uuid, i64)> = bind_rows(sqlx::query_as(&sql), batch)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().collect())
    })
}

/// A batch of publishes without idempotency keys, as one statement in a transaction of its own
/// ([`insert_alone`]). A publish whose recipients' preferences changed since they were read answers
/// [`PublishOutcome::PreferencesChanged`]; the others are stored (again one statement, without it:
/// each round leaves out at least one).
async fn publish_alone(pool: &PgPool, publishes: &[Publish]) -> Result<Vec<PublishOutcome>, Failure> {
    let mut outcomes: Vec<Option<PublishOutcome>> = vec![None; publishes.len()];
    loop {
        let round: Vec<(usize, &Publish)> = publishes
            .iter()
            .enumerate()
            .filter(|(i, _)| outcomes[*i].is_none())
            .collect();
        if round.is_empty() {
            break;
        }
        let writes: Vec<&Publish> = round.iter().map(|(_, write)| *write).collect();
        match insert_alone(pool, &writes).await? {
            Inserted::Stored(stored) => {
                for ((i, _), outcome) in round.into_iter().zip(stored) {
                    outcomes[i] = Some(outcome);
                }
            }
            Inserted::Changed(changed) => {
                for (i, write) in round {
                    if touches(&write.checked, &changed) {
                        outcomes[i] = Some(PublishOutcome::PreferencesChanged);
                    }
                }
            }
        }
    }
    Ok(outcomes.into_iter().flatten().collect())
}

/// What [`insert_alone`] did.
enum Inserted {
    /// Each publish's outcome.
    Stored(Vec<PublishOutcome>),
    /// Nothing: these recipients' preferences changed since they were read.
    Changed(HashSet<String>),
}

/// `publishes` as one statement in a transaction of its own: the rows inserted and each recipient's
/// unread count, one round trip to the database instead of four (begin, insert, count, commit),
/// which on a busy machine decided the cluster's latency. The count adds the rows just inserted to
/// those there before: a statement does not see its own inserts. Nothing is inserted if a
/// recipient's preferences changed since they were read.
async fn insert_alone(pool: &PgPool, publishes: &[&Publish]) -> Result<Inserted, Failure> {
    let rows: Vec<&NewNotification> = publishes.iter().flat_map(|write| write.batch.iter()).collect();
    let now = publishes.iter().map(|write| write.now).max().unwrap_or_default();
    // `bumped.unread` is the kept count before this statement (its trigger adds the rows inserted
    // afterwards), read from the row the statement updates: the latest committed value.
    let expired = expired_unread("b.user_id", "$12");
    // Recipients whose preferences changed stop the whole statement; each is answered in a row
    // without an id.
    let sql = format!(
        "{},
         added AS (
             SELECT user_id, count(*)::int8 AS n FROM inserted
             WHERE expires_at IS NULL OR expires_at > to_timestamp($12::float8 / 1000)
             GROUP BY user_id
         )
         SELECT i.id, i.seq, b.user_id, b.unread - ({expired}) + COALESCE(a.n, 0),
                b.last_seq + b.unread_removals
         FROM inserted i JOIN bumped b USING (user_id) LEFT JOIN added a USING (user_id)
         UNION ALL SELECT NULL, NULL, user_id, NULL, NULL FROM changed",
        checked_insert_cte()
    );
    type Found = (Option<Uuid>, Option<i64>, String, Option<i64>, Option<i64>);
    let checked = publishes.iter().map(|write| &write.checked);
    let found: Vec<Found> = bind_checked(bind_rows(sqlx::query_as(&sql), &rows).bind(now), checked)
        .fetch_all(pool)
        .await
        .map_err(|err| match err {
            // Refused by the database: nothing was written, each publish can be redone alone.
            sqlx::Error::Database(_) => Failure::Statement(Error::backend(err)),
            // The connection failed: the commit may have happened.
            _ => Failure::Unsure(db_error(err)),
        })?;
    let changed: HashSet<String> = found
        .iter()
        .filter(|(id, ..)| id.is_none())
        .map(|(_, _, user, ..)| user.clone())
        .collect();
    if !changed.is_empty() {
        return Ok(Inserted::Changed(changed));
    }
    let mut seqs = HashMap::with_capacity(found.len());
    let mut counts = UnreadCounts::new();
    for (id, seq, user, unread, version) in found {
        if let (Some(id), Some(seq), Some(unread), Some(version)) = (id, seq, unread, version) {
            seqs.insert(id, seq);
            counts.insert(user, unread_count(unread, version));
        }
    }
    Ok(Inserted::Stored(
        publishes
            .iter()
            .map(|write| created(&write.batch, &seqs, &counts))
            .collect(),
    ))
}

/// Records a publish's `Idempotency-Key` in `tx`; `Some` answer when the key was already there.
fn record_key<'a>(
    tx: &'a mut Transaction<'static, Postgres>,
    idempotency: Option<(&'a IdempotencyKey, &'a PublishReceipt)>,
    now: UnixMs,
) -> BoxFuture<'a, Result<Option<PublishOutcome>>> {
    Box::pin(async move {
        match idempotency {
            Some((key, receipt)) => {
                Statements::record_idempotency_key(tx, INSERT_IDEMPOTENCY_KEY, key, receipt, now).await
            }
            None => Ok(None),
        }
    })
}

fn created(batch: &[NewNotification], seqs: &HashMap<Uuid, i64>, counts: &UnreadCounts) -> PublishOutcome {
    let unread = batch
        .iter()
        .map(|n| (n.user_id.clone(), counts.get(&n.user_id).copied().unwrap_or_default()))
        .collect();
    PublishOutcome::Created(
        batch
            .iter()
            .map(|n| stored_notification(n, seqs.get(&n.id).copied().unwrap_or_default()))
            .collect(),
        unread,
    )
}

/// The unread counts of the recipients of `rows` at `now`, in one statement (inside the writing
/// transaction, so they include what it wrote).
fn unread_counts<'a>(
    tx: &'a mut Transaction<'static, Postgres>,
    rows: &'a [&'a NewNotification],
    now: UnixMs,
) -> BoxFuture<'a, Result<UnreadCounts>> {
    Box::pin(async move {
        if rows.is_empty() {
            return Ok(UnreadCounts::new());
        }
        let mut users: Vec<String> = rows.iter().map(|n| n.user_id.clone()).collect();
        users.sort_unstable();
        users.dedup();
        let sql = format!(
            "SELECT s.user_id, s.unread - ({}), s.last_seq + s.unread_removals
             FROM user_sequences s WHERE s.user_id = ANY($1)",
            expired_unread("s.user_id", "$2")
        );
        let counts: Vec<(String, i64, i64)> = sqlx::query_as(&sql)
            .bind(&users)
            .bind(now)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_error)?;
        Ok(counts
            .into_iter()
            .map(|(user, n, version)| (user, unread_count(n, version)))
            .collect())
    })
}

/// One publish in a transaction of its own (the writer's fallback when a batch fails).
async fn publish_one(pool: &PgPool, write: &Publish) -> Result<PublishOutcome> {
    let (batch, now) = (&write.batch, write.now);
    let idempotency = write.idempotency.as_ref().map(|(key, receipt)| (key, receipt));
    let mut tx = pool.begin().await.map_err(db_error)?;
    if !changed_recipients(&mut *tx, [&write.checked]).await?.is_empty() {
        tx.rollback().await.map_err(db_error)?;
        return Ok(PublishOutcome::PreferencesChanged);
    }
    if let Some(repeated) = record_key(&mut tx, idempotency, now).await? {
        tx.rollback().await.map_err(db_error)?;
        return Ok(repeated);
    }
    let rows: Vec<&NewNotification> = batch.iter().collect();
    let seqs = insert_notifications(&mut tx, &rows).await?;
    let counts = unread_counts(&mut tx, &rows, now).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(created(batch, &seqs, &counts))
}

/// The cluster store's committer.
pub struct PostgresCommitter(pub PgPool);

impl Committer for PostgresCommitter {
    const BACKEND: Backend = Backend::Postgres;

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, bool> {
        Box::pin(commit(&self.0, writes))
    }
}

/// What a committed batch found: each publish's outcome, and the `(user, id)` pairs each stamp
/// group touched.
struct Batched {
    publishes: Vec<PublishOutcome>,
    stamped: Vec<HashSet<(String, Uuid)>>,
}

/// Whether the batch committed as one (a batch redone write by write did not).
async fn commit(pool: &PgPool, writes: Vec<Write>) -> bool {
    let mut sorted = Sorted::of(writes);
    let groups = sorted.stamps_by_column();
    let attempted = sorted.attempt_rounds();
    // Publishes go apart from the stamps below (or in a flushed transaction with them): only a
    // stamp that must be flushed decides.
    let flush = groups.iter().flatten().any(Stamp::needs_flush);
    if sorted.publishes.is_empty() {
        return without_publishes(pool, flush, sorted, groups, &attempted).await;
    }
    if sorted.publishes.iter().all(|write| write.idempotency.is_none()) {
        // Keyless publishes are one statement of their own; the acknowledgements, read marks and
        // attempt counts that waited to ride along are statements beside them. In one transaction
        // they would cost the publishes their single round trip (begin, insert, count, stamps,
        // attempts, commit).
        let publishes = Sorted {
            publishes: std::mem::take(&mut sorted.publishes),
            ..Sorted::default()
        };
        let published = commit_together(pool, publishes, Vec::new(), &[]).await;
        if groups.is_empty() && sorted.attempts.is_empty() {
            return published;
        }
        return without_publishes(pool, flush, sorted, groups, &attempted).await && published;
    }
    commit_together(pool, sorted, groups, &attempted).await
}

/// The batch in one transaction (one statement when it is only keyless publishes); a batch whose
/// statement failed is redone one write at a time. Whether the batch committed as one.
async fn commit_together(pool: &PgPool, sorted: Sorted, groups: Vec<Vec<Stamp>>, attempted: &[Vec<Uuid>]) -> bool {
    let mut answers = Vec::new();
    let committed = match batch(pool, &sorted.publishes, &groups, attempted).await {
        Ok(batched) => {
            for (write, outcome) in sorted.publishes.into_iter().zip(batched.publishes) {
                answers.push(Answer::Publish(write.reply, Ok(outcome)));
            }
            answer_attempts(sorted.attempts, &Ok(()), &mut answers);
            for (group, found) in groups.into_iter().zip(batched.stamped) {
                answer_stamps(group, &Ok(found), &mut answers);
            }
            true
        }
        Err(Failure::Unsure(err)) => {
            // No connection, or a commit that may or may not have happened: redoing could write
            // twice, so every write of the batch fails (its caller may retry, with its key). The
            // placeholder results are replaced by the failure in `answer_all`.
            let failed = Err(err);
            for write in sorted.publishes {
                answers.push(Answer::Publish(write.reply, Ok(PublishOutcome::KeyReused)));
            }
            for (_, reply) in sorted.attempts {
                answers.push(Answer::RecordAttempt(reply, Ok(())));
            }
            for stamp in groups.into_iter().flatten() {
                answers.push(Answer::Stamp(stamp.reply, Ok(false)));
            }
            return answer_all(answers, failed, "postgres");
        }
        Err(Failure::Statement(err)) => {
            tracing::warn!(error = %err, "postgres:batch-failed, writing one by one");
            for write in sorted.publishes {
                let outcome = publish_one(pool, &write).await;
                answers.push(Answer::Publish(write.reply, outcome));
            }
            if !attempted.is_empty() {
                let mut counted = Ok(());
                for round in attempted {
                    counted = counted.and(count_attempts(pool, round, false).await);
                }
                for (_, reply) in sorted.attempts {
                    answers.push(Answer::RecordAttempt(reply, clone_result(&counted)));
                }
            }
            for stamp in groups.into_iter().flatten() {
                let hit = stamp_group(pool, std::slice::from_ref(&stamp), false)
                    .await
                    .map(|found| !found.is_empty());
                answers.push(Answer::Stamp(stamp.reply, hit));
            }
            false
        }
    };
    // Every answer above follows a commit (the batch's, or each write's own).
    answer_all(answers, Ok(()), "postgres");
    committed
}

/// Why a batch did not commit.
enum Failure {
    /// A statement failed before the commit: nothing was written, each write can be redone alone.
    Statement(Error),
    /// No transaction could start, or the commit itself failed (it may have happened).
    Unsure(Error),
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure::Statement(err)
    }
}

/// The whole batch (with publishes, so flushed) in one transaction, or in one statement when it is
/// only publishes without idempotency keys.
async fn batch(
    pool: &PgPool,
    publishes: &[Publish],
    groups: &[Vec<Stamp>],
    attempted: &[Vec<Uuid>],
) -> Result<Batched, Failure> {
    let keyless = publishes.iter().all(|write| write.idempotency.is_none());
    if !publishes.is_empty() && keyless && groups.is_empty() && attempted.is_empty() {
        let publishes = publish_alone(pool, publishes).await?;
        return Ok(Batched {
            publishes,
            stamped: Vec::new(),
        });
    }
    let mut tx = pool.begin().await.map_err(|err| Failure::Unsure(db_error(err)))?;
    let changed = changed_recipients(&mut *tx, publishes.iter().map(|write| &write.checked)).await?;
    let mut repeated: Vec<Option<PublishOutcome>> = Vec::with_capacity(publishes.len());
    for write in publishes {
        if touches(&write.checked, &changed) {
            // Nothing of it is stored, not even its key: it reads its preferences again.
            repeated.push(Some(PublishOutcome::PreferencesChanged));
            continue;
        }
        let idempotency = write.idempotency.as_ref().map(|(key, receipt)| (key, receipt));
        repeated.push(record_key(&mut tx, idempotency, write.now).await?);
    }
    let rows: Vec<&NewNotification> = publishes
        .iter()
        .zip(&repeated)
        .filter(|(_, repeated)| repeated.is_none())
        .flat_map(|(write, _)| write.batch.iter())
        .collect();
    let seqs = insert_notifications(&mut tx, &rows).await?;
    let now = publishes.iter().map(|write| write.now).max().unwrap_or_default();
    let counts = unread_counts(&mut tx, &rows, now).await?;
    let publishes = publishes
        .iter()
        .zip(repeated)
        .map(|(write, repeated)| repeated.unwrap_or_else(|| created(&write.batch, &seqs, &counts)))
        .collect();
    for round in attempted {
        count_attempts(&mut *tx, round, false).await?;
    }
    let mut stamped = Vec::with_capacity(groups.len());
    for group in groups {
        stamped.push(stamp_group(&mut *tx, group, false).await?);
    }
    tx.commit().await.map_err(|err| Failure::Unsure(db_error(err)))?;
    Ok(Batched { publishes, stamped })
}

/// Makes a statement that is a transaction of its own commit without waiting for its WAL flush
/// (`set_config(..., true)` lasts until the end of the transaction, where the commit reads it).
const NO_FLUSH: &str = "WITH no_flush AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)) ";

/// Sets the group's column on each `(user, id)` that has none yet (first time wins) to its own
/// stamp's time, adds each stamp's attempts (rounds that ride on an acknowledgement) to the row's
/// count, and returns the pairs that exist: another user's id finds nothing.
async fn stamp_group<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    group: &[Stamp],
    no_flush: bool,
) -> Result<HashSet<(String, Uuid)>> {
    let Some(first) = group.first() else {
        return Ok(HashSet::new());
    };
    let column = first.column;
    let (with, joined) = if no_flush { (NO_FLUSH, ", no_flush") } else { ("", "") };
    // Each row gets its own stamp's time.
    let sql = format!(
        "{with}UPDATE notifications n SET {column} = COALESCE(n.{column}, to_timestamp(s.at::float8 / 1000)),
                attempts = n.attempts + s.attempts
         FROM UNNEST($1::int8[], $2::text[], $3::uuid[], $4::int4[]) AS s(at, user_id, id, attempts){joined}
         WHERE n.id = s.id AND n.user_id = s.user_id
         RETURNING n.user_id, n.id"
    );
    let rows: Vec<(String, Uuid)> = sqlx::query_as(&sql)
        .bind(group.iter().map(|s| s.at).collect::<Vec<_>>())
        .bind(group.iter().map(|s| s.user_id.clone()).collect::<Vec<_>>())
        .bind(group.iter().map(|s| s.id).collect::<Vec<_>>())
        // A count fits: the delivery service counts at most `max_attempts` rounds.
        .bind(
            group
                .iter()
                .map(|s| i32::try_from(s.attempts).unwrap_or(i32::MAX))
                .collect::<Vec<_>>(),
        )
        .fetch_all(executor)
        .await
        .map_err(db_error)?;
    Ok(rows.into_iter().collect())
}

/// Adds one attempt to each of `ids`.
async fn count_attempts<'c>(executor: impl sqlx::PgExecutor<'c>, ids: &[Uuid], no_flush: bool) -> Result<()> {
    let sql = if no_flush {
        format!("{NO_FLUSH}UPDATE notifications SET attempts = attempts + 1 FROM no_flush WHERE id = ANY($1)")
    } else {
        "UPDATE notifications SET attempts = attempts + 1 WHERE id = ANY($1)".to_owned()
    };
    sqlx::query(&sql).bind(ids).execute(executor).await.map_err(db_error)?;
    Ok(())
}

/// A batch without publishes (acknowledgements, read marks, attempt counts): each stamp group and
/// each attempt round is one statement and a transaction of its own, one round trip each instead of
/// a transaction's four or five; each write is answered with its own statement's result. Without
/// a read mark none of them waits for its WAL flush (`Write::needs_flush`).
async fn without_publishes(
    pool: &PgPool,
    flush: bool,
    sorted: Sorted,
    groups: Vec<Vec<Stamp>>,
    attempted: &[Vec<Uuid>],
) -> bool {
    let no_flush = !flush;
    let mut answers = Vec::new();
    let mut all_ok = true;
    if !attempted.is_empty() {
        let mut counted = Ok(());
        for round in attempted {
            counted = counted.and(count_attempts(pool, round, no_flush).await);
        }
        all_ok &= counted.is_ok();
        answer_attempts(sorted.attempts, &counted, &mut answers);
    }
    for group in groups {
        let stamped = stamp_group(pool, &group, no_flush).await;
        all_ok &= stamped.is_ok();
        answer_stamps(group, &stamped, &mut answers);
    }
    answer_all(answers, Ok(()), "postgres") && all_ok
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::adapters::group_commit::{Writer, test_notification};
    use crate::ports::{NotificationStore, PreferenceStore, PreferenceVersions};

    fn publish(id: Uuid, reply: oneshot::Sender<Result<PublishOutcome>>) -> Write {
        Write::Publish {
            batch: vec![test_notification(id, "alice")],
            idempotency: None,
            now: 1_000,
            checked: PreferenceVersions::default(),
            reply,
        }
    }

    /// The unread count each publish of `writes` answered for alice.
    async fn unread_answers(pool: &PgPool, ids: &[(Uuid, Option<UnixMs>)]) -> Vec<u64> {
        let mut answers = Vec::new();
        let mut writes = Vec::new();
        for (id, expires_at) in ids {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            let mut n = test_notification(*id, "alice");
            n.expires_at = *expires_at;
            writes.push(Write::Publish {
                batch: vec![n],
                idempotency: None,
                now: 1_000,
                checked: PreferenceVersions::default(),
                reply,
            });
        }
        commit(pool, writes).await;
        let mut counts = Vec::new();
        for answer in answers {
            match answer.await.expect("answered") {
                Ok(PublishOutcome::Created(_, unread)) => counts.push(unread["alice"].count),
                other => panic!("expected created, got {other:?}"),
            }
        }
        counts
    }

    #[tokio::test]
    async fn a_batch_of_publishes_alone_counts_what_was_unread_before_and_what_it_added() {
        let Some(pool) = super::super::test_pool().await else {
            return;
        };
        let fresh = || (Uuid::new_v4(), None);
        assert_eq!(
            unread_answers(&pool, &[fresh(), fresh()]).await,
            [2, 2],
            "the batch's own rows"
        );
        // One already expired at `now` is stored but not unread.
        let expired = (Uuid::new_v4(), Some(500));
        assert_eq!(
            unread_answers(&pool, &[fresh(), expired]).await,
            [3, 3],
            "earlier rows too"
        );
        let store = super::super::PostgresNotificationStore::new(pool.clone());
        assert_eq!(
            store.unread_count("alice", 1_000).await.expect("count").count,
            3,
            "as the store counts"
        );
    }

    #[tokio::test]
    async fn a_batch_shares_one_transaction_and_each_write_gets_its_own_answer() {
        let Some(pool) = super::super::test_pool().await else {
            return;
        };
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let (a, a_answer) = oneshot::channel();
        let (b, b_answer) = oneshot::channel();
        commit(&pool, vec![publish(first, a), publish(second, b)]).await;
        let seqs: Vec<i64> = [a_answer.await, b_answer.await]
            .into_iter()
            .map(|answer| match answer.expect("answered") {
                Ok(PublishOutcome::Created(created, _)) => created[0].seq,
                other => panic!("expected created, got {other:?}"),
            })
            .collect();
        assert_eq!(seqs, [1, 2], "in the batch's order");
        let (ack, ack_answer) = oneshot::channel();
        let (foreign, foreign_answer) = oneshot::channel();
        let (attempt, attempt_answer) = oneshot::channel();
        let stamp = |user: &str, reply| Write::Stamp {
            column: "delivered_at",
            user_id: user.into(),
            id: first,
            at: 2_000,
            attempts: 0,
            reply,
        };
        commit(
            &pool,
            vec![
                stamp("alice", ack),
                stamp("mallory", foreign),
                Write::RecordAttempt {
                    ids: vec![first],
                    reply: attempt,
                },
            ],
        )
        .await;
        assert!(ack_answer.await.expect("answered").expect("stamped"));
        assert!(
            !foreign_answer.await.expect("answered").expect("answered"),
            "not mallory's"
        );
        attempt_answer.await.expect("answered").expect("counted");
        let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM notifications WHERE id = $1")
            .bind(first)
            .fetch_one(&pool)
            .await
            .expect("row");
        assert_eq!(attempts, 1);
    }

    /// The attempt count of notification `id`.
    async fn attempts_of(pool: &PgPool, id: Uuid) -> i32 {
        sqlx::query_scalar("SELECT attempts FROM notifications WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .expect("row")
    }

    #[tokio::test]
    async fn attempts_ride_on_acknowledgements() {
        let Some(pool) = super::super::test_pool().await else {
            return;
        };
        let (first, second, third) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (a, a_answer) = oneshot::channel();
        let (b, b_answer) = oneshot::channel();
        commit(&pool, vec![publish(first, a), publish(second, b)]).await;
        for answer in [a_answer, b_answer] {
            answer.await.expect("answered").expect("published");
        }
        let stamp = |user: &str, id: Uuid, attempts, reply| Write::Stamp {
            column: "delivered_at",
            user_id: user.into(),
            id,
            at: 2_000,
            attempts,
            reply,
        };
        // Without a publish: first sent twice (one round recorded on its own, one riding on its
        // acknowledgement); second sent once, and "acknowledged" by somebody else.
        let (acked, acked_answer) = oneshot::channel();
        let (forged, forged_answer) = oneshot::channel();
        let (sent, sent_answer) = oneshot::channel();
        let rounds = Write::RecordAttempt {
            ids: vec![first, second],
            reply: sent,
        };
        let writes = vec![
            rounds,
            stamp("alice", first, 1, acked),
            stamp("mallory", second, 0, forged),
        ];
        assert!(commit(&pool, writes).await);
        assert!(acked_answer.await.expect("answered").expect("stamped"));
        assert!(
            !forged_answer.await.expect("answered").expect("answered"),
            "not mallory's"
        );
        sent_answer.await.expect("answered").expect("counted");
        assert_eq!(attempts_of(&pool, first).await, 2, "a round on its own and one riding");
        assert_eq!(attempts_of(&pool, second).await, 1);
        // With a publish in the batch (one transaction): the same.
        let (c, c_answer) = oneshot::channel();
        let (acked, acked_answer) = oneshot::channel();
        assert!(commit(&pool, vec![publish(third, c), stamp("alice", second, 1, acked)]).await);
        c_answer.await.expect("answered").expect("published");
        assert!(acked_answer.await.expect("answered").expect("stamped"));
        assert_eq!(attempts_of(&pool, second).await, 2);
    }

    /// Publishes one notification to `user`, checked against `checked`, in a batch of its own (with
    /// an idempotency key `key` if given: the transaction path).
    async fn publish_checked(
        pool: &PgPool,
        user: &str,
        checked: &PreferenceVersions,
        key: Option<&str>,
    ) -> PublishOutcome {
        let id = Uuid::new_v4();
        let idempotency = key.map(|key| {
            let key = IdempotencyKey {
                publisher: "tests".into(),
                key: key.into(),
                request_hash: "h".into(),
            };
            let receipt = PublishReceipt {
                created: Vec::new(),
                skipped: Vec::new(),
            };
            (key, receipt)
        });
        let (reply, answer) = oneshot::channel();
        let write = Write::Publish {
            batch: vec![test_notification(id, user)],
            idempotency,
            now: 1_000,
            checked: checked.clone(),
            reply,
        };
        commit(pool, vec![write]).await;
        answer.await.expect("answered").expect("no error")
    }

    #[tokio::test]
    async fn a_publish_whose_recipients_preferences_changed_since_they_were_read_stores_nothing() {
        let Some(pool) = super::super::test_pool().await else {
            return;
        };
        let preferences = super::super::PostgresPreferenceStore::new(pool.clone());
        let (alice, bob) = (format!("alice-{}", Uuid::new_v4()), format!("bob-{}", Uuid::new_v4()));
        preferences.put(&alice, &Default::default()).await.expect("put");
        let users = [alice.clone(), bob.clone()];
        let read = preferences.get_many(&users).await.expect("read");
        assert!(read.versions.0.iter().any(|(u, v)| u == &alice && v.is_some()));
        assert!(
            read.versions.0.iter().any(|(u, v)| u == &bob && v.is_none()),
            "none stored"
        );
        let stored = |user: String| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM notifications WHERE user_id = $1")
                    .bind(user)
                    .fetch_one(&pool)
                    .await
                    .expect("count")
            }
        };
        // Unchanged: stored, alone and in a transaction.
        for key in [None, Some("k1")] {
            let outcome = publish_checked(&pool, &alice, &read.versions, key).await;
            assert!(matches!(outcome, PublishOutcome::Created(..)), "{outcome:?}");
        }
        assert_eq!(stored(alice.clone()).await, 2);
        // Alice's changed (a write gives the row another version): nothing stored, no key kept.
        preferences.put(&alice, &Default::default()).await.expect("put again");
        for key in [None, Some("k2")] {
            let outcome = publish_checked(&pool, &bob, &read.versions, key).await;
            assert_eq!(outcome, PublishOutcome::PreferencesChanged, "{key:?}");
        }
        assert_eq!(stored(bob.clone()).await, 0);
        let fresh = preferences.get_many(&users).await.expect("read");
        let outcome = publish_checked(&pool, &bob, &fresh.versions, Some("k2")).await;
        assert!(
            matches!(outcome, PublishOutcome::Created(..)),
            "the key was not kept: {outcome:?}"
        );
        // Bob had none and now has some: changed too.
        preferences.put(&bob, &Default::default()).await.expect("put");
        let outcome = publish_checked(&pool, &bob, &fresh.versions, None).await;
        assert_eq!(outcome, PublishOutcome::PreferencesChanged);
        // Nothing to check: stored.
        let outcome = publish_checked(&pool, &bob, &PreferenceVersions::default(), None).await;
        assert!(matches!(outcome, PublishOutcome::Created(..)));
        // In one batch, only the publish whose recipient changed is refused: in one statement
        // (with an acknowledgement beside it) and in a transaction (publishes with keys).
        let now = preferences.get_many(&users).await.expect("read");
        preferences.put(&alice, &Default::default()).await.expect("put again");
        let only = |user: &str| PreferenceVersions(now.versions.0.iter().filter(|(u, _)| u == user).cloned().collect());
        for keyed in [false, true] {
            let mut answers = Vec::new();
            let mut writes = Vec::new();
            let publishes = [
                (&alice, only(&alice)),
                (&bob, only(&bob)),
                (&bob, PreferenceVersions::default()),
            ];
            for (user, checked) in publishes {
                let (reply, answer) = oneshot::channel();
                answers.push(answer);
                let idempotency = keyed.then(|| {
                    let key = IdempotencyKey {
                        publisher: "tests".into(),
                        key: Uuid::new_v4().to_string(),
                        request_hash: "h".into(),
                    };
                    (
                        key,
                        PublishReceipt {
                            created: Vec::new(),
                            skipped: Vec::new(),
                        },
                    )
                });
                writes.push(Write::Publish {
                    batch: vec![test_notification(Uuid::new_v4(), user)],
                    idempotency,
                    now: 1_000,
                    checked,
                    reply,
                });
            }
            writes.push(Write::Stamp {
                column: "delivered_at",
                user_id: bob.clone(),
                id: Uuid::new_v4(),
                at: 2_000,
                attempts: 1,
                reply: oneshot::channel().0,
            });
            commit(&pool, writes).await;
            let mut outcomes = Vec::new();
            for answer in answers {
                outcomes.push(answer.await.expect("answered").expect("no error"));
            }
            assert_eq!(outcomes[0], PublishOutcome::PreferencesChanged, "alice's changed");
            assert!(
                matches!(outcomes[1], PublishOutcome::Created(..)),
                "bob's did not: {:?}",
                outcomes[1]
            );
            assert!(matches!(outcomes[2], PublishOutcome::Created(..)), "nothing to check");
        }
    }

    #[tokio::test]
    async fn a_failing_batch_is_redone_one_write_at_a_time() {
        let Some(pool) = super::super::test_pool().await else {
            return;
        };
        let id = Uuid::new_v4();
        let (first, first_answer) = oneshot::channel();
        let (again, again_answer) = oneshot::channel();
        let (other, other_answer) = oneshot::channel();
        // The repeated id fails the batch's single insert; one by one, only it fails.
        commit(
            &pool,
            vec![publish(id, first), publish(id, again), publish(Uuid::new_v4(), other)],
        )
        .await;
        assert!(matches!(
            first_answer.await.expect("answered"),
            Ok(PublishOutcome::Created(..))
        ));
        assert!(again_answer.await.expect("answered").is_err(), "the duplicate fails");
        assert!(matches!(
            other_answer.await.expect("answered"),
            Ok(PublishOutcome::Created(..))
        ));
    }

    #[tokio::test]
    async fn concurrent_publishes_through_the_writer_each_get_their_own_seq() {
        let Some(pool) = super::super::test_pool().await else {
            return;
        };
        let writer = Writer::start(PostgresCommitter(pool.clone()), Default::default());
        let answers = futures_util::future::join_all((0..100).map(|_| {
            let writer = writer.clone();
            async move {
                writer
                    .publish(
                        &[test_notification(Uuid::new_v4(), "alice")],
                        None,
                        1_000,
                        &PreferenceVersions::default(),
                    )
                    .await
            }
        }))
        .await;
        let mut seqs: Vec<i64> = answers
            .into_iter()
            .map(|answer| match answer {
                Ok(PublishOutcome::Created(created, _)) => created[0].seq,
                other => panic!("expected created, got {other:?}"),
            })
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn stamps_keep_their_own_times_and_repeated_attempts_all_count() {
        let Some(pool) = super::super::test_pool().await else {
            return;
        };
        let store = super::super::PostgresNotificationStore::new(pool.clone());
        let commit = |writes| -> BoxFuture<'static, ()> {
            let committer = PostgresCommitter(pool.clone());
            Box::pin(async move {
                committer.commit(writes).await;
            })
        };
        crate::adapters::group_commit::stamps_keep_their_own_times_and_repeated_attempts_all_count(commit, &store)
            .await;
    }
}
