//! `audit-bench soak`: both services under steady load for a long while,
//! to see whether anything grows. Not a test: a measurement, run by
//! `scripts/bench-soak.sh`, which starts the cluster and the release
//! services and passes their addresses and process ids here.
//!
//! For `--duration-secs` it runs, all at once:
//! - RecordSignal paced open loop at `--rate` per second (default: half of
//!   the writer's measured unary peak, BENCHMARKS.md), every other signal
//!   followed by a RecordEvent; latency measured from when a call was due;
//! - `--readers` readers, each a GetSignal carrying the consistency token
//!   of a recent write and a ListSignals page, 20 ms apart (their
//!   latencies kept apart: GetSignal has a bound of its own, 5 ms p99 at
//!   half the writer's peak);
//! - `--tails` StreamEvents tails, resuming from their last token when a
//!   stream ends.
//!
//! Every `--window-secs` it prints one line per window (write p50/p99,
//! GetSignal p50/p99, ListSignals p99,
//! tail events, errors by status code, each service's RSS and database
//! connections) and at the end the first and last window side by side and
//! one JSON line: flat is the goal.

use crate::measure::{histogram, quantile_ms, record};
use audit_proto::v1 as pb;
use audit_proto::v1::signal_reader_service_client::SignalReaderServiceClient;
use audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tonic::transport::Channel;

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// The running writer.
    #[arg(long, env = "AUDIT_BENCH_WRITER_ADDR")]
    pub writer: SocketAddr,
    /// The running reader.
    #[arg(long, env = "AUDIT_BENCH_READER_ADDR")]
    pub reader: SocketAddr,
    /// The writer's process id (for its RSS).
    #[arg(long)]
    pub writer_pid: String,
    /// The reader's process id (for its RSS).
    #[arg(long)]
    pub reader_pid: String,
    /// The primary's database (writer connections are counted there).
    #[arg(long, hide_env_values = true, env = "AUDIT_BENCH_DATABASE_URL")]
    pub database_url: String,
    /// The replica's database (reader connections are counted there).
    #[arg(long, hide_env_values = true, env = "AUDIT_BENCH_REPLICA_URL")]
    pub replica_url: String,
    /// RecordSignal calls per second (5,390: half the writer's unary peak).
    #[arg(long, env = "AUDIT_BENCH_SOAK_RATE", default_value_t = 5_390.0)]
    pub rate: f64,
    #[arg(long, env = "AUDIT_BENCH_DURATION_SECS", default_value_t = 600)]
    pub duration_secs: u64,
    #[arg(long, env = "AUDIT_BENCH_WINDOW_SECS", default_value_t = 60)]
    pub window_secs: u64,
    #[arg(long, env = "AUDIT_BENCH_READERS", default_value_t = 4)]
    pub readers: usize,
    #[arg(long, env = "AUDIT_BENCH_TAILS", default_value_t = 2)]
    pub tails: usize,
    /// HTTP/2 connections the writes share.
    #[arg(long, env = "AUDIT_BENCH_CHANNELS", default_value_t = 4)]
    pub channels: usize,
    #[arg(long, env = "AUDIT_BENCH_SEED", default_value_t = 1)]
    pub seed: u64,
}

/// What happened during one window; reset when it is reported.
struct Window {
    writes: Histogram<u64>,
    get_signal: Histogram<u64>,
    list_signals: Histogram<u64>,
    tail_events: u64,
    errors: BTreeMap<String, u64>,
}

impl Window {
    fn new() -> Self {
        Self {
            writes: histogram(),
            get_signal: histogram(),
            list_signals: histogram(),
            tail_events: 0,
            errors: BTreeMap::new(),
        }
    }
}

type Shared = Arc<Mutex<Window>>;

fn with<T>(window: &Shared, f: impl FnOnce(&mut Window) -> T) -> T {
    let mut guard = window
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut guard)
}

fn failed(window: &Shared, call: &str, status: &tonic::Status) {
    let key = format!("{call} {:?}", status.code());
    with(window, |w| *w.errors.entry(key).or_default() += 1);
}

/// One reported window, as printed and in the final JSON line.
#[derive(Debug, Clone, serde::Serialize)]
struct Report {
    window: u64,
    seconds: f64,
    writes: u64,
    writes_per_sec: f64,
    write_p50_ms: f64,
    write_p99_ms: f64,
    reads: u64,
    get_signal_p50_ms: f64,
    get_signal_p99_ms: f64,
    list_signals_p99_ms: f64,
    tail_events: u64,
    errors: BTreeMap<String, u64>,
    writer_rss_mb: Option<f64>,
    reader_rss_mb: Option<f64>,
    writer_connections: Option<i64>,
    reader_connections: Option<i64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.1}"));
        let n = |v: Option<i64>| v.map_or("?".into(), |v| v.to_string());
        write!(
            f,
            "window {:>3} {:>6.0}s  writes {:>7} ({:>6.0}/s) p50 {:>6.1} ms p99 {:>6.1} ms  \
             reads {:>6} GetSignal p50 {:>5.1} ms p99 {:>6.1} ms ListSignals p99 {:>6.1} ms  \
             tail events {:>7}  errors {:?}  \
             RSS writer {} MB reader {} MB  connections writer {} reader {}",
            self.window,
            self.seconds,
            self.writes,
            self.writes_per_sec,
            self.write_p50_ms,
            self.write_p99_ms,
            self.reads,
            self.get_signal_p50_ms,
            self.get_signal_p99_ms,
            self.list_signals_p99_ms,
            self.tail_events,
            self.errors,
            mb(self.writer_rss_mb),
            mb(self.reader_rss_mb),
            n(self.writer_connections),
            n(self.reader_connections),
        )
    }
}

/// Current resident set size (VmRSS), in MB (10^6 bytes).
fn rss_mb(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024.0 / 1e6)
}

#[derive(QueryableByName)]
struct Sessions {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Sessions of `application` open on `url`'s server.
async fn connections(url: &str, application: &str) -> Option<i64> {
    use diesel_async::RunQueryDsl;
    let mut conn = AsyncPgConnection::establish(url).await.ok()?;
    diesel::sql_query("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1")
        .bind::<Text, _>(application)
        .get_result::<Sessions>(&mut conn)
        .await
        .ok()
        .map(|s| s.n)
}

fn channel(addr: SocketAddr) -> Result<Channel, crate::BenchError> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| crate::BenchError::Options(e.to_string()))?
            .timeout(Duration::from_secs(10))
            .connect_lazy(),
    )
}

/// The newest write a reader can ask for, with its consistency token.
type Latest = Arc<Mutex<Option<(String, pb::ConsistencyToken)>>>;

pub async fn run(args: SoakArgs) -> Result<(), crate::BenchError> {
    let window: Shared = Arc::new(Mutex::new(Window::new()));
    let latest: Latest = Arc::new(Mutex::new(None));
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let mut tasks = JoinSet::new();
    tasks.spawn(writes(
        args.clone(),
        window.clone(),
        latest.clone(),
        deadline,
    ));
    for _ in 0..args.readers {
        tasks.spawn(reads(args.reader, window.clone(), latest.clone(), deadline));
    }
    for _ in 0..args.tails {
        tasks.spawn(tail(args.reader, window.clone(), deadline));
    }

    let mut reports = Vec::new();
    let every = Duration::from_secs(args.window_secs.max(1));
    let mut started = Instant::now();
    while started < deadline {
        tokio::time::sleep_until((started + every).min(deadline).into()).await;
        let seconds = started.elapsed().as_secs_f64();
        started = Instant::now();
        let done = with(&window, |w| std::mem::replace(w, Window::new()));
        let report = Report {
            window: reports.len() as u64 + 1,
            seconds,
            writes: done.writes.len(),
            writes_per_sec: done.writes.len() as f64 / seconds.max(0.001),
            write_p50_ms: quantile_ms(&done.writes, 0.50),
            write_p99_ms: quantile_ms(&done.writes, 0.99),
            reads: done.get_signal.len() + done.list_signals.len(),
            get_signal_p50_ms: quantile_ms(&done.get_signal, 0.50),
            get_signal_p99_ms: quantile_ms(&done.get_signal, 0.99),
            list_signals_p99_ms: quantile_ms(&done.list_signals, 0.99),
            tail_events: done.tail_events,
            errors: done.errors,
            writer_rss_mb: rss_mb(&args.writer_pid),
            reader_rss_mb: rss_mb(&args.reader_pid),
            writer_connections: connections(&args.database_url, "audit-writer").await,
            reader_connections: connections(&args.replica_url, "audit-reader").await,
        };
        println!("{report}");
        reports.push(report);
    }
    while tasks.join_next().await.is_some() {}
    if let (Some(first), Some(last)) = (reports.first(), reports.last()) {
        println!("start: {first}");
        println!("end:   {last}");
        let json = serde_json::json!({ "soak": { "start": first, "end": last, "windows": reports.len() } });
        println!("{json}");
    }
    Ok(())
}

/// Pacer resolution: calls due within one tick start together.
const TICK: Duration = Duration::from_millis(1);
/// Calls unanswered beyond this make the schedule wait (and slip).
const MAX_OUTSTANDING: usize = 1_024;

async fn writes(args: SoakArgs, window: Shared, latest: Latest, deadline: Instant) {
    let Ok(clients) = (0..args.channels.max(1))
        .map(|_| channel(args.writer).map(SignalWriterServiceClient::new))
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let workload = crate::workload::Workload::new(args.seed, crate::args::PhaseName::UnaryHalf);
    let rate = args.rate.max(1.0);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut calls = JoinSet::new();
    let mut sent = 0usize;
    while Instant::now() < deadline {
        ticker.tick().await;
        let due_by_now = (started.elapsed().as_secs_f64() * rate) as usize + 1;
        while sent < due_by_now && calls.len() < MAX_OUTSTANDING {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            let mut client = clients[sent % clients.len()].clone();
            let signal = workload.signal(sent);
            let with_event = sent.is_multiple_of(2);
            let window = window.clone();
            let latest = latest.clone();
            calls.spawn(async move {
                let request = pb::RecordSignalRequest {
                    signal: Some(signal),
                };
                let answer = match client.record_signal(request).await {
                    Ok(answer) => answer.into_inner(),
                    Err(status) => return failed(&window, "RecordSignal", &status),
                };
                with(&window, |w| record(&mut w.writes, due.elapsed()));
                let (Some(signal), Some(token)) = (answer.signal, answer.consistency_token) else {
                    return;
                };
                if with_event {
                    let event = pb::NewEvent {
                        event_id: uuid::Uuid::new_v4().to_string(),
                        signal_id: signal.signal_id.clone(),
                        event_type: pb::SignalStatus::QueuedProcessing.into(),
                        location: pb::SignalLocation::ProcessingQueue.into(),
                        details: "queued by the soak".into(),
                        ..Default::default()
                    };
                    let request = pb::RecordEventRequest { event: Some(event) };
                    if let Err(status) = client.record_event(request).await {
                        failed(&window, "RecordEvent", &status);
                    }
                }
                *latest
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((signal.signal_id, token));
            });
            sent += 1;
        }
        while calls.try_join_next().is_some() {}
    }
    while calls.join_next().await.is_some() {}
}

async fn reads(addr: SocketAddr, window: Shared, latest: Latest, deadline: Instant) {
    let Ok(channel) = channel(addr) else {
        return;
    };
    let mut reader = SignalReaderServiceClient::new(channel);
    while Instant::now() < deadline {
        let newest = latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some((signal_id, token)) = newest {
            let started = Instant::now();
            let request = pb::GetSignalRequest {
                signal_id,
                consistency_token: Some(token),
            };
            match reader.get_signal(request).await {
                Ok(_) => with(&window, |w| record(&mut w.get_signal, started.elapsed())),
                Err(status) => failed(&window, "GetSignal", &status),
            }
        }
        let started = Instant::now();
        let request = pb::ListSignalsRequest {
            filter: Some(pb::SignalFilter {
                normalised_ticker: "AAPL".into(),
                ..Default::default()
            }),
            page_size: 50,
            ..Default::default()
        };
        match reader.list_signals(request).await {
            Ok(_) => with(&window, |w| record(&mut w.list_signals, started.elapsed())),
            Err(status) => failed(&window, "ListSignals", &status),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn tail(addr: SocketAddr, window: Shared, deadline: Instant) {
    let Ok(channel) = channel(addr) else {
        return;
    };
    let mut reader = SignalReaderServiceClient::new(channel);
    let mut resume_token = String::new();
    while Instant::now() < deadline {
        let request = pb::StreamEventsRequest {
            resume_token: resume_token.clone(),
            ..Default::default()
        };
        let mut stream = match reader.stream_events(request).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                failed(&window, "StreamEvents", &status);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let next = tokio::time::timeout_at(deadline.into(), stream.message()).await;
            match next {
                Err(_) => return,
                Ok(Ok(Some(event))) => {
                    resume_token = event.resume_token;
                    with(&window, |w| w.tail_events += 1);
                }
                Ok(Ok(None)) => break,
                Ok(Err(status)) => {
                    failed(&window, "StreamEvents", &status);
                    break;
                }
            }
        }
    }
}
