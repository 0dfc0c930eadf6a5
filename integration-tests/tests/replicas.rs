//! Reads over two replicas: calls spread over both, a replica stopped under
//! load costs no call that can retry and comes back by itself, and a
//! replica whose replay is paused is skipped for a token it has not reached.
//!
//! This binary's cluster has two replicas. The tests stop and pause them,
//! so they take turns ([`LOCK`]) and put every replica back as they leave
//! ([`Restore`]), even when they fail.

use audit_proto::v1 as pb;
use audit_proto::v1::signal_reader_service_client::SignalReaderServiceClient;
use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::SimpleAsyncConnection;
use integration_tests::process::{Server, health_is, stop_server};
use integration_tests::{TestApp, connect, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a stopped replica again and resumes paused replay when dropped.
struct Restore(&'static integration_tests::Cluster);

impl Drop for Restore {
    fn drop(&mut self) {
        self.0.start();
        for port in self.0.replica_ports() {
            let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    use diesel_async::AsyncConnection;
                    if let Ok(mut conn) = diesel_async::AsyncPgConnection::establish(&url).await {
                        let _ = conn.batch_execute("SELECT pg_wal_replay_resume()").await;
                    }
                });
            })
            .join();
        }
    }
}

async fn start() -> (TestApp, Restore) {
    let app = TestApp::start_with_two_replicas(|_, _| {}).await;
    let restore = Restore(app.cluster);
    (app, restore)
}

/// A sample of this process's metrics registry (the reader under test runs
/// in-process, so no scrape endpoint is needed).
fn metric(name: &str, replica: &str) -> f64 {
    let prefix = format!("{name}{{replica=\"{replica}\"}} ");
    audit_server::metrics::install()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn calls(replica: &str) -> f64 {
    metric("audit_reader_replica_calls_total", replica)
}

#[derive(QueryableByName)]
struct Scans {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Scans of `signals` the replica at `url` has counted itself
/// (pg_stat_user_tables is kept per server, so a standby counts the reads
/// it answered): an observation that does not rely on the reader's metrics.
async fn signal_scans(url: &str) -> i64 {
    // In scope only here: its `load` would shadow the atomics' elsewhere.
    use diesel_async::RunQueryDsl;
    let mut conn = connect(url).await;
    let Scans { n } = diesel::sql_query(
        "SELECT (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::bigint AS n \
         FROM pg_stat_user_tables WHERE relname = 'signals'",
    )
    .get_result(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("signal scans: {e}"));
    n
}

fn get(
    signal_id: &str,
    token: Option<pb::ConsistencyToken>,
) -> tonic::Request<pb::GetSignalRequest> {
    let mut request = tonic::Request::new(pb::GetSignalRequest {
        signal_id: signal_id.to_owned(),
        consistency_token: token,
    });
    request.set_timeout(Duration::from_secs(10));
    request
}

#[tokio::test]
async fn calls_spread_over_both_replicas() {
    let _turn = LOCK.lock().await;
    let (app, _restore) = start().await;
    let (signal, token) = app.record_signal("SPREAD").await;
    app.wait_replica().await;
    let mut scans_before = Vec::new();
    for url in &app.replica_urls {
        scans_before.push(signal_scans(url).await);
    }
    let before = [calls("replica-1"), calls("replica-2")];
    let mut reader = app.reader.clone();
    for i in 0..40 {
        // Half without a token, half with one both replicas have replayed.
        let token = (i % 2 == 0).then(|| token.clone());
        reader
            .get_signal(get(&signal.signal_id, token))
            .await
            .unwrap_or_else(|e| panic!("get signal: {e}"));
    }
    let taken = [
        calls("replica-1") - before[0],
        calls("replica-2") - before[1],
    ];
    println!(
        "calls per replica: replica-1 {}, replica-2 {}",
        taken[0], taken[1]
    );
    assert_eq!(taken[0] + taken[1], 40.0, "every call is counted once");
    assert!(
        taken[0] >= 10.0 && taken[1] >= 10.0,
        "round robin gives each replica a fair share: {taken:?}"
    );
    // Each server saw reads of `signals` (statistics reach the view within
    // about a second).
    for (url, before) in app.replica_urls.iter().zip(scans_before) {
        wait_until(
            "the replica to count reads of signals",
            Duration::from_secs(10),
            Duration::from_millis(100),
            async || (signal_scans(url).await >= before + 10).then_some(()),
        )
        .await;
    }
}

/// Tallies of the load loop.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
}

/// GetSignal in a loop until `stop`; UNAVAILABLE is retried (what clients
/// are told to do), up to 20 times with a short pause.
async fn load(
    mut reader: SignalReaderServiceClient<Channel>,
    id: String,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut attempt = 0;
        loop {
            match reader.get_signal(get(&id, None)).await {
                Ok(_) => {
                    tally.calls.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(status) if status.code() == Code::Unavailable && attempt < 20 => {
                    attempt += 1;
                    tally.retries.fetch_add(1, Ordering::Relaxed);
                    // A client's backoff, not a wait for an event.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => {
                    eprintln!("call lost: {status}");
                    tally.failures.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_stopped_replica_loses_no_call_and_comes_back_by_itself() {
    let _turn = LOCK.lock().await;
    let (app, _restore) = start().await;
    let (signal, _) = app.record_signal("FAILOVER").await;
    app.wait_replica().await;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(load(
                app.reader.clone(),
                signal.signal_id.clone(),
                tally.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let done = |n: u64| {
        let tally = tally.clone();
        async move || (tally.calls.load(Ordering::Relaxed) >= n).then_some(())
    };
    wait_until(
        "calls before the stop",
        Duration::from_secs(30),
        Duration::from_millis(10),
        done(200),
    )
    .await;

    let cluster = app.cluster;
    tokio::task::spawn_blocking(move || stop_server(cluster, Server::Replica2, "fast"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let at_stop = tally.calls.load(Ordering::Relaxed);
    wait_until(
        "replica-2 to be taken out",
        Duration::from_secs(30),
        Duration::from_millis(20),
        async || (metric("audit_reader_replica_up", "replica-2") == 0.0).then_some(()),
    )
    .await;
    // Still SERVING: replica-1 answers.
    assert!(health_is(app.reader_server.addr, ServingStatus::Serving).await);
    let out_from = calls("replica-2");
    wait_until(
        "calls with one replica",
        Duration::from_secs(30),
        Duration::from_millis(10),
        done(at_stop + 200),
    )
    .await;
    assert_eq!(
        calls("replica-2"),
        out_from,
        "no call goes to the stopped replica once it is out"
    );

    let cluster = app.cluster;
    tokio::task::spawn_blocking(move || cluster.start())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until(
        "replica-2 back in rotation",
        Duration::from_secs(60),
        Duration::from_millis(20),
        async || (calls("replica-2") >= out_from + 20.0).then_some(()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let (calls, retries, failures) = (
        tally.calls.load(Ordering::Relaxed),
        tally.retries.load(Ordering::Relaxed),
        tally.failures.load(Ordering::Relaxed),
    );
    println!("replica stopped mid-load: {calls} calls, {retries} retries, {failures} lost");
    assert_eq!(failures, 0, "a call that could retry was lost");
    assert_eq!(metric("audit_reader_replica_up", "replica-2"), 1.0);
}

#[tokio::test]
async fn a_lagging_replica_is_skipped_for_a_token_it_has_not_reached() {
    let _turn = LOCK.lock().await;
    let (app, _restore) = start().await;
    app.wait_replica().await;
    let mut lagging = connect(&app.replica_urls[1]).await;
    lagging
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap_or_else(|e| panic!("pause replay: {e}"));
    let (signal, token) = app.record_signal("LAGGING").await;

    let before = [calls("replica-1"), calls("replica-2")];
    let mut reader = app.reader.clone();
    for _ in 0..10 {
        let answer = reader
            .get_signal(get(&signal.signal_id, Some(token.clone())))
            .await
            .unwrap_or_else(|e| panic!("a call with the token: {e}"))
            .into_inner();
        assert_eq!(
            answer.signal.map(|s| s.signal_id),
            Some(signal.signal_id.clone())
        );
    }
    assert_eq!(calls("replica-1") - before[0], 10.0);
    assert_eq!(
        calls("replica-2") - before[1],
        0.0,
        "the paused replica took a call"
    );
    // It really is behind: the write is not there.
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let Count { n } =
        diesel::sql_query("SELECT count(*) AS n FROM signals WHERE ticker = 'LAGGING'")
            .get_result(&mut connect(&app.replica_urls[1]).await)
            .await
            .unwrap_or_else(|e| panic!("count on the paused replica: {e}"));
    assert_eq!(n, 0, "the paused replica has the write");
    lagging
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap_or_else(|e| panic!("resume replay: {e}"));
    app.wait_replica().await;
}
