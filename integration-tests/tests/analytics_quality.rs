//! CheckDataQuality finds each kind of problem, with ids: live, and from
//! the writer's stored checks, which must say the same.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use integration_tests::analytics::*;
use integration_tests::{channel, new_event};

async fn ask(
    analytics: &mut SignalAnalyticsServiceClient<tonic::transport::Channel>,
    request: pb::CheckDataQualityRequest,
) -> pb::CheckDataQualityResponse {
    analytics
        .check_data_quality(request)
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn data_quality_finds_each_kind_of_problem_with_ids() {
    let app = start_app().await;
    let start = history(&app).await;
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let request = pb::CheckDataQualityRequest {
        stuck_after: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        summary_range: range(start, 120),
        max_ids: 0,
        live: true,
    };
    let stored_request = pb::CheckDataQualityRequest {
        live: false,
        ..request
    };
    let clean = ask(&mut analytics, request).await;
    let count = |r: &pb::CheckDataQualityResponse, kind: pb::FindingKind| {
        r.findings
            .iter()
            .find(|f| f.kind == kind as i32)
            .map(|f| (f.count, f.ids.clone()))
            .unwrap()
    };
    assert_eq!(count(&clean, pb::FindingKind::OrphanEvents).0, 0);
    assert_eq!(count(&clean, pb::FindingKind::CounterMismatch).0, 0);
    assert_eq!(count(&clean, pb::FindingKind::SummaryMismatch).0, 0);
    // History signals that never reached a terminal status are stuck (their
    // last event is minutes old); every one of them must be listed.
    let mut db = app.replica().await;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let N { n } = diesel::sql_query(
        "SELECT count(*) AS n FROM signals WHERE current_status::text NOT IN ('rejected','forwarded_success', \
         'forwarded_timeout','forwarded_http_error','forwarded_generic_error','discarded','error')",
    )
    .get_result(&mut db)
    .await
    .unwrap();
    assert_eq!(count(&clean, pb::FindingKind::StuckSignals).0, n);
    assert_eq!(clean.stored_minutes, 0);

    // Break one of each thing behind the services' backs. The event whose
    // claim goes is a `received` one without error: an event without its
    // claim is left out of its signal's recount, so an error or a retry
    // there would make a second counter mismatch (the history is random).
    let mut primary = app.primary().await;
    use diesel_async::SimpleAsyncConnection;
    primary
        .batch_execute(
            "UPDATE signals SET error_count = error_count + 7 WHERE signal_id = (SELECT signal_id FROM signals ORDER BY signal_id LIMIT 1); \
             DELETE FROM signal_event_ids WHERE event_id = (SELECT event_id FROM signal_events \
               WHERE event_type = 'received' AND error_info IS NULL AND http_status IS NULL ORDER BY event_id LIMIT 1); \
             UPDATE signal_metrics_summary SET total_events = total_events + 1 \
               WHERE metric_id = (SELECT min(metric_id) FROM signal_metrics_summary WHERE period_type = 'minute');",
        )
        .await
        .unwrap();
    app.wait_replica().await;
    let broken = ask(&mut analytics, request).await;
    let (orphans, orphan_ids) = count(&broken, pb::FindingKind::OrphanEvents);
    assert_eq!(orphans, 1);
    assert_eq!(orphan_ids.len(), 1);
    let (counters, counter_ids) = count(&broken, pb::FindingKind::CounterMismatch);
    assert_eq!(counters, 1);
    assert!(uuid::Uuid::parse_str(&counter_ids[0]).is_ok());
    let (summaries, summary_ids) = count(&broken, pb::FindingKind::SummaryMismatch);
    assert_eq!(summaries, 1, "{summary_ids:?}");
    assert!(summary_ids[0].starts_with("minute "));

    // By default, minutes not checked by the writer's job yet are checked
    // live (minutes without events need no check): the same answer.
    let unchecked = ask(&mut analytics, stored_request).await;
    assert_eq!(unchecked.findings, broken.findings);
    // Once the job has checked and stored every minute, the stored minutes
    // answer, with the same findings (each filed under the minutes its
    // signal was touched in, counted once).
    check_quality(&app).await;
    app.wait_replica().await;
    let stored = ask(&mut analytics, stored_request).await;
    // The history's events lie in most of its first 80 minutes.
    assert!(
        stored.stored_minutes >= unchecked.stored_minutes + 60,
        "{} minutes stored, {} before the job ran",
        stored.stored_minutes,
        unchecked.stored_minutes
    );
    assert_eq!(stored.findings, broken.findings);

    // An id claimed for an event that never arrived, on a signal with no
    // event at all: found through the signal's updated_at in the range.
    let at = (start + chrono::TimeDelta::minutes(10)).to_rfc3339();
    primary
        .batch_execute(&format!(
            "INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, original_signal, created_at, updated_at) \
             VALUES ('00000000-0000-0000-0000-0000000000a1', 'A', 'A', 'buy', 'open', 1, '{{}}', '{at}', '{at}'); \
             INSERT INTO signal_event_ids VALUES ('00000000-0000-0000-0000-0000000000ee', '00000000-0000-0000-0000-0000000000a1', '{at}');"
        ))
        .await
        .unwrap();
    app.wait_replica().await;
    let lonely = ask(&mut analytics, request).await;
    let (orphans, orphan_ids) = count(&lonely, pb::FindingKind::OrphanEvents);
    assert_eq!(orphans, 2, "{orphan_ids:?}");
    assert!(
        orphan_ids.contains(&"00000000-0000-0000-0000-0000000000ee".to_string()),
        "{orphan_ids:?}"
    );
    // Its minute was checked before the claim was planted: the stored
    // answer does not see it (only a live check sees SQL by hand) ...
    let blind = ask(&mut analytics, stored_request).await;
    assert_eq!(blind.stored_minutes, stored.stored_minutes);
    assert_eq!(count(&blind, pb::FindingKind::OrphanEvents).0, 1);
    // ... until an event changes the minute: the rollup refresh queues it
    // again, calls check it live, and the next job run stores it again.
    let mut writer = app.writer.clone();
    writer
        .record_event(pb::RecordEventRequest {
            event: Some(new_event(
                "00000000-0000-0000-0000-0000000000a1",
                pb::SignalStatus::QueuedProcessing,
                pb::SignalLocation::ProcessingQueue,
                Some(start + chrono::TimeDelta::minutes(10) + chrono::TimeDelta::seconds(1)),
            )),
        })
        .await
        .unwrap();
    refresh_analytics(&app).await;
    app.wait_replica().await;
    let changed = ask(&mut analytics, stored_request).await;
    assert_eq!(changed.stored_minutes, stored.stored_minutes - 1);
    let (orphans, orphan_ids) = count(&changed, pb::FindingKind::OrphanEvents);
    assert_eq!(orphans, 2, "{orphan_ids:?}");
    check_quality(&app).await;
    app.wait_replica().await;
    let restored = ask(&mut analytics, stored_request).await;
    assert_eq!(restored.stored_minutes, stored.stored_minutes);
    assert_eq!(restored.findings, changed.findings);
}
