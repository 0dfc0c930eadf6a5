//! Group commit for unary writes.
//!
//! Each RecordSignal / RecordEvent call becomes a job on a bounded queue. A
//! collector takes every job waiting, up to `max_items`, and commits them in
//! one transaction through the set-based write path; the caller is answered
//! only after that commit. Batches form by themselves: while `max_batches`
//! transactions are in flight, new jobs queue up and ride the next one, so
//! a lone caller pays no linger delay and a busy writer pays one fsync for
//! hundreds of writes.
//!
//! A job that cannot be applied (unknown signal, conflicting retry) fails
//! alone while the others commit. If the transaction loses its connection
//! (UNAVAILABLE: terminated, crashed, reset) it is retried once, whole, on a
//! fresh connection: every write is idempotent on its client-chosen id, so
//! even a group whose COMMIT was sent but never answered can run again (its
//! items then answer `created: false`). If the database itself is the
//! problem (unreachable, statement timeout) every job gets that answer at
//! once; any other failure of the transaction retries each job in a
//! transaction of its own, so one poisonous item never takes its neighbours
//! down with it (an event on a day `signal_events` has no partition for is
//! one: PostgreSQL refuses the whole statement, the retry fails only that
//! caller, with FAILED_PRECONDITION). A full queue answers RESOURCE_EXHAUSTED.
//!
//! Metrics: `audit_writer_group_commit_size` per group,
//! `audit_writer_group_commit_queue_depth` as calls come and groups form,
//! `audit_writer_refusals_total{reason="queue_full"}`.

use crate::error::WriteError;
use crate::store::{self, Applied, Committed, RecordedEvent, RecordedSignal};
use audit_core::{Lsn, NewEvent, NewSignal};
use audit_db::{DbError, PgPool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{Instrument, Span};

type Reply<T> = oneshot::Sender<Result<Committed<T>, DbError>>;

enum Job {
    Signal(NewSignal, Reply<RecordedSignal>, Span),
    Event(NewEvent, Reply<RecordedEvent>, Span),
}

impl Job {
    /// The span of the call that queued the job.
    fn span(&self) -> &Span {
        match self {
            Job::Signal(_, _, span) | Job::Event(_, _, span) => span,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GroupCommitConfig {
    /// Most jobs in one transaction.
    pub max_items: usize,
    /// Jobs waiting beyond this are refused with RESOURCE_EXHAUSTED.
    pub queue: usize,
    /// Transactions in flight at once; more jobs wait and form larger groups.
    pub max_batches: usize,
    /// How long the retry of a group waits for its fresh connection.
    pub connect_timeout: Duration,
}

#[derive(Clone)]
pub struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    pub fn start(pool: PgPool, config: GroupCommitConfig) -> Self {
        let capacity = config.queue.max(1);
        let (jobs, queue) = mpsc::channel(capacity);
        metrics::gauge!("audit_writer_group_commit_queue_capacity").set(capacity as f64);
        metrics::gauge!("audit_writer_group_commit_queue_depth").set(0.0);
        metrics::counter!("audit_writer_refusals_total", "reason" => "queue_full").increment(0);
        tokio::spawn(collect(queue, pool, config));
        Self { jobs }
    }

    pub async fn record_signal(
        &self,
        signal: NewSignal,
    ) -> Result<Committed<RecordedSignal>, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Signal(signal, reply, Span::current()))?;
        Ok(answer.await.map_err(|_| WriteError::ShuttingDown)??)
    }

    pub async fn record_event(
        &self,
        event: NewEvent,
    ) -> Result<Committed<RecordedEvent>, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Event(event, reply, Span::current()))?;
        Ok(answer.await.map_err(|_| WriteError::ShuttingDown)??)
    }

    fn submit(&self, job: Job) -> Result<(), WriteError> {
        let sent = self.jobs.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                metrics::counter!("audit_writer_refusals_total", "reason" => "queue_full")
                    .increment(1);
                WriteError::Saturated("the group commit queue is full, retry with backoff")
            }
            mpsc::error::TrySendError::Closed(_) => WriteError::ShuttingDown,
        });
        queue_depth(self.jobs.max_capacity() - self.jobs.capacity());
        sent
    }
}

fn queue_depth(waiting: usize) {
    metrics::gauge!("audit_writer_group_commit_queue_depth").set(waiting as f64);
}

async fn collect(mut queue: mpsc::Receiver<Job>, pool: PgPool, config: GroupCommitConfig) {
    let permits = Arc::new(Semaphore::new(config.max_batches.max(1)));
    while let Some(first) = queue.recv().await {
        // Waiting here while every transaction is busy is what grows groups.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let mut jobs = vec![first];
        while jobs.len() < config.max_items {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        queue_depth(queue.len());
        // The group's trace: a child of the call that opened it, linked
        // from every other call it answers.
        let span = tracing::info_span!(parent: jobs[0].span(), "group_commit", items = jobs.len());
        for job in &jobs[1..] {
            span.follows_from(job.span());
        }
        let pool = pool.clone();
        let connect_timeout = config.connect_timeout;
        tokio::spawn(
            async move {
                commit(&pool, connect_timeout, jobs).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn commit(pool: &PgPool, connect_timeout: Duration, jobs: Vec<Job>) {
    let mut signals = Vec::new();
    let mut signal_replies = Vec::new();
    let mut events = Vec::new();
    let mut event_replies = Vec::new();
    for job in jobs {
        match job {
            Job::Signal(signal, reply, _) => {
                signals.push(signal);
                signal_replies.push(reply);
            }
            Job::Event(event, reply, _) => {
                events.push(event);
                event_replies.push(reply);
            }
        }
    }
    tracing::debug!(
        signals = signals.len(),
        events = events.len(),
        "group commit"
    );
    metrics::histogram!("audit_writer_group_commit_size")
        .record((signals.len() + events.len()) as f64);
    match record_group(pool, connect_timeout, &signals, &events).await {
        Ok(committed) => {
            let lsn = committed.lsn;
            let applied = committed.value;
            answer(signal_replies, applied.signals, &lsn);
            answer(event_replies, applied.events, &lsn);
        }
        Err(error) if signals.len() + events.len() == 1 => {
            if let Some(reply) = signal_replies.pop() {
                let _ = reply.send(Err(error));
            } else if let Some(reply) = event_replies.pop() {
                let _ = reply.send(Err(error));
            }
        }
        Err(error) => match outage(&error) {
            Some((variant, reason)) => {
                tracing::warn!(%error, "group transaction failed on the database, failing its items");
                for reply in signal_replies {
                    let _ = reply.send(Err(variant(reason.clone())));
                }
                for reply in event_replies {
                    let _ = reply.send(Err(variant(reason.clone())));
                }
            }
            None => {
                tracing::warn!(%error, "group transaction failed, retrying its items one by one");
                for (signal, reply) in signals.into_iter().zip(signal_replies) {
                    let _ = reply.send(store::record_signal(pool, signal).await);
                }
                for (event, reply) in events.into_iter().zip(event_replies) {
                    let _ = reply.send(store::record_event(pool, event).await);
                }
            }
        },
    }
}

/// One group transaction on a pooled connection; if that connection is lost
/// mid-way, once more on a connection of its own. A pool that cannot hand
/// out a connection at all is not retried: it will not do better at once.
async fn record_group(
    pool: &PgPool,
    connect_timeout: Duration,
    signals: &[NewSignal],
    events: &[NewEvent],
) -> Result<Committed<Applied>, DbError> {
    let mut conn = pool.get().await?;
    match store::record_group(&mut conn, signals, events).await {
        Err(DbError::Unavailable(reason)) => {
            drop(conn);
            tracing::warn!(%reason, "group transaction lost its connection, retrying once on a fresh one");
            let mut fresh = tokio::time::timeout(connect_timeout, pool.dedicated_connection())
                .await
                .map_err(|_| DbError::Unavailable("timed out opening a connection".into()))?
                .map_err(|error| DbError::Unavailable(error.to_string()))?;
            store::record_group(&mut fresh, signals, events).await
        }
        other => other,
    }
}

/// Builds one variant of [`DbError`] from its reason.
type DbErrorKind = fn(String) -> DbError;

/// The same answer for every job of a group when the database, not an
/// item, failed: retrying each job alone would wait out the same outage or
/// lock once per job. The variant to build and its reason.
fn outage(error: &DbError) -> Option<(DbErrorKind, String)> {
    match error {
        DbError::Unavailable(reason) => Some((DbError::Unavailable, reason.clone())),
        DbError::Timeout(reason) => Some((DbError::Timeout, reason.clone())),
        _ => None,
    }
}

fn answer<T>(replies: Vec<Reply<T>>, results: Vec<Result<T, DbError>>, lsn: &Lsn) {
    for (reply, result) in replies.into_iter().zip(results) {
        // The caller may have gone (deadline); its write stands regardless.
        let _ = reply.send(result.map(|value| Committed {
            value,
            lsn: lsn.clone(),
        }));
    }
}
