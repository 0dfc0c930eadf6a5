//! Issue 5's invariants: group commit and streaming ingest under
//! concurrency, with retries, stay exact and never duplicate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use integration_tests::{TestApp, count_rows, new_event, new_signal};
use pb::{SignalLocation as L, SignalStatus as S};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use tokio_stream::StreamExt;

/// What one client intended, to compare with what was stored.
#[derive(Default)]
struct Expected {
    events: usize,
    errors: i32,
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_clients_with_random_retries_leave_exact_counters() {
    let app = TestApp::start().await;
    let mut tasks = Vec::new();
    for client in 0..50u64 {
        let mut writer = app.writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(client);
            let mut expected: HashMap<String, Expected> = HashMap::new();
            for _ in 0..4 {
                let mut signal = new_signal(["AAPL", "MSFT", "BTC-USD"][rng.random_range(0..3)]);
                signal.signal_id = uuid::Uuid::new_v4().to_string();
                // Each call is retried 0-2 extra times, as after lost answers.
                for _ in 0..rng.random_range(1..=3) {
                    let r = writer
                        .record_signal(pb::RecordSignalRequest {
                            signal: Some(signal.clone()),
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(r.signal.unwrap().signal_id, signal.signal_id);
                }
                let mine = expected.entry(signal.signal_id.clone()).or_default();
                mine.events = 1;
                for _ in 0..rng.random_range(2..8) {
                    let status = [
                        S::Processing,
                        S::Approved,
                        S::Forwarding,
                        S::ForwardedHttpError,
                    ][rng.random_range(0..4)];
                    let mut event = new_event(&signal.signal_id, status, L::WorkerProcessing, None);
                    if status == S::ForwardedHttpError {
                        event.http_status = 502;
                        mine.errors += 1;
                    }
                    mine.events += 1;
                    for _ in 0..rng.random_range(1..=3) {
                        writer
                            .record_event(pb::RecordEventRequest {
                                event: Some(event.clone()),
                            })
                            .await
                            .unwrap();
                    }
                }
            }
            expected
        }));
    }
    let mut expected: HashMap<String, Expected> = HashMap::new();
    for task in tasks {
        expected.extend(task.await.unwrap());
    }
    let mut db = app.primary().await;
    assert_eq!(count_rows(&mut db, "signals").await, 200);
    let total_events: usize = expected.values().map(|e| e.events).sum();
    assert_eq!(
        count_rows(&mut db, "signal_events").await as usize,
        total_events,
        "no duplicates"
    );
    assert_eq!(
        count_rows(&mut db, "signal_event_ids").await as usize,
        total_events
    );

    // Counters agree with the events actually stored, signal by signal.
    #[derive(diesel::QueryableByName)]
    struct Mismatch {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    use diesel_async::RunQueryDsl;
    let Mismatch { n } = diesel::sql_query(
        "SELECT count(*) AS n FROM signals s WHERE \
           s.error_count <> (SELECT count(*) FROM signal_events e WHERE e.signal_id = s.signal_id \
                             AND (e.error_info IS NOT NULL OR e.http_status >= 400)) \
        OR s.retry_count <> (SELECT COALESCE(sum(c - 1), 0) FROM (SELECT count(*) AS c FROM signal_events e \
                             WHERE e.signal_id = s.signal_id AND e.event_type IN ('processing', 'forwarding') \
                             GROUP BY e.event_type) t)",
    )
    .get_result(&mut db)
    .await
    .unwrap();
    assert_eq!(n, 0, "every signal's counters match its events");
    let errors: i32 = expected.values().map(|e| e.errors).sum();
    #[derive(diesel::QueryableByName)]
    struct Sum {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let Sum { n } =
        diesel::sql_query("SELECT COALESCE(sum(error_count), 0)::bigint AS n FROM signals")
            .get_result(&mut db)
            .await
            .unwrap();
    assert_eq!(n, i64::from(errors));
}

#[tokio::test(flavor = "multi_thread")]
async fn group_commit_fails_only_the_bad_item() {
    let app = TestApp::start().await;
    let (signal, _) = app.record_signal("AAPL").await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let mut writer = app.writer.clone();
        let id = if i == 7 {
            uuid::Uuid::new_v4().to_string()
        } else {
            signal.signal_id.clone()
        };
        tasks.push(tokio::spawn(async move {
            writer
                .record_event(pb::RecordEventRequest {
                    event: Some(new_event(&id, S::Processing, L::WorkerProcessing, None)),
                })
                .await
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        if let Err(status) = task.await.unwrap() {
            failures.push(status.code());
        }
    }
    assert_eq!(failures, vec![tonic::Code::NotFound]);
    let mut db = app.primary().await;
    assert_eq!(
        count_rows(&mut db, "signal_events").await,
        30,
        "1 received + 29 good events"
    );
}

/// One event id sent for two signals at the same moment, in transactions
/// that do not wait for each other's row locks (different signals): one
/// takes the id and the other hears ALREADY_EXISTS naming the owner, also
/// when its claim waited for the winner's commit, which its own snapshot
/// then cannot see (the writer looks such ids up again).
#[tokio::test(flavor = "multi_thread")]
async fn an_event_id_raced_for_by_two_signals_goes_to_exactly_one() {
    let app = TestApp::start().await;
    let rounds = 40;
    for round in 0..rounds {
        let (a, _) = app.record_signal("AAPL").await;
        let (b, _) = app.record_signal("MSFT").await;
        let event_id = uuid::Uuid::new_v4().to_string();
        let send = |signal_id: String| {
            let mut writer = app.writer.clone();
            let mut event = new_event(&signal_id, S::Processing, L::WorkerProcessing, None);
            event.event_id = event_id.clone();
            tokio::spawn(async move {
                writer
                    .record_batch(pb::RecordBatchRequest {
                        signals: vec![],
                        events: vec![event],
                    })
                    .await
            })
        };
        let (first, second) = (send(a.signal_id), send(b.signal_id));
        let answers = [first.await.unwrap(), second.await.unwrap()];
        let taken = answers.iter().filter(|a| a.is_ok()).count();
        assert_eq!(taken, 1, "round {round}: {answers:?}");
        for answer in &answers {
            if let Err(status) = answer {
                assert_eq!(
                    status.code(),
                    tonic::Code::AlreadyExists,
                    "round {round}: {status:?}"
                );
                assert!(status.message().contains("belongs to signal"), "{status:?}");
            }
        }
    }
    let mut db = app.primary().await;
    assert_eq!(
        count_rows(&mut db, "signal_events").await,
        3 * rounds,
        "two received events and one raced-for event per round"
    );
}

/// The signal's new state is written in the transaction that stores its
/// event, also on a connection's first event write (when the writer still
/// prepares its UPDATE, and a COMMIT sent past the statement queue would
/// have reached the server first and left the UPDATE outside the
/// transaction). Checked by transaction id: the signal row's `xmin` is the
/// transaction that wrote its event (`xact_id`).
#[tokio::test(flavor = "multi_thread")]
async fn the_signal_update_commits_with_its_event_on_fresh_connections() {
    let app = TestApp::start().await;
    let mut signals = Vec::new();
    for _ in 0..8 {
        signals.push(app.record_signal("AAPL").await.0);
    }
    // Concurrent, so the groups land on several fresh pool connections.
    let calls = signals.iter().map(|signal| {
        let mut writer = app.writer.clone();
        let event = new_event(&signal.signal_id, S::Processing, L::WorkerProcessing, None);
        tokio::spawn(async move {
            writer
                .record_event(pb::RecordEventRequest { event: Some(event) })
                .await
        })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap().expect("recorded");
    }
    let mut db = app.primary().await;
    #[derive(diesel::QueryableByName)]
    struct Apart {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    // xmin is the 32-bit transaction id; xact_id keeps the epoch too.
    let apart: Apart = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT count(*) AS n FROM signals s JOIN signal_events e USING (signal_id) \
             WHERE e.event_type = 'processing' \
               AND s.xmin::text::bigint <> e.xact_id % 4294967296",
        ),
        &mut db,
    )
    .await
    .unwrap();
    assert_eq!(
        apart.n, 0,
        "signal rows not written by their event's transaction"
    );
    assert_eq!(
        integration_tests::count_rows(&mut db, "signal_events").await,
        16
    );
}

/// One event id sent for two existing signals in one batch: the first
/// occurrence takes it (whatever order the claim's rows come in), the
/// second is the conflict that fails the batch, naming its owner.
#[tokio::test(flavor = "multi_thread")]
async fn one_event_id_for_two_signals_in_a_batch_goes_to_the_first() {
    let app = TestApp::start().await;
    for round in 0..10 {
        let (a, _) = app.record_signal("AAPL").await;
        let (b, _) = app.record_signal("MSFT").await;
        let event_id = uuid::Uuid::new_v4().to_string();
        let event = |signal_id: &str| {
            let mut event = new_event(signal_id, S::Processing, L::WorkerProcessing, None);
            event.event_id = event_id.clone();
            event
        };
        // Alternate which signal sorts first, so input order, not id order, decides.
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let mut writer = app.writer.clone();
        let status = writer
            .record_batch(pb::RecordBatchRequest {
                signals: vec![],
                events: vec![event(&first.signal_id), event(&second.signal_id)],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
        assert!(status.message().starts_with("events[1]"), "{status:?}");
        assert!(status.message().contains(&first.signal_id), "{status:?}");
        // Nothing of the batch stayed; alone, the first occurrence is stored
        // and moves its signal.
        let answer = writer
            .record_batch(pb::RecordBatchRequest {
                signals: vec![],
                events: vec![event(&first.signal_id)],
            })
            .await
            .expect("the id is free again")
            .into_inner();
        assert_eq!((answer.events_created, answer.duplicates), (1, 0));
    }
    #[derive(diesel::QueryableByName)]
    struct Moved {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    // Every signal that got the event is processing; the others are not.
    let mut db = app.primary().await;
    let moved: Moved = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT count(*) AS n FROM signals s \
             WHERE (s.current_status = 'processing') \
                 = EXISTS (SELECT 1 FROM signal_events e \
                           WHERE e.signal_id = s.signal_id AND e.event_type = 'processing')",
        ),
        &mut db,
    )
    .await
    .unwrap();
    assert_eq!(
        moved.n, 20,
        "status agrees with stored events for every signal"
    );
}

fn chunk(id: u64, size: usize) -> pb::IngestRequest {
    let mut request = pb::IngestRequest {
        chunk_id: id,
        ..Default::default()
    };
    for _ in 0..size {
        let mut signal = new_signal("ETH-USD");
        signal.signal_id = uuid::Uuid::new_v4().to_string();
        request.events.push(new_event(
            &signal.signal_id,
            S::QueuedProcessing,
            L::ProcessingQueue,
            None,
        ));
        request.signals.push(signal);
    }
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_acknowledges_every_chunk_in_order_with_a_token() {
    let app = TestApp::start().await;
    let mut chunks: Vec<pb::IngestRequest> = (0..12).map(|i| chunk(i, 20)).collect();
    // A resent chunk (lost acknowledgement) is answered as duplicates.
    chunks.push(pb::IngestRequest {
        chunk_id: 12,
        ..chunks[3].clone()
    });
    // A bad chunk is refused on its own, naming the item.
    let mut bad = chunk(13, 2);
    bad.signals[1].price = -5.0;
    chunks.push(bad);
    let acks: Vec<pb::IngestResponse> = app
        .writer
        .clone()
        .ingest(tokio_stream::iter(chunks))
        .await
        .unwrap()
        .into_inner()
        .map(|ack| ack.unwrap())
        .collect()
        .await;
    let ids: Vec<u64> = acks.iter().map(|a| a.chunk_id).collect();
    assert_eq!(ids, (0..14).collect::<Vec<_>>(), "acknowledged in order");
    for ack in &acks[..12] {
        assert_eq!(
            (ack.code, ack.signals_created, ack.events_created),
            (0, 20, 20),
            "{ack:?}"
        );
        assert!(
            ack.consistency_token
                .as_ref()
                .is_some_and(|t| t.lsn.contains('/'))
        );
    }
    assert_eq!((acks[12].code, acks[12].duplicates), (0, 40));
    assert_eq!(acks[13].code, tonic::Code::InvalidArgument as i32);
    assert!(
        acks[13].message.contains("signals[1].price"),
        "{}",
        acks[13].message
    );
    let mut db = app.primary().await;
    assert_eq!(count_rows(&mut db, "signals").await, 240);
    assert_eq!(count_rows(&mut db, "signal_events").await, 480);

    // The last token makes everything visible on the replica.
    let token = acks[11].consistency_token.clone();
    let listed = app
        .reader
        .clone()
        .list_signals(pb::ListSignalsRequest {
            include_total_count: true,
            consistency_token: token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 240);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saturated_writer_answers_resource_exhausted() {
    // One ingest slot and no patience: concurrent streams must be refused,
    // not queued without bound.
    let app = TestApp::start_with(|writer, _| {
        writer.ingest_slots = 1;
        writer.ingest_wait_ms = 0;
        writer.max_batch_items = 5_000;
    })
    .await;
    let mut streams = Vec::new();
    for s in 0..6u64 {
        let mut writer = app.writer.clone();
        streams.push(tokio::spawn(async move {
            let chunks: Vec<pb::IngestRequest> = (0..4).map(|i| chunk(s * 100 + i, 400)).collect();
            writer
                .ingest(tokio_stream::iter(chunks))
                .await
                .unwrap()
                .into_inner()
                .map(|ack| ack.unwrap())
                .collect::<Vec<_>>()
                .await
        }));
    }
    let mut committed = 0;
    let mut exhausted = 0;
    for stream in streams {
        for ack in stream.await.unwrap() {
            match tonic::Code::from(ack.code) {
                tonic::Code::Ok => committed += ack.signals_created,
                tonic::Code::ResourceExhausted => exhausted += 1,
                other => panic!("unexpected {other:?}: {}", ack.message),
            }
        }
    }
    assert!(exhausted > 0, "some chunks must be refused");
    let mut db = app.primary().await;
    assert_eq!(
        count_rows(&mut db, "signals").await,
        i64::from(committed),
        "refused chunks wrote nothing"
    );
}
