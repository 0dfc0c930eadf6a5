//! SearchEvents: ranking, highlights and the ListSignals filters.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use integration_tests::analytics::*;
use integration_tests::{channel, new_event, new_signal};
use pb::{SignalLocation as L, SignalStatus as S};

#[tokio::test(flavor = "multi_thread")]
async fn search_events_ranks_highlights_and_respects_filters() {
    let app = start_app().await;
    let mut batch = pb::RecordBatchRequest::default();
    let texts = [
        (
            "AAPL",
            "broker rejected order: insufficient margin",
            r#"{"type":"broker","message":"margin call"}"#,
        ),
        ("AAPL", "forwarded to broker, accepted", ""),
        (
            "MSFT",
            "broker timeout after 5s, margin check skipped",
            r#"{"type":"timeout"}"#,
        ),
        (
            "BTC-USD",
            "validation failed: price outside band",
            r#"{"type":"validation"}"#,
        ),
    ];
    let mut ids = Vec::new();
    for (ticker, details, error) in texts {
        let id = uuid::Uuid::new_v4().to_string();
        let mut signal = new_signal(ticker);
        signal.signal_id = id.clone();
        batch.signals.push(signal);
        let mut event = new_event(&id, S::Processing, L::WorkerProcessing, None);
        event.details = details.into();
        event.error_info_json = error.into();
        batch.events.push(event);
        ids.push(id);
    }
    // Eight more that mention one word 1..=8 times: ts_rank grows with the
    // count, so the only right order is most mentions first (a wrong sort
    // key gets this order by chance once in 8! runs).
    let mut by_mentions = Vec::new();
    for mentions in 1..=8 {
        let id = uuid::Uuid::new_v4().to_string();
        let mut signal = new_signal("SPY");
        signal.signal_id = id.clone();
        batch.signals.push(signal);
        let mut event = new_event(&id, S::Processing, L::WorkerProcessing, None);
        event.details = format!("fill report:{}", " slippage noted".repeat(mentions));
        batch.events.push(event);
        by_mentions.push(id);
    }
    by_mentions.reverse();
    // The same words for two tickers, one of them with characters that
    // tsquery syntax would read as quoting and escapes.
    let mut haircut = Vec::new();
    for ticker in ["o'ne\\il", "AAPL"] {
        let id = uuid::Uuid::new_v4().to_string();
        let mut signal = new_signal(ticker);
        signal.signal_id = id.clone();
        batch.signals.push(signal);
        let mut event = new_event(&id, S::Processing, L::WorkerProcessing, None);
        event.details = "haircut applied to the collateral".into();
        batch.events.push(event);
        haircut.push(id);
    }
    let token = app
        .writer
        .clone()
        .record_batch(batch)
        .await
        .unwrap()
        .into_inner()
        .consistency_token;
    let mut reader = app.reader.clone();
    reader
        .get_signal(pb::GetSignalRequest {
            signal_id: ids[0].clone(),
            consistency_token: token,
        })
        .await
        .unwrap();
    let mut analytics = SignalAnalyticsServiceClient::new(channel(app.reader_server.addr).await);
    let search = |query: &str, filter: Option<pb::SignalFilter>| pb::SearchEventsRequest {
        query: query.into(),
        filter,
        ..Default::default()
    };
    let hits = analytics
        .search_events(search("margin", None))
        .await
        .unwrap()
        .into_inner()
        .hits;
    let found: Vec<&str> = hits
        .iter()
        .map(|h| h.event.as_ref().unwrap().signal_id.as_str())
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.contains(&ids[0].as_str()) && found.contains(&ids[2].as_str()));
    assert!(
        hits.iter().all(|h| h.snippet.contains("[margin]")),
        "{:?}",
        hits.iter().map(|h| &h.snippet).collect::<Vec<_>>()
    );
    assert!(hits[0].rank >= hits[1].rank);

    let hits = analytics
        .search_events(search("slippage", None))
        .await
        .unwrap()
        .into_inner()
        .hits;
    let found: Vec<&str> = hits
        .iter()
        .map(|h| h.event.as_ref().unwrap().signal_id.as_str())
        .collect();
    assert_eq!(found, by_mentions, "best rank first");
    assert!(hits.windows(2).all(|w| w[0].rank > w[1].rank));

    // Web search syntax: a phrase and an exclusion.
    let hits = analytics
        .search_events(search("broker -timeout", None))
        .await
        .unwrap()
        .into_inner()
        .hits;
    let found: Vec<&str> = hits
        .iter()
        .map(|h| h.event.as_ref().unwrap().signal_id.as_str())
        .collect();
    assert!(
        found.contains(&ids[0].as_str())
            && found.contains(&ids[1].as_str())
            && !found.contains(&ids[2].as_str())
    );
    // Combined with a ListSignals filter.
    let only_msft = pb::SignalFilter {
        normalised_ticker: "MSFT".into(),
        ..Default::default()
    };
    let hits = analytics
        .search_events(search("margin", Some(only_msft)))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].event.as_ref().unwrap().signal_id, ids[2]);
    let by_ticker = |ticker: &str, statuses: Vec<i32>| pb::SignalFilter {
        normalised_ticker: ticker.into(),
        statuses,
        ..Default::default()
    };
    for (ticker, statuses, expected) in [
        ("O'NE\\IL", vec![], vec![haircut[0].as_str()]),
        ("AAPL", vec![], vec![haircut[1].as_str()]),
        (
            "AAPL",
            vec![S::Processing as i32],
            vec![haircut[1].as_str()],
        ),
        ("AAPL", vec![S::Rejected as i32], vec![]),
        ("MSFT", vec![], vec![]),
    ] {
        let hits = analytics
            .search_events(search("haircut", Some(by_ticker(ticker, statuses.clone()))))
            .await
            .unwrap()
            .into_inner()
            .hits;
        let found: Vec<&str> = hits
            .iter()
            .map(|h| h.event.as_ref().unwrap().signal_id.as_str())
            .collect();
        assert_eq!(found, expected, "{ticker} {statuses:?}");
    }
    // Stop words alone match nothing, with or without a ticker.
    for filter in [None, Some(by_ticker("AAPL", vec![]))] {
        let hits = analytics
            .search_events(search("the", filter))
            .await
            .unwrap()
            .into_inner()
            .hits;
        assert!(hits.is_empty(), "{hits:?}");
    }
    // Error info is searched too.
    let hits = analytics
        .search_events(search("validation", None))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1);

    let status = analytics
        .search_events(search("  ", None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("query"));
}
