//! Test harness: a real PostgreSQL primary with a streaming replica (two
//! for a binary that asks with [`cluster_with_replicas`]), started
//! once per test binary by `scripts/pg-cluster.sh` on free ports in a
//! temporary folder (never the machine's own server), a migrated template
//! database, and per test a fresh database cloned from it with an
//! in-process writer and reader listening on 127.0.0.1:0.
//!
//! The cluster outlives any single test's runtime, so it is stopped by a
//! small watchdog process that waits for the test binary to exit.
//!
//! [`process`] runs the services as processes of their own instead (the
//! fault tests kill -9 and SIGTERM them).

pub mod process;

pub mod analytics;
pub mod pki;

use audit_proto::v1 as pb;
use audit_proto::v1::signal_reader_service_client::SignalReaderServiceClient;
use audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient;
use diesel::QueryableByName;
use diesel::sql_types::{Bool, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OnceCell, oneshot};
use tonic::transport::Channel;

const TEMPLATE_DB: &str = "audit_template";

/// Polls `check` every `every` until it yields a value, and returns it; panics
/// naming `what` when `timeout` passes first. Tests wait for conditions this
/// way, never for a fixed time.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// The primary and replica (or replicas) of this test binary.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub dir: PathBuf,
    pub primary_port: u16,
    pub replica_port: u16,
    /// The second replica, when the binary asked for two.
    pub replica2_port: Option<u16>,
}

impl Cluster {
    /// Every replica's port, the first replica first.
    pub fn replica_ports(&self) -> Vec<u16> {
        std::iter::once(self.replica_port)
            .chain(self.replica2_port)
            .collect()
    }

    /// Runs `scripts/pg-cluster.sh` on this cluster with `args` after its
    /// folder (e.g. `stop replica2`), panicking with its log on failure.
    pub fn script(&self, args: &[String]) {
        let script = repo_root().join("scripts/pg-cluster.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg(args.first().map_or("status", String::as_str))
            .arg(&self.dir)
            .args(args.iter().skip(1))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "pg-cluster.sh {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts whatever server of the cluster is stopped (a replica a test
    /// stopped) and waits for the replicas to stream again.
    pub fn start(&self) {
        let mut args = vec![
            "start".to_owned(),
            self.primary_port.to_string(),
            self.replica_port.to_string(),
        ];
        args.extend(self.replica2_port.map(|p| p.to_string()));
        self.script(&args);
    }

    pub fn primary_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.primary_port)
    }

    pub fn replica_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.replica_port)
    }
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Where [`free_port`] picks: below the kernel's ephemeral range
/// (32768–60999 on Linux), which it draws outgoing connections' source
/// ports from, and above the fixed ports of the scripts' stacks
/// (15xxx–17xxx, README "Ports").
const FREE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Ports [`free_port`] has handed out in this process: each goes to one
/// server only, even before that server has bound it.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port on 127.0.0.1 that nothing holds right now, for a server that
/// takes an address (PostgreSQL, a service process, a metrics endpoint)
/// and binds it later. Not one the kernel chooses (`127.0.0.1:0`): that one
/// lies in the ephemeral range, so between this call and the server's bind
/// a client connection of the suite could take it as its source port (seen:
/// "metrics endpoint: Address already in use"). A random port below that
/// range cannot be taken that way, and is never handed out twice in one
/// test binary.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..1_000 {
        let port = rand::random_range(FREE_PORTS);
        if handed_out.contains(&port) {
            continue;
        }
        // A listener or a connection holding the port fails this bind.
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!(
        "no free port in {}..{} after 1000 tries",
        FREE_PORTS.start, FREE_PORTS.end
    )
}

/// The cluster, started (and the template database migrated) on first use.
pub async fn cluster() -> &'static Cluster {
    cluster_with_replicas(1).await
}

/// The cluster with `replicas` streaming replicas (1 or 2). The first call in
/// a test binary decides: a binary that wants two asks for them before
/// anything else starts the cluster.
pub async fn cluster_with_replicas(replicas: usize) -> &'static Cluster {
    let cluster = CLUSTER
        .get_or_init(|| async {
            let cluster = tokio::task::spawn_blocking(move || start_cluster(replicas))
                .await
                .unwrap_or_else(|e| panic!("cluster start panicked: {e}"));
            let mut admin = connect(&cluster.primary_url("postgres")).await;
            admin
                .batch_execute(&format!("CREATE DATABASE {TEMPLATE_DB}"))
                .await
                .unwrap_or_else(|e| panic!("create template database: {e}"));
            audit_migrations::run_pending(&cluster.primary_url(TEMPLATE_DB))
                .await
                .unwrap_or_else(|e| panic!("migrate template database: {e}"));
            cluster
        })
        .await;
    assert!(
        cluster.replica_ports().len() >= replicas,
        "this test binary started its cluster with fewer replicas than {replicas}"
    );
    cluster
}

#[expect(
    clippy::zombie_processes,
    reason = "the watchdog must outlive this process to stop the cluster after it"
)]
fn start_cluster(replicas: usize) -> Cluster {
    let dir = tempfile::Builder::new()
        .prefix("audit-it-")
        .tempdir_in("/tmp")
        .unwrap_or_else(|e| panic!("temp dir: {e}"))
        .keep();
    // The servers run as the postgres OS user when the tests run as root.
    Command::new("chmod")
        .arg("755")
        .arg(&dir)
        .status()
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    let cluster = Cluster {
        dir,
        primary_port: free_port(),
        replica_port: free_port(),
        replica2_port: (replicas > 1).then(free_port),
    };
    let script = repo_root().join("scripts/pg-cluster.sh");
    cluster.start();
    // Stop the servers and remove their files once this test binary exits,
    // however it exits.
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; bash '{script}' stop '{dir}' >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        script = script.display(),
        dir = cluster.dir.display(),
    );
    Command::new("bash")
        .arg("-c")
        .arg(watchdog)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("watchdog: {e}"));
    cluster
}

pub async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", audit_db::redact_url(url)))
}

#[derive(QueryableByName)]
struct LsnRow {
    #[diesel(sql_type = Text)]
    lsn: String,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    ok: bool,
}

/// Waits until every replica has replayed everything the primary has flushed.
pub async fn wait_replica(cluster: &Cluster) {
    let mut primary = connect(&cluster.primary_url("postgres")).await;
    let LsnRow { lsn } = diesel::sql_query("SELECT pg_current_wal_flush_lsn()::text AS lsn")
        .get_result(&mut primary)
        .await
        .unwrap_or_else(|e| panic!("primary lsn: {e}"));
    for port in cluster.replica_ports() {
        wait_replayed(port, &lsn).await;
    }
}

/// Waits until the replica on `port` has replayed `lsn`.
pub async fn wait_replayed(port: u16, lsn: &str) {
    let mut replica = connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).await;
    wait_until(
        &format!("the replica on :{port} to replay {lsn}"),
        Duration::from_secs(30),
        Duration::from_millis(5),
        async || {
            let Flag { ok } =
                diesel::sql_query("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok")
                    .bind::<Text, _>(lsn)
                    .get_result(&mut replica)
                    .await
                    .unwrap_or_else(|e| panic!("replica lsn: {e}"));
            ok.then_some(())
        },
    )
    .await;
}

/// Creates an empty (migrated) database for one test.
pub async fn fresh_database(cluster: &Cluster) -> String {
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = connect(&cluster.primary_url("postgres")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
        .await
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
    wait_replica(cluster).await;
    name
}

/// Writer flags sized for tests, as `audit-writer serve` takes them.
pub fn writer_flags(database_url: &str) -> Vec<String> {
    [
        "--listen=127.0.0.1:0".to_owned(),
        // Off: tests that scrape set an address (tests/metrics.rs).
        "--metrics-listen=".into(),
        format!("--database-url={database_url}"),
        "--pool-min=1".into(),
        "--pool-max=24".into(),
        "--pool-timeout-ms=5000".into(),
        "--statement-timeout-ms=10000".into(),
        "--max-payload-bytes=16384".into(),
        "--max-batch-items=100".into(),
        "--health-check-ms=100".into(),
        // Caller authentication has its own tests (tests/auth.rs).
        "--auth=off".into(),
    ]
    .into()
}

/// Reader flags sized for tests, as `audit-reader serve` takes them.
pub fn reader_flags(replica_url: &str) -> Vec<String> {
    [
        "--listen=127.0.0.1:0".to_owned(),
        "--metrics-listen=".into(),
        format!("--replica-url={replica_url}"),
        "--pool-min=1".into(),
        "--pool-max=8".into(),
        "--pool-timeout-ms=5000".into(),
        "--consistency-poll-ms=2".into(),
        "--health-check-ms=100".into(),
        "--auth=off".into(),
    ]
    .into()
}

/// Writer options as `audit-writer serve` would parse them, sized for tests.
pub fn writer_args(database_url: String) -> audit_writer::config::ServeArgs {
    use clap::Parser;
    let flags = writer_flags(&database_url);
    audit_writer::config::ServeOnly::try_parse_from(
        std::iter::once("audit-writer".to_owned()).chain(flags),
    )
    .unwrap_or_else(|e| panic!("writer args: {e}"))
    .args
}

/// Reader options as `audit-reader serve` would parse them, sized for tests.
pub fn reader_args(replica_url: String) -> audit_reader::config::ServeArgs {
    use clap::Parser;
    let flags = reader_flags(&replica_url);
    audit_reader::config::ServeOnly::try_parse_from(
        std::iter::once("audit-reader".to_owned()).chain(flags),
    )
    .unwrap_or_else(|e| panic!("reader args: {e}"))
    .args
}

/// A server running in this test's runtime; dropping it shuts it down.
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Sends the shutdown signal and waits for the server to drain.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn spawn_writer(args: audit_writer::config::ServeArgs) -> RunningServer {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|e| panic!("bind writer: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = audit_writer::server::run(args, listener, shutdown).await {
            panic!("writer failed: {e}");
        }
    });
    RunningServer {
        addr,
        stop: Some(stop),
        task,
    }
}

pub async fn spawn_reader(args: audit_reader::config::ServeArgs) -> RunningServer {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|e| panic!("bind reader: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = audit_reader::server::run(args, listener, shutdown).await {
            panic!("reader failed: {e}");
        }
    });
    RunningServer {
        addr,
        stop: Some(stop),
        task,
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The server task has bound its socket already, but may not be accepting
    // yet.
    wait_until(
        &format!("{addr} to accept"),
        Duration::from_secs(2),
        Duration::from_millis(20),
        async || endpoint.connect().await.ok(),
    )
    .await
}

/// One test's world: its own database, a writer on the primary and a reader
/// on the replica, and clients for both. Fields drop in order: servers
/// first, the database last.
pub struct TestApp {
    pub writer: SignalWriterServiceClient<Channel>,
    pub reader: SignalReaderServiceClient<Channel>,
    pub writer_server: RunningServer,
    pub reader_server: RunningServer,
    pub cluster: &'static Cluster,
    pub primary_url: String,
    /// The first replica's copy of this test's database.
    pub replica_url: String,
    /// Every replica's copy, in the reader's order (`replica-1`, …).
    pub replica_urls: Vec<String>,
    pub database: TestDatabase,
}

/// Drops its database (on the primary, so the replica follows) when dropped.
pub struct TestDatabase {
    pub name: String,
    admin_url: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = AsyncPgConnection::establish(&url).await {
                    let _ = conn.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(|_, _| {}).await
    }

    /// Starts with adjusted server options.
    pub async fn start_with(
        adjust: impl FnOnce(&mut audit_writer::config::ServeArgs, &mut audit_reader::config::ServeArgs),
    ) -> Self {
        Self::start_on(cluster().await, adjust).await
    }

    /// Starts on a cluster with two replicas, the reader spread over both
    /// (`--replica-url` with both URLs, comma-separated).
    pub async fn start_with_two_replicas(
        adjust: impl FnOnce(&mut audit_writer::config::ServeArgs, &mut audit_reader::config::ServeArgs),
    ) -> Self {
        Self::start_on(cluster_with_replicas(2).await, adjust).await
    }

    async fn start_on(
        cluster: &'static Cluster,
        adjust: impl FnOnce(&mut audit_writer::config::ServeArgs, &mut audit_reader::config::ServeArgs),
    ) -> Self {
        let name = fresh_database(cluster).await;
        let primary_url = cluster.primary_url(&name);
        let replica_url = cluster.replica_url(&name);
        let replica_urls: Vec<String> = cluster
            .replica_ports()
            .iter()
            .map(|port| format!("postgres://postgres@127.0.0.1:{port}/{name}"))
            .collect();
        let mut writer_args = writer_args(primary_url.clone());
        let mut reader_args = reader_args(replica_urls.join(","));
        adjust(&mut writer_args, &mut reader_args);
        let writer_server = spawn_writer(writer_args).await;
        let reader_server = spawn_reader(reader_args).await;
        Self {
            writer: SignalWriterServiceClient::new(channel(writer_server.addr).await),
            reader: SignalReaderServiceClient::new(channel(reader_server.addr).await),
            writer_server,
            reader_server,
            cluster,
            primary_url,
            replica_url,
            replica_urls,
            database: TestDatabase {
                name,
                admin_url: cluster.primary_url("postgres"),
            },
        }
    }

    pub async fn primary(&self) -> AsyncPgConnection {
        connect(&self.primary_url).await
    }

    pub async fn replica(&self) -> AsyncPgConnection {
        connect(&self.replica_url).await
    }

    pub async fn wait_replica(&self) {
        wait_replica(self.cluster).await;
    }

    /// Records a valid signal for `ticker`; returns it with its token.
    pub async fn record_signal(&self, ticker: &str) -> (pb::Signal, pb::ConsistencyToken) {
        let response = self
            .writer
            .clone()
            .record_signal(pb::RecordSignalRequest {
                signal: Some(new_signal(ticker)),
            })
            .await
            .unwrap_or_else(|e| panic!("record signal: {e}"))
            .into_inner();
        (
            response.signal.unwrap_or_else(|| panic!("no signal")),
            response
                .consistency_token
                .unwrap_or_else(|| panic!("no token")),
        )
    }

    /// Records `event`; panics on failure.
    pub async fn record_event(&self, event: pb::NewEvent) -> pb::RecordEventResponse {
        self.writer
            .clone()
            .record_event(pb::RecordEventRequest { event: Some(event) })
            .await
            .unwrap_or_else(|e| panic!("record event: {e}"))
            .into_inner()
    }
}

pub fn new_signal(ticker: &str) -> pb::NewSignal {
    pb::NewSignal {
        ticker: ticker.into(),
        side: "buy".into(),
        action: "open".into(),
        price: 101.5,
        original_signal_json: serde_json::json!({"ticker": ticker, "side": "buy"}).to_string(),
        ..Default::default()
    }
}

/// An event for `signal_id` with a fresh event id, at `at` (now when `None`).
pub fn new_event(
    signal_id: &str,
    status: pb::SignalStatus,
    location: pb::SignalLocation,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> pb::NewEvent {
    pb::NewEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        signal_id: signal_id.into(),
        event_type: status.into(),
        location: location.into(),
        timestamp: at.map(audit_wire::convert::to_timestamp),
        worker_id: "worker-1".into(),
        ..Default::default()
    }
}

/// Counts rows of `table` (trusted test input) on `conn`.
pub async fn count_rows(conn: &mut AsyncPgConnection, table: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let Count { n } = diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
        .get_result(conn)
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"));
    n
}

/// The name of one day partition of `signal_events` (the table has no
/// default partition: every child holds one day).
pub async fn any_event_partition(conn: &mut AsyncPgConnection) -> String {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let Name { name } = diesel::sql_query(
        "SELECT inhrelid::regclass::text AS name FROM pg_inherits \
         WHERE inhparent = 'signal_events'::regclass ORDER BY 1 LIMIT 1",
    )
    .get_result(conn)
    .await
    .unwrap_or_else(|e| panic!("a partition of signal_events: {e}"));
    name
}

/// A TCP proxy in front of a server that a test can cut and restore, to take
/// a database away from one service without touching the shared cluster:
/// while cut, open connections are dropped and new ones closed at once.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind proxy: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (cut, _) = tokio::sync::watch::channel(false);
        let watch = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = watch.subscribe();
                if *cut.borrow() {
                    continue; // dropping the socket closes it
                }
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { addr, cut, task }
    }

    /// Drops every open connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client interceptor that sends `token` as `authorization: Bearer …`.
pub fn bearer(
    token: &str,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone + use<> {
    let value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}")
        .parse()
        .unwrap_or_else(|e| panic!("token header: {e}"));
    move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
        Ok(request)
    }
}

/// Turns authentication on in server options: `tokens` as a tokens file
/// (`role name token` triples, hashed as operators would) and `certs` as a
/// client-certificates file (`role name` pairs), both written into `dir`.
pub fn auth_on(
    auth: &mut audit_server::auth::AuthArgs,
    dir: &std::path::Path,
    tokens: &[(&str, &str, &str)],
    certs: &[(&str, &str)],
) {
    auth.auth = audit_server::auth::AuthMode::On;
    if !tokens.is_empty() {
        let lines: String = tokens
            .iter()
            .map(|(role, name, token)| {
                format!("{role} {name} {}\n", audit_server::auth::token_hash(token))
            })
            .collect();
        auth.auth_tokens_file = Some(pki::write(dir, "tokens", &lines));
    }
    if !certs.is_empty() {
        let lines: String = certs
            .iter()
            .map(|(role, name)| format!("{role} {name}\n"))
            .collect();
        auth.auth_client_certs_file = Some(pki::write(dir, "client-certs", &lines));
    }
}
