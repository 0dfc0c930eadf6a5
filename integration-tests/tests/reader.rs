//! The read service against the streaming replica: timelines, filtered and
//! keyset-paginated listings, read-your-writes and replication status.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use chrono::{TimeDelta, Utc};
use integration_tests::{TestApp, new_event, new_signal};
use pb::{SignalLocation as L, SignalStatus as S};
use std::collections::HashSet;
use std::time::Duration;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn get_signal_returns_the_timeline_in_order_with_stage_times() {
    let app = TestApp::start().await;
    let t0 = Utc::now() - TimeDelta::seconds(100);
    let mut request = new_signal("AAPL");
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
    // Recorded out of order on purpose.
    let mut last_token = None;
    for (status, location, ms) in [
        (S::Approved, L::ApprovedQueue, 2_500),
        (S::Processing, L::WorkerProcessing, 1_000),
        (S::ForwardedSuccess, L::Completed, 4_000),
    ] {
        let response = app
            .record_event(new_event(
                &id,
                status,
                location,
                Some(t0 + TimeDelta::milliseconds(ms)),
            ))
            .await;
        last_token = response.consistency_token;
    }
    let timeline = app
        .reader
        .clone()
        .get_signal(pb::GetSignalRequest {
            signal_id: id.clone(),
            consistency_token: last_token,
        })
        .await
        .unwrap()
        .into_inner();
    let types: Vec<i32> = timeline.events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        vec![
            S::Received as i32,
            S::Processing as i32,
            S::Approved as i32,
            S::ForwardedSuccess as i32
        ]
    );
    let stages: Vec<(i32, i32, i64)> = timeline
        .stages
        .iter()
        .map(|s| {
            let d = s.duration.unwrap();
            (
                s.from_status,
                s.to_status,
                d.seconds * 1000 + i64::from(d.nanos) / 1_000_000,
            )
        })
        .collect();
    assert_eq!(
        stages,
        vec![
            (S::Received as i32, S::Processing as i32, 1_000),
            (S::Processing as i32, S::Approved as i32, 1_500),
            (S::Approved as i32, S::ForwardedSuccess as i32, 1_500),
        ]
    );
    assert_eq!(
        timeline.signal.unwrap().current_status,
        S::ForwardedSuccess as i32
    );

    let missing = uuid::Uuid::new_v4().to_string();
    let status = app
        .reader
        .clone()
        .get_signal(pb::GetSignalRequest {
            signal_id: missing.clone(),
            consistency_token: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains(&missing));
    let status = app
        .reader
        .clone()
        .get_signal(pb::GetSignalRequest {
            signal_id: "x".into(),
            consistency_token: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("signal_id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_your_writes_with_the_consistency_token() {
    let app = TestApp::start().await;
    let mut reader = app.reader.clone();
    for i in 0..20 {
        let (signal, token) = app.record_signal(&format!("T{i}")).await;
        // No sleeping and no replica polling by the test: the token alone
        // must make the fresh write visible.
        let found = reader
            .get_signal(pb::GetSignalRequest {
                signal_id: signal.signal_id,
                consistency_token: Some(token),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.events.len(), 1);
    }

    // The same with 40 concurrent callers, so group commit gathers several
    // signals into one statement and hands each caller the shared token.
    let app = std::sync::Arc::new(app);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let app = app.clone();
        tasks.spawn(async move {
            let (signal, token) = app.record_signal(&format!("C{i}")).await;
            let found = app
                .reader
                .clone()
                .get_signal(pb::GetSignalRequest {
                    signal_id: signal.signal_id,
                    consistency_token: Some(token),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(found.events.len(), 1);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    // A position the replica cannot reach: UNAVAILABLE within the deadline.
    let mut request = tonic::Request::new(pb::ListSignalsRequest {
        consistency_token: Some(pb::ConsistencyToken {
            lsn: "FFFF/0".into(),
        }),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let status = reader.list_signals(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("FFFF/0"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(3));

    let status = reader
        .list_signals(pb::ListSignalsRequest {
            consistency_token: Some(pb::ConsistencyToken {
                lsn: "yesterday".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("consistency_token.lsn"));
}

/// What a filter should keep, computed independently of the server.
type Keep = Box<dyn Fn(&pb::Signal) -> bool>;

/// 30 signals over 3 tickers with known statuses, errors, tags and times.
async fn seed(app: &TestApp) -> Vec<pb::Signal> {
    let t0 = Utc::now() - TimeDelta::minutes(30);
    let mut signals = Vec::new();
    let mut batch = pb::RecordBatchRequest::default();
    for i in 0..30i64 {
        let id = uuid::Uuid::new_v4().to_string();
        let ticker = ["NASDAQ:AAPL", "MSFT.US", "BTC-USD"][(i % 3) as usize];
        let mut signal = new_signal(ticker);
        signal.signal_id = id.clone();
        signal.received_at = Some(audit_wire::convert::to_timestamp(
            t0 + TimeDelta::seconds(i),
        ));
        signal.tags = match i % 4 {
            0 => vec!["vip".into()],
            1 => vec!["vip".into(), "manual".into()],
            2 => vec!["manual".into()],
            _ => vec![],
        };
        batch.signals.push(signal);
        if i % 2 == 0 {
            let mut done = new_event(
                &id,
                S::ForwardedSuccess,
                L::Completed,
                Some(t0 + TimeDelta::seconds(i + 1 + i % 5)),
            );
            if i % 6 == 0 {
                done.event_type = S::ForwardedHttpError.into();
                done.http_status = 500;
            }
            batch.events.push(done);
        }
    }
    let token = app
        .writer
        .clone()
        .record_batch(batch)
        .await
        .unwrap()
        .into_inner()
        .consistency_token;
    let mut page_token = String::new();
    loop {
        let page = app
            .reader
            .clone()
            .list_signals(pb::ListSignalsRequest {
                page_size: 1000,
                page_token,
                consistency_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        signals.extend(page.signals);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(signals.len(), 30);
    signals
}

async fn list_all(
    app: &TestApp,
    mut request: pb::ListSignalsRequest,
) -> (Vec<pb::Signal>, usize, i64) {
    let mut out = Vec::new();
    let mut pages = 0;
    let mut total = -1;
    loop {
        let page = app
            .reader
            .clone()
            .list_signals(request.clone())
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        out.extend(page.signals);
        total = page.total_count.max(total);
        if page.next_page_token.is_empty() {
            return (out, pages, total);
        }
        request.page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_signals_filters_sorts_and_pages_without_gaps() {
    let app = TestApp::start().await;
    let all = seed(&app).await;
    let ms = |d: &Option<prost_types::Duration>| {
        d.map(|d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
    };
    let cases: Vec<(pb::SignalFilter, Keep)> = vec![
        (pb::SignalFilter::default(), Box::new(|_| true)),
        (
            pb::SignalFilter {
                normalised_ticker: "aapl".into(),
                ..Default::default()
            },
            Box::new(|s| s.normalised_ticker == "AAPL"),
        ),
        (
            pb::SignalFilter {
                ticker: "MSFT.US".into(),
                ..Default::default()
            },
            Box::new(|s| s.ticker == "MSFT.US"),
        ),
        (
            pb::SignalFilter {
                statuses: vec![S::ForwardedHttpError.into(), S::Received.into()],
                ..Default::default()
            },
            Box::new(|s| {
                s.current_status == S::ForwardedHttpError as i32
                    || s.current_status == S::Received as i32
            }),
        ),
        (
            pb::SignalFilter {
                location: L::Completed.into(),
                ..Default::default()
            },
            Box::new(|s| s.current_location == L::Completed as i32),
        ),
        (
            pb::SignalFilter {
                errors_only: true,
                ..Default::default()
            },
            Box::new(|s| s.error_count > 0),
        ),
        (
            pb::SignalFilter {
                min_processing_time: Some(prost_types::Duration {
                    seconds: 3,
                    nanos: 0,
                }),
                max_processing_time: Some(prost_types::Duration {
                    seconds: 4,
                    nanos: 0,
                }),
                ..Default::default()
            },
            Box::new(move |s| {
                ms(&s.total_processing_time).is_some_and(|m| (3000..=4000).contains(&m))
            }),
        ),
        (
            pb::SignalFilter {
                tags: vec!["vip".into(), "manual".into()],
                tag_match: pb::TagMatch::All.into(),
                ..Default::default()
            },
            Box::new(|s| s.tags.iter().any(|t| t == "vip") && s.tags.iter().any(|t| t == "manual")),
        ),
        (
            pb::SignalFilter {
                tags: vec!["vip".into(), "manual".into()],
                tag_match: pb::TagMatch::Any.into(),
                ..Default::default()
            },
            Box::new(|s| !s.tags.is_empty()),
        ),
        (
            pb::SignalFilter {
                created: Some(pb::TimeRange {
                    start: all[20].created_at,
                    end: all[10].created_at,
                }),
                ..Default::default()
            },
            Box::new({
                let (start, end) = (all[20].created_at.unwrap(), all[10].created_at.unwrap());
                move |s| {
                    let c = s.created_at.unwrap();
                    (c.seconds, c.nanos) >= (start.seconds, start.nanos)
                        && (c.seconds, c.nanos) < (end.seconds, end.nanos)
                }
            }),
        ),
    ];
    for (filter, keep) in cases {
        let expected: HashSet<String> = all
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.signal_id.clone())
            .collect();
        assert!(!expected.is_empty(), "filter {filter:?} selects something");
        for sort in [
            pb::SignalSortField::CreatedAt,
            pb::SignalSortField::UpdatedAt,
            pb::SignalSortField::ProcessingTime,
            pb::SignalSortField::ErrorCount,
        ] {
            for direction in [pb::SortDirection::Ascending, pb::SortDirection::Descending] {
                let (got, pages, total) = list_all(
                    &app,
                    pb::ListSignalsRequest {
                        filter: Some(filter.clone()),
                        sort_by: sort.into(),
                        direction: direction.into(),
                        page_size: 4,
                        include_total_count: true,
                        ..Default::default()
                    },
                )
                .await;
                let ids: Vec<String> = got.iter().map(|s| s.signal_id.clone()).collect();
                let unique: HashSet<String> = ids.iter().cloned().collect();
                assert_eq!(
                    unique.len(),
                    ids.len(),
                    "no duplicates across pages ({sort:?} {direction:?})"
                );
                assert_eq!(
                    unique, expected,
                    "filter {filter:?} sort {sort:?} {direction:?}"
                );
                assert_eq!(total, expected.len() as i64);
                assert_eq!(pages, expected.len().div_ceil(4).max(1));
                let key = |s: &pb::Signal| -> (i64, i64) {
                    match sort {
                        pb::SignalSortField::CreatedAt => {
                            let t = s.created_at.unwrap();
                            (t.seconds, i64::from(t.nanos))
                        }
                        pb::SignalSortField::UpdatedAt => {
                            let t = s.updated_at.unwrap();
                            (t.seconds, i64::from(t.nanos))
                        }
                        pb::SignalSortField::ErrorCount => (i64::from(s.error_count), 0),
                        _ => (ms(&s.total_processing_time).unwrap_or(i64::MAX), 0),
                    }
                };
                let keys: Vec<(i64, i64)> = got.iter().map(key).collect();
                let mut sorted = keys.clone();
                sorted.sort();
                if direction == pb::SortDirection::Descending {
                    sorted.reverse();
                    if sort == pb::SignalSortField::ProcessingTime {
                        // Unfinished signals come last in both directions.
                        sorted.sort_by_key(|k| (k.0 == i64::MAX, std::cmp::Reverse(*k)));
                    }
                }
                assert_eq!(keys, sorted, "{sort:?} {direction:?} order");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_signals_rejects_bad_arguments() {
    let app = TestApp::start().await;
    seed(&app).await;
    let mut reader = app.reader.clone();
    let now = audit_wire::convert::to_timestamp(Utc::now());
    let cases = vec![
        (
            "page_size",
            pb::ListSignalsRequest {
                page_size: 1001,
                ..Default::default()
            },
        ),
        (
            "page_size",
            pb::ListSignalsRequest {
                page_size: -1,
                ..Default::default()
            },
        ),
        (
            "page_token",
            pb::ListSignalsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
        ),
        (
            "sort_by",
            pb::ListSignalsRequest {
                sort_by: 9,
                ..Default::default()
            },
        ),
        (
            "filter.created",
            pb::ListSignalsRequest {
                filter: Some(pb::SignalFilter {
                    created: Some(pb::TimeRange {
                        start: Some(now),
                        end: Some(now),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "filter.statuses[0]",
            pb::ListSignalsRequest {
                filter: Some(pb::SignalFilter {
                    statuses: vec![99],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    ];
    for (field, request) in cases {
        let status = reader.list_signals(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(
            status.message().contains(field),
            "{field} in {}",
            status.message()
        );
    }
    // A token is bound to the query that produced it.
    let page = reader
        .list_signals(pb::ListSignalsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = reader
        .list_signals(pb::ListSignalsRequest {
            page_size: 2,
            page_token: page.next_page_token,
            filter: Some(pb::SignalFilter {
                errors_only: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("page_token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn list_events_filters_and_pages_in_time_order() {
    let app = TestApp::start().await;
    let all = seed(&app).await;
    let mut reader = app.reader.clone();
    let mut request = pb::ListEventsRequest {
        page_size: 7,
        ..Default::default()
    };
    let mut events = Vec::new();
    loop {
        let page = reader
            .list_events(request.clone())
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(events.len(), 45, "30 received + 15 completion events");
    let keys: Vec<(i64, i32, i64)> = events
        .iter()
        .map(|e| {
            (
                e.timestamp.unwrap().seconds,
                e.timestamp.unwrap().nanos,
                e.sequence,
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);

    let errors = reader
        .list_events(pb::ListEventsRequest {
            event_type: S::ForwardedHttpError.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(errors.events.len(), 5);
    assert!(errors.events.iter().all(|e| e.http_status == 500));

    let one = reader
        .list_events(pb::ListEventsRequest {
            signal_id: all[0].signal_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(one.events.iter().all(|e| e.signal_id == all[0].signal_id));
    assert!(!one.events.is_empty());

    let status = reader
        .list_events(pb::ListEventsRequest {
            signal_id: "bad".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("signal_id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn replication_status_reports_the_replica() {
    let app = TestApp::start().await;
    let (_, token) = app.record_signal("AAPL").await;
    app.wait_replica().await;
    let status = app
        .reader
        .clone()
        .get_replication_status(pb::GetReplicationStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.in_recovery, "the reader must be on the standby");
    assert!(!status.replay_lsn.is_empty());
    let lsn = |s: &str| {
        let (hi, lo) = s.split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    assert!(lsn(&status.replay_lsn) >= lsn(&token.lsn));
}

#[tokio::test(flavor = "multi_thread")]
async fn export_streams_the_whole_query_as_csv_or_json_lines() {
    let app = TestApp::start().await;
    let all = seed(&app).await;
    let mut reader = app.reader.clone();
    let collect = |request: pb::ExportSignalsRequest| {
        let mut reader = reader.clone();
        async move {
            let mut stream = reader.export_signals(request).await.unwrap().into_inner();
            let mut bytes = Vec::new();
            let mut rows = 0;
            while let Some(chunk) = stream.message().await.unwrap() {
                rows += chunk.rows;
                bytes.extend(chunk.chunk);
            }
            (String::from_utf8(bytes).unwrap(), rows)
        }
    };
    let (csv, rows) = collect(pb::ExportSignalsRequest {
        sort_by: pb::SignalSortField::CreatedAt.into(),
        direction: pb::SortDirection::Ascending.into(),
        ..Default::default()
    })
    .await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(rows, 30);
    assert_eq!(lines.len(), 31, "a header and one line per signal");
    assert!(lines[0].starts_with("signal_id,ticker,normalised_ticker"));
    let mut expected: Vec<&pb::Signal> = all.iter().collect();
    expected.sort_by_key(|s| {
        (
            s.created_at.unwrap().seconds,
            s.created_at.unwrap().nanos,
            s.signal_id.clone(),
        )
    });
    for (line, signal) in lines[1..].iter().zip(expected) {
        assert!(line.starts_with(&signal.signal_id), "{line}");
    }
    // The original payload holds commas and quotes: CSV quoting keeps the columns.
    // Payloads hold commas and quotes: a real CSV reader must see 16 columns
    // everywhere and get the JSON back intact.
    let mut parsed = csv::Reader::from_reader(csv.as_bytes());
    for record in parsed.records() {
        let record = record.unwrap();
        assert_eq!(record.len(), 16);
        let payload: serde_json::Value = serde_json::from_str(&record[14]).unwrap();
        assert_eq!(payload["side"], "buy");
    }

    let (jsonl, rows) = collect(pb::ExportSignalsRequest {
        filter: Some(pb::SignalFilter {
            errors_only: true,
            ..Default::default()
        }),
        format: pb::ExportFormat::JsonLines.into(),
        ..Default::default()
    })
    .await;
    let errored = all.iter().filter(|s| s.error_count > 0).count();
    assert_eq!(rows as usize, errored);
    for line in jsonl.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(value["error_count"].as_i64().unwrap() > 0);
    }
    let (_, rows) = collect(pb::ExportSignalsRequest {
        limit: 7,
        ..Default::default()
    })
    .await;
    assert_eq!(rows, 7);
    let status = reader
        .export_signals(pb::ExportSignalsRequest {
            format: 9,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("format"));
}

async fn take(
    stream: &mut tonic::Streaming<pb::StreamEventsResponse>,
    n: usize,
) -> Vec<pb::StreamEventsResponse> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        let next = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived", out.len()))
            .unwrap()
            .unwrap();
        out.push(next);
    }
    out
}

/// A tail of every event committed from now on.
async fn tail_all(
    reader: &mut pb::signal_reader_service_client::SignalReaderServiceClient<
        tonic::transport::Channel,
    >,
) -> tonic::Streaming<pb::StreamEventsResponse> {
    reader
        .stream_events(pb::StreamEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_events_tails_in_commit_order_and_resumes_without_gaps() {
    let app = TestApp::start().await;
    let mut reader = app.reader.clone();
    let mut all = tail_all(&mut reader).await;
    let mut only_msft = reader
        .stream_events(pb::StreamEventsRequest {
            ticker: "msft.us".into(),
            event_types: vec![S::Processing.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // 8 concurrent producers: group commits interleave, so sequence order
    // and commit order differ — exactly what the tail must cope with.
    let mut tasks = Vec::new();
    for p in 0..8 {
        let mut writer = app.writer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let ticker = if (p + i) % 2 == 0 { "MSFT.US" } else { "AAPL" };
                let signal = writer
                    .record_signal(pb::RecordSignalRequest {
                        signal: Some(new_signal(ticker)),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .signal
                    .unwrap();
                writer
                    .record_event(pb::RecordEventRequest {
                        event: Some(new_event(
                            &signal.signal_id,
                            S::Processing,
                            L::WorkerProcessing,
                            None,
                        )),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let got = take(&mut all, 160).await;
    let ids: HashSet<String> = got
        .iter()
        .map(|m| m.event.as_ref().unwrap().event_id.clone())
        .collect();
    assert_eq!(ids.len(), 160, "no duplicates");
    let order: Vec<(i64, i32, i64)> = got
        .iter()
        .map(|m| {
            let c = m.committed_at.unwrap();
            (c.seconds, c.nanos, m.event.as_ref().unwrap().sequence)
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "commit order");
    let mut db = app.replica().await;
    assert_eq!(
        integration_tests::count_rows(&mut db, "signal_events").await,
        160,
        "every stored event was streamed"
    );

    let msft = take(&mut only_msft, 40).await;
    assert!(msft.iter().all(|m| m.normalised_ticker == "MSFT"
        && m.event.as_ref().unwrap().event_type == S::Processing as i32));

    // Reconnect after the 60th event: the rest, exactly.
    let mut resumed = reader
        .stream_events(pb::StreamEventsRequest {
            resume_token: got[59].resume_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rest = take(&mut resumed, 100).await;
    let expected: Vec<&str> = got[60..]
        .iter()
        .map(|m| m.event.as_ref().unwrap().event_id.as_str())
        .collect();
    let actual: Vec<&str> = rest
        .iter()
        .map(|m| m.event.as_ref().unwrap().event_id.as_str())
        .collect();
    assert_eq!(actual, expected);
    let status = reader
        .stream_events(pb::StreamEventsRequest {
            resume_token: "junk".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("resume_token"));
}

fn event_ids(messages: &[pb::StreamEventsResponse]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.event.as_ref().unwrap().event_id.clone())
        .collect()
}

fn commit_order(messages: &[pb::StreamEventsResponse]) -> bool {
    let keys: Vec<(i64, i32, i64)> = messages
        .iter()
        .map(|m| {
            let c = m.committed_at.unwrap();
            (c.seconds, c.nanos, m.event.as_ref().unwrap().sequence)
        })
        .collect();
    keys.windows(2).all(|w| w[0] < w[1])
}

/// A transaction that inserts before later ones commit, and commits after
/// them, holds the tail's floor (its id is below theirs) until it commits:
/// its event comes after theirs, and a tail resumed from a token issued
/// while it was open still gets it.
#[tokio::test(flavor = "multi_thread")]
async fn stream_events_delivers_a_transaction_that_commits_after_later_ones() {
    use diesel_async::SimpleAsyncConnection;
    let app = TestApp::start().await;
    let (signal, _) = app.record_signal("LATE").await;
    app.wait_replica().await;
    let mut reader = app.reader.clone();
    let mut tail = tail_all(&mut reader).await;

    let mut long = app.primary().await;
    long.batch_execute(&format!(
        "BEGIN; INSERT INTO signal_events (event_id, signal_id, ts, event_type, location, normalised_ticker) \
         VALUES ('{}', '{}', now(), 'processing', 'worker_processing', '{}')",
        uuid::Uuid::new_v4(),
        signal.signal_id,
        signal.normalised_ticker
    ))
    .await
    .unwrap();
    let mut written = Vec::new();
    for _ in 0..5 {
        let event = new_event(&signal.signal_id, S::Processing, L::WorkerProcessing, None);
        written.push(event.event_id.clone());
        app.record_event(event).await;
    }
    let before = take(&mut tail, 5).await;
    assert_eq!(event_ids(&before), written);
    // Commit only now: the floor kept its id in view.
    long.batch_execute("COMMIT").await.unwrap();
    let late = take(&mut tail, 1).await;
    assert!(commit_order(&[before.clone(), late.clone()].concat()));
    assert!(!written.contains(&event_ids(&late)[0]));

    let mut resumed = reader
        .stream_events(pb::StreamEventsRequest {
            resume_token: before[2].resume_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rest = take(&mut resumed, 3).await;
    assert_eq!(
        event_ids(&rest),
        [&event_ids(&before)[3..], &event_ids(&late)[..]].concat()
    );
}

/// One transaction with more events than a poll reads (2,500): the scan
/// grows until it holds them all, and every event comes, once, in commit order, and so does the next commit. A token without a
/// floor (issued before it existed) resumes by the recorded_at lookback.
#[tokio::test(flavor = "multi_thread")]
async fn stream_events_delivers_a_transaction_larger_than_its_scan() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use diesel_async::SimpleAsyncConnection;
    let app = TestApp::start().await;
    let mut reader = app.reader.clone();
    let mut tail = tail_all(&mut reader).await;
    let (signal, _) = app.record_signal("BULK").await;
    // One statement of 2,500 events (RecordBatch allows 100 in tests).
    app.primary()
        .await
        .batch_execute(&format!(
            "INSERT INTO signal_events (event_id, signal_id, ts, event_type, location, normalised_ticker) \
             SELECT gen_random_uuid(), '{}', now(), 'processing', 'worker_processing', '{}' \
             FROM generate_series(1, 2500)",
            signal.signal_id,
            signal.normalised_ticker
        ))
        .await
        .unwrap();
    let after = new_event(&signal.signal_id, S::Approved, L::ApprovedQueue, None);
    let after_id = after.event_id.clone();
    app.record_event(after).await;
    // The signal's `received` event, the 2,500 and the later one.
    let got = take(&mut tail, 2_502).await;
    let ids: HashSet<String> = event_ids(&got).into_iter().collect();
    assert_eq!(ids.len(), 2_502, "no duplicates");
    assert!(commit_order(&got));
    assert_eq!(event_ids(&got)[2_501], after_id);

    let token: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&got[99].resume_token).unwrap()).unwrap();
    assert!(token["floor"].is_i64(), "{token}");
    let mut old = token.clone();
    old.as_object_mut().unwrap().remove("floor");
    let mut resumed = reader
        .stream_events(pb::StreamEventsRequest {
            resume_token: URL_SAFE_NO_PAD.encode(serde_json::to_vec(&old).unwrap()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rest = take(&mut resumed, 2_402).await;
    assert_eq!(event_ids(&rest), event_ids(&got[100..]));
}
