//! Callers authenticated and authorised: bearer tokens mapped to roles,
//! UNAUTHENTICATED without (valid) credentials, PERMISSION_DENIED for the
//! wrong role, health and reflection open, and every stored signal and
//! event remembering who recorded it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_reader_service_client::SignalReaderServiceClient;
use audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient;
use diesel::QueryableByName;
use diesel::sql_types::{Nullable, Text};
use diesel_async::RunQueryDsl;
use integration_tests::{
    Cluster, RunningServer, auth_on, bearer, channel, cluster, connect, fresh_database, new_event,
    new_signal, reader_args, spawn_reader, spawn_writer, wait_replica, writer_args,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const WRITER_TOKEN: &str = "w-3f9c1e-secret";
const READER_TOKEN: &str = "r-77ab02-secret";
const ADMIN_TOKEN: &str = "a-0d4e55-secret";

#[derive(QueryableByName)]
struct By {
    #[diesel(sql_type = Nullable<Text>)]
    recorded_by: Option<String>,
}

/// A fresh database with the writer and the reader in front of it, both
/// admitting the same three callers (one per role), and a channel to each.
/// The servers and the token file live as long as the returned value.
struct Services {
    db: String,
    wch: Channel,
    rch: Channel,
    _servers: (RunningServer, RunningServer),
    _tokens: tempfile::TempDir,
}

async fn services_with_three_callers(cluster: &Cluster) -> Services {
    let db = fresh_database(cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = [
        ("writer", "ingest-bot", WRITER_TOKEN),
        ("reader", "dashboard", READER_TOKEN),
        ("admin", "ops", ADMIN_TOKEN),
    ];
    let mut wargs = writer_args(cluster.primary_url(&db));
    auth_on(&mut wargs.security.auth, dir.path(), &tokens, &[]);
    let mut rargs = reader_args(cluster.replica_url(&db));
    auth_on(&mut rargs.security.auth, dir.path(), &tokens, &[]);
    let writer = spawn_writer(wargs).await;
    let reader = spawn_reader(rargs).await;
    Services {
        db,
        wch: channel(writer.addr).await,
        rch: channel(reader.addr).await,
        _servers: (writer, reader),
        _tokens: dir,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_authenticate_roles_authorise_and_rows_remember_the_caller() {
    let cluster = cluster().await;
    // Bound by name (not `..`) so the servers live to the end of the test.
    let Services {
        db,
        wch,
        rch,
        _servers,
        _tokens,
    } = services_with_three_callers(cluster).await;

    // No credentials: UNAUTHENTICATED, on writes and on reads.
    let request = pb::RecordSignalRequest {
        signal: Some(new_signal("AAPL")),
    };
    let status = SignalWriterServiceClient::new(wch.clone())
        .record_signal(request.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = SignalReaderServiceClient::new(rch.clone())
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // A wrong token: UNAUTHENTICATED, and the message does not echo it.
    let status = SignalWriterServiceClient::with_interceptor(wch.clone(), bearer("guess"))
        .record_signal(request.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(!status.message().contains("guess"));

    // The reader's token cannot write; the writer's cannot read.
    let status = SignalWriterServiceClient::with_interceptor(wch.clone(), bearer(READER_TOKEN))
        .record_signal(request.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = SignalReaderServiceClient::with_interceptor(rch.clone(), bearer(WRITER_TOKEN))
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // The writer's token writes; the signal and its events say who.
    let mut w = SignalWriterServiceClient::with_interceptor(wch.clone(), bearer(WRITER_TOKEN));
    let recorded = w.record_signal(request.clone()).await.unwrap().into_inner();
    let signal = recorded.signal.unwrap();
    assert_eq!(signal.recorded_by, "ingest-bot");
    let event = w
        .record_event(pb::RecordEventRequest {
            event: Some(new_event(
                &signal.signal_id,
                pb::SignalStatus::QueuedProcessing,
                pb::SignalLocation::ProcessingQueue,
                None,
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(event.event.unwrap().recorded_by, "ingest-bot");
    // Admin may write too (and is recorded as itself).
    let batch = SignalWriterServiceClient::with_interceptor(wch.clone(), bearer(ADMIN_TOKEN))
        .record_batch(pb::RecordBatchRequest {
            signals: vec![new_signal("MSFT")],
            events: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.signals_created, 1);

    let mut primary = connect(&cluster.primary_url(&db)).await;
    let signals: Vec<By> = diesel::sql_query("SELECT recorded_by FROM signals ORDER BY ticker")
        .load(&mut primary)
        .await
        .unwrap();
    let signals: Vec<_> = signals.into_iter().map(|r| r.recorded_by).collect();
    assert_eq!(signals, [Some("ingest-bot".into()), Some("ops".into())]);
    let events: Vec<By> = diesel::sql_query(
        "SELECT recorded_by FROM signal_events WHERE signal_id = $1::uuid ORDER BY sequence",
    )
    .bind::<Text, _>(&signal.signal_id)
    .load(&mut primary)
    .await
    .unwrap();
    // The `received` event written with the signal, then the queued one.
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|r| r.recorded_by.as_deref() == Some("ingest-bot"))
    );

    // Readers see it through the reader service with the reader's token.
    wait_replica(cluster).await;
    let got = SignalReaderServiceClient::with_interceptor(rch.clone(), bearer(READER_TOKEN))
        .get_signal(pb::GetSignalRequest {
            signal_id: signal.signal_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.signal.unwrap().recorded_by, "ingest-bot");
    assert!(got.events.iter().all(|e| e.recorded_by == "ingest-bot"));

    // Health stays open by default.
    let health = HealthClient::new(wch.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_streams_record_their_caller_and_health_can_be_closed() {
    let cluster = cluster().await;
    let db = fresh_database(cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let mut wargs = writer_args(cluster.primary_url(&db));
    auth_on(
        &mut wargs.security.auth,
        dir.path(),
        &[("writer", "stream-bot", WRITER_TOKEN)],
        &[],
    );
    wargs.security.auth.auth_open_health = false;
    let writer = spawn_writer(wargs).await;
    let wch = channel(writer.addr).await;

    let status = HealthClient::new(wch.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut w = SignalWriterServiceClient::with_interceptor(wch.clone(), bearer(WRITER_TOKEN));
    let chunk = pb::IngestRequest {
        chunk_id: 1,
        signals: vec![new_signal("NVDA"), new_signal("AMD")],
        events: vec![],
    };
    let mut acks = w
        .ingest(tokio_stream::iter([chunk]))
        .await
        .unwrap()
        .into_inner();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!(ack.code, 0, "{ack:?}");
    let mut primary = connect(&cluster.primary_url(&db)).await;
    let rows: Vec<By> = diesel::sql_query(
        "SELECT recorded_by FROM signals UNION ALL SELECT recorded_by FROM signal_events",
    )
    .load(&mut primary)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter()
            .all(|r| r.recorded_by.as_deref() == Some("stream-bot"))
    );
}

/// Every line of an ExportSignals answer, concatenated.
async fn export(
    channel: tonic::transport::Channel,
    token: &str,
    format: pb::ExportFormat,
) -> String {
    let mut stream = SignalReaderServiceClient::with_interceptor(channel, bearer(token))
        .export_signals(pb::ExportSignalsRequest {
            format: format.into(),
            sort_by: pb::SignalSortField::CreatedAt.into(),
            direction: pb::SortDirection::Ascending.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend(chunk.chunk);
    }
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_name_the_caller_that_recorded_each_signal() {
    let cluster = cluster().await;
    // Bound by name (not `..`) so the servers live to the end of the test.
    let Services {
        db,
        wch,
        rch,
        _servers,
        _tokens,
    } = services_with_three_callers(cluster).await;

    // Two callers record one signal each; a third row is written with no
    // caller at all (as before authentication existed).
    for (token, ticker) in [(WRITER_TOKEN, "AAPL"), (ADMIN_TOKEN, "MSFT")] {
        SignalWriterServiceClient::with_interceptor(wch.clone(), bearer(token))
            .record_signal(pb::RecordSignalRequest {
                signal: Some(new_signal(ticker)),
            })
            .await
            .unwrap();
    }
    let mut primary = connect(&cluster.primary_url(&db)).await;
    diesel::sql_query(
        "INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, \
         original_signal, created_at, updated_at) VALUES (gen_random_uuid(), 'NVDA', 'NVDA', \
         'buy', 'open', 1, '{}', now() + interval '1 second', now() + interval '1 second')",
    )
    .execute(&mut primary)
    .await
    .unwrap();
    wait_replica(cluster).await;

    let csv = export(rch.clone(), READER_TOKEN, pb::ExportFormat::Csv).await;
    let mut parsed = csv::Reader::from_reader(csv.as_bytes());
    let header = parsed.headers().unwrap().clone();
    assert_eq!(header.len(), 16, "{header:?}");
    // Added as the last column: the fifteen before it keep their places.
    assert_eq!(&header[14], "original_signal");
    assert_eq!(&header[15], "recorded_by");
    let by: Vec<(String, String)> = parsed
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[1].to_owned(), r[15].to_owned())
        })
        .collect();
    assert_eq!(
        by,
        [
            ("AAPL".to_owned(), "ingest-bot".to_owned()),
            ("MSFT".to_owned(), "ops".to_owned()),
            ("NVDA".to_owned(), String::new()),
        ]
    );

    let json = export(rch.clone(), READER_TOKEN, pb::ExportFormat::JsonLines).await;
    let by: Vec<serde_json::Value> = json
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["recorded_by"].clone())
        .collect();
    assert_eq!(
        by,
        [
            serde_json::json!("ingest-bot"),
            serde_json::json!("ops"),
            serde_json::Value::Null
        ]
    );
}

#[tokio::test]
async fn auth_on_without_any_credentials_file_refuses_to_start() {
    let mut wargs = writer_args("postgres://postgres@127.0.0.1:1/none".into());
    wargs.security.auth.auth = audit_server::auth::AuthMode::On;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = audit_writer::server::run(wargs, listener, async {})
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("AUDIT_AUTH_TOKENS_FILE"),
        "{error}"
    );
}
