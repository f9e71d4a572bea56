//! The embedded store's group commit (`adapters::group_commit`), on a thread of its own with its own
//! connection (rusqlite, over the same SQLite library as sqlx). SQLite runs one write transaction at
//! a time and its calls are synchronous: through sqlx, every statement was a round trip to a
//! connection's worker thread (two thread wake-ups each, which cost more CPU than SQLite itself:
//! docs/benchmarks.md); here the thread takes a batch from the queue and runs it straight through.
//! A batch runs as: each publish (a few statements of many rows: each row's `seq` is computed in the
//! insert and recorded by a trigger), every attempt count in one statement, every stamp of a column
//! in one statement, the unread counts of every recipient in one query; one commit, flushed to disk
//! (`synchronous = FULL`) before any write is answered.
//!
//! Savepoints only where a write is several statements (a publish to more recipients than one
//! statement takes, or with an idempotency key): a single failing statement undoes itself in SQLite
//! and only its write fails.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params, params_from_iter};
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::adapters::group_commit::{
    Answer, BlockingCommitter, Publish, Sorted, Stamp, Write, answer_all, answer_attempts, answer_stamps,
};
use crate::adapters::sql::{stored_notification, unread_count};
use crate::app::metrics::Backend;
use crate::domain::UnixMs;
use crate::domain::publish::PublishReceipt;
use crate::error::{Error, Result};
use crate::ports::{IdempotencyKey, NewNotification, PublishOutcome, UnreadCounts};

/// How sqlx names an in-memory database (`sqlite::memory:`): shared-cache, so that the writer's
/// connection can open the same one.
const SQLX_IN_MEMORY: &str = "file:sqlx-in-memory-";
/// The writer connection's page cache: `PRAGMA cache_size` counts KiB when negative (16 MiB).
const WRITER_CACHE_SIZE: i64 = -16 * 1024;

/// The columns one notification binds in an insert statement.
const INSERT_COLUMNS: usize = 11;
/// Rows one insert statement takes at most. A publish's rows go in statements of powers of two
/// (100 recipients: 64, 32 and 4), so that a handful of statement shapes serve every publish from
/// the statement cache. One statement per row cost more than the rows: each statement's savepoint
/// was released by walking the in-memory undo log of its publish from the start (`perf`: a sixth of
/// the writer's time with 100-recipient publishes).
const MAX_ROWS_PER_INSERT: usize = 256;

/// The insert statement of `rows` notifications (a power of two up to [`MAX_ROWS_PER_INSERT`]),
/// each row's `seq` the next of its user. SQLite computes every row of such a statement before
/// inserting any (the table has a trigger), so a statement holds each user once
/// ([`insert_sizes`]); the trigger of migration 0003 records each `seq` as its user's last.
fn insert_statement(rows: usize) -> &'static str {
    static STATEMENTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (0..=MAX_ROWS_PER_INSERT.trailing_zeros())
            .map(|shift| {
                let values: Vec<String> = (0..1usize << shift)
                    .map(|row| {
                        let p = |column: usize| format!("?{}", row * INSERT_COLUMNS + column);
                        format!(
                            "({}, {}, COALESCE((SELECT last_seq FROM user_sequences WHERE user_id = {}), 0) + 1, {})",
                            p(1),
                            p(2),
                            p(2),
                            (3..=INSERT_COLUMNS).map(p).collect::<Vec<_>>().join(", ")
                        )
                    })
                    .collect();
                format!(
                    "INSERT INTO notifications
                         (id, user_id, seq, type, channel, title, body, icon, action_url, data, created_at, expires_at)
                     VALUES {} RETURNING id, seq",
                    values.join(", ")
                )
            })
            .collect()
    });
    &STATEMENTS[rows.trailing_zeros() as usize]
}

/// How many rows each insert statement of `batch` takes, in order: powers of two, largest first;
/// one row a statement if a user appears twice (each row of one statement reads its user's `seq`
/// from before the statement: see [`insert_statement`]).
fn insert_sizes(batch: &[NewNotification]) -> Vec<usize> {
    // Most publishes have one recipient: no set of users to build.
    if batch.len() == 1 {
        return vec![1];
    }
    let mut users = HashSet::with_capacity(batch.len());
    if !batch.iter().all(|n| users.insert(n.user_id.as_str())) {
        return vec![1; batch.len()];
    }
    let mut sizes = Vec::new();
    let mut left = batch.len();
    while left > 0 {
        let size = MAX_ROWS_PER_INSERT.min(1 << left.ilog2());
        sizes.push(size);
        left -= size;
    }
    sizes
}

/// Records an `Idempotency-Key`; returns no row when the key is already there.
const INSERT_IDEMPOTENCY_KEY: &str = "INSERT INTO idempotency_keys (publisher, key, request_hash, response, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (publisher, key) DO NOTHING RETURNING publisher";

fn backend(err: rusqlite::Error) -> Error {
    Error::Backend(err.to_string())
}

/// The writer's connection; [`Writer::start_on_thread`](crate::adapters::group_commit::Writer::start_on_thread)
/// moves it to the writer thread.
pub struct SqliteCommitter {
    conn: Connection,
    /// Whether the connection is at `synchronous = FULL` (else NORMAL), so the pragma is only
    /// issued when a batch needs the other one.
    flushing: bool,
}

impl SqliteCommitter {
    /// Opens a connection of its own to the database of `pool` (whose migrations have run).
    pub fn open(pool: &SqlitePool) -> Result<Self> {
        let options = pool.connect_options();
        let name = options
            .get_filename()
            .to_str()
            .ok_or_else(|| Error::Backend("the SQLite path is not UTF-8".into()))?
            .to_owned();
        let mut flags =
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if name.starts_with(SQLX_IN_MEMORY) {
            flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        }
        let conn = Connection::open_with_flags(&name, flags)
            .map_err(|e| Error::Backend(format!("cannot open SQLite database `{name}` for writing: {e}")))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
        // As the pool's connections: foreign keys on, and no checkpoint inside a commit (the pool
        // checkpoints beside the writes). FULL: a commit is on disk before it is answered (a batch of
        // only acknowledgements and attempt counts switches to NORMAL, see `commit`).
        conn.pragma_update(None, "foreign_keys", "ON").map_err(backend)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(backend)?;
        // A publish to several recipients runs in a savepoint, whose undo log (the statement
        // journal) went to a temporary file past 64 KiB: a third of this thread's time was its
        // writes (perf, 100-recipient publishes). In memory it is bounded by what one write of a
        // batch changes.
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(backend)?;
        // The pages a batch touches stay cached (16 MiB, SQLite's default is 2 MiB): a full cache
        // spills dirty pages to the WAL mid-transaction and reads them back.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_SIZE)
            .map_err(backend)?;
        // Insert statement shapes (`insert_statement`), stamp and count chunks: each prepared once.
        conn.set_prepared_statement_cache_capacity(128);
        Ok(Self { conn, flushing: true })
    }
}

impl BlockingCommitter for SqliteCommitter {
    const BACKEND: Backend = Backend::Sqlite;

    fn commit(&mut self, writes: Vec<Write>) -> bool {
        // In WAL mode, NORMAL skips the commit's fsync; WAL frames are appended in order, so the
        // next FULL commit (or the checkpoint) puts this batch on disk too.
        let flush = writes.iter().any(Write::needs_flush);
        if flush != self.flushing {
            let level = if flush { "FULL" } else { "NORMAL" };
            match self.conn.pragma_update(None, "synchronous", level) {
                Ok(()) => self.flushing = flush,
                // Still at NORMAL: nothing may be answered without its flush. Dropped, each write
                // is answered with an error by its sender.
                Err(err) if flush => {
                    tracing::error!(error = %err, "sqlite:synchronous-not-set");
                    return false;
                }
                // Still at FULL: slower, not wrong.
                Err(_) => {}
            }
        }
        let mut sorted = Sorted::of(writes);
        let groups = sorted.stamps_by_column();
        let rounds = sorted.attempt_rounds();
        // First the whole batch as one transaction that stands or falls whole: no savepoint for a
        // publish of several statements, no undo log for the stamps (docs/benchmarks.md). A write
        // that fails there (it should not: ids are new, rows validated) rolls it all back, and the
        // batch is applied again with each write standing or falling alone.
        let applied = self
            .in_transaction(|tx| apply(tx, &sorted.publishes, &rounds, &groups, Failing::Batch))
            .or_else(|err| {
                tracing::warn!(error = %err, writes = sorted.publishes.len() + groups.len(), "sqlite:batch-redone-write-by-write");
                self.in_transaction(|tx| apply(tx, &sorted.publishes, &rounds, &groups, Failing::Write))
            });
        let (applied, committed) = match applied {
            Ok(applied) => (applied, Ok(())),
            // Every write is answered with this error (`answer_all`), whatever `applied` says.
            Err(err) => (Applied::none(sorted.publishes.len(), groups.len()), Err(err)),
        };
        let mut answers = Vec::with_capacity(sorted.publishes.len() + sorted.attempts.len());
        for (write, outcome) in sorted.publishes.into_iter().zip(applied.published) {
            answers.push(Answer::Publish(write.reply, outcome));
        }
        answer_attempts(std::mem::take(&mut sorted.attempts), &applied.counted, &mut answers);
        for (group, stamped) in groups.into_iter().zip(applied.stamped) {
            answer_stamps(group, &stamped, &mut answers);
        }
        answer_all(answers, committed, "sqlite")
    }
}

impl SqliteCommitter {
    /// Runs `apply` in a transaction and commits it; rolled back (dropped) when `apply` fails.
    fn in_transaction<T>(&mut self, apply: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        // IMMEDIATE takes the write lock at once: no statement of the batch can then meet another
        // writer's lock and have SQLite roll the whole transaction back under it.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let applied = apply(&tx)?;
        tx.commit().map_err(backend)?;
        Ok(applied)
    }
}

/// What a failing statement of a batch undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failing {
    /// The whole batch: its first error is returned, and the caller rolls the transaction back.
    /// A publish of several statements then needs no savepoint, nor a stamp an undo log.
    Batch,
    /// Only its own write, which is answered with the error while the rest of the batch commits: a
    /// statement undoes itself, a publish of several statements has a savepoint.
    Write,
}

/// Each write's result in a batch applied by [`apply`], in the order of its writes.
struct Applied {
    published: Vec<Result<PublishOutcome>>,
    counted: Result<()>,
    stamped: Vec<Result<HashSet<(String, Uuid)>>>,
}

impl Applied {
    /// Results for a batch that was not applied (answered with the commit's error instead).
    fn none(publishes: usize, groups: usize) -> Self {
        let unapplied = || Error::Backend("not applied".into());
        Self {
            published: (0..publishes).map(|_| Err(unapplied())).collect(),
            counted: Err(unapplied()),
            stamped: (0..groups).map(|_| Err(unapplied())).collect(),
        }
    }
}

/// Applies a batch with as few statements as it takes: its publishes, its attempt counts in
/// `rounds`, its stamps in `groups`. With [`Failing::Batch`] the first failing statement fails it.
fn apply(
    conn: &Connection,
    publishes: &[Publish],
    rounds: &[Vec<Uuid>],
    groups: &[Vec<Stamp>],
    failing: Failing,
) -> Result<Applied> {
    let mut published = Vec::with_capacity(publishes.len());
    for write in publishes {
        let idempotency = write.idempotency.as_ref().map(|(key, receipt)| (key, receipt));
        let sizes = insert_sizes(&write.batch);
        // One statement stands or falls alone; a publish of several (statements of recipients, or
        // a key and its rows) stands or falls whole, under a savepoint.
        let several = sizes.len() > 1 || idempotency.is_some();
        let outcome = if several && failing == Failing::Write {
            match conn.execute_batch("SAVEPOINT publish").map_err(backend) {
                Err(err) => Err(err),
                Ok(()) => {
                    let outcome = publish(conn, &write.batch, &sizes, idempotency, write.now);
                    let closed = if outcome.is_ok() {
                        conn.execute_batch("RELEASE publish")
                    } else {
                        conn.execute_batch("ROLLBACK TO publish; RELEASE publish")
                    };
                    closed.map_err(backend).and(outcome)
                }
            }
        } else {
            publish(conn, &write.batch, &sizes, idempotency, write.now)
        };
        published.push(whole(outcome, failing)?);
    }
    add_unread_counts(conn, publishes, &mut published);
    let mut counted = Ok(());
    for round in rounds {
        counted = counted.and(record_attempt(conn, round));
    }
    let counted = whole(counted, failing)?;
    let mut stamped = Vec::with_capacity(groups.len());
    for group in groups {
        stamped.push(whole(stamp_all(conn, group[0].column, group, failing), failing)?);
    }
    Ok(Applied {
        published,
        counted,
        stamped,
    })
}

/// A write's result: kept as it is when a write fails alone, the batch's error otherwise.
fn whole<T>(result: Result<T>, failing: Failing) -> Result<Result<T>> {
    match (result, failing) {
        (Err(err), Failing::Batch) => Err(err),
        (result, _) => Ok(result),
    }
}

/// One publish's statements, inside the writer's transaction: the idempotency record (a repeated key
/// answers the first receipt and writes nothing), then its notifications in statements of `sizes`
/// rows ([`insert_sizes`]), each with the next `seq` of its user.
fn publish(
    conn: &Connection,
    batch: &[NewNotification],
    sizes: &[usize],
    idempotency: Option<(&IdempotencyKey, &PublishReceipt)>,
    now: UnixMs,
) -> Result<PublishOutcome> {
    if let Some((key, receipt)) = idempotency {
        if let Some(repeated) = record_idempotency_key(conn, key, receipt, now)? {
            return Ok(repeated);
        }
    }
    let mut seqs = HashMap::with_capacity(batch.len());
    let mut rest = batch;
    for &size in sizes {
        let (rows, after) = rest.split_at(size);
        insert_rows(conn, rows, &mut seqs)?;
        rest = after;
    }
    let created = batch
        .iter()
        .map(|n| {
            let seq = seqs
                .get(&n.id.to_string())
                .copied()
                .ok_or_else(|| Error::Backend(format!("the insert returned no seq for {}", n.id)))?;
            Ok(stored_notification(n, seq))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PublishOutcome::Created(created, UnreadCounts::new()))
}

/// Inserts `rows` (as many as one statement shape takes) in one statement; adds each one's `seq` to
/// `seqs`, keyed by id (a statement's `RETURNING` order is not promised).
fn insert_rows(conn: &Connection, rows: &[NewNotification], seqs: &mut HashMap<String, i64>) -> Result<()> {
    let mut insert = conn.prepare_cached(insert_statement(rows.len())).map_err(backend)?;
    for (row, n) in rows.iter().enumerate() {
        // As sqlx's `Json` writes it: the JSON text.
        let data = n
            .data
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::Backend(e.to_string()))?;
        let at = row * INSERT_COLUMNS;
        let values: [&dyn rusqlite::ToSql; INSERT_COLUMNS] = [
            &n.id.to_string(),
            &n.user_id,
            &n.kind.as_str(),
            &n.channel,
            &n.title,
            &n.body,
            &n.icon,
            &n.action_url,
            &data,
            &n.created_at,
            &n.expires_at,
        ];
        for (column, value) in values.into_iter().enumerate() {
            insert.raw_bind_parameter(at + column + 1, value).map_err(backend)?;
        }
    }
    let mut returned = insert.raw_query();
    while let Some(row) = returned.next().map_err(backend)? {
        seqs.insert(row.get(0).map_err(backend)?, row.get(1).map_err(backend)?);
    }
    Ok(())
}

/// Records a publish's `Idempotency-Key` with the receipt to replay. `None` when the key is new: the
/// publish goes on. Otherwise the key's first receipt for the same request, or a refusal for
/// another request; the caller rolls back.
fn record_idempotency_key(
    conn: &Connection,
    key: &IdempotencyKey,
    receipt: &PublishReceipt,
    now: UnixMs,
) -> Result<Option<PublishOutcome>> {
    let response = serde_json::to_string(receipt).map_err(|e| Error::Backend(e.to_string()))?;
    let recorded: Option<String> = conn
        .prepare_cached(INSERT_IDEMPOTENCY_KEY)
        .and_then(|mut insert| {
            insert
                .query_row(
                    params![
                        key.publisher.as_str(),
                        key.key.as_str(),
                        key.request_hash.as_str(),
                        response,
                        now
                    ],
                    |row| row.get(0),
                )
                .optional()
        })
        .map_err(backend)?;
    if recorded.is_some() {
        return Ok(None);
    }
    let (hash, first): (String, String) = conn
        .query_row(
            "SELECT request_hash, response FROM idempotency_keys WHERE publisher = ?1 AND key = ?2",
            params![key.publisher.as_str(), key.key.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(backend)?;
    Ok(Some(if hash == key.request_hash {
        let first = serde_json::from_str(&first).map_err(|e| Error::Backend(format!("stored receipt: {e}")))?;
        PublishOutcome::Replayed(first)
    } else {
        PublishOutcome::KeyReused
    }))
}

/// `n` comma-separated `?`.
fn placeholders(n: usize) -> String {
    let mut list = "?, ".repeat(n);
    list.truncate(list.len().saturating_sub(2));
    list
}

/// The unread counts of `users` at `now` with their versions, in one statement (read inside the
/// batch's transaction, so they include what the batch wrote).
/// The unread notifications of user `s.user_id` past their expiry (bound first: now), which the
/// kept count `user_sequences.unread` still includes (migration 0006).
pub(super) const EXPIRED_UNREAD: &str = "SELECT COUNT(*) FROM notifications n
     WHERE n.user_id = s.user_id AND n.read_at IS NULL AND n.expires_at IS NOT NULL AND n.expires_at <= ?";

fn unread_counts(conn: &Connection, users: &[String], now: UnixMs) -> Result<UnreadCounts> {
    let mut counts = UnreadCounts::new();
    for chunk in users.chunks(500) {
        let sql = format!(
            "SELECT s.user_id, s.last_seq + s.unread_removals, s.unread - ({EXPIRED_UNREAD})
             FROM user_sequences s WHERE s.user_id IN ({})",
            placeholders(chunk.len())
        );
        let mut query = conn.prepare_cached(&sql).map_err(backend)?;
        let values = std::iter::once(Value::Integer(now)).chain(chunk.iter().map(|user| Value::Text(user.clone())));
        let rows = query
            .query_map(params_from_iter(values), |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            })
            .map_err(backend)?;
        for row in rows {
            let (user, version, n) = row.map_err(backend)?;
            counts.insert(user, unread_count(n, version));
        }
    }
    Ok(counts)
}

/// Fills the unread counts of every publish that stored something, from one query for the batch.
/// Without them (the query failed) the fan-out counts for itself.
fn add_unread_counts(conn: &Connection, publishes: &[Publish], published: &mut [Result<PublishOutcome>]) {
    let mut users: Vec<String> = published
        .iter()
        .filter_map(|outcome| match outcome {
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
    let now = publishes.iter().map(|write| write.now).max().unwrap_or_default();
    let Ok(counts) = unread_counts(conn, &users, now) else {
        return;
    };
    for outcome in published.iter_mut() {
        if let Ok(PublishOutcome::Created(created, unread)) = outcome {
            for n in created.iter() {
                let count = counts.get(&n.user_id).copied().unwrap_or_default();
                unread.insert(n.user_id.clone(), count);
            }
        }
    }
}

/// Sets `column` on every stamped notification that has none yet (first time wins) to its own
/// stamp's time, adds each stamp's attempts (rounds riding on an acknowledgement) to the count, and
/// returns which `(user, id)` pairs exist: a stamp of another user's notification finds nothing.
/// In a batch that fails whole it is `UPDATE OR FAIL`: a statement that may abort halfway keeps an
/// undo log of every page it changes (`perf`: 4 % of the writer's time), one whose failure rolls
/// the transaction back needs none.
fn stamp_all(
    conn: &Connection,
    column: &'static str,
    stamps: &[Stamp],
    failing: Failing,
) -> Result<HashSet<(String, Uuid)>> {
    let verb = match failing {
        Failing::Batch => "UPDATE OR FAIL",
        Failing::Write => "UPDATE",
    };
    let mut found = HashSet::new();
    // Seven parameters a stamp: well under SQLite's oldest limit of 999 per statement.
    for chunk in stamps.chunks(120) {
        let cases = " WHEN ? THEN ?".repeat(chunk.len());
        let pairs = vec!["(?, ?)"; chunk.len()].join(", ");
        // Each row gets its own stamp's time and attempts; `id IN` finds the rows by primary key;
        // the pairs keep each user to their own.
        let sql = format!(
            "{verb} notifications SET {column} = COALESCE({column}, CASE id{cases} END),
                 attempts = attempts + CASE id{cases} END
             WHERE id IN ({}) AND (user_id, id) IN (VALUES {pairs}) RETURNING user_id, id",
            placeholders(chunk.len())
        );
        let mut values = Vec::with_capacity(chunk.len() * 7);
        values.extend(
            chunk
                .iter()
                .flat_map(|stamp| [Value::Text(stamp.id.to_string()), Value::Integer(stamp.at)]),
        );
        values.extend(chunk.iter().flat_map(|stamp| {
            [
                Value::Text(stamp.id.to_string()),
                Value::Integer(i64::from(stamp.attempts)),
            ]
        }));
        values.extend(chunk.iter().map(|stamp| Value::Text(stamp.id.to_string())));
        values.extend(
            chunk
                .iter()
                .flat_map(|stamp| [Value::Text(stamp.user_id.clone()), Value::Text(stamp.id.to_string())]),
        );
        let mut update = conn.prepare_cached(&sql).map_err(backend)?;
        let rows = update
            .query_map(params_from_iter(values), |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(backend)?;
        for row in rows {
            let (user, id) = row.map_err(backend)?;
            if let Ok(id) = Uuid::parse_str(&id) {
                found.insert((user, id));
            }
        }
    }
    Ok(found)
}

fn record_attempt(conn: &Connection, ids: &[Uuid]) -> Result<()> {
    for chunk in ids.chunks(500) {
        let sql = format!(
            "UPDATE notifications SET attempts = attempts + 1 WHERE id IN ({})",
            placeholders(chunk.len())
        );
        conn.prepare_cached(&sql)
            .and_then(|mut update| update.execute(params_from_iter(chunk.iter().map(Uuid::to_string))))
            .map_err(backend)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures_util::future::BoxFuture;
    use tokio::sync::oneshot;

    use super::*;
    use crate::adapters::group_commit::{Writer, test_notification};
    use crate::ports::PreferenceVersions;
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
            checked: PreferenceVersions::default(),
            reply,
        };
        let stamp = |user_id: &str, reply| Write::Stamp {
            column: "delivered_at",
            user_id: user_id.into(),
            id,
            at: 2_000,
            attempts: 0,
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
        SqliteCommitter::open(&pool).expect("writer").commit(writes);
        assert!(matches!(
            first_answer.await.expect("answered"),
            Ok(PublishOutcome::Created(created, unread)) if created.len() == 1 && created[0].seq == 1
                && unread.get("alice").map(|c| c.count) == Some(1)
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
    async fn a_lone_publish_waits_for_company_only_briefly() {
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        let writer = Writer::start_on_thread(
            "test-writer",
            SqliteCommitter::open(&pool).expect("writer"),
            Default::default(),
        )
        .expect("thread");
        // Nothing else comes: the gathering window passes and the publish commits alone.
        let published = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            writer.publish(
                &[test_notification(Uuid::new_v4(), "alice")],
                None,
                1_000,
                &PreferenceVersions::default(),
            ),
        )
        .await
        .expect("answered well within a second");
        assert!(published.is_ok());
    }

    #[tokio::test]
    async fn concurrent_writes_through_the_writer_are_all_answered() {
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        let writer = Writer::start_on_thread(
            "test-writer",
            SqliteCommitter::open(&pool).expect("writer"),
            Default::default(),
        )
        .expect("thread");
        let answers = futures_util::future::join_all((0..200).map(|_| {
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
        // Two recipients (one statement), and 65 (two statements: the failing row is in the second).
        for recipients in [2, MAX_ROWS_PER_INSERT / 4 + 1] {
            let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
            let taken = Uuid::new_v4();
            let (first, first_answer) = oneshot::channel();
            let (several, several_answer) = oneshot::channel();
            // The last row repeats an id, so the rows before it must not stay.
            let mut batch: Vec<_> = (1..recipients)
                .map(|i| test_notification(Uuid::new_v4(), &format!("bob{i}")))
                .collect();
            batch.push(test_notification(taken, "carol"));
            SqliteCommitter::open(&pool).expect("writer").commit(vec![
                Write::Publish {
                    batch: vec![test_notification(taken, "alice")],
                    idempotency: None,
                    now: 1_000,
                    checked: PreferenceVersions::default(),
                    reply: first,
                },
                Write::Publish {
                    batch,
                    idempotency: None,
                    now: 1_000,
                    checked: PreferenceVersions::default(),
                    reply: several,
                },
            ]);
            assert!(first_answer.await.expect("answered").is_ok());
            assert!(several_answer.await.expect("answered").is_err(), "{recipients}");
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
                .fetch_one(&pool)
                .await
                .expect("count");
            assert_eq!(rows, 1, "the bobs' rows went with the failed publish of {recipients}");
            let bobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_sequences WHERE user_id LIKE 'bob%'")
                .fetch_one(&pool)
                .await
                .expect("sequences");
            assert_eq!(bobs, 0, "and so did their sequences");
        }
    }

    #[test]
    fn a_publish_goes_in_statements_of_powers_of_two_each_user_once_in_a_statement() {
        let batch = |users: &[&str]| -> Vec<NewNotification> {
            users
                .iter()
                .map(|user| test_notification(Uuid::new_v4(), user))
                .collect()
        };
        let users = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();
        let sizes = |n: usize| insert_sizes(&batch(&users(n).iter().map(String::as_str).collect::<Vec<_>>()));
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(100), [64, 32, 4]);
        assert_eq!(sizes(1_000), [256, 256, 256, 128, 64, 32, 8]);
        assert_eq!(insert_sizes(&batch(&["alice", "bob", "alice"])), [1, 1, 1]);
        for size in sizes(1_000) {
            let rows = insert_statement(size).matches("COALESCE").count();
            assert_eq!(rows, size, "the statement for {size} rows");
        }
    }

    #[tokio::test]
    async fn each_recipient_of_a_large_publish_gets_its_own_users_next_seq() {
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        let mut committer = SqliteCommitter::open(&pool).expect("writer");
        let publish = |batch: Vec<NewNotification>| {
            let (reply, answer) = oneshot::channel();
            let write = Write::Publish {
                batch,
                idempotency: None,
                now: 1_000,
                checked: PreferenceVersions::default(),
                reply,
            };
            (write, answer)
        };
        let (before, _) = publish(vec![test_notification(Uuid::new_v4(), "u7")]);
        // The most recipients a publish may have (several statements), then one that names a user
        // twice (the store does not rely on the request's deduplication).
        let recipients = crate::domain::publish::MAX_RECIPIENTS;
        let large: Vec<_> = (0..recipients)
            .map(|i| test_notification(Uuid::new_v4(), &format!("u{i}")))
            .collect();
        let ids: Vec<Uuid> = large.iter().map(|n| n.id).collect();
        let (large, large_answer) = publish(large);
        let (twice, twice_answer) = publish(vec![
            test_notification(Uuid::new_v4(), "u7"),
            test_notification(Uuid::new_v4(), "u7"),
        ]);
        assert!(committer.commit(vec![before, large, twice]));
        let Ok(PublishOutcome::Created(created, unread)) = large_answer.await.expect("answered") else {
            panic!("the large publish is stored");
        };
        assert_eq!(created.iter().map(|n| n.id).collect::<Vec<_>>(), ids, "in order");
        for (i, n) in created.iter().enumerate() {
            assert_eq!(n.user_id, format!("u{i}"));
            assert_eq!(n.seq, if i == 7 { 2 } else { 1 }, "{}", n.user_id);
        }
        assert_eq!(
            unread.get("u7").map(|c| c.count),
            Some(4),
            "counted after the whole batch"
        );
        let Ok(PublishOutcome::Created(created, _)) = twice_answer.await.expect("answered") else {
            panic!("the publish naming a user twice is stored");
        };
        assert_eq!(created.iter().map(|n| n.seq).collect::<Vec<_>>(), [3, 4]);
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(stored, recipients as i64 + 3);
    }

    #[tokio::test]
    async fn stamps_keep_their_own_times_and_repeated_attempts_all_count() {
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        let store = super::super::SqliteNotificationStore::new(pool.clone()).expect("store");
        let mut committer = SqliteCommitter::open(&pool).expect("writer");
        let commit = |writes| -> BoxFuture<'static, ()> {
            committer.commit(writes);
            Box::pin(async {})
        };
        crate::adapters::group_commit::stamps_keep_their_own_times_and_repeated_attempts_all_count(commit, &store)
            .await;
    }

    #[tokio::test]
    async fn only_batches_with_a_publish_or_a_read_mark_wait_for_the_disk() {
        let pool = super::super::connect("sqlite::memory:").await.expect("sqlite");
        let mut committer = SqliteCommitter::open(&pool).expect("writer");
        let id = Uuid::new_v4();
        let stamp = |column| {
            let (reply, _) = oneshot::channel();
            Write::Stamp {
                column,
                user_id: "alice".into(),
                id,
                at: 2_000,
                attempts: 0,
                reply,
            }
        };
        let mut commit_and_read_level = |write: Write| {
            committer.commit(vec![write]);
            committer
                .conn
                .pragma_query_value(None, "synchronous", |row| row.get::<_, i64>(0))
                .expect("synchronous")
        };
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;
        assert_eq!(
            commit_and_read_level(stamp("delivered_at")),
            NORMAL,
            "an acknowledgement"
        );
        let (reply, _) = oneshot::channel();
        let publish = Write::Publish {
            batch: vec![test_notification(id, "alice")],
            idempotency: None,
            now: 1_000,
            checked: PreferenceVersions::default(),
            reply,
        };
        assert_eq!(commit_and_read_level(publish), FULL, "a publish");
        let (reply, _) = oneshot::channel();
        let attempt = Write::RecordAttempt { ids: vec![id], reply };
        assert_eq!(commit_and_read_level(attempt), NORMAL, "an attempt count");
        assert_eq!(commit_and_read_level(stamp("read_at")), FULL, "a read mark");
    }

    #[tokio::test]
    async fn the_writer_keeps_its_undo_log_and_its_pages_in_memory() {
        let dir = std::env::temp_dir().join(format!("herald-writer-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let url = format!("sqlite://{}", dir.join("herald.db").display());
        let pool = super::super::connect(&url).await.expect("sqlite");
        let committer = SqliteCommitter::open(&pool).expect("writer");
        let read = |pragma: &str| {
            committer
                .conn
                .pragma_query_value(None, pragma, |row| row.get::<_, i64>(0))
                .expect(pragma)
        };
        const MEMORY: i64 = 2;
        assert_eq!(read("temp_store"), MEMORY, "savepoints' statement journals");
        assert_eq!(read("cache_size"), WRITER_CACHE_SIZE);
        drop(committer);
        pool.close().await;
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
