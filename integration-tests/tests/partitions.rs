//! `signal_events` has no default partition (so retention can detach days
//! concurrently): an event whose day has no partition is refused with
//! FAILED_PRECONDITION naming its time and day, nothing of its call is
//! written, a group commit fails only that caller, and the writer's
//! maintenance keeps making partitions ahead of the clock.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_writer::group_commit::{GroupCommit, GroupCommitConfig};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use integration_tests::{
    TestApp, cluster, connect, fresh_database, new_event, new_signal, wait_until, writer_args,
};
use pb::{SignalLocation as L, SignalStatus as S};
use std::time::Duration;
use tonic::Code;

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = connect(url).await;
    let N { n } = diesel::sql_query(sql).get_result(&mut conn).await.unwrap();
    n
}

/// A day far behind the premade partitions (a week either side of today).
fn old_time() -> DateTime<Utc> {
    Utc::now() - TimeDelta::days(100)
}

fn global(url: &str) -> audit_admin::cli::Global {
    audit_admin::cli::Global {
        database_url: url.to_owned(),
        json: false,
        lock_timeout_ms: 1_000,
        lock_retries: 3,
    }
}

fn assert_no_partition(status: &tonic::Status, day: NaiveDate) {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("timestamp")
            && status
                .message()
                .contains(&format!("no partition for day {day}")),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_on_a_day_without_a_partition_is_refused_and_nothing_is_written() {
    let app = TestApp::start().await;
    let url = app.primary_url.clone();
    let (signal, _) = app.record_signal("AAPL").await;
    let at = old_time();
    let day = at.date_naive();
    let events_of_signal = format!(
        "SELECT count(*) AS n FROM signal_events WHERE signal_id = '{}'",
        signal.signal_id
    );
    let mut writer = app.writer.clone();

    // One event.
    let late = new_event(
        &signal.signal_id,
        S::Processing,
        L::WorkerProcessing,
        Some(at),
    );
    let refused = writer
        .record_event(pb::RecordEventRequest {
            event: Some(late.clone()),
        })
        .await
        .unwrap_err();
    assert_no_partition(&refused, day);
    assert_eq!(count(&url, &events_of_signal).await, 1);
    assert_eq!(
        count(
            &url,
            &format!(
                "SELECT count(*) AS n FROM signal_event_ids WHERE event_id = '{}'",
                late.event_id
            )
        )
        .await,
        0,
        "the refused event's id was claimed"
    );

    // A signal received that day (its `received` event has no partition).
    let mut old_signal = new_signal("MSFT");
    old_signal.received_at = Some(audit_wire::convert::to_timestamp(at));
    let refused = writer
        .record_signal(pb::RecordSignalRequest {
            signal: Some(old_signal),
        })
        .await
        .unwrap_err();
    assert_no_partition(&refused, day);
    assert_eq!(count(&url, "SELECT count(*) AS n FROM signals").await, 1);

    // A batch: all or nothing, and the item is named.
    let good = new_event(&signal.signal_id, S::Processing, L::WorkerProcessing, None);
    let refused = writer
        .record_batch(pb::RecordBatchRequest {
            signals: vec![],
            events: vec![good, late.clone()],
        })
        .await
        .unwrap_err();
    assert_no_partition(&refused, day);
    assert!(
        refused.message().starts_with("events[1]: "),
        "{}",
        refused.message()
    );
    assert_eq!(count(&url, &events_of_signal).await, 1);

    // Once the day has its partition, the same event is stored.
    let mut conn = connect(&url).await;
    audit_admin::partitions::ensure_days(&mut conn, &global(&url), &[day])
        .await
        .unwrap();
    let stored = app.record_event(late).await;
    assert!(stored.created);
    assert_eq!(count(&url, &events_of_signal).await, 2);
}

/// One caller's event without a partition rides a group with other callers'
/// events: the group's transaction fails, its items are retried one by
/// one, and only that caller gets the error.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_commit_fails_only_the_caller_without_a_partition() {
    let app = TestApp::start().await;
    let url = app.primary_url.clone();
    let (first, _) = app.record_signal("AAPL").await;
    let (second, _) = app.record_signal("MSFT").await;
    let limits = audit_core::rules::Limits::default();
    let domain = |e: &pb::NewEvent| audit_wire::decode::new_event(e, &limits, Utc::now()).unwrap();

    // One transaction at a time, so the jobs queued while the first group
    // is held up form the next group together.
    let pool = audit_db::build_pool(&writer_args(url.clone()).pool());
    let group_commit = GroupCommit::start(
        pool,
        GroupCommitConfig {
            max_items: 100,
            queue: 100,
            max_batches: 1,
            connect_timeout: Duration::from_secs(5),
        },
    );

    // The first group waits for a row lock on its signal.
    let mut blocker = connect(&url).await;
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM signals WHERE signal_id = '{}' FOR UPDATE",
            first.signal_id
        ))
        .await
        .unwrap();
    let held = {
        let group_commit = group_commit.clone();
        let event = domain(&new_event(
            &first.signal_id,
            S::Processing,
            L::WorkerProcessing,
            None,
        ));
        tokio::spawn(async move { group_commit.record_event(event).await })
    };
    wait_until(
        "the first group waits for the row lock",
        Duration::from_secs(10),
        Duration::from_millis(20),
        async || {
            (count(
                &url,
                "SELECT count(*) AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock' \
                   AND query LIKE '%FOR NO KEY UPDATE%'",
            )
            .await
                > 0)
            .then_some(())
        },
    )
    .await;

    // Four callers queue behind it: three good events and one whose day
    // has no partition.
    let at = old_time();
    let bad = domain(&new_event(
        &second.signal_id,
        S::Processing,
        L::WorkerProcessing,
        Some(at),
    ));
    let bad_id = bad.event_id;
    let goods: Vec<_> = (0..3)
        .map(|_| {
            domain(&new_event(
                &second.signal_id,
                S::Processing,
                L::WorkerProcessing,
                None,
            ))
        })
        .collect();
    let mut calls = Vec::new();
    for event in goods.into_iter().chain([bad]) {
        calls.push(Box::pin(group_commit.record_event(event)));
    }
    // Polled once each: every job is on the queue before the lock goes.
    for call in &mut calls {
        assert!(futures::poll!(call.as_mut()).is_pending());
    }
    blocker.batch_execute("COMMIT").await.unwrap();

    let results = futures::future::join_all(calls).await;
    assert!(held.await.unwrap().unwrap().value.created);
    for result in &results[..3] {
        assert!(result.as_ref().unwrap().value.created, "{result:?}");
    }
    let status = tonic::Status::from(results.into_iter().nth(3).unwrap().unwrap_err());
    assert_no_partition(&status, at.date_naive());

    // Stored: the three good events (plus the signal's `received`), no
    // trace of the bad one.
    assert_eq!(
        count(
            &url,
            &format!(
                "SELECT count(*) AS n FROM signal_events WHERE signal_id = '{}'",
                second.signal_id
            )
        )
        .await,
        4
    );
    assert_eq!(
        count(
            &url,
            &format!("SELECT count(*) AS n FROM signal_event_ids WHERE event_id = '{bad_id}'")
        )
        .await,
        0
    );
}

/// With no row newer than three weeks ago and every later partition gone,
/// maintenance still makes today's and the next week's: pg_partman premakes
/// from the clock (`infinite_time_partitions`), not from the newest row,
/// or an idle week would leave today without a partition for good.
#[tokio::test(flavor = "multi_thread")]
async fn maintenance_makes_partitions_ahead_of_the_clock() {
    // No writer runs here: its start-up maintenance would race the drop.
    let cluster = cluster().await;
    let url = cluster.primary_url(&fresh_database(cluster).await);
    let old = (Utc::now() - TimeDelta::days(21)).date_naive();
    let mut conn = connect(&url).await;
    audit_admin::partitions::ensure_days(&mut conn, &global(&url), &[old])
        .await
        .unwrap();
    conn.batch_execute(&format!(
        "INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, original_signal, created_at, updated_at) \
         VALUES ('00000000-0000-0000-0000-000000000021', 'A', 'A', 'buy', 'open', 1, '{{}}', '{old} 10:00+00', '{old} 10:00+00'); \
         INSERT INTO signal_events (event_id, signal_id, ts, event_type, location, normalised_ticker) \
         VALUES (gen_random_uuid(), '00000000-0000-0000-0000-000000000021', '{old} 10:00+00', 'received', 'processing_queue', 'A');"
    ))
    .await
    .unwrap();
    let keep = audit_admin::partitions::children(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.day == Some(old))
        .unwrap()
        .name;
    conn.batch_execute(&format!(
        "DO $$ DECLARE r record; BEGIN \
           FOR r IN SELECT i.inhrelid::regclass AS t FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                    WHERE i.inhparent = 'signal_events'::regclass AND c.relname <> '{keep}' LOOP \
             EXECUTE format('DROP TABLE %s', r.t); \
           END LOOP; END $$"
    ))
    .await
    .unwrap();
    let pool = audit_db::build_pool(&writer_args(url.clone()).pool());
    assert_eq!(
        audit_writer::store::status::read(&pool)
            .await
            .unwrap()
            .partitions_premade_days,
        0.0
    );

    audit_writer::store::maintenance::run_partition_maintenance(&pool)
        .await
        .unwrap();
    let premade = audit_writer::store::status::read(&pool)
        .await
        .unwrap()
        .partitions_premade_days;
    assert!(premade >= 6.0, "{premade} days premade");
    // Today's events have a partition again.
    let signal = audit_wire::decode::new_signal(
        &new_signal("AAPL"),
        &audit_core::rules::Limits::default(),
        Utc::now(),
    )
    .unwrap();
    let recorded = audit_writer::store::record_signal(&pool, signal)
        .await
        .unwrap();
    assert!(recorded.value.created);
}
