//! Migration from the old tracker: `audit-admin import`, `verify` and
//! `export` against the real primary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use chrono::{DateTime, TimeDelta, Utc};
use diesel_async::SimpleAsyncConnection;
use integration_tests::{cluster, connect, count_rows, fresh_database};
use serde_json::json;
use std::path::Path;

async fn admin(url: &str, args: &[&str]) -> audit_admin::Output {
    let mut argv = vec!["audit-admin".to_owned(), format!("--database-url={url}")];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    audit_admin::run(argv).await
}

fn stdout_json(output: &audit_admin::Output) -> serde_json::Value {
    serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output:?}"))
}

/// A tracker snapshot: `n` signals on two old days (older than any premade
/// partition), each received, processed (twice for some: a retry), approved
/// and forwarded (one failing with an HTTP error), half without event ids.
fn snapshot(n: usize) -> Vec<serde_json::Value> {
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let at: DateTime<Utc> = now - TimeDelta::days(if i % 2 == 0 { 10 } else { 40 })
                + TimeDelta::seconds(i as i64 * 13);
            let step = |k: i64| (at + TimeDelta::milliseconds(250 * k)).to_rfc3339();
            let id = uuid::Uuid::new_v4();
            let mut events = vec![
                json!({"timestamp": step(0), "event_type": "received", "location": "processing_queue"}),
                json!({"timestamp": step(1), "event_type": "processing", "location": "worker_processing", "worker_id": "w-1", "details": "picked up"}),
            ];
            if i % 3 == 0 {
                events.push(json!({"timestamp": step(2), "event_type": "processing", "location": "worker_processing", "worker_id": "w-2", "details": "retry"}));
            }
            events.push(json!({"timestamp": step(3), "event_type": "approved", "location": "approved_queue"}));
            let (last, location) = if i == 1 {
                (json!({"timestamp": step(4), "event_type": "forwarded_http_error", "location": "completed",
                        "http_status": 503, "error_info": {"type": "upstream", "message": "unavailable"},
                        "response_data": "try later"}), "completed")
            } else {
                (json!({"timestamp": step(4), "event_type": "forwarded_success", "location": "completed", "http_status": 200}), "completed")
            };
            let status = last["event_type"].clone();
            events.push(last);
            if i % 2 == 0 {
                for e in &mut events {
                    e["event_id"] = json!(uuid::Uuid::new_v4());
                }
            }
            json!({
                "format_version": 1, "signal_id": id, "ticker": if i % 2 == 0 { "NASDAQ:AAPL" } else { "BTC/USD" },
                "side": "buy", "action": "open", "price": if i % 2 == 0 { json!(187.25) } else { json!("64000.125") },
                "original_signal": {"raw": format!("signal {i}")}, "created_at": step(0),
                "status": status, "location": location, "tags": [format!("t{}", i % 4)], "events": events
            })
        })
        .collect()
}

fn write(path: &Path, records: &[serde_json::Value]) {
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn import_twice_verify_and_round_trip_through_export() {
    let cluster = cluster().await;
    let url = cluster.primary_url(&fresh_database(cluster).await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tracker.jsonl");
    let records = snapshot(30);
    write(&file, &records);
    let file_arg = file.to_str().unwrap();

    let first = admin(&url, &["--json", "import", file_arg, "--chunk-items=40"]).await;
    assert_eq!(first.code, 0, "{first:?}");
    let first = stdout_json(&first);
    assert_eq!(first["signals_created"], 30);
    let events: usize = records
        .iter()
        .map(|r| r["events"].as_array().unwrap().len())
        .sum();
    // Each signal's `received` event is the write path's own.
    assert_eq!(first["events_created"], events - 30);
    assert_eq!(
        first["partitions_created"].as_array().map(Vec::len),
        Some(2)
    );
    let mut conn = connect(&url).await;
    assert_eq!(count_rows(&mut conn, "signal_events").await, events as i64);

    // Idempotent: nothing new the second time.
    let second = stdout_json(&admin(&url, &["--json", "import", file_arg]).await);
    assert_eq!(second["signals_created"], 0);
    assert_eq!(second["events_created"], 0);
    assert_eq!(second["duplicates"], events);
    assert_eq!(count_rows(&mut conn, "signal_events").await, events as i64);

    let verified = admin(&url, &["verify", file_arg]).await;
    assert_eq!(verified.code, 0, "{verified:?}");
    assert!(
        verified
            .stdout
            .contains("30 signals checked, 0 difference(s)"),
        "{}",
        verified.stdout
    );

    // Export everything, import into an empty database, verify: no difference.
    let exported = dir.path().join("export.jsonl");
    let export = admin(&url, &["export", "--output", exported.to_str().unwrap()]).await;
    assert_eq!(export.code, 0, "{export:?}");
    let other = cluster.primary_url(&fresh_database(cluster).await);
    let import = admin(&other, &["import", exported.to_str().unwrap()]).await;
    assert_eq!(import.code, 0, "{import:?}");
    for (db, f) in [
        (&other, exported.to_str().unwrap()),
        (&other, file_arg),
        (&url, exported.to_str().unwrap()),
    ] {
        let v = admin(db, &["--json", "verify", f]).await;
        assert_eq!(v.code, 0, "{f}: {}", v.stdout);
    }
    // A filtered export holds only that ticker.
    let aapl = dir.path().join("aapl.jsonl");
    let filtered = admin(
        &url,
        &[
            "--json",
            "export",
            "--ticker=AAPL",
            "--output",
            aapl.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(stdout_json(&filtered)["signals"], 15);

    // Differences are reported per signal and field, with the file's line.
    let changed = records[4]["signal_id"].as_str().unwrap().to_owned();
    conn.batch_execute(&format!(
        "UPDATE signals SET tags = '{{other}}' WHERE signal_id = '{changed}'; \
         UPDATE signal_events SET details = 'edited' WHERE signal_id = '{changed}' AND event_type = 'processing'"
    ))
    .await
    .unwrap();
    let mut extended = records.clone();
    let mut missing = snapshot(1).remove(0);
    missing["created_at"] = records[0]["created_at"].clone();
    extended.push(missing.clone());
    write(&file, &extended);
    let verify = admin(&url, &["--json", "verify", file_arg]).await;
    assert_eq!(verify.code, 1, "{verify:?}");
    let report = stdout_json(&verify);
    let differences = report["differences"].as_array().unwrap();
    let fields: Vec<(String, String, serde_json::Value)> = differences
        .iter()
        .map(|d| {
            (
                d["signal_id"].as_str().unwrap().to_owned(),
                d["field"].as_str().unwrap().to_owned(),
                d["line"].clone(),
            )
        })
        .collect();
    assert!(
        fields.contains(&(changed.clone(), "tags".into(), json!(5))),
        "{fields:?}"
    );
    assert!(
        fields.contains(&(changed.clone(), "events[1].details".into(), json!(5))),
        "{fields:?}"
    );
    assert!(
        fields.contains(&(
            missing["signal_id"].as_str().unwrap().to_owned(),
            "signal".into(),
            json!(31)
        )),
        "{fields:?}"
    );
    let text = admin(&url, &["verify", file_arg]).await;
    assert_eq!(text.code, 1);
    assert!(
        text.stdout.contains(&format!("{changed} (line 5) tags")),
        "{}",
        text.stdout
    );
    // An extra signal in the database, in the file's time span.
    write(&file, &records[1..]);
    let extra = stdout_json(&admin(&url, &["--json", "verify", file_arg]).await);
    assert!(
        extra["differences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["signal_id"] == records[0]["signal_id"] && d["database"] == "present"),
        "{extra}"
    );
}

#[tokio::test]
async fn truncated_and_malformed_lines_are_named_and_nothing_is_written() {
    let cluster = cluster().await;
    let url = cluster.primary_url(&fresh_database(cluster).await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    let records = snapshot(4);
    let good: Vec<String> = records.iter().map(ToString::to_string).collect();

    let truncated = format!(
        "{}\n{}\n{}\n",
        good[0],
        good[1],
        &good[2][..good[2].len() / 2]
    );
    let mut bad_status = records[1].clone();
    bad_status["events"][1]["event_type"] = json!("procesing");
    let mut bad_price = records[1].clone();
    bad_price["price"] = json!(-3);
    let mut unknown_field = records[1].clone();
    unknown_field["colour"] = json!("red");
    for (text, line, message) in [
        (truncated, 3, "not a tracker record"),
        (format!("{}\n{bad_status}\n", good[0]), 2, "unknown status"),
        (
            format!("{}\n\n{}\n{bad_price}\n", good[0], good[2]),
            4,
            "price",
        ),
        (format!("{unknown_field}\n"), 1, "unknown field"),
        (
            format!("{}\nnot json at all\n", good[0]),
            2,
            "not a tracker record",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        for command in ["import", "verify"] {
            let output = admin(&url, &[command, file.to_str().unwrap()]).await;
            assert_eq!(output.code, 2, "{command}: {output:?}");
            assert!(
                output.stderr.contains(&format!("bad.jsonl:{line}:"))
                    && output.stderr.contains(message),
                "{command}: {}",
                output.stderr
            );
        }
        let mut conn = connect(&url).await;
        assert_eq!(
            count_rows(&mut conn, "signals").await,
            0,
            "a bad file wrote something"
        );
    }
    let missing = admin(&url, &["import", "/nonexistent/file.jsonl"]).await;
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("cannot open"), "{}", missing.stderr);
}
