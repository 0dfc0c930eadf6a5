//! Hostile input against the real database: every value PostgreSQL would
//! refuse is refused first by validation, as INVALID_ARGUMENT naming the
//! field, with nothing written; an over-large message is
//! RESOURCE_EXHAUSTED; and the database's own failures reach the caller
//! classified by what it can do about them (retry, back off, fix).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_db::DbError;
use audit_proto::v1 as pb;
use audit_proto::v1::SignalLocation as L;
use audit_proto::v1::SignalStatus as S;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use audit_wire::convert::to_timestamp;
use chrono::{TimeDelta, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use integration_tests::{TestApp, channel, connect, count_rows, new_event, new_signal};
use tonic::Code;

fn expect_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    let status = result.expect_err(field);
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    assert!(
        status.message().contains(field),
        "expected {field} in {:?}",
        status.message()
    );
}

const NUL_JSON: &str = r#"{"note":"a\u0000b"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn nul_anywhere_is_invalid_argument_naming_the_field_and_writes_nothing() {
    let app = TestApp::start().await;
    let mut writer = app.writer.clone();
    let (signal, token) = app.record_signal("AAPL").await;
    let id = signal.signal_id;
    let mut checked = 0;

    type Breaker<T> = (&'static str, fn(&mut T));
    let signal_cases: [Breaker<pb::NewSignal>; 5] = [
        ("signal.ticker", |s| s.ticker = "AA\0PL".into()),
        ("signal.side", |s| s.side = "buy\0".into()),
        ("signal.action", |s| s.action = "\0open".into()),
        ("signal.original_signal_json", |s| {
            s.original_signal_json = NUL_JSON.into()
        }),
        ("signal.tags[1]", |s| {
            s.tags = vec!["ok".into(), "n\0".into()]
        }),
    ];
    for (field, mutate) in signal_cases {
        let mut signal = new_signal("AAPL");
        mutate(&mut signal);
        let request = pb::RecordSignalRequest {
            signal: Some(signal.clone()),
        };
        expect_invalid(writer.record_signal(request).await, field);
        let batch = pb::RecordBatchRequest {
            signals: vec![new_signal("MSFT"), signal],
            events: vec![],
        };
        let in_batch = field.replace("signal.", "signals[1].");
        expect_invalid(writer.record_batch(batch).await, &in_batch);
        checked += 2;
    }

    let event_cases: [Breaker<pb::NewEvent>; 4] = [
        ("event.worker_id", |e| e.worker_id = "w\0".into()),
        ("event.details", |e| e.details = "queued\0".into()),
        ("event.response_data", |e| e.response_data = "\0".into()),
        ("event.error_info_json", |e| {
            e.error_info_json = NUL_JSON.into()
        }),
    ];
    for (field, mutate) in event_cases {
        let mut event = new_event(&id, S::Processing, L::WorkerProcessing, None);
        mutate(&mut event);
        let request = pb::RecordEventRequest {
            event: Some(event.clone()),
        };
        expect_invalid(writer.record_event(request).await, field);
        let chunk = pb::IngestRequest {
            chunk_id: 7,
            signals: vec![],
            events: vec![event],
        };
        let ack = writer
            .ingest(tokio_stream::iter(vec![chunk]))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        let in_chunk = field.replace("event.", "events[0].");
        assert_eq!(ack.code, Code::InvalidArgument as i32, "{ack:?}");
        assert!(ack.message.contains(&in_chunk), "{ack:?}");
        checked += 2;
    }
    expect_invalid(
        writer
            .add_tags(pb::AddTagsRequest {
                signal_id: id.clone(),
                tags: vec!["a\0".into()],
            })
            .await,
        "tags[0]",
    );
    checked += 1;

    // Reads: every free-text filter and the search query.
    app.wait_replica().await;
    let mut reader = app.reader.clone();
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let filters: [Breaker<pb::SignalFilter>; 3] = [
        ("filter.ticker", |f| f.ticker = "AAPL\0".into()),
        ("filter.normalised_ticker", |f| {
            f.normalised_ticker = "\0".into()
        }),
        ("filter.tags[0]", |f| f.tags = vec!["x\0".into()]),
    ];
    for (field, mutate) in filters {
        let mut filter = pb::SignalFilter::default();
        mutate(&mut filter);
        let list = pb::ListSignalsRequest {
            filter: Some(filter.clone()),
            ..Default::default()
        };
        expect_invalid(reader.list_signals(list).await, field);
        let export = pb::ExportSignalsRequest {
            filter: Some(filter.clone()),
            ..Default::default()
        };
        expect_invalid(reader.export_signals(export).await, field);
        let search = pb::SearchEventsRequest {
            query: "queued".into(),
            filter: Some(filter),
            ..Default::default()
        };
        expect_invalid(analytics.search_events(search).await, field);
        checked += 3;
    }
    let search = pb::SearchEventsRequest {
        query: "queued\0 processing".into(),
        ..Default::default()
    };
    expect_invalid(analytics.search_events(search).await, "query");
    let tail = pb::StreamEventsRequest {
        ticker: "MSFT\0".into(),
        ..Default::default()
    };
    expect_invalid(reader.stream_events(tail).await, "ticker");
    let now = Utc::now();
    let metrics = pb::GetMetricsRequest {
        time_range: Some(pb::TimeRange {
            start: Some(to_timestamp(now - TimeDelta::hours(1))),
            end: Some(to_timestamp(now)),
        }),
        bucket_size: pb::BucketSize::Hour.into(),
        ticker: "AAPL\0".into(),
    };
    expect_invalid(analytics.get_metrics(metrics).await, "ticker");
    let events = pb::ListEventsRequest {
        signal_id: format!("{id}\0"),
        consistency_token: Some(token),
        ..Default::default()
    };
    expect_invalid(reader.list_events(events).await, "signal_id");
    checked += 4;

    let mut db = app.primary().await;
    let signals = count_rows(&mut db, "signals").await;
    let events = count_rows(&mut db, "signal_events").await;
    println!("NUL refused in {checked} places; stored: {signals} signal, {events} event");
    assert_eq!((signals, events), (1, 1), "only the setup signal is stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn values_postgres_would_refuse_are_refused_first_and_its_extremes_are_stored() {
    let app = TestApp::start().await;
    let mut writer = app.writer.clone();

    // Upper-casing makes 32 two-byte characters 96: past VARCHAR(64).
    let mut wide = new_signal("AAPL");
    wide.ticker = "ΐ".repeat(32);
    expect_invalid(
        writer
            .record_signal(pb::RecordSignalRequest { signal: Some(wide) })
            .await,
        "signal.ticker",
    );
    let mut widest_ok = new_signal("AAPL");
    widest_ok.ticker = "ΐ".repeat(21);
    writer
        .record_signal(pb::RecordSignalRequest {
            signal: Some(widest_ok),
        })
        .await
        .expect("63 characters fit the column");

    // PostgreSQL's first day is 4714-11-24 BC: that instant passes
    // validation but has no event partition (signal_events has no default
    // partition), so it is refused as a precondition naming the time;
    // one microsecond earlier is invalid.
    let first = audit_core::rules::earliest_storable_time();
    let mut ancient = new_signal("AAPL");
    ancient.received_at = Some(to_timestamp(first));
    let refused = writer
        .record_signal(pb::RecordSignalRequest {
            signal: Some(ancient.clone()),
        })
        .await
        .expect_err("no partition holds PostgreSQL's first day");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("-4713-11-24"),
        "the message names the day: {refused:?}"
    );
    ancient.received_at = Some(to_timestamp(first - TimeDelta::microseconds(1)));
    expect_invalid(
        writer
            .record_signal(pb::RecordSignalRequest {
                signal: Some(ancient),
            })
            .await,
        "signal.received_at",
    );
    let mut before_time = new_event(
        &uuid::Uuid::new_v4().to_string(),
        S::Processing,
        L::WorkerProcessing,
        Some(first - TimeDelta::days(400)),
    );
    before_time.details = "from 5115 BC".into();
    expect_invalid(
        writer
            .record_event(pb::RecordEventRequest {
                event: Some(before_time),
            })
            .await,
        "event.timestamp",
    );

    // NUMERIC without precision holds every finite double.
    let mut prices = Vec::new();
    for price in [1e300, f64::MAX, 5e-324, 0.1] {
        let mut signal = new_signal("BTC/USD");
        signal.price = price;
        let answer = writer
            .record_signal(pb::RecordSignalRequest {
                signal: Some(signal),
            })
            .await
            .unwrap()
            .into_inner();
        prices.push((price, answer));
    }
    let mut reader = app.reader.clone();
    for (price, answer) in &prices {
        let stored = reader
            .get_signal(pb::GetSignalRequest {
                signal_id: answer.signal.as_ref().unwrap().signal_id.clone(),
                consistency_token: answer.consistency_token.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .signal
            .unwrap();
        assert_eq!(stored.price, *price, "price {price:e} read back");
    }

    // Reads: filters PostgreSQL could not take as parameters.
    let long_ago = pb::TimeRange {
        start: Some(to_timestamp(first - TimeDelta::days(1))),
        end: None,
    };
    expect_invalid(
        reader
            .list_signals(pb::ListSignalsRequest {
                filter: Some(pb::SignalFilter {
                    created: Some(long_ago),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        "filter.created.start",
    );
    let eons = prost_types::Duration {
        seconds: 400_000 * 365 * 86_400,
        nanos: 0,
    };
    expect_invalid(
        reader
            .list_signals(pb::ListSignalsRequest {
                filter: Some(pb::SignalFilter {
                    max_processing_time: Some(eons),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        "filter.max_processing_time",
    );
    let ages = prost_types::Duration {
        seconds: 200_000 * 365 * 86_400,
        nanos: 0,
    };
    let listed = reader
        .list_signals(pb::ListSignalsRequest {
            filter: Some(pb::SignalFilter {
                max_processing_time: Some(ages),
                created: Some(pb::TimeRange {
                    start: Some(to_timestamp(first)),
                    end: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("200,000 years and 4714 BC are valid filters");
    // A forged token from before PostgreSQL's first day.
    use base64::Engine;
    let forged = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    expect_invalid(
        reader
            .list_events(pb::ListEventsRequest {
                page_token: forged(
                    r#"{"fingerprint":1,"ts":"-5000-01-01T00:00:00Z","sequence":1}"#,
                ),
                ..Default::default()
            })
            .await,
        "page_token",
    );
    expect_invalid(
        reader
            .stream_events(pb::StreamEventsRequest {
                resume_token: forged(r#"{"committed_at":"-5000-01-01T00:00:00Z","sequence":1}"#),
                ..Default::default()
            })
            .await,
        "resume_token",
    );
    println!(
        "extremes stored: {} prices and a 63-character ticker; the first instant refused for want of a partition; listed {}",
        prices.len(),
        listed.get_ref().signals.len()
    );
    // The four prices and the widest ticker; nothing of the refused ones.
    let mut db = app.primary().await;
    assert_eq!(count_rows(&mut db, "signals").await, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_the_size_limit_is_resource_exhausted() {
    let app = TestApp::start_with(|writer, reader| {
        writer.max_request_bytes = 32 * 1024;
        reader.max_request_bytes = 4 * 1024;
    })
    .await;
    let mut writer = app.writer.clone();
    let big: Vec<pb::NewSignal> = (0..100)
        .map(|_| {
            let mut s = new_signal("AAPL");
            s.original_signal_json = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000));
            s
        })
        .collect();
    let status = writer
        .record_batch(pb::RecordBatchRequest {
            signals: big.clone(),
            events: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");

    // Ingest: the chunk before is acknowledged, the over-large one ends the
    // stream with RESOURCE_EXHAUSTED.
    let chunks = vec![
        pb::IngestRequest {
            chunk_id: 1,
            signals: vec![new_signal("AAPL")],
            events: vec![],
        },
        pb::IngestRequest {
            chunk_id: 2,
            signals: big,
            events: vec![],
        },
    ];
    let mut acks = writer
        .ingest(tokio_stream::iter(chunks))
        .await
        .unwrap()
        .into_inner();
    let first = acks.message().await.unwrap().unwrap();
    assert_eq!((first.chunk_id, first.code), (1, 0));
    let status = acks.message().await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let status = app
        .reader
        .clone()
        .list_signals(pb::ListSignalsRequest {
            page_token: "t".repeat(8 * 1024),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let mut db = app.primary().await;
    let stored = count_rows(&mut db, "signals").await;
    println!("over-large unary, ingest and reader requests refused; {stored} signal stored");
    assert_eq!(stored, 1);
}

/// The database's own errors, provoked on a real server, as the services
/// see them.
#[tokio::test(flavor = "multi_thread")]
async fn database_failures_are_classified_by_what_a_caller_can_do() {
    let app = TestApp::start().await;
    let mut a = app.primary().await;
    let mut b = app.primary().await;
    a.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0), (2, 0)",
    )
    .await
    .unwrap();
    let code = |e: DbError| audit_wire::db_status(e);

    // statement timeout -> DEADLINE_EXCEEDED
    let e: DbError = a
        .batch_execute("SET statement_timeout = 50; SELECT pg_sleep(2)")
        .await
        .unwrap_err()
        .into();
    a.batch_execute("SET statement_timeout = 0").await.unwrap();
    assert!(matches!(e, DbError::Timeout(_)), "{e:?}");
    assert_eq!(code(e).code(), Code::DeadlineExceeded);

    // serialization failure -> ABORTED, retry
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM t")
        .await
        .unwrap();
    b.batch_execute("UPDATE t SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    let e: DbError = a
        .batch_execute("UPDATE t SET v = 2 WHERE id = 1")
        .await
        .unwrap_err()
        .into();
    a.batch_execute("ROLLBACK").await.unwrap();
    assert!(matches!(e, DbError::Aborted(_)), "{e:?}");
    let status = code(e);
    assert_eq!(status.code(), Code::Aborted);
    assert!(status.message().contains("retry"), "{status:?}");

    // deadlock -> ABORTED, retry
    for conn in [&mut a, &mut b] {
        conn.batch_execute("SET deadlock_timeout = '50ms'; BEGIN")
            .await
            .unwrap();
    }
    a.batch_execute("UPDATE t SET v = 3 WHERE id = 1")
        .await
        .unwrap();
    b.batch_execute("UPDATE t SET v = 3 WHERE id = 2")
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        a.batch_execute("UPDATE t SET v = 4 WHERE id = 2"),
        b.batch_execute("UPDATE t SET v = 4 WHERE id = 1"),
    );
    let e: DbError = ra.err().or(rb.err()).expect("one side deadlocks").into();
    for conn in [&mut a, &mut b] {
        conn.batch_execute("ROLLBACK").await.unwrap();
    }
    assert!(matches!(e, DbError::Aborted(_)), "{e:?}");

    // administrator terminates the session -> UNAVAILABLE, retry
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let Pid { pid } = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result(&mut a)
        .await
        .unwrap();
    b.batch_execute(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
    let e: DbError = a.batch_execute("SELECT 1").await.unwrap_err().into();
    assert!(matches!(e, DbError::Unavailable(_)), "{e:?}");
    let status = code(e);
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("retry"), "{status:?}");

    // a value the server refuses (what validation now catches first)
    let e: DbError = b
        .batch_execute("SELECT 'a\\u0000b'::jsonb")
        .await
        .unwrap_err()
        .into();
    assert!(matches!(e, DbError::BadValue(_)), "{e:?}");
    let e: DbError = b
        .batch_execute("SELECT '5000-01-01 BC'::timestamptz")
        .await
        .unwrap_err()
        .into();
    assert!(matches!(e, DbError::BadValue(_)), "{e:?}");

    // too many connections: a role limited to none is refused at connect
    let role = format!("{}_limited", app.database.name);
    b.batch_execute(&format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"))
        .await
        .unwrap();
    let url = format!(
        "postgres://{role}@127.0.0.1:{}/{}",
        app.cluster.primary_port, app.database.name
    );
    let refused = AsyncPgConnection::establish(&url).await.err().unwrap();
    assert!(
        refused.to_string().contains("too many connections"),
        "{refused}"
    );
    let mut args = integration_tests::writer_args(url);
    args.pool.pool_min = 0;
    args.pool.pool_timeout_ms = 300;
    let writer = integration_tests::spawn_writer(args).await;
    let status = audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient::new(
        channel(writer.addr).await,
    )
    .record_batch(pb::RecordBatchRequest {
        signals: vec![new_signal("AAPL")],
        events: vec![],
    })
    .await
    .unwrap_err();
    writer.shutdown().await;
    b.batch_execute(&format!("DROP ROLE {role}")).await.unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("retry"), "{status:?}");
    println!(
        "classified: statement timeout, serialization, deadlock, terminate, bad value x2, too many connections"
    );
    let mut db = connect(&app.primary_url).await;
    assert_eq!(count_rows(&mut db, "signals").await, 0);
}
