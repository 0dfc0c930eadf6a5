//! The phases of `audit-bench ingest`, one module each, and what they share:
//! the [`Budget`] that bounds them, the [`Meter`] that times them and the
//! [`Measured`] figures they return.
//!
//! Every phase follows the same steps: connect outside the clock, start the
//! meter, let its workers claim items from the budget until it runs out,
//! merge the workers' tallies.

pub mod batched;
pub mod events;
pub mod naive;
pub mod naive_events;
pub mod stream;
pub mod unary;

use crate::BenchError;
use crate::args::{IngestArgs, PhaseName};
use crate::measure::{cpu_seconds, histogram, machine_jiffies, record};
use crate::workload::Workload;
use crate::writer::WriterProcess;
use audit_db::PgPool;
use audit_proto::v1 as pb;
use audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient;
use hdrhistogram::Histogram;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// What every phase gets.
pub struct Context<'a> {
    pub args: &'a IngestArgs,
    pub pool: &'a PgPool,
    pub writer: &'a WriterProcess,
}

impl Context<'_> {
    pub fn workload(&self, phase: PhaseName) -> Workload {
        Workload::new(self.args.seed, phase)
    }

    /// `count` items, and `--duration-secs` from now when set.
    pub fn budget(&self, count: usize) -> Arc<Budget> {
        let deadline = (self.args.duration_secs > 0)
            .then(|| Instant::now() + Duration::from_secs(self.args.duration_secs));
        Arc::new(Budget {
            next: AtomicUsize::new(0),
            total: count,
            deadline,
        })
    }

    /// One pooled database connection per client (`--clients`) of the naive
    /// baselines, opened before the clock starts.
    pub async fn connections(
        &self,
    ) -> Result<Vec<audit_db::pool::PooledConnection<'static>>, BenchError> {
        let mut connections = Vec::with_capacity(self.args.clients);
        for _ in 0..self.args.clients {
            connections.push(
                self.pool
                    .get_owned()
                    .await
                    .map_err(audit_db::DbError::from)?,
            );
        }
        Ok(connections)
    }

    /// `--channels` writer clients, connected before any clock starts.
    pub async fn clients(&self) -> Result<Vec<WriterClient>, BenchError> {
        let mut clients = Vec::with_capacity(self.args.channels);
        for _ in 0..self.args.channels {
            clients.push(SignalWriterServiceClient::new(self.writer.channel().await?));
        }
        Ok(clients)
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.args.call_timeout_secs.max(1))
    }
}

/// Hands item indices to a phase's workers until `total` are handed out or
/// the deadline has passed: every phase stops by itself.
pub struct Budget {
    next: AtomicUsize,
    total: usize,
    deadline: Option<Instant>,
}

impl Budget {
    /// `total` items, no deadline.
    #[cfg(test)]
    pub fn new(total: usize) -> Self {
        Self {
            next: AtomicUsize::new(0),
            total,
            deadline: None,
        }
    }

    /// The next `n` (or fewer, at the end) item indices.
    pub fn claim(&self, n: usize) -> Option<Range<usize>> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let start = self.next.fetch_add(n, Ordering::Relaxed);
        (start < self.total).then(|| start..(start + n).min(self.total))
    }
}

/// Wall-clock and CPU time of a phase, from `start` to `stop`.
pub struct Meter {
    started: Instant,
    writer_pid: String,
    writer_cpu: Option<f64>,
    bench_cpu: Option<f64>,
    machine: Option<(u64, u64)>,
}

pub struct Usage {
    pub elapsed: Duration,
    /// CPU seconds the writer used (user + system).
    pub writer_cpu: Option<f64>,
    /// CPU seconds this load generator used.
    pub bench_cpu: Option<f64>,
    /// Share of all cores' time that was busy (anything: writer, bench,
    /// PostgreSQL, replica, other processes), 0 to 1.
    pub machine_busy: Option<f64>,
}

impl Meter {
    pub fn start(writer: &WriterProcess) -> Self {
        Self {
            writer_cpu: cpu_seconds(writer.pid()),
            bench_cpu: cpu_seconds("self"),
            machine: machine_jiffies(),
            writer_pid: writer.pid().to_owned(),
            started: Instant::now(),
        }
    }

    pub fn stop(self) -> Usage {
        let elapsed = self.started.elapsed();
        let used = |before: Option<f64>, pid: &str| Some(cpu_seconds(pid)? - before?);
        let machine_busy = match (self.machine, machine_jiffies()) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                Some(busy1.saturating_sub(busy0) as f64 / (total1 - total0) as f64)
            }
            _ => None,
        };
        Usage {
            elapsed,
            writer_cpu: used(self.writer_cpu, &self.writer_pid),
            bench_cpu: used(self.bench_cpu, "self"),
            machine_busy,
        }
    }
}

/// What one worker (or a whole phase) did.
pub struct Tally {
    pub latency: Histogram<u64>,
    pub items: usize,
    /// Calls or chunks refused with RESOURCE_EXHAUSTED, or naive transactions
    /// aborted by a deadlock or serialization failure, and sent again.
    pub refused: usize,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            latency: histogram(),
            items: 0,
            refused: 0,
        }
    }
}

impl Tally {
    pub fn done(&mut self, items: usize, started: Instant) {
        record(&mut self.latency, started.elapsed());
        self.items += items;
    }

    /// Adds another worker's tally (histograms have the same bounds).
    fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(other.latency);
        self.items += other.items;
        self.refused += other.refused;
    }
}

/// Waits for every worker; the first error stops the others.
pub async fn join(mut workers: JoinSet<Result<Tally, BenchError>>) -> Result<Tally, BenchError> {
    let mut all = Tally::default();
    while let Some(result) = workers.join_next().await {
        all.merge(result??);
    }
    Ok(all)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Signals,
    Events,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signals => "signals",
            Self::Events => "events",
        }
    }
}

/// A measured phase.
pub struct Measured {
    /// Concurrency and shape, for the table ("8 clients").
    pub setup: String,
    pub unit: Unit,
    /// What one latency sample is ("transaction", "chunk ack").
    pub latency_of: &'static str,
    pub tally: Tally,
    pub usage: Usage,
}

impl Measured {
    pub fn new(
        setup: String,
        unit: Unit,
        latency_of: &'static str,
        tally: Tally,
        usage: Usage,
    ) -> Self {
        Self {
            setup,
            unit,
            latency_of,
            tally,
            usage,
        }
    }

    /// Items per second.
    pub fn rate(&self) -> f64 {
        self.tally.items as f64 / self.usage.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Backs off after RESOURCE_EXHAUSTED: 2 ms doubling to 200 ms, with jitter,
/// and gives up after `MAX_REFUSALS` in a row so a stuck writer ends the phase.
pub struct Backoff {
    next: Duration,
    in_a_row: usize,
}

const MAX_REFUSALS: usize = 200;

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(2),
            in_a_row: 0,
        }
    }
}

impl Backoff {
    /// Waits before the next attempt; false once there were too many refusals.
    pub async fn wait(&mut self) -> bool {
        self.in_a_row += 1;
        if self.in_a_row > MAX_REFUSALS {
            return false;
        }
        let jitter = rand::random_range(0.5..1.5);
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(Duration::from_millis(200));
        true
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

pub type WriterClient = SignalWriterServiceClient<Channel>;

/// One unary call, sent again while the writer answers RESOURCE_EXHAUSTED
/// (writes are idempotent on their ids). Returns how often it was refused.
pub async fn until_accepted<R, T, F, Fut>(
    call: &'static str,
    client: &WriterClient,
    request: R,
    send: F,
) -> Result<usize, BenchError>
where
    R: Clone,
    F: Fn(WriterClient, R) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut backoff = Backoff::default();
    let mut refused = 0;
    loop {
        match send(client.clone(), request.clone()).await {
            Ok(_) => return Ok(refused),
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                refused += 1;
                if !backoff.wait().await {
                    return Err(BenchError::call(call, status));
                }
            }
            Err(status) => return Err(BenchError::call(call, status)),
        }
    }
}

/// RecordSignal for one signal; how often it was refused before it was taken.
pub async fn record_signal(
    client: &WriterClient,
    signal: pb::NewSignal,
) -> Result<usize, BenchError> {
    let request = pb::RecordSignalRequest {
        signal: Some(signal),
    };
    until_accepted("RecordSignal", client, request, |mut c, r| async move {
        c.record_signal(r).await
    })
    .await
}

/// RecordEvent for one event; how often it was refused before it was taken.
pub async fn record_event(client: &WriterClient, event: pb::NewEvent) -> Result<usize, BenchError> {
    let request = pb::RecordEventRequest { event: Some(event) };
    until_accepted("RecordEvent", client, request, |mut c, r| async move {
        c.record_event(r).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_hands_out_each_index_once_and_ends() {
        let budget = Budget {
            next: AtomicUsize::new(0),
            total: 5,
            deadline: None,
        };
        assert_eq!(budget.claim(2), Some(0..2));
        assert_eq!(budget.claim(2), Some(2..4));
        assert_eq!(budget.claim(2), Some(4..5));
        assert_eq!(budget.claim(2), None);
        assert_eq!(budget.claim(1), None);
    }

    #[test]
    fn budget_ends_at_the_deadline() {
        let budget = Budget {
            next: AtomicUsize::new(0),
            total: 5,
            deadline: Some(Instant::now()),
        };
        assert_eq!(budget.claim(1), None);
    }
}
