//! Group commit, shared by the SQL stores: the hot writes of a replica (publishes, acknowledgements,
//! attempt counts) go to one writer task, which takes everything waiting (up to [`MAX_BATCH_ROWS`]),
//! applies it in one transaction with as few statements as it can (the store's [`Committer`]),
//! commits once and only then answers every write. Durability is unchanged (nothing is answered
//! before its commit); the commit's flush to disk and the round trips are shared by the batch.
//!
//! A store whose driver is synchronous (SQLite) runs its [`BlockingCommitter`] on a thread of its
//! own instead ([`Writer::start_on_thread`]): the thread takes the batch straight from the queue and
//! answers each write itself, so a batch costs one thread wake-up, not two per statement.

use std::collections::HashSet;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::app::metrics::{Backend, BackendMetrics};
use crate::domain::UnixMs;
use crate::domain::publish::PublishReceipt;
use crate::error::{Error, Result};
use crate::ports::{IdempotencyKey, NewNotification, PreferenceVersions, PublishOutcome};

/// Rows a batch takes at most (notifications inserted, stamped or counted; the write that crosses
/// the bound is still taken, so a batch holds less than this plus one publish's recipients). It
/// bounds how long one commit keeps the others waiting. Counted in rows, not writes: a batch of 512
/// writes (the bound before) was mostly acknowledgements under load, and each commit wrote every
/// page it touched to the WAL again (one index page per recipient of a publish): with larger
/// batches a busy writer writes each page once for several rows (docs/benchmarks.md).
pub const MAX_BATCH_ROWS: usize = 8_192;
/// Writes waiting for the writer at most; past it senders wait (back-pressure, not memory growth).
const QUEUE: usize = 4_096;

/// How a store applies and commits one batch, answering every write of it (through [`Answer`]);
/// resolves to whether the batch committed.
pub trait Committer: Send + Sync + 'static {
    /// Which backend commits: the label of the batches' latency and failures in `/metrics`.
    const BACKEND: Backend;
    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, bool>;
}

/// A write, and where its result goes once the batch holding it has committed.
pub enum Write {
    Publish {
        batch: Vec<NewNotification>,
        idempotency: Option<(IdempotencyKey, PublishReceipt)>,
        now: UnixMs,
        /// The recipients' preference versions to check at the commit (empty: none).
        checked: PreferenceVersions,
        reply: oneshot::Sender<Result<PublishOutcome>>,
    },
    /// Sets the timestamp `column` unless already set, and adds `attempts` to the notification's
    /// attempt count (delivery rounds not recorded yet, riding on the acknowledgement: one row
    /// update instead of two); `true` when the user has such a notification.
    Stamp {
        column: &'static str,
        user_id: String,
        id: Uuid,
        at: UnixMs,
        attempts: u32,
        reply: oneshot::Sender<Result<bool>>,
    },
    RecordAttempt {
        ids: Vec<Uuid>,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// How a store with a synchronous driver applies and commits one batch, on the writer's thread;
/// returns whether the batch committed.
pub trait BlockingCommitter: Send + 'static {
    /// Which backend commits (see [`Committer::BACKEND`]).
    const BACKEND: Backend;
    fn commit(&mut self, writes: Vec<Write>) -> bool;
}

impl Write {
    /// How many rows the write inserts or updates (at least one): what [`MAX_BATCH_ROWS`] counts.
    pub fn rows(&self) -> usize {
        match self {
            Write::Publish { batch, .. } => batch.len().max(1),
            Write::Stamp { .. } => 1,
            Write::RecordAttempt { ids, .. } => ids.len().max(1),
        }
    }

    /// Whether the write must be on disk before it is answered. An acknowledgement (`delivered_at`)
    /// or an attempt count may ride on a later flush (the next publish's, or the store's own): lost
    /// to a power failure, it only means a replay that the client dedupes. A batch of only such
    /// writes commits without waiting for the disk.
    pub fn needs_flush(&self) -> bool {
        match self {
            Write::Publish { .. } => true,
            Write::Stamp { column, .. } => Stamp::column_needs_flush(column),
            Write::RecordAttempt { .. } => false,
        }
    }
}

/// The sending side; cheap to clone. The task ends when every sender is gone.
#[derive(Debug, Clone)]
pub struct Writer {
    sender: mpsc::Sender<Write>,
}

impl Writer {
    /// Starts the writer task (needs a Tokio runtime); it ends when every `Writer` is dropped. Each
    /// batch's commit is timed into `metrics`.
    pub fn start<C: Committer>(committer: C, metrics: BackendMetrics) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        metrics.declare(C::BACKEND, "commit");
        tokio::spawn(run(committer, receiver, metrics));
        Self { sender }
    }

    /// Starts a thread named `name` that commits with `committer`; it ends when every `Writer` is
    /// dropped. Each batch's commit is timed into `metrics`.
    pub fn start_on_thread<C: BlockingCommitter>(name: &str, committer: C, metrics: BackendMetrics) -> Result<Self> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        metrics.declare(C::BACKEND, "commit");
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run_blocking(committer, receiver, metrics))
            .map_err(|e| Error::Backend(format!("cannot start the store's writer thread: {e}")))?;
        Ok(Self { sender })
    }

    /// Sends the write built around `reply` and waits for its committed result.
    pub async fn write<T>(&self, write: impl FnOnce(oneshot::Sender<Result<T>>) -> Write) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(write(reply))
            .await
            .map_err(|_| Error::Backend("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Backend("the store's writer dropped a write".into()))?
    }

    pub async fn publish(
        &self,
        batch: &[NewNotification],
        idempotency: Option<(&IdempotencyKey, &PublishReceipt)>,
        now: UnixMs,
        checked: &PreferenceVersions,
    ) -> Result<PublishOutcome> {
        self.write(|reply| Write::Publish {
            batch: batch.to_vec(),
            idempotency: idempotency.map(|(key, receipt)| (key.clone(), receipt.clone())),
            now,
            checked: checked.clone(),
            reply,
        })
        .await
    }

    /// Sets the timestamp `column` of one of `user_id`'s notifications unless already set (reads and
    /// acknowledgements keep their first time) and adds `attempts` to its attempt count; `false`
    /// when the user has no such notification.
    pub async fn stamp(
        &self,
        column: &'static str,
        user_id: &str,
        id: Uuid,
        at: UnixMs,
        attempts: u32,
    ) -> Result<bool> {
        self.write(|reply| Write::Stamp {
            column,
            user_id: user_id.to_owned(),
            id,
            at,
            attempts,
            reply,
        })
        .await
    }

    pub async fn record_attempt(&self, ids: &[Uuid]) -> Result<()> {
        self.write(|reply| Write::RecordAttempt {
            ids: ids.to_vec(),
            reply,
        })
        .await
    }
}

/// The writer task: waits for a write, takes whatever else is waiting, commits. A batch that need
/// not be flushed waits up to [`DEFER_UNFLUSHED`] for company first (see [`gather`]); a small one
/// that must be flushed waits [`GATHER`], which Tokio's timer rounds up to its next millisecond.
/// At 2,000 single-recipient publishes/s in cluster mode a replica then committed 3,700-4,300
/// times instead of 7,700-11,500, PostgreSQL spent a quarter to a half less CPU, the gateway a tenth
/// less, and the tail of delivery fell by about 40 %, for 1-2 ms more at the median
/// (docs/benchmarks.md).
async fn run<C: Committer>(committer: C, mut receiver: mpsc::Receiver<Write>, metrics: BackendMetrics) {
    while let Some(first) = receiver.recv().await {
        let mut batch = gather(first, &mut receiver).await;
        if batch.wants_company() {
            tokio::time::sleep(GATHER).await;
            batch.take_waiting(&mut receiver);
        }
        let started = std::time::Instant::now();
        let committed = committer.commit(batch.writes).await;
        metrics.observe(C::BACKEND, "commit", started.elapsed(), committed);
    }
}

/// A small batch that must be flushed waits this long for company before it commits: each commit
/// of the embedded store costs an `fsync`, and at a steady 2,000 publishes/s this gathering cut CPU
/// per notification by a fifth (0.34-0.36 -> 0.28-0.29 ms, alternating runs) for about 0.4 ms of
/// median latency. Larger batches (a busy replica) commit at once. The PostgreSQL writer waits too
/// (see [`run`]).
const GATHER: std::time::Duration = std::time::Duration::from_micros(300);
/// Batches of at least this many writes do not wait (see [`GATHER`]).
const GATHER_BELOW: usize = 8;
/// A batch of writes that need no flush (acknowledgements, attempt counts) waits this long for one
/// that does, and rides on its commit, or for company: a commit of its own cost the embedded
/// writer as much as a publish's but the `fsync` (the WAL frames of the pages it touched, the locks,
/// switching `synchronous` and back), and PostgreSQL a transaction per batch (a cluster replica
/// that only delivers committed its acknowledgements 880 times a second at 2,000/s). Nobody waits
/// for these writes but a client acknowledging what another connection was sent; lost to a crash,
/// they only mean a replay the client dedupes.
pub const DEFER_UNFLUSHED: std::time::Duration = std::time::Duration::from_millis(10);

/// A batch being gathered: its writes, the rows they count ([`Write::rows`]) and whether one of
/// them must be flushed.
struct Gathering {
    writes: Vec<Write>,
    rows: usize,
    flush: bool,
}

impl Gathering {
    fn new(first: Write, waiting: usize) -> Self {
        let mut gathering = Self {
            writes: Vec::with_capacity((waiting + 1).min(MAX_BATCH_ROWS)),
            rows: 0,
            flush: false,
        };
        gathering.push(first);
        gathering
    }

    fn push(&mut self, write: Write) {
        self.rows += write.rows();
        self.flush |= write.needs_flush();
        self.writes.push(write);
    }

    fn full(&self) -> bool {
        self.rows >= MAX_BATCH_ROWS
    }

    /// Whether the batch must be flushed yet is small: it waits [`GATHER`] for company first.
    fn wants_company(&self) -> bool {
        self.flush && self.writes.len() < GATHER_BELOW
    }

    /// Takes what is waiting until the batch is full.
    fn take_waiting(&mut self, receiver: &mut mpsc::Receiver<Write>) {
        while !self.full() {
            match receiver.try_recv() {
                Ok(write) => self.push(write),
                Err(_) => break,
            }
        }
    }
}

/// The batch that starts with `first`: whatever else is waiting and, when none of it must be
/// flushed, what comes within [`DEFER_UNFLUSHED`] until a write that must be flushed arrives or the
/// batch is full. Its `flush` says whether something in it must be flushed.
async fn gather(first: Write, receiver: &mut mpsc::Receiver<Write>) -> Gathering {
    let mut batch = Gathering::new(first, receiver.len());
    batch.take_waiting(receiver);
    if !batch.flush {
        let deadline = tokio::time::Instant::now() + DEFER_UNFLUSHED;
        while !batch.flush && !batch.full() {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(write)) => {
                    batch.push(write);
                    batch.take_waiting(receiver);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
    batch
}

/// The writer thread: sleeps until a write comes, takes whatever else is waiting, commits. A batch
/// that must be flushed waits up to [`GATHER`] for more when small; one that need not waits up to
/// [`DEFER_UNFLUSHED`] for one that must. Its own current-thread runtime only times the waits; the
/// commits block it, which is what the thread is for.
fn run_blocking<C: BlockingCommitter>(mut committer: C, mut receiver: mpsc::Receiver<Write>, metrics: BackendMetrics) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            // Every sender then sees the writer gone and answers its callers with an error.
            tracing::error!(error = %err, "store:writer-not-started");
            return;
        }
    };
    runtime.block_on(async move {
        while let Some(first) = receiver.recv().await {
            let mut batch = gather(first, &mut receiver).await;
            if batch.wants_company() {
                // A thread sleep: Tokio's timers count whole milliseconds.
                std::thread::sleep(GATHER);
                batch.take_waiting(&mut receiver);
            }
            let started = std::time::Instant::now();
            let committed = committer.commit(batch.writes);
            metrics.observe(C::BACKEND, "commit", started.elapsed(), committed);
        }
    });
}

/// A batch's writes sorted by kind, each kept with its reply.
#[derive(Default)]
pub struct Sorted {
    pub publishes: Vec<Publish>,
    pub stamps: Vec<Stamp>,
    pub attempts: Vec<(Vec<Uuid>, oneshot::Sender<Result<()>>)>,
}

pub struct Publish {
    pub batch: Vec<NewNotification>,
    pub idempotency: Option<(IdempotencyKey, PublishReceipt)>,
    pub now: UnixMs,
    pub checked: PreferenceVersions,
    pub reply: oneshot::Sender<Result<PublishOutcome>>,
}

/// A timestamp to set once on one of a user's notifications.
pub struct Stamp {
    pub column: &'static str,
    pub user_id: String,
    pub id: Uuid,
    pub at: UnixMs,
    /// Delivery rounds to add to the attempt count (see [`Write::Stamp`]).
    pub attempts: u32,
    pub reply: oneshot::Sender<Result<bool>>,
}

impl Stamp {
    /// Whether a stamp of `column` must be on disk before it is answered: a read mark must, an
    /// acknowledgement need not ([`Write::needs_flush`]).
    fn column_needs_flush(column: &str) -> bool {
        column != ACKNOWLEDGED
    }

    pub fn needs_flush(&self) -> bool {
        Self::column_needs_flush(self.column)
    }
}

impl Sorted {
    pub fn of(writes: Vec<Write>) -> Self {
        let mut sorted = Sorted::default();
        for write in writes {
            match write {
                Write::Publish {
                    batch,
                    idempotency,
                    now,
                    checked,
                    reply,
                } => sorted.publishes.push(Publish {
                    batch,
                    idempotency,
                    now,
                    checked,
                    reply,
                }),
                Write::Stamp {
                    column,
                    user_id,
                    id,
                    at,
                    attempts,
                    reply,
                } => sorted.stamps.push(Stamp {
                    column,
                    user_id,
                    id,
                    at,
                    attempts,
                    reply,
                }),
                Write::RecordAttempt { ids, reply } => sorted.attempts.push((ids, reply)),
            }
        }
        sorted
    }

    /// The attempt-counted ids in rounds of distinct ids: an id counted twice in the batch is in
    /// the first two rounds, so one `attempts + 1` statement per round counts it twice. Usually one
    /// round.
    pub fn attempt_rounds(&self) -> Vec<Vec<Uuid>> {
        let mut counts: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
        for id in self.attempts.iter().flat_map(|(ids, _)| ids.iter()) {
            *counts.entry(*id).or_default() += 1;
        }
        let rounds = counts.values().copied().max().unwrap_or(0);
        (1..=rounds)
            .map(|round| counts.iter().filter(|(_, n)| **n >= round).map(|(id, _)| *id).collect())
            .collect()
    }

    /// The stamps grouped by column, each notification at most once in a group: a statement
    /// updates a row once, whichever of two stamps for it wins, so a second stamp of one
    /// notification (a repeated acknowledgement, with the attempts riding on it) goes in a group of
    /// its own, applied after the first.
    pub fn stamps_by_column(&mut self) -> Vec<Vec<Stamp>> {
        // Each group with the notifications it stamps.
        type Keyed = (Vec<Stamp>, HashSet<(String, Uuid)>);
        let mut groups: Vec<Keyed> = Vec::new();
        for stamp in std::mem::take(&mut self.stamps) {
            let key = (stamp.user_id.clone(), stamp.id);
            match groups
                .iter_mut()
                .find(|(group, keys)| group[0].column == stamp.column && !keys.contains(&key))
            {
                Some((group, keys)) => {
                    keys.insert(key);
                    group.push(stamp);
                }
                None => groups.push((vec![stamp], HashSet::from([key]))),
            }
        }
        groups.into_iter().map(|(group, _)| group).collect()
    }
}

/// The column an acknowledgement stamps.
pub const ACKNOWLEDGED: &str = "delivered_at";

/// A result waiting for its batch's commit.
pub enum Answer {
    Publish(oneshot::Sender<Result<PublishOutcome>>, Result<PublishOutcome>),
    Stamp(oneshot::Sender<Result<bool>>, Result<bool>),
    RecordAttempt(oneshot::Sender<Result<()>>, Result<()>),
}

impl Answer {
    /// The batch did not commit because of `cause`: every write of it failed, the same way (a
    /// database out of reach stays "unavailable", 503 with a retry, not an internal error).
    pub fn failed(self, cause: &Error) -> Self {
        let err = || -> Error {
            let message = format!("the write could not be committed: {cause}");
            match cause {
                Error::Unavailable(_) => Error::Unavailable(message),
                _ => Error::Backend(message),
            }
        };
        match self {
            Answer::Publish(reply, _) => Answer::Publish(reply, Err(err())),
            Answer::Stamp(reply, _) => Answer::Stamp(reply, Err(err())),
            Answer::RecordAttempt(reply, _) => Answer::RecordAttempt(reply, Err(err())),
        }
    }

    pub fn send(self) {
        // A caller that gave up waiting (its request was dropped) needs no answer.
        let _ = match self {
            Answer::Publish(reply, result) => reply.send(result).map_err(drop),
            Answer::Stamp(reply, result) => reply.send(result).map_err(drop),
            Answer::RecordAttempt(reply, result) => reply.send(result).map_err(drop),
        };
    }
}

/// Answers every attempt write of a batch with the outcome of counting them all.
pub fn answer_attempts(
    attempts: Vec<(Vec<Uuid>, oneshot::Sender<Result<()>>)>,
    counted: &Result<()>,
    answers: &mut Vec<Answer>,
) {
    for (_, reply) in attempts {
        answers.push(Answer::RecordAttempt(reply, clone_result(counted)));
    }
}

/// Answers each stamp of `group` with whether its `(user, id)` was among those `stamped` found, or
/// with the group's error.
pub fn answer_stamps(group: Vec<Stamp>, stamped: &Result<HashSet<(String, Uuid)>>, answers: &mut Vec<Answer>) {
    for stamp in group {
        let found = stamped
            .as_ref()
            .map(|found| found.contains(&(stamp.user_id.clone(), stamp.id)))
            .map_err(|err| Error::Backend(err.to_string()));
        answers.push(Answer::Stamp(stamp.reply, found));
    }
}

/// A copy of a shared result, for each write it answers.
pub fn clone_result(result: &Result<()>) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(err) => Err(Error::Backend(err.to_string())),
    }
}

/// Answers every write of a batch: its own result once the batch committed, the commit's error
/// otherwise. Returns whether it committed.
pub fn answer_all(answers: Vec<Answer>, committed: Result<()>, store: &str) -> bool {
    match committed {
        Ok(()) => {
            answers.into_iter().for_each(Answer::send);
            true
        }
        Err(err) => {
            tracing::error!(store, error = %err, writes = answers.len(), "store:batch-failed");
            answers.into_iter().for_each(|answer| answer.failed(&err).send());
            false
        }
    }
}

/// A notification to write, for the writers' tests.
#[cfg(test)]
pub fn test_notification(id: Uuid, user_id: &str) -> NewNotification {
    NewNotification {
        id,
        user_id: user_id.into(),
        kind: crate::domain::notification::NotificationType::NewLike,
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

/// One test body for every store's committer: stamps keep each write's own time and add the rounds
/// riding on them, and an id counted in two writes of one batch is counted twice. Read back through the store's port.
#[cfg(test)]
pub async fn stamps_keep_their_own_times_and_repeated_attempts_all_count(
    mut commit: impl FnMut(Vec<Write>) -> BoxFuture<'static, ()>,
    store: &dyn crate::ports::NotificationStore,
) {
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let mut published = Vec::new();
    let mut writes = Vec::new();
    for id in [first, second] {
        let (reply, answer) = oneshot::channel();
        published.push(answer);
        writes.push(Write::Publish {
            batch: vec![test_notification(id, "alice")],
            idempotency: None,
            now: 1_000,
            checked: PreferenceVersions::default(),
            reply,
        });
    }
    commit(writes).await;
    for answer in published {
        answer.await.expect("answered").expect("published");
    }
    let mut stamped = Vec::new();
    let mut counted = Vec::new();
    let mut writes = Vec::new();
    // Second's one delivery round rides on its acknowledgement; acknowledged again in the same
    // batch (another connection's), with another round: both rounds count, the first time stays.
    for (id, at, attempts) in [(first, 2_000, 0), (second, 3_000, 1), (second, 4_000, 1)] {
        let (reply, answer) = oneshot::channel();
        stamped.push(answer);
        writes.push(Write::Stamp {
            column: "delivered_at",
            user_id: "alice".into(),
            id,
            at,
            attempts,
            reply,
        });
    }
    for _ in 0..2 {
        let (reply, answer) = oneshot::channel();
        counted.push(answer);
        writes.push(Write::RecordAttempt {
            ids: vec![first],
            reply,
        });
    }
    commit(writes).await;
    for answer in stamped {
        assert!(answer.await.expect("answered").expect("stamped"));
    }
    for answer in counted {
        answer.await.expect("answered").expect("counted");
    }
    let row = |id: Uuid| async move {
        let n = store.get("alice", id).await.expect("get").expect("stored");
        (n.delivered_at, n.attempts)
    };
    assert_eq!(row(first).await, (Some(2_000), 2), "its own time; counted twice");
    assert_eq!(
        row(second).await,
        (Some(3_000), 2),
        "its first time; both rounds riding"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    /// Reports each committed batch as the kinds of its writes, and answers nothing (the callers
    /// here do not wait for answers).
    struct Recording(std_mpsc::Sender<Vec<&'static str>>);

    impl BlockingCommitter for Recording {
        const BACKEND: Backend = Backend::Sqlite;

        fn commit(&mut self, writes: Vec<Write>) -> bool {
            let kinds = writes
                .iter()
                .map(|write| match write {
                    Write::Publish { .. } => "publish",
                    Write::Stamp { column, .. } => column,
                    Write::RecordAttempt { .. } => "attempt",
                })
                .collect();
            // The committed batch fails when it holds only attempts, so that a failure can be seen.
            let failed = !writes.is_empty() && writes.iter().all(|w| matches!(w, Write::RecordAttempt { .. }));
            let _ = self.0.send(kinds);
            !failed
        }
    }

    fn writer_with(metrics: BackendMetrics) -> (Writer, std_mpsc::Receiver<Vec<&'static str>>) {
        let (commits, committed) = std_mpsc::channel();
        let writer = Writer::start_on_thread("test-writer", Recording(commits), metrics).expect("thread");
        (writer, committed)
    }

    fn writer() -> (Writer, std_mpsc::Receiver<Vec<&'static str>>) {
        writer_with(BackendMetrics::default())
    }

    #[tokio::test]
    async fn every_batch_commit_is_timed_and_a_failed_one_counted() {
        let metrics = crate::app::metrics::Metrics::default();
        let (writer, committed) = writer_with(metrics.backend());
        let (reply, _answer) = oneshot::channel();
        writer.sender.send(publish(reply)).await.expect("sent");
        let within = Duration::from_secs(5);
        assert_eq!(committed.recv_timeout(within).expect("a batch"), ["publish"]);
        let (reply, _answer) = oneshot::channel();
        let attempt = Write::RecordAttempt {
            ids: vec![Uuid::nil()],
            reply,
        };
        writer.sender.send(attempt).await.expect("sent");
        assert_eq!(committed.recv_timeout(within).expect("a batch"), ["attempt"]);
        // The writer records a batch right after its commit returns, on its own thread: a scrape
        // soon sees both batches timed and the failed one counted (each series is read on its own,
        // so one may show before the other).
        let counted = [
            "herald_backend_errors_total{backend=\"sqlite\",operation=\"commit\"} 1\n",
            "herald_backend_request_duration_seconds_count{backend=\"sqlite\",operation=\"commit\"} 2\n",
        ];
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let text = metrics.render(Default::default());
                if counted.iter().all(|series| text.contains(series)) {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("both batches timed, the failed one counted");
    }

    /// Queues a write for the writer thread, without waiting for its commit.
    async fn send(writer: &Writer, write: impl FnOnce(oneshot::Sender<Result<bool>>) -> Write) {
        let (reply, _answer) = oneshot::channel();
        writer.sender.send(write(reply)).await.expect("the writer runs");
    }

    /// A publish to bob, answered through `reply`.
    fn publish(reply: oneshot::Sender<Result<PublishOutcome>>) -> Write {
        Write::Publish {
            batch: vec![test_notification(Uuid::new_v4(), "bob")],
            idempotency: None,
            now: 1,
            checked: PreferenceVersions::default(),
            reply,
        }
    }

    fn ack(reply: oneshot::Sender<Result<bool>>) -> Write {
        Write::Stamp {
            column: "delivered_at",
            user_id: "alice".into(),
            id: Uuid::nil(),
            at: 1,
            attempts: 0,
            reply,
        }
    }

    /// Until the writer thread has taken everything sent so far.
    async fn taken(writer: &Writer) {
        while writer.sender.capacity() < QUEUE {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn an_acknowledgement_rides_on_the_next_publish_commit() {
        let (writer, committed) = writer();
        send(&writer, ack).await;
        taken(&writer).await;
        // The writer holds the acknowledgement, waiting for a write that must reach the disk.
        let (reply, _answer) = oneshot::channel();
        writer.sender.send(publish(reply)).await.expect("sent");
        let batch = committed.recv_timeout(Duration::from_secs(5)).expect("a commit");
        assert_eq!(batch, ["delivered_at", "publish"], "one commit for both");
    }

    /// Reports when each batch was committed, as a store whose driver is asynchronous would.
    struct Timing(std_mpsc::Sender<Instant>);

    impl Committer for Timing {
        const BACKEND: Backend = Backend::Postgres;

        fn commit(&self, _writes: Vec<Write>) -> BoxFuture<'_, bool> {
            let _ = self.0.send(Instant::now());
            Box::pin(async { true })
        }
    }

    #[tokio::test]
    async fn a_lone_publish_waits_briefly_for_company_in_the_writer_task_too() {
        let (commits, committed) = std_mpsc::channel();
        let writer = Writer::start(Timing(commits), BackendMetrics::default());
        let (reply, _answer) = oneshot::channel();
        let sent = Instant::now();
        writer.sender.send(publish(reply)).await.expect("sent");
        let at = tokio::task::spawn_blocking(move || committed.recv_timeout(Duration::from_secs(5)))
            .await
            .expect("joined")
            .expect("committed all the same");
        assert!(at.duration_since(sent) >= GATHER, "held for company first");
    }

    #[tokio::test]
    async fn a_batch_stops_taking_once_it_holds_its_rows() {
        let recipients = crate::domain::publish::MAX_RECIPIENTS;
        let (sender, mut receiver) = mpsc::channel(QUEUE);
        let sent = MAX_BATCH_ROWS / recipients + 3;
        for _ in 0..sent {
            let (reply, _answer) = oneshot::channel();
            let batch = (0..recipients)
                .map(|i| test_notification(Uuid::new_v4(), &format!("u{i}")))
                .collect();
            let publish = Write::Publish {
                batch,
                idempotency: None,
                now: 1,
                checked: PreferenceVersions::default(),
                reply,
            };
            sender.send(publish).await.expect("queued");
        }
        let first = receiver.recv().await.expect("a write");
        let batch = gather(first, &mut receiver).await;
        // The publish that crosses the bound is taken whole; the rest wait for the next batch.
        let taken = MAX_BATCH_ROWS.div_ceil(recipients);
        assert_eq!(batch.writes.len(), taken);
        assert!(batch.rows >= MAX_BATCH_ROWS && batch.rows < MAX_BATCH_ROWS + recipients);
        assert_eq!(receiver.len(), sent - taken);
        let next = receiver.recv().await.expect("a write");
        assert_eq!(gather(next, &mut receiver).await.writes.len(), sent - taken);
    }

    #[tokio::test]
    async fn alone_an_acknowledgement_waits_a_bounded_time() {
        let (writer, committed) = writer();
        let sent = Instant::now();
        send(&writer, ack).await;
        let batch = committed
            .recv_timeout(Duration::from_secs(5))
            .expect("committed all the same");
        assert_eq!(batch, ["delivered_at"]);
        assert!(sent.elapsed() >= DEFER_UNFLUSHED, "held for company first");
    }
}
