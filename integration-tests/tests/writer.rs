//! The write service against a real primary: every RPC, idempotency,
//! late events, counters, atomic batches and every validation error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use chrono::{TimeDelta, Utc};
use integration_tests::{TestApp, count_rows, new_event, new_signal};
use pb::{SignalLocation as L, SignalStatus as S};
use tonic::Code;

/// A field name and a way to break that field.
type Case<T> = (&'static str, Box<dyn Fn(&mut T)>);

fn code_and_message<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("call should fail");
    (status.code(), status.message().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn record_signal_creates_signal_and_first_event_in_one_go() {
    let app = TestApp::start().await;
    let (signal, token) = app.record_signal("NASDAQ:msft").await;
    assert_eq!(signal.normalised_ticker, "MSFT");
    assert_eq!(signal.current_status, S::Received as i32);
    assert_eq!(signal.current_location, L::ProcessingQueue as i32);
    assert!(token.lsn.contains('/'), "token {token:?}");
    let mut db = app.primary().await;
    assert_eq!(count_rows(&mut db, "signals").await, 1);
    assert_eq!(count_rows(&mut db, "signal_events").await, 1);
    assert_eq!(count_rows(&mut db, "signal_event_ids").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn record_signal_is_idempotent_and_refuses_different_content() {
    let app = TestApp::start().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut request = new_signal("AAPL");
    request.signal_id = id.clone();
    let mut writer = app.writer.clone();
    let first = writer
        .record_signal(pb::RecordSignalRequest {
            signal: Some(request.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let retry = writer
        .record_signal(pb::RecordSignalRequest {
            signal: Some(request.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!retry.created);
    assert_eq!(retry.signal, first.signal);

    request.price = 99.0;
    let (code, message) = code_and_message(
        writer
            .record_signal(pb::RecordSignalRequest {
                signal: Some(request),
            })
            .await,
    );
    assert_eq!(code, Code::AlreadyExists);
    assert!(
        message.contains(&id) && message.contains("price"),
        "{message}"
    );
    let mut db = app.primary().await;
    assert_eq!(count_rows(&mut db, "signals").await, 1);
    assert_eq!(count_rows(&mut db, "signal_events").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_move_state_count_errors_retries_and_processing_time() {
    let app = TestApp::start().await;
    let t0 = Utc::now() - TimeDelta::seconds(60);
    let mut request = new_signal("ETH-USD");
    request.received_at = Some(audit_wire::convert::to_timestamp(t0));
    let signal = app
        .writer
        .clone()
        .record_signal(pb::RecordSignalRequest {
            signal: Some(request),
        })
        .await
        .unwrap()
        .into_inner()
        .signal
        .unwrap();
    let id = signal.signal_id.clone();
    let steps = [
        (S::QueuedProcessing, L::ProcessingQueue, 1),
        (S::Processing, L::WorkerProcessing, 2),
        (S::Approved, L::ApprovedQueue, 3),
        (S::Forwarding, L::WorkerForwarding, 4),
        (S::ForwardedTimeout, L::Completed, 5),
        (S::Forwarding, L::WorkerForwarding, 6),
        (S::ForwardedSuccess, L::Completed, 8),
    ];
    let mut last = None;
    for (status, location, secs) in steps {
        let mut event = new_event(&id, status, location, Some(t0 + TimeDelta::seconds(secs)));
        if status == S::ForwardedTimeout {
            event.error_info_json = r#"{"kind":"timeout","after_ms":5000}"#.into();
        }
        last = Some(app.record_event(event).await);
    }
    let signal = last.unwrap().signal.unwrap();
    assert_eq!(signal.current_status, S::ForwardedSuccess as i32);
    assert_eq!(signal.current_location, L::Completed as i32);
    assert_eq!(signal.error_count, 1);
    assert_eq!(signal.retry_count, 1, "second forwarding is one retry");
    assert_eq!(
        signal.total_processing_time.unwrap().seconds,
        8,
        "until the final success"
    );

    // Terminal events arriving out of order still measure to the latest one.
    let mut request = new_signal("BTC/USD");
    request.received_at = Some(audit_wire::convert::to_timestamp(t0));
    let created = app
        .writer
        .clone()
        .record_signal(pb::RecordSignalRequest {
            signal: Some(request),
        })
        .await
        .unwrap()
        .into_inner()
        .signal
        .unwrap();
    let mut http = new_event(
        &created.signal_id,
        S::ForwardedHttpError,
        L::Completed,
        Some(t0 + TimeDelta::seconds(3)),
    );
    http.http_status = 503;
    let after_error = app.record_event(http).await.signal.unwrap();
    assert_eq!(
        after_error.error_count, 1,
        "http status >= 400 counts as an error"
    );
    assert_eq!(after_error.total_processing_time.unwrap().seconds, 3);
    let done = app
        .record_event(new_event(
            &created.signal_id,
            S::ForwardedSuccess,
            L::Completed,
            Some(t0 + TimeDelta::seconds(7)),
        ))
        .await
        .signal
        .unwrap();
    assert_eq!(done.total_processing_time.unwrap().seconds, 7);
    let mut ok = new_event(
        &created.signal_id,
        S::ForwardedSuccess,
        L::Completed,
        Some(t0 + TimeDelta::seconds(8)),
    );
    ok.http_status = 200;
    assert_eq!(
        app.record_event(ok).await.signal.unwrap().error_count,
        1,
        "2xx is not an error"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn late_event_is_stored_but_never_moves_state_backwards() {
    let app = TestApp::start().await;
    let mut request = new_signal("SPY");
    let t0 = Utc::now() - TimeDelta::seconds(30);
    request.received_at = Some(audit_wire::convert::to_timestamp(t0));
    let signal = app
        .writer
        .clone()
        .record_signal(pb::RecordSignalRequest {
            signal: Some(request),
        })
        .await
        .unwrap()
        .into_inner()
        .signal
        .unwrap();
    let id = signal.signal_id;
    app.record_event(new_event(
        &id,
        S::Approved,
        L::ApprovedQueue,
        Some(t0 + TimeDelta::seconds(10)),
    ))
    .await;
    let late = app
        .record_event(new_event(
            &id,
            S::Processing,
            L::WorkerProcessing,
            Some(t0 + TimeDelta::seconds(5)),
        ))
        .await;
    assert!(late.created);
    let signal = late.signal.unwrap();
    assert_eq!(signal.current_status, S::Approved as i32);
    assert_eq!(signal.current_location, L::ApprovedQueue as i32);
    assert_eq!(
        signal.updated_at.unwrap().seconds,
        (t0 + TimeDelta::seconds(10)).timestamp()
    );
    let mut db = app.primary().await;
    assert_eq!(count_rows(&mut db, "signal_events").await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_event_is_not_duplicated_and_reused_id_is_refused() {
    let app = TestApp::start().await;
    let (signal, _) = app.record_signal("QQQ").await;
    let mut event = new_event(&signal.signal_id, S::Processing, L::WorkerProcessing, None);
    event.error_info_json = r#"{"e":1}"#.into();
    let first = app.record_event(event.clone()).await;
    let again = app.record_event(event.clone()).await;
    assert!(first.created && !again.created);
    assert_eq!(first.event, again.event);
    assert_eq!(
        again.signal.unwrap().error_count,
        1,
        "a retry does not count twice"
    );

    event.event_type = S::Rejected.into();
    let (code, message) = code_and_message(
        app.writer
            .clone()
            .record_event(pb::RecordEventRequest { event: Some(event) })
            .await,
    );
    assert_eq!(code, Code::AlreadyExists);
    assert!(message.contains("event_type"), "{message}");
    let mut db = app.primary().await;
    assert_eq!(count_rows(&mut db, "signal_events").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_signal_is_not_found_and_writes_nothing() {
    let app = TestApp::start().await;
    let missing = uuid::Uuid::new_v4().to_string();
    let (code, message) = code_and_message(
        app.writer
            .clone()
            .record_event(pb::RecordEventRequest {
                event: Some(new_event(
                    &missing,
                    S::Processing,
                    L::WorkerProcessing,
                    None,
                )),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    assert!(message.contains(&missing));
    let (code, _) = code_and_message(
        app.writer
            .clone()
            .add_tags(pb::AddTagsRequest {
                signal_id: missing,
                tags: vec!["x".into()],
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    let mut db = app.primary().await;
    assert_eq!(count_rows(&mut db, "signal_event_ids").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_invalid_argument_naming_the_field_and_writes_nothing() {
    let app = TestApp::start().await;
    let mut writer = app.writer.clone();
    let signal_cases: Vec<Case<pb::NewSignal>> = vec![
        ("signal.ticker", Box::new(|s| s.ticker = String::new())),
        ("signal.side", Box::new(|s| s.side = "  ".into())),
        ("signal.price", Box::new(|s| s.price = -1.0)),
        ("signal.price", Box::new(|s| s.price = f64::NAN)),
        (
            "signal.original_signal_json",
            Box::new(|s| s.original_signal_json = "{not json".into()),
        ),
        (
            "signal.original_signal_json",
            Box::new(|s| s.original_signal_json = format!("\"{}\"", "x".repeat(20_000))),
        ),
        ("signal.signal_id", Box::new(|s| s.signal_id = "123".into())),
        (
            "signal.received_at",
            Box::new(|s| {
                s.received_at = Some(audit_wire::convert::to_timestamp(
                    Utc::now() + TimeDelta::days(1),
                ))
            }),
        ),
        ("signal.tags[0]", Box::new(|s| s.tags = vec![String::new()])),
    ];
    for (field, mutate) in signal_cases {
        let mut signal = new_signal("AAPL");
        mutate(&mut signal);
        let (code, message) = code_and_message(
            writer
                .record_signal(pb::RecordSignalRequest {
                    signal: Some(signal),
                })
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "{field}: {message}");
        assert!(message.contains(field), "expected {field} in {message:?}");
    }
    let (code, message) = code_and_message(
        writer
            .record_signal(pb::RecordSignalRequest { signal: None })
            .await,
    );
    assert_eq!(
        (code, message.contains("signal")),
        (Code::InvalidArgument, true)
    );

    let (signal, _) = app.record_signal("AAPL").await;
    let id = signal.signal_id;
    let event_cases: Vec<Case<pb::NewEvent>> = vec![
        ("event.event_id", Box::new(|e| e.event_id = String::new())),
        ("event.event_id", Box::new(|e| e.event_id = "nope".into())),
        ("event.signal_id", Box::new(|e| e.signal_id = "nope".into())),
        ("event.event_type", Box::new(|e| e.event_type = 0)),
        ("event.event_type", Box::new(|e| e.event_type = 77)),
        ("event.location", Box::new(|e| e.location = 42)),
        (
            "event.error_info_json",
            Box::new(|e| e.error_info_json = "[1,".into()),
        ),
        ("event.http_status", Box::new(|e| e.http_status = 1000)),
        (
            "event.timestamp",
            Box::new(|e| {
                e.timestamp = Some(audit_wire::convert::to_timestamp(
                    Utc::now() + TimeDelta::hours(2),
                ))
            }),
        ),
    ];
    for (field, mutate) in event_cases {
        let mut event = new_event(&id, S::Processing, L::WorkerProcessing, None);
        mutate(&mut event);
        let (code, message) = code_and_message(
            writer
                .record_event(pb::RecordEventRequest { event: Some(event) })
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "{field}: {message}");
        assert!(message.contains(field), "expected {field} in {message:?}");
    }
    let mut db = app.primary().await;
    assert_eq!(count_rows(&mut db, "signals").await, 1);
    assert_eq!(count_rows(&mut db, "signal_events").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_is_all_or_nothing_and_bounded() {
    let app = TestApp::start().await;
    let mut writer = app.writer.clone();
    let ids: Vec<String> = (0..5).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let signals: Vec<pb::NewSignal> = ids
        .iter()
        .map(|id| pb::NewSignal {
            signal_id: id.clone(),
            ..new_signal("IBM")
        })
        .collect();
    let mut events: Vec<pb::NewEvent> = ids
        .iter()
        .map(|id| new_event(id, S::Processing, L::WorkerProcessing, None))
        .collect();
    // One event for a signal that exists nowhere: the whole batch must fail.
    events.push(new_event(
        &uuid::Uuid::new_v4().to_string(),
        S::Processing,
        L::WorkerProcessing,
        None,
    ));
    let (code, message) = code_and_message(
        writer
            .record_batch(pb::RecordBatchRequest {
                signals: signals.clone(),
                events: events.clone(),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    assert!(message.starts_with("events[5]"), "{message}");
    let mut db = app.primary().await;
    assert_eq!(
        count_rows(&mut db, "signals").await,
        0,
        "nothing half-written"
    );
    assert_eq!(count_rows(&mut db, "signal_events").await, 0);

    // A validation error anywhere is reported with its index, before any write.
    let mut bad = signals.clone();
    bad[3].price = 0.0;
    let (code, message) = code_and_message(
        writer
            .record_batch(pb::RecordBatchRequest {
                signals: bad,
                events: vec![],
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("signals[3].price"), "{message}");

    events.pop();
    let done = writer
        .record_batch(pb::RecordBatchRequest {
            signals: signals.clone(),
            events: events.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (done.signals_created, done.events_created, done.duplicates),
        (5, 5, 0)
    );
    let again = writer
        .record_batch(pb::RecordBatchRequest { signals, events })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            again.signals_created,
            again.events_created,
            again.duplicates
        ),
        (0, 0, 10)
    );
    assert_eq!(count_rows(&mut db, "signal_events").await, 10);

    let too_many: Vec<pb::NewSignal> = (0..101).map(|_| new_signal("IBM")).collect();
    let (code, message) = code_and_message(
        writer
            .record_batch(pb::RecordBatchRequest {
                signals: too_many,
                events: vec![],
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("limit of 100"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_are_added_once_and_removed() {
    let app = TestApp::start().await;
    let (signal, _) = app.record_signal("AAPL").await;
    let mut writer = app.writer.clone();
    let tagged = writer
        .add_tags(pb::AddTagsRequest {
            signal_id: signal.signal_id.clone(),
            tags: vec!["vip".into(), "manual".into(), "vip".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .signal
        .unwrap();
    assert_eq!(tagged.tags, vec!["vip", "manual"]);
    let untagged = writer
        .remove_tags(pb::RemoveTagsRequest {
            signal_id: signal.signal_id.clone(),
            tags: vec!["vip".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .signal
        .unwrap();
    assert_eq!(untagged.tags, vec!["manual"]);
    let (code, message) = code_and_message(
        writer
            .add_tags(pb::AddTagsRequest {
                signal_id: signal.signal_id,
                tags: vec![],
            })
            .await,
    );
    assert_eq!(
        (code, message.contains("tags")),
        (Code::InvalidArgument, true)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_writers_on_one_signal_leave_exact_counters() {
    let app = TestApp::start().await;
    let (signal, _) = app.record_signal("TSLA").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut writer = app.writer.clone();
        let id = signal.signal_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for j in 0..5 {
                let status = if j % 2 == 0 {
                    S::Processing
                } else {
                    S::Forwarding
                };
                let mut event = new_event(&id, status, L::WorkerProcessing, None);
                if (i + j) % 3 == 0 {
                    event.error_info_json = format!(r#"{{"worker":{i},"step":{j}}}"#);
                }
                // Every call is sent twice, as a client retrying after a timeout would.
                for _ in 0..2 {
                    let response = writer
                        .record_event(pb::RecordEventRequest {
                            event: Some(event.clone()),
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    outcomes.push(response.created);
                }
            }
            outcomes
        }));
    }
    let mut created = 0;
    for task in tasks {
        created += task.await.unwrap().into_iter().filter(|c| *c).count();
    }
    assert_eq!(created, 100, "each distinct event created exactly once");
    let mut db = app.primary().await;
    assert_eq!(count_rows(&mut db, "signal_events").await, 101);
    let errors = (0..20)
        .flat_map(|i| (0..5).map(move |j| (i + j) % 3 == 0))
        .filter(|e| *e)
        .count() as i32;
    app.wait_replica().await;
    let stored = app
        .reader
        .clone()
        .get_signal(pb::GetSignalRequest {
            signal_id: signal.signal_id,
            consistency_token: None,
        })
        .await
        .unwrap()
        .into_inner()
        .signal
        .unwrap();
    assert_eq!(stored.error_count, errors);
    // 60 processing and 40 forwarding events: all but the first of each are retries.
    assert_eq!(stored.retry_count, 59 + 39);
}
