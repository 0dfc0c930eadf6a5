//! What surrounds the RPCs: health, reflection, migrations, the read-only
//! reader pool and graceful shutdown (trace context: tests/tracing.rs).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use integration_tests::{
    TestApp, channel, cluster, fresh_database, reader_args, spawn_reader, spawn_writer, writer_args,
};
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn health(addr: std::net::SocketAddr, service: &str) -> i32 {
    HealthClient::new(channel(addr).await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

async fn wait_health(addr: std::net::SocketAddr, service: &str, want: ServingStatus) {
    integration_tests::wait_until(
        &format!("{service:?} on {addr} to report {want:?}"),
        Duration::from_secs(10),
        Duration::from_millis(25),
        async || (health(addr, service).await == want as i32).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_serving_with_a_database_and_not_serving_without() {
    let app = TestApp::start().await;
    for service in ["", "signal_audit.v1.SignalWriterService"] {
        wait_health(app.writer_server.addr, service, ServingStatus::Serving).await;
    }
    wait_health(
        app.reader_server.addr,
        "signal_audit.v1.SignalReaderService",
        ServingStatus::Serving,
    )
    .await;

    // Nothing listens on this port: both services start, and say NOT_SERVING.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut args = writer_args(format!("postgres://postgres@127.0.0.1:{dead}/nope"));
    args.pool.pool_timeout_ms = 200;
    let writer = spawn_writer(args).await;
    let mut args = reader_args(format!("postgres://postgres@127.0.0.1:{dead}/nope"));
    args.pool.pool_timeout_ms = 200;
    let reader = spawn_reader(args).await;
    wait_health(writer.addr, "", ServingStatus::NotServing).await;
    wait_health(
        reader.addr,
        "signal_audit.v1.SignalReaderService",
        ServingStatus::NotServing,
    )
    .await;
    let status = audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient::new(
        channel(writer.addr).await,
    )
    .record_signal(pb::RecordSignalRequest {
        signal: Some(integration_tests::new_signal("AAPL")),
    })
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reader_follows_its_replica_serving_not_serving_and_back() {
    let app = TestApp::start().await;
    let proxy = integration_tests::Proxy::start(
        format!("127.0.0.1:{}", app.cluster.replica_port)
            .parse()
            .unwrap(),
    )
    .await;
    let mut args = reader_args(format!(
        "postgres://postgres@{}/{}",
        proxy.addr, app.database.name
    ));
    args.pool.pool_timeout_ms = 300;
    let reader = spawn_reader(args).await;
    let service = "signal_audit.v1.SignalReaderService";
    wait_health(reader.addr, service, ServingStatus::Serving).await;

    proxy.cut();
    wait_health(reader.addr, service, ServingStatus::NotServing).await;
    let mut client = audit_proto::v1::signal_reader_service_client::SignalReaderServiceClient::new(
        channel(reader.addr).await,
    );
    let status = client
        .get_replication_status(pb::GetReplicationStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    proxy.restore();
    wait_health(reader.addr, service, ServingStatus::Serving).await;
    client
        .get_replication_status(pb::GetReplicationStatusRequest {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_lists_every_service() {
    let app = TestApp::start().await;
    for addr in [app.writer_server.addr, app.reader_server.addr] {
        let mut client = ServerReflectionClient::new(channel(addr).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer {response:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "grpc.health.v1.Health",
            "signal_audit.v1.SignalWriterService",
            "signal_audit.v1.SignalReaderService",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
    }
}

#[derive(diesel::QueryableByName, PartialEq, Debug)]
struct SchemaObject {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

async fn schema(url: &str) -> Vec<String> {
    use diesel_async::RunQueryDsl;
    let mut conn = integration_tests::connect(url).await;
    diesel::sql_query(
        "SELECT format('%s.%s:%s', n.nspname, c.relname, c.relkind) AS name FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
         UNION ALL SELECT 'type:' || typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
         WHERE n.nspname = 'public' AND t.typtype = 'e' \
         UNION ALL SELECT 'ext:' || extname FROM pg_extension ORDER BY 1",
    )
    .load::<SchemaObject>(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|o| o.name)
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_go_up_down_and_up_again() {
    let cluster = cluster().await;
    let name = fresh_database(cluster).await;
    let url = cluster.primary_url(&name);
    let migrated = schema(&url).await;
    assert!(
        migrated.iter().any(|o| o == "public.signal_events:p"),
        "partitioned events table"
    );
    assert!(
        !migrated
            .iter()
            .any(|o| o == "public.signal_events_default:r"),
        "no default partition (retention detaches concurrently)"
    );
    assert!(
        migrated
            .iter()
            .filter(|o| o.starts_with("public.signal_events_p"))
            .count()
            >= 7,
        "premade partitions"
    );
    assert!(
        audit_migrations::run_pending(&url)
            .await
            .unwrap()
            .is_empty(),
        "idempotent"
    );

    let reverted = audit_migrations::revert_all(&url).await.unwrap();
    assert!(!reverted.is_empty());
    let empty = schema(&url).await;
    assert!(
        empty
            .iter()
            .all(|o| o.starts_with("public.__diesel_schema_migrations")
                || o.starts_with("ext:plpgsql")),
        "down migrations leave nothing behind: {empty:?}"
    );
    audit_migrations::run_pending(&url).await.unwrap();
    let again = schema(&url).await;
    let strip = |v: &[String]| -> Vec<String> {
        // Partition names carry dates; compare the shape, not the names.
        v.iter()
            .filter(|o| !o.starts_with("public.signal_events_p"))
            .cloned()
            .collect()
    };
    assert_eq!(strip(&again), strip(&migrated));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reader_pool_cannot_write_even_against_the_primary() {
    let app = TestApp::start().await;
    let mut args = reader_args(app.primary_url.clone());
    args.pool.pool_min = 0;
    let pool = audit_db::build_pool(&args.pools()[0]);
    let signal = audit_wire::decode::new_signal(
        &integration_tests::new_signal("AAPL"),
        &audit_core::rules::Limits::default(),
        chrono::Utc::now(),
    )
    .unwrap();
    let error = audit_writer::store::record_signal(&pool, signal)
        .await
        .unwrap_err();
    assert!(matches!(error, audit_db::DbError::ReadOnly(_)), "{error:?}");
    assert_eq!(
        audit_wire::db_status(error).code(),
        tonic::Code::FailedPrecondition
    );
    let mut db = app.primary().await;
    assert_eq!(integration_tests::count_rows(&mut db, "signals").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_in_flight_calls_finish_then_stops_accepting() {
    use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
    let app = TestApp::start().await;
    // Hold the call in the database: a SHARE lock on signals blocks its
    // INSERT until this transaction ends.
    let mut blocker = app.primary().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE signals IN SHARE MODE")
        .await
        .unwrap();
    let mut client = app.writer.clone();
    let batch: Vec<pb::NewSignal> = (0..100)
        .map(|_| integration_tests::new_signal("AAPL"))
        .collect();
    let in_flight = tokio::spawn(async move {
        client
            .record_batch(pb::RecordBatchRequest {
                signals: batch,
                events: vec![],
            })
            .await
    });
    let mut observer = app.primary().await;
    integration_tests::wait_until(
        "the batch to wait on the lock",
        Duration::from_secs(10),
        Duration::from_millis(5),
        async || {
            let waiting = diesel::sql_query(
                "SELECT 1 AS n FROM pg_stat_activity \
                 WHERE application_name = 'audit-writer' AND wait_event_type = 'Lock'",
            )
            .execute(&mut observer)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;

    let addr = app.writer_server.addr;
    let primary_url = app.primary_url.clone();
    let TestApp {
        writer_server,
        database,
        ..
    } = app;
    let shutdown = tokio::spawn(writer_server.shutdown());
    integration_tests::wait_until(
        "the writer to stop accepting",
        Duration::from_secs(10),
        Duration::from_millis(5),
        async || {
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    // Shutting down, but the drain cannot finish while the call waits.
    assert!(!shutdown.is_finished());
    blocker.batch_execute("COMMIT").await.unwrap();
    // The call was on the wire before the shutdown signal: it completes.
    let finished = in_flight.await.unwrap().unwrap().into_inner();
    assert_eq!(finished.signals_created, 100);
    shutdown.await.unwrap();
    let mut db = integration_tests::connect(&primary_url).await;
    assert_eq!(integration_tests::count_rows(&mut db, "signals").await, 100);
    assert!(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .is_err()
    );
    drop(database);
}

#[derive(diesel::QueryableByName)]
struct Terminal {
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    terminal: bool,
}

#[tokio::test(flavor = "multi_thread")]
async fn terminal_status_means_the_same_in_rust_and_sql() {
    use audit_core::SignalStatus;
    use diesel_async::RunQueryDsl;
    let app = TestApp::start().await;
    let mut db = app.primary().await;
    let rows: Vec<Terminal> = diesel::sql_query(
        "SELECT s::text AS status, signal_status_is_terminal(s) AS terminal \
         FROM unnest(enum_range(NULL::signal_status)) AS s",
    )
    .load(&mut db)
    .await
    .unwrap();
    let sql: Vec<(SignalStatus, bool)> = rows
        .iter()
        .map(|r| {
            (
                SignalStatus::from_name("status", &r.status).unwrap(),
                r.terminal,
            )
        })
        .collect();
    let rust: Vec<(SignalStatus, bool)> = SignalStatus::ALL
        .into_iter()
        .map(|s| (s, s.is_terminal()))
        .collect();
    assert_eq!(sql, rust, "the enum and the terminal statuses agree");
}
