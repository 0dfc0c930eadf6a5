//! The phases of `audit-bench ingest` and the summary they feed.

use crate::IngestArgs;
use crate::measure::{cpu_seconds, histogram, peak_rss_mib, record};
use audit_core::validate::{self, Limits};
use audit_db::models::NewEventRow;
use audit_db::schema::{signal_event_ids, signal_events, signals};
use audit_db::{PgPool, PoolConfig, build_pool, writes};
use audit_proto::v1 as pb;
use audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tonic::transport::Channel;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

const TICKERS: &[&str] = &[
    "NASDAQ:AAPL",
    "MSFT.US",
    "BTC-USD",
    "ETH/USD",
    "SPY",
    "QQQ",
    "TSLA",
    "NVDA",
];

fn proto_signal(rng: &mut impl Rng) -> pb::NewSignal {
    let ticker = TICKERS[rng.random_range(0..TICKERS.len())];
    let price = f64::from(rng.random_range(1_000..500_000u32)) / 100.0;
    pb::NewSignal {
        signal_id: uuid::Uuid::new_v4().to_string(),
        ticker: ticker.into(),
        side: if rng.random_bool(0.5) { "buy" } else { "sell" }.into(),
        action: "open".into(),
        price,
        original_signal_json: format!(
            r#"{{"source":"bench","ticker":"{ticker}","price":{price},"strategy":"momentum-{}"}}"#,
            rng.random_range(0..10)
        ),
        tags: vec!["bench".into()],
        received_at: None,
    }
}

/// The writer under test, a child process killed when dropped.
struct Writer {
    child: Child,
    addr: String,
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Writer {
    async fn start(args: &IngestArgs) -> Result<Self, Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(&args.writer_bin)
            .arg("serve")
            .env("AUDIT_DATABASE_URL", &args.database_url)
            .env("AUDIT_WRITER_LISTEN", &addr)
            .env("AUDIT_POOL_MIN", args.writer_pool.to_string())
            .env("AUDIT_POOL_MAX", args.writer_pool.to_string())
            .env("AUDIT_MAX_BATCH_ITEMS", "10000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", args.writer_bin))?;
        let writer = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(channel) = writer.channel().await {
                let status = tonic_health::pb::health_client::HealthClient::new(channel)
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: "signal_audit.v1.SignalWriterService".into(),
                    })
                    .await
                    .map(|r| r.into_inner().status)
                    .unwrap_or(-1);
                if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return Ok(writer);
                }
            }
            if Instant::now() > deadline {
                return Err("the writer did not become SERVING within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// One phase's figures.
struct Outcome {
    name: &'static str,
    items: usize,
    elapsed: Duration,
    latency: Histogram<u64>,
    writer_cpu: Option<f64>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64()
    }

    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    fn print(&self) {
        let cpu = self.writer_cpu.map_or("-".to_owned(), |c| {
            format!("{c:.1} s ({:.0}%)", 100.0 * c / self.elapsed.as_secs_f64())
        });
        println!(
            "{:<11} {:>8} signals {:>7.2} s {:>9.0}/s   p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms   writer cpu {cpu}",
            self.name,
            self.items,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.ms(0.50),
            self.ms(0.95),
            self.ms(0.99),
            self.latency.max() as f64 / 1000.0,
        );
    }
}

async fn reset(pool: &PgPool) -> Result<(), Error> {
    let mut conn = pool.get().await?;
    conn.batch_execute("TRUNCATE signal_events, signal_event_ids, signals; CHECKPOINT;")
        .await?;
    Ok(())
}

pub async fn run(args: IngestArgs) -> Result<(), Error> {
    let pool = build_pool(&PoolConfig {
        url: args.database_url.clone(),
        min_idle: 0,
        max_size: u32::try_from(args.db_clients + 2).unwrap_or(16),
        connect_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(60),
        application_name: "audit-bench".into(),
        read_only: false,
        test_on_checkout: false,
    })?;
    reset(&pool).await?;
    let writer = Writer::start(&args).await?;
    println!(
        "audit-bench ingest: {} signals per phase, {} db clients, {} unary callers over {} connections, {} streams x window {} x chunk {}",
        args.signals,
        args.db_clients,
        args.unary_concurrency,
        args.channels,
        args.streams,
        args.window,
        args.chunk_size
    );

    let naive = naive(&pool, &args).await?;
    naive.print();
    reset(&pool).await?;
    let batched = batched(&pool, &args).await?;
    batched.print();
    reset(&pool).await?;
    let peak = unary(&writer, &args, None).await?;
    peak.print();
    reset(&pool).await?;
    let half = unary(&writer, &args, Some(peak.rate() / 2.0)).await?;
    half.print();
    reset(&pool).await?;
    let stream = stream(&writer, &args).await?;
    stream.print();
    reset(&pool).await?;

    let rss = peak_rss_mib(writer.pid());
    let unary_ratio = peak.rate() / naive.rate();
    let stream_ratio = stream.rate() / batched.rate();
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!();
    println!(
        "unary group commit / naive     {unary_ratio:>6.2}x   (target >= 5x)     {}",
        verdict(unary_ratio >= 5.0)
    );
    println!(
        "stream ingest / batched limit  {:>6.1}%   (target >= 50%)    {}",
        100.0 * stream_ratio,
        verdict(stream_ratio >= 0.5)
    );
    println!(
        "p99 at half of unary peak      {:>6.2} ms (target < 20 ms)   {}",
        half.ms(0.99),
        verdict(half.ms(0.99) < 20.0)
    );
    println!(
        "writer peak RSS                {rss:>6.1} MiB (target < 150 MiB) {}",
        verdict(rss < 150.0)
    );
    let json = serde_json::json!({
        "naive_per_s": naive.rate(),
        "batched_per_s": batched.rate(),
        "unary_per_s": peak.rate(),
        "unary_half_per_s": half.rate(),
        "unary_half_p99_ms": half.ms(0.99),
        "unary_p99_ms": peak.ms(0.99),
        "stream_per_s": stream.rate(),
        "stream_chunk_p99_ms": stream.ms(0.99),
        "unary_over_naive": unary_ratio,
        "stream_over_batched": stream_ratio,
        "writer_peak_rss_mib": rss,
    });
    println!("{json}");
    Ok(())
}

/// Splits `total` into `parts` near-equal shares.
fn shares(total: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

async fn naive(pool: &PgPool, args: &IngestArgs) -> Result<Outcome, Error> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, count) in shares(args.signals, args.db_clients)
        .into_iter()
        .enumerate()
    {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(client as u64);
            let mut latency = histogram();
            let mut conn = pool.get().await?;
            for _ in 0..count {
                let signal = validate::new_signal(
                    &proto_signal(&mut rng),
                    &Limits::default(),
                    chrono::Utc::now(),
                )?;
                let row = writes::signal_row(&signal);
                let event = writes::received_event(&signal);
                let id = writes::id_row(&event);
                let at = Instant::now();
                conn.transaction::<_, diesel::result::Error, _>(async |c| {
                    diesel::insert_into(signals::table)
                        .values(&row)
                        .execute(c)
                        .await?;
                    diesel::insert_into(signal_event_ids::table)
                        .values(&id)
                        .execute(c)
                        .await?;
                    diesel::insert_into(signal_events::table)
                        .values(NewEventRow::from(&event))
                        .execute(c)
                        .await?;
                    Ok(())
                })
                .await?;
                record(&mut latency, at.elapsed());
            }
            Ok::<_, Error>(latency)
        }));
    }
    let latency = merge(tasks).await?;
    Ok(Outcome {
        name: "naive",
        items: args.signals,
        elapsed: started.elapsed(),
        latency,
        writer_cpu: None,
    })
}

async fn batched(pool: &PgPool, args: &IngestArgs) -> Result<Outcome, Error> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, count) in shares(args.signals, args.db_clients)
        .into_iter()
        .enumerate()
    {
        let pool = pool.clone();
        let chunk = args.chunk_size.max(1);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1_000 + client as u64);
            let mut latency = histogram();
            let mut left = count;
            while left > 0 {
                let n = left.min(chunk);
                left -= n;
                let signals = (0..n)
                    .map(|_| {
                        validate::new_signal(
                            &proto_signal(&mut rng),
                            &Limits::default(),
                            chrono::Utc::now(),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let at = Instant::now();
                writes::record_batch(&pool, signals, Vec::new()).await?;
                record(&mut latency, at.elapsed());
            }
            Ok::<_, Error>(latency)
        }));
    }
    let latency = merge(tasks).await?;
    Ok(Outcome {
        name: "batched",
        items: args.signals,
        elapsed: started.elapsed(),
        latency,
        writer_cpu: None,
    })
}

async fn merge(
    tasks: Vec<tokio::task::JoinHandle<Result<Histogram<u64>, Error>>>,
) -> Result<Histogram<u64>, Error> {
    let mut all = histogram();
    for task in tasks {
        all.add(task.await??)?;
    }
    Ok(all)
}

/// RecordSignal from many concurrent callers; with `rate`, paced open-loop
/// at that many calls per second instead of as fast as possible.
async fn unary(writer: &Writer, args: &IngestArgs, rate: Option<f64>) -> Result<Outcome, Error> {
    let mut clients = Vec::new();
    for _ in 0..args.channels.max(1) {
        clients.push(SignalWriterServiceClient::new(writer.channel().await?));
    }
    let cpu_before = cpu_seconds(writer.pid());
    let latency = Arc::new(Mutex::new(histogram()));
    let completed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(args.unary_concurrency.max(1)));
    let mut tasks = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1.0)));
    for i in 0..args.signals {
        if let Some(interval) = interval {
            let due = started + interval.mul_f64(i as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = in_flight.clone().acquire_owned().await?;
        let mut client = clients[i % clients.len()].clone();
        let signal = proto_signal(&mut rng);
        let latency = latency.clone();
        let completed = completed.clone();
        tasks.push(tokio::spawn(async move {
            let at = Instant::now();
            let result = client
                .record_signal(pb::RecordSignalRequest {
                    signal: Some(signal),
                })
                .await;
            record(&mut *latency.lock().await, at.elapsed());
            completed.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            result
                .map(|_| ())
                .map_err(|status| -> Error { format!("RecordSignal: {status}").into() })
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let latency = Arc::try_unwrap(latency)
        .map_err(|_| "latency still shared")?
        .into_inner();
    Ok(Outcome {
        name: if rate.is_some() {
            "unary-half"
        } else {
            "unary"
        },
        items: AtomicUsize::load(&completed, Ordering::Relaxed),
        elapsed,
        latency,
        writer_cpu: Some(cpu_seconds(writer.pid()) - cpu_before),
    })
}

/// Ingest streams, each keeping `window` chunks unacknowledged; chunks
/// refused with RESOURCE_EXHAUSTED are resent.
async fn stream(writer: &Writer, args: &IngestArgs) -> Result<Outcome, Error> {
    let cpu_before = cpu_seconds(writer.pid());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (s, count) in shares(args.signals, args.streams).into_iter().enumerate() {
        let channel = writer.channel().await?;
        let chunk_size = args.chunk_size.max(1);
        let window = args.window.max(1);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(100 + s as u64);
            let chunks: Vec<pb::IngestRequest> = shares(count, count.div_ceil(chunk_size))
                .into_iter()
                .enumerate()
                .map(|(i, n)| pb::IngestRequest {
                    chunk_id: i as u64,
                    signals: (0..n).map(|_| proto_signal(&mut rng)).collect(),
                    events: Vec::new(),
                })
                .collect();
            let total = chunks.len();
            let (send, outbound) = mpsc::channel::<pb::IngestRequest>(window);
            let mut acks = SignalWriterServiceClient::new(channel)
                .ingest(tokio_stream::wrappers::ReceiverStream::new(outbound))
                .await?
                .into_inner();
            let mut latency = histogram();
            let mut sent_at = vec![Instant::now(); total];
            let mut queue: std::collections::VecDeque<usize> = (0..total).collect();
            let mut pending = 0usize;
            let mut done = 0usize;
            let mut refused = 0usize;
            while done < total {
                while pending < window {
                    let Some(i) = queue.pop_front() else { break };
                    sent_at[i] = Instant::now();
                    send.send(chunks[i].clone()).await?;
                    pending += 1;
                }
                let Some(ack) = acks.message().await? else {
                    return Err::<_, Error>("the writer closed the ingest stream early".into());
                };
                pending -= 1;
                let i = usize::try_from(ack.chunk_id)?;
                match tonic::Code::from(ack.code) {
                    tonic::Code::Ok => {
                        record(&mut latency, sent_at[i].elapsed());
                        done += 1;
                    }
                    tonic::Code::ResourceExhausted => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        queue.push_back(i);
                    }
                    other => {
                        return Err(format!("chunk {i} refused: {other:?} {}", ack.message).into());
                    }
                }
            }
            if refused > 0 {
                eprintln!(
                    "stream {s}: {refused} chunks refused with RESOURCE_EXHAUSTED and resent"
                );
            }
            Ok(latency)
        }));
    }
    let latency = merge(tasks).await?;
    Ok(Outcome {
        name: "stream",
        items: args.signals,
        elapsed: started.elapsed(),
        latency,
        writer_cpu: Some(cpu_seconds(writer.pid()) - cpu_before),
    })
}
