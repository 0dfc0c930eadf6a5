//! Faults, each bounded in time and on loopback only, each printing what it
//! counted: a writer killed with -9 under load, a primary crash, a replica
//! stopped or paused, an exhausted pool behind a locked table, connections
//! terminated mid-call, SIGTERM with every kind of long call open, and
//! clients that walk away mid-stream.
//!
//! Tests that stop a server of the cluster hold [`CLUSTER`] exclusively;
//! the others share it, so they never see each other's outages.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::SignalLocation as L;
use audit_proto::v1::SignalStatus as S;
use audit_proto::v1::signal_reader_service_client::SignalReaderServiceClient;
use audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient;
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use integration_tests::process::{
    Server, ServerProcess, health_is, start_cluster_again, stop_server,
};
use integration_tests::{
    TestApp, cluster, connect, count_rows, fresh_database, new_event, new_signal, wait_replica,
    wait_until,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

const WRITER: &str = env!("CARGO_BIN_EXE_writer-process");
const READER: &str = env!("CARGO_BIN_EXE_reader-process");

/// Shared by tests that leave the cluster alone, held alone by those that
/// stop one of its servers.
static CLUSTER: RwLock<()> = RwLock::const_new(());

/// [`wait_until`] for a yes/no condition, polled every 20 ms.
async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until(what, timeout, Duration::from_millis(20), async || {
        check().await.then_some(())
    })
    .await;
}

/// Brings the cluster back whatever a test did to it, even when it fails
/// half-way, so that the tests after it find it whole.
struct HealOnDrop(&'static integration_tests::Cluster);

impl Drop for HealOnDrop {
    fn drop(&mut self) {
        let cluster = self.0;
        let _ = std::thread::spawn(move || {
            start_cluster_again(cluster);
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let mut replica = connect(&cluster.replica_url("postgres")).await;
                let _ = replica.batch_execute("SELECT pg_wal_replay_resume()").await;
            });
        })
        .join();
    }
}

/// A channel that (re)connects on use, so clients ride out a restart.
fn lazy_channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn scalar(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// Failure codes seen by retrying clients, for the printout and checks.
#[derive(Default)]
struct Seen {
    codes: Mutex<BTreeMap<String, usize>>,
}

impl Seen {
    async fn add(&self, code: Code) {
        *self
            .codes
            .lock()
            .await
            .entry(format!("{code:?}"))
            .or_default() += 1;
    }

    async fn summary(&self) -> BTreeMap<String, usize> {
        self.codes.lock().await.clone()
    }
}

/// Calls `call` until it succeeds (a producer that retries with the same
/// ids), for at most a minute; counts each failure's code.
async fn until_acknowledged<T, F, Fut>(seen: &Seen, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match call().await {
            Ok(value) => return value,
            Err(status) => {
                seen.add(status.code()).await;
                assert!(
                    Instant::now() < deadline,
                    "not acknowledged in a minute: {status:?}"
                );
                // Back-off between retries, as a producer would.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What one producer got acknowledged.
#[derive(Default)]
struct Acked {
    signals: Vec<uuid::Uuid>,
    events: Vec<uuid::Uuid>,
}

/// `clients` producers, each recording `per_client` signals with two events
/// each, every call retried with the same ids until acknowledged.
fn start_load(
    addr: SocketAddr,
    clients: usize,
    per_client: usize,
    acks: Arc<AtomicUsize>,
    seen: Arc<Seen>,
) -> Vec<tokio::task::JoinHandle<Acked>> {
    (0..clients)
        .map(|_| {
            let acks = acks.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let writer = SignalWriterServiceClient::new(lazy_channel(addr));
                let mut acked = Acked::default();
                for _ in 0..per_client {
                    let id = uuid::Uuid::new_v4();
                    let mut signal = new_signal("ETH-USD");
                    signal.signal_id = id.to_string();
                    until_acknowledged(&seen, || {
                        let mut writer = writer.clone();
                        let signal = signal.clone();
                        async move {
                            writer
                                .record_signal(pb::RecordSignalRequest {
                                    signal: Some(signal),
                                })
                                .await
                        }
                    })
                    .await;
                    acked.signals.push(id);
                    acks.fetch_add(1, Ordering::Relaxed);
                    for (status, location) in [
                        (S::QueuedProcessing, L::ProcessingQueue),
                        (S::Processing, L::WorkerProcessing),
                    ] {
                        let event = new_event(&signal.signal_id, status, location, None);
                        until_acknowledged(&seen, || {
                            let mut writer = writer.clone();
                            let event = event.clone();
                            async move {
                                writer
                                    .record_event(pb::RecordEventRequest { event: Some(event) })
                                    .await
                            }
                        })
                        .await;
                        acked.events.push(event.event_id.parse().unwrap());
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                }
                acked
            })
        })
        .collect()
}

/// Every acknowledged signal and event stored exactly once, and each
/// signal's counters as if every event had been applied once.
async fn assert_stored_exactly_once(db: &mut AsyncPgConnection, acked: &[Acked]) -> (i64, i64) {
    let signals: Vec<uuid::Uuid> = acked.iter().flat_map(|a| a.signals.clone()).collect();
    let events: Vec<uuid::Uuid> = acked.iter().flat_map(|a| a.events.clone()).collect();
    let stored_signals =
        diesel::sql_query("SELECT count(*) AS n FROM signals WHERE signal_id = ANY($1)")
            .bind::<Array<diesel::sql_types::Uuid>, _>(&signals)
            .get_result::<Count>(db)
            .await
            .unwrap()
            .n;
    assert_eq!(stored_signals, signals.len() as i64, "acknowledged signals");
    let stored_events =
        diesel::sql_query("SELECT count(*) AS n FROM signal_events WHERE event_id = ANY($1)")
            .bind::<Array<diesel::sql_types::Uuid>, _>(&events)
            .get_result::<Count>(db)
            .await
            .unwrap()
            .n;
    assert_eq!(
        stored_events,
        events.len() as i64,
        "acknowledged events, each once"
    );
    assert_eq!(
        scalar(
            db,
            "SELECT count(*) - count(DISTINCT event_id) AS n FROM signal_events"
        )
        .await,
        0,
        "no event stored twice"
    );
    assert_eq!(
        scalar(
            db,
            "SELECT count(*) AS n FROM signals WHERE current_status <> 'processing' \
             OR retry_count <> 0 OR error_count <> 0"
        )
        .await,
        0,
        "every signal applied its two events exactly once"
    );
    (stored_signals, stored_events)
}

#[tokio::test(flavor = "multi_thread")]
async fn writer_killed_with_sigkill_under_load_loses_and_duplicates_nothing() {
    let _shared = CLUSTER.read().await;
    let cluster = cluster().await;
    let database = fresh_database(cluster).await;
    let url = cluster.primary_url(&database);
    let port = integration_tests::free_port();
    let mut writer = ServerProcess::writer(WRITER, &url, &[], Some(port));
    writer
        .wait_health(ServingStatus::Serving, Duration::from_secs(30))
        .await;

    let acks = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Seen::default());
    let load = start_load(writer.addr, 20, 8, acks.clone(), seen.clone());
    wait_for("60 acknowledgements", Duration::from_secs(30), || {
        let acks = acks.clone();
        async move { AtomicUsize::load(&acks, Ordering::Relaxed) >= 60 }
    })
    .await;
    writer.kill9();
    let at_kill = AtomicUsize::load(&acks, Ordering::Relaxed);
    let restarted = ServerProcess::writer(WRITER, &url, &[], Some(port));
    restarted
        .wait_health(ServingStatus::Serving, Duration::from_secs(30))
        .await;
    let mut acked = Vec::new();
    for client in load {
        acked.push(
            tokio::time::timeout(Duration::from_secs(90), client)
                .await
                .expect("load finishes")
                .unwrap(),
        );
    }
    let mut db = connect(&url).await;
    let (signals, events) = assert_stored_exactly_once(&mut db, &acked).await;
    let codes = seen.summary().await;
    println!(
        "kill -9 after {at_kill} acknowledgements; {} acknowledged in all; stored {signals} signals, \
         {events} acknowledged events, each once; failures retried: {codes:?}",
        AtomicUsize::load(&acks, Ordering::Relaxed)
    );
    assert_eq!(signals, 160);
    assert_eq!(events, 320);
    drop(restarted);
    drop(db);
    let mut admin = connect(&cluster.primary_url("postgres")).await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_crash_under_load_is_unavailable_then_heals_with_nothing_lost() {
    let _exclusive = CLUSTER.write().await;
    let app = TestApp::start_with(|writer, _| writer.pool.pool_timeout_ms = 1_000).await;
    let _heal = HealOnDrop(app.cluster);
    let addr = app.writer_server.addr;
    wait_for("writer SERVING", Duration::from_secs(10), || {
        health_is(addr, ServingStatus::Serving)
    })
    .await;
    let acks = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Seen::default());
    let load = start_load(addr, 10, 6, acks.clone(), seen.clone());
    wait_for("30 acknowledgements", Duration::from_secs(30), || {
        let acks = acks.clone();
        async move { AtomicUsize::load(&acks, Ordering::Relaxed) >= 30 }
    })
    .await;

    let cluster = app.cluster;
    tokio::task::spawn_blocking(move || stop_server(cluster, Server::Primary, "immediate"))
        .await
        .unwrap();
    let at_crash = AtomicUsize::load(&acks, Ordering::Relaxed);
    wait_for("writer NOT_SERVING", Duration::from_secs(15), || {
        health_is(addr, ServingStatus::NotServing)
    })
    .await;
    let status = app
        .writer
        .clone()
        .record_signal(pb::RecordSignalRequest {
            signal: Some(new_signal("AAPL")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("retry"), "{status:?}");

    tokio::task::spawn_blocking(move || start_cluster_again(cluster))
        .await
        .unwrap();
    wait_for("writer SERVING again", Duration::from_secs(30), || {
        health_is(addr, ServingStatus::Serving)
    })
    .await;
    let mut acked = Vec::new();
    for client in load {
        acked.push(
            tokio::time::timeout(Duration::from_secs(90), client)
                .await
                .expect("load finishes")
                .unwrap(),
        );
    }
    let mut db = app.primary().await;
    let (signals, events) = assert_stored_exactly_once(&mut db, &acked).await;
    let codes = seen.summary().await;
    println!(
        "primary crashed after {at_crash} acknowledgements; stored {signals} signals and \
         {events} events, each once; failures while down: {codes:?}"
    );
    for code in codes.keys() {
        assert!(
            code == "Unavailable" || code == "Aborted",
            "a client must be told to retry, got {code}: {codes:?}"
        );
    }
    assert_eq!((signals, events), (60, 120));
}

async fn get_signal(
    reader: &mut SignalReaderServiceClient<Channel>,
    signal_id: &str,
    token: Option<pb::ConsistencyToken>,
) -> Result<pb::GetSignalResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::GetSignalRequest {
        signal_id: signal_id.into(),
        consistency_token: token,
    });
    request.set_timeout(Duration::from_secs(2));
    reader.get_signal(request).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_or_stopped_replica_is_unavailable_never_stale_and_heals() {
    let _exclusive = CLUSTER.write().await;
    // A pool that gives up sooner than the callers' deadline.
    let app = TestApp::start_with(|_, reader| reader.pool.pool_timeout_ms = 500).await;
    let _heal = HealOnDrop(app.cluster);
    let mut reader = app.reader.clone();
    let (first, first_token) = app.record_signal("AAPL").await;
    get_signal(&mut reader, &first.signal_id, Some(first_token))
        .await
        .unwrap();

    // Replay paused: a token the replica has not reached is UNAVAILABLE.
    let mut replica = app.replica().await;
    replica
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    wait_for("replay paused", Duration::from_secs(10), || async {
        let mut replica = connect(&app.replica_url).await;
        scalar(
            &mut replica,
            "SELECT (pg_get_wal_replay_pause_state() = 'paused')::int::int8 AS n",
        )
        .await
            == 1
    })
    .await;
    let (second, second_token) = app.record_signal("MSFT").await;
    let status = get_signal(&mut reader, &second.signal_id, Some(second_token.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("replayed"), "{status:?}");
    assert!(health_is(app.reader_server.addr, ServingStatus::Serving).await);
    replica
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    drop(replica);
    get_signal(&mut reader, &second.signal_id, Some(second_token.clone()))
        .await
        .expect("the token is reached once replay resumes");

    // Replica down: NOT_SERVING and UNAVAILABLE, then back by itself.
    let cluster = app.cluster;
    tokio::task::spawn_blocking(move || stop_server(cluster, Server::Replica, "fast"))
        .await
        .unwrap();
    let addr = app.reader_server.addr;
    wait_for("reader NOT_SERVING", Duration::from_secs(15), || {
        health_is(addr, ServingStatus::NotServing)
    })
    .await;
    let status = get_signal(&mut reader, &first.signal_id, None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    tokio::task::spawn_blocking(move || start_cluster_again(cluster))
        .await
        .unwrap();
    wait_for("reader SERVING again", Duration::from_secs(30), || {
        health_is(addr, ServingStatus::Serving)
    })
    .await;
    wait_for("reads answered again", Duration::from_secs(10), || {
        let mut reader = reader.clone();
        let id = second.signal_id.clone();
        let token = second_token.clone();
        async move { get_signal(&mut reader, &id, Some(token)).await.is_ok() }
    })
    .await;
    println!("replica paused: UNAVAILABLE for an unreplayed token; stopped: NOT_SERVING; healed");
}

/// Writer connections of `database` in `state` (or waiting on a lock).
async fn writer_sessions(url: &str, database: &str, condition: &str) -> i64 {
    let mut conn = connect(url).await;
    scalar(
        &mut conn,
        &format!(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{database}' \
             AND application_name = 'audit-writer' AND {condition}"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_pool_behind_a_locked_table_fails_fast_and_clearly() {
    let _shared = CLUSTER.read().await;
    let app = TestApp::start_with(|writer, _| {
        writer.pool.pool_max = 3;
        writer.pool.pool_timeout_ms = 300;
        writer.statement_timeout_ms = 1_500;
    })
    .await;
    let (signal, _) = app.record_signal("AAPL").await;
    let mut locker = app.primary().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE signals IN EXCLUSIVE MODE")
        .await
        .unwrap();

    let deadline = Duration::from_secs(4);
    let mut calls = Vec::new();
    for i in 0..24u32 {
        let mut writer = app.writer.clone();
        let id = signal.signal_id.clone();
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let call = async {
                if i.is_multiple_of(2) {
                    writer
                        .record_batch(pb::RecordBatchRequest {
                            signals: vec![new_signal("MSFT")],
                            events: vec![],
                        })
                        .await
                        .map(|_| ())
                } else {
                    writer
                        .record_event(pb::RecordEventRequest {
                            event: Some(new_event(&id, S::Processing, L::WorkerProcessing, None)),
                        })
                        .await
                        .map(|_| ())
                }
            };
            let answer = tokio::time::timeout(deadline, call).await;
            (answer, started.elapsed())
        }));
    }
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (answer, took) = call.await.unwrap();
        slowest = slowest.max(took);
        let status = answer
            .expect("answered before the caller's deadline")
            .expect_err("nothing can be written while the table is locked");
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
            "{status:?}"
        );
        assert!(
            status.message().contains("retry") || status.message().contains("timed out"),
            "{status:?}"
        );
        *codes.entry(format!("{:?}", status.code())).or_default() += 1;
    }
    assert!(codes.contains_key("DeadlineExceeded"), "{codes:?}");
    assert!(codes.contains_key("Unavailable"), "{codes:?}");
    // The service is up throughout: it answers its health check.
    assert!(
        health_is(app.writer_server.addr, ServingStatus::Serving).await
            || health_is(app.writer_server.addr, ServingStatus::NotServing).await
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    wait_for("writes accepted again", Duration::from_secs(10), || {
        let mut writer = app.writer.clone();
        async move {
            writer
                .record_signal(pb::RecordSignalRequest {
                    signal: Some(new_signal("AAPL")),
                })
                .await
                .is_ok()
        }
    })
    .await;
    let mut db = app.primary().await;
    let signals = count_rows(&mut db, "signals").await;
    let events = count_rows(&mut db, "signal_events").await;
    println!(
        "24 calls on a pool of 3 behind a locked table: {codes:?}, slowest answer {slowest:?}; \
         stored afterwards {signals} signals, {events} events"
    );
    assert_eq!((signals, events), (2, 2), "failed calls wrote nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_terminated_mid_call_are_retried_or_answered_unavailable() {
    let _shared = CLUSTER.read().await;
    let app = TestApp::start().await;
    let database = app.database.name.clone();
    let mut locker = app.primary().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE signals IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let unary_signal = new_signal("AAPL");
    let batch_signal = new_signal("MSFT");
    let unary = tokio::spawn({
        let mut writer = app.writer.clone();
        let signal = unary_signal.clone();
        async move {
            writer
                .record_signal(pb::RecordSignalRequest {
                    signal: Some(signal),
                })
                .await
        }
    });
    let batch = tokio::spawn({
        let mut writer = app.writer.clone();
        async move {
            writer
                .record_batch(pb::RecordBatchRequest {
                    signals: vec![batch_signal],
                    events: vec![],
                })
                .await
        }
    });
    let url = app.primary_url.clone();
    wait_for(
        "both calls waiting on the lock",
        Duration::from_secs(10),
        || writer_sessions(&url, &database, "wait_event_type = 'Lock'").map(|n| n == 2),
    )
    .await;
    let terminated = scalar(
        &mut locker,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE datname = '{database}' AND application_name = 'audit-writer'"
        ),
    )
    .await;
    let status = batch.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("retry"), "{status:?}");
    // The group commit retries on a fresh connection, which waits on the
    // lock again.
    wait_for("the group retried", Duration::from_secs(10), || {
        writer_sessions(&url, &database, "wait_event_type = 'Lock'").map(|n| n == 1)
    })
    .await;
    locker.batch_execute("COMMIT").await.unwrap();
    let answer = unary.await.unwrap().expect("retried group commit succeeds");
    assert_eq!(
        answer.get_ref().signal.as_ref().unwrap().ticker,
        unary_signal.ticker
    );
    let mut db = app.primary().await;
    let signals = count_rows(&mut db, "signals").await;
    println!(
        "terminated {terminated} writer sessions mid-call: group commit retried and succeeded, \
         RecordBatch UNAVAILABLE; {signals} signal stored"
    );
    assert_eq!(signals, 1);
}

use futures::FutureExt;

/// `n` signals written straight into the database, for long exports.
async fn seed_signals(url: &str, n: i64) {
    let mut db = connect(url).await;
    db.batch_execute(&format!(
        "INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, \
         original_signal, created_at, updated_at) \
         SELECT gen_random_uuid(), 'AAPL', 'AAPL', 'buy', 'open', 1, '{{\"n\":1}}', \
                now() - i * interval '1 ms', now() FROM generate_series(1, {n}) AS i"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_every_long_call_lets_unary_calls_finish_and_exits_in_time() {
    let _shared = CLUSTER.read().await;
    let cluster = cluster().await;
    let database = fresh_database(cluster).await;
    let primary_url = cluster.primary_url(&database);
    seed_signals(&primary_url, 20_000).await;
    wait_replica(cluster).await;
    let grace = ["--shutdown-grace-secs=8".to_owned()];
    let mut writer = ServerProcess::writer(WRITER, &primary_url, &grace, None);
    let reader_flags = [
        grace[0].clone(),
        "--consistency-max-wait-ms=60000".to_owned(),
    ];
    let mut reader =
        ServerProcess::reader(READER, &cluster.replica_url(&database), &reader_flags, None);
    for process in [&writer, &reader] {
        process
            .wait_health(ServingStatus::Serving, Duration::from_secs(30))
            .await;
    }
    let mut reader_client = SignalReaderServiceClient::new(lazy_channel(reader.addr));
    let mut writer_client = SignalWriterServiceClient::new(lazy_channel(writer.addr));

    // Reader: a tail, an export read one chunk in, a read waiting on a
    // token the replica will not reach.
    let mut tail = reader_client
        .stream_events(pb::StreamEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut export = reader_client
        .export_signals(pb::ExportSignalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(export.message().await.unwrap().is_some());
    let waiting = tokio::spawn({
        let mut reader_client = reader_client.clone();
        async move {
            reader_client
                .get_signal(pb::GetSignalRequest {
                    signal_id: uuid::Uuid::new_v4().to_string(),
                    consistency_token: Some(pb::ConsistencyToken {
                        lsn: "FFFFFFF/0".into(),
                    }),
                })
                .await
        }
    });
    // Calls on one connection reach the server in order: once this one is
    // answered, the waiting read is being served.
    reader_client
        .get_replication_status(pb::GetReplicationStatusRequest {})
        .await
        .unwrap();

    // Writer: an Ingest stream kept open, and a unary call held in flight
    // by a lock.
    let (chunks, chunk_stream) = tokio::sync::mpsc::channel::<pb::IngestRequest>(4);
    chunks
        .send(pb::IngestRequest {
            chunk_id: 1,
            signals: vec![new_signal("AAPL")],
            events: vec![],
        })
        .await
        .unwrap();
    let mut acks = writer_client
        .ingest(tokio_stream::wrappers::ReceiverStream::new(chunk_stream))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acks.message().await.unwrap().unwrap().code, 0);
    let mut locker = connect(&primary_url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE signals IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let in_flight = tokio::spawn({
        let mut writer_client = writer_client.clone();
        async move {
            writer_client
                .record_batch(pb::RecordBatchRequest {
                    signals: vec![new_signal("MSFT")],
                    events: vec![],
                })
                .await
        }
    });
    wait_for("the unary call in flight", Duration::from_secs(10), || {
        writer_sessions(&primary_url, &database, "wait_event_type = 'Lock'").map(|n| n == 1)
    })
    .await;

    let sigterm = Instant::now();
    writer.terminate();
    reader.terminate();

    let ended = tail.message().await.unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("resume_token"), "{ended:?}");
    let mut exported = 1;
    let ended = loop {
        match export.message().await {
            Ok(Some(_)) => exported += 1,
            Ok(None) => panic!("the export ran to its end instead of stopping"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    let ended = waiting.await.unwrap().unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    let ended = acks.message().await.unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("resend"), "{ended:?}");
    let streams_ended = sigterm.elapsed();

    // The unary call was in flight before SIGTERM: it completes.
    locker.batch_execute("COMMIT").await.unwrap();
    let finished = in_flight
        .await
        .unwrap()
        .expect("the in-flight call finishes");
    assert_eq!(finished.get_ref().signals_created, 1);
    drop(chunks);

    let writer_exit = writer.exited_within(Duration::from_secs(8)).await;
    let reader_exit = reader.exited_within(Duration::from_secs(8)).await;
    let exited = sigterm.elapsed();
    println!(
        "SIGTERM: tail, export (after {exported} chunks), token read and Ingest ended in \
         {streams_ended:?}; both processes exited after {exited:?}: writer {writer_exit:?}, \
         reader {reader_exit:?}"
    );
    assert!(
        writer_exit.is_some_and(|s| s.success()),
        "writer: {writer_exit:?}\n{}",
        writer.log()
    );
    assert!(
        reader_exit.is_some_and(|s| s.success()),
        "reader: {reader_exit:?}\n{}",
        reader.log()
    );
    // The drain finished by itself, well within the 8 s grace period.
    assert!(exited < Duration::from_secs(8), "{exited:?}");
    assert!(!writer.log().contains("grace period over"));
    let mut db = connect(&primary_url).await;
    assert_eq!(count_rows(&mut db, "signals").await, 20_002);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_grace_period_ends_a_drain_held_up_by_a_silent_connection() {
    let _shared = CLUSTER.read().await;
    let cluster = cluster().await;
    let database = fresh_database(cluster).await;
    seed_signals(&cluster.primary_url(&database), 20_000).await;
    wait_replica(cluster).await;
    let mut reader = ServerProcess::reader(
        READER,
        &cluster.replica_url(&database),
        &["--shutdown-grace-secs=2".to_owned()],
        None,
    );
    reader
        .wait_health(ServingStatus::Serving, Duration::from_secs(30))
        .await;
    let mut client = SignalReaderServiceClient::new(lazy_channel(reader.addr));
    let mut export = client
        .export_signals(pb::ExportSignalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(export.message().await.unwrap().is_some());
    // The export is now stuck on a full window: the client never reads
    // again. And a connection that never says a word (hyperium/hyper#4170).
    let silent = tokio::net::TcpStream::connect(reader.addr).await.unwrap();
    let sigterm = Instant::now();
    reader.terminate();
    let exit = reader.exited_within(Duration::from_secs(10)).await;
    let took = sigterm.elapsed();
    println!(
        "an unread export and a silent connection: reader exited {exit:?} after {took:?} (grace 2 s)"
    );
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}\n{}",
        reader.log()
    );
    assert!(
        reader.log().contains("grace period over"),
        "{}",
        reader.log()
    );
    drop((export, silent));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_leaving_mid_export_or_mid_ingest_leaves_no_statement_behind() {
    let _shared = CLUSTER.read().await;
    let app = TestApp::start_with(|writer, _| {
        // Only the Ingest statements run on the writer's connections.
        writer.rollup_refresh_ms = 3_600_000;
        writer.analytics_refresh_secs = 3_600;
        writer.partition_maintenance_secs = 3_600;
    })
    .await;
    let database = app.database.name.clone();
    seed_signals(&app.primary_url, 20_000).await;
    app.wait_replica().await;

    let mut export = app
        .reader
        .clone()
        .export_signals(pb::ExportSignalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(export.message().await.unwrap().is_some());
    drop(export);
    let replica_url = app.replica_url.clone();
    let busy_reader = || {
        let url = replica_url.clone();
        let database = database.clone();
        async move {
            let mut conn = connect(&url).await;
            scalar(
                &mut conn,
                &format!(
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{database}' \
                     AND application_name = 'audit-reader' AND state <> 'idle' \
                     AND query ILIKE '%signals%'"
                ),
            )
            .await
        }
    };
    wait_for("no export statement left", Duration::from_secs(10), || {
        busy_reader().map(|n| n == 0)
    })
    .await;

    let (chunks, chunk_stream) = tokio::sync::mpsc::channel::<pb::IngestRequest>(4);
    let producer = tokio::spawn(async move {
        for chunk_id in 0.. {
            let chunk = pb::IngestRequest {
                chunk_id,
                signals: (0..100).map(|_| new_signal("AAPL")).collect(),
                events: vec![],
            };
            if chunks.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut acks = app
        .writer
        .clone()
        .ingest(tokio_stream::wrappers::ReceiverStream::new(chunk_stream))
        .await
        .unwrap()
        .into_inner();
    let mut acknowledged = 0;
    while acknowledged < 3 {
        let ack = acks.message().await.unwrap().unwrap();
        assert_eq!(ack.code, 0, "{ack:?}");
        acknowledged += 1;
    }
    producer.abort();
    drop(acks);
    let url = app.primary_url.clone();
    wait_for(
        "no Ingest statement or transaction left",
        Duration::from_secs(10),
        || writer_sessions(&url, &database, "state <> 'idle'").map(|n| n == 0),
    )
    .await;
    let mut db = app.primary().await;
    let stored = count_rows(&mut db, "signals").await - 20_000;
    println!(
        "client left an export after one chunk and an Ingest after {acknowledged} acks: \
         no statement left; {stored} ingested signals stored"
    );
    assert!(stored >= 300, "acknowledged chunks are stored: {stored}");
    assert_eq!(stored % 100, 0, "chunks are all or nothing: {stored}");
}
