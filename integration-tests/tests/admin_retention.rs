//! `audit-admin retention run`, `archive` and `restore` against the real
//! primary and replica: a day of events leaves by its partition (archived,
//! verified, then dropped), its signals with it, its hourly and daily
//! rollups stay, and a restore brings back every row exactly; plus the
//! refusals: no --yes, retention under a day, a second concurrent run, a day
//! never archived, a corrupted or missing archive file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_admin::archive::{Archive, Part, PartKind, PartWriter};
use audit_db::leader::{Job, Turn, with_job_lock};
use audit_proto::v1 as pb;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use integration_tests::{TestApp, connect, new_event, wait_until};
use pb::{SignalLocation as L, SignalStatus as S};
use std::time::Duration;

const SIGNALS: usize = 12;

/// The `--json` output of a command that must have succeeded.
fn succeeded(output: &audit_admin::Output) -> serde_json::Value {
    assert_eq!(output.code, 0, "{output:?}");
    serde_json::from_str(&output.stdout).unwrap()
}

async fn admin(url: &str, archive: &std::path::Path, args: &[&str]) -> audit_admin::Output {
    let mut argv = vec!["audit-admin".to_owned(), format!("--database-url={url}")];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    // Only the commands that take it.
    let command: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !a.starts_with("--"))
        .collect();
    if matches!(
        command.as_slice(),
        ["retention", "run", ..] | ["archive", ..] | ["restore", ..]
    ) {
        argv.push(format!("--archive-url={}", archive.display()));
    }
    audit_admin::run(argv).await
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap().and_utc()
}

/// An app whose rollups refresh quickly, with `SIGNALS` signals whose whole
/// lives (received … forwarded, one failing) happened on `day`.
async fn app_with_old_day(day: NaiveDate) -> (TestApp, Vec<String>) {
    let app = TestApp::start_with(|writer, _| writer.rollup_refresh_ms = 200).await;
    let global = audit_admin::cli::Global {
        database_url: app.primary_url.clone(),
        json: false,
        lock_timeout_ms: 1_000,
        lock_retries: 3,
    };
    let mut conn = connect(&app.primary_url).await;
    audit_admin::partitions::ensure_days(&mut conn, &global, &[day])
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..SIGNALS {
        let id = uuid::Uuid::new_v4().to_string();
        let at = midnight(day) + TimeDelta::hours(9) + TimeDelta::minutes(i as i64 * 7);
        let mut signal =
            integration_tests::new_signal(if i % 2 == 0 { "NASDAQ:AAPL" } else { "BTC/USD" });
        signal.signal_id = id.clone();
        signal.received_at = Some(audit_wire::convert::to_timestamp(at));
        signal.tags = vec![format!("batch-{}", i % 3)];
        let step = |n: i64| Some(at + TimeDelta::milliseconds(150 * n));
        let mut events = vec![
            new_event(&id, S::QueuedProcessing, L::ProcessingQueue, step(1)),
            new_event(&id, S::Processing, L::WorkerProcessing, step(2)),
            new_event(&id, S::Approved, L::ApprovedQueue, step(3)),
        ];
        let mut last = new_event(&id, S::ForwardedSuccess, L::Completed, step(4));
        if i == 3 {
            last = new_event(&id, S::ForwardedHttpError, L::Completed, step(4));
            last.http_status = 502;
            last.error_info_json = r#"{"type":"upstream","message":"bad gateway"}"#.into();
            last.response_data = "<html>502</html>".into();
        }
        events.push(last);
        app.writer
            .clone()
            .record_batch(pb::RecordBatchRequest {
                signals: vec![signal],
                events,
            })
            .await
            .unwrap();
        ids.push(id);
    }
    wait_rollups(&app).await;
    (app, ids)
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Sum {
    #[diesel(sql_type = Nullable<Text>)]
    sum: Option<String>,
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = connect(url).await;
    let N { n } = diesel::sql_query(sql).get_result(&mut conn).await.unwrap();
    n
}

async fn checksum(url: &str, sql: &str) -> Option<String> {
    let mut conn = connect(url).await;
    let Sum { sum } = diesel::sql_query(sql).get_result(&mut conn).await.unwrap();
    sum
}

/// Every stored column of the day's events, signals and hourly/daily rollups.
async fn checksums(url: &str, day: NaiveDate) -> [Option<String>; 3] {
    let (from, to) = (midnight(day), midnight(day + TimeDelta::days(1)));
    let events = format!(
        "SELECT md5(string_agg(row_to_json(e)::text, E'\\n' ORDER BY sequence)) AS sum FROM ( \
           SELECT {} FROM signal_events WHERE ts >= '{from}' AND ts < '{to}') e",
        audit_admin::dump::EVENT_COLUMNS
    );
    let signals = format!(
        "SELECT md5(string_agg(row_to_json(s)::text, E'\\n' ORDER BY signal_id)) AS sum \
         FROM signals s WHERE created_at >= '{from}' AND created_at < '{to}'"
    );
    let rollups = format!(
        "SELECT md5(string_agg(row_to_json(m)::text, E'\\n' ORDER BY metric_id)) AS sum \
         FROM signal_metrics_summary m WHERE period_type IN ('hour', 'day') \
           AND period_start >= '{from}' AND period_start < '{to}'"
    );
    [
        checksum(url, &events).await,
        checksum(url, &signals).await,
        checksum(url, &rollups).await,
    ]
}

/// Until the refresher has consumed every dirty key.
async fn wait_rollups(app: &TestApp) {
    wait_until(
        "the rollup refresher takes every dirty key",
        Duration::from_secs(20),
        Duration::from_millis(50),
        async || {
            (count(&app.primary_url, "SELECT count(*) AS n FROM rollup_dirty").await == 0)
                .then_some(())
        },
    )
    .await;
}

fn old_day() -> NaiveDate {
    (Utc::now() - TimeDelta::days(100)).date_naive()
}

#[tokio::test]
async fn a_day_leaves_by_its_partition_and_comes_back_row_for_row() {
    let day = old_day();
    let (app, ids) = app_with_old_day(day).await;
    let url = app.primary_url.clone();
    let dir = tempfile::tempdir().unwrap();
    let before = checksums(&url, day).await;
    assert!(before.iter().all(Option::is_some), "{before:?}");
    let minutes = format!(
        "SELECT count(*) AS n FROM signal_metrics_summary WHERE period_type = 'minute' \
         AND period_start >= '{}' AND period_start < '{}'",
        midnight(day),
        midnight(day + TimeDelta::days(1))
    );
    assert!(count(&url, &minutes).await > 0);
    // The analytics tables of the day: minute rows leave with the minute
    // rollups, the hourly rows stay (summed from minutes that are gone,
    // so they must never be rebuilt).
    integration_tests::analytics::refresh_analytics(&app).await;
    let (from, to) = (midnight(day), midnight(day + TimeDelta::days(1)));
    let analytics_minutes = format!(
        "SELECT (SELECT count(*) FROM stage_latency_minutely WHERE minute >= '{from}' AND minute < '{to}') \
              + (SELECT count(*) FROM ticker_activity_minutely WHERE minute >= '{from}' AND minute < '{to}') AS n"
    );
    let analytics_hours = format!(
        "SELECT md5(string_agg(r, E'\\n' ORDER BY r)) AS sum FROM ( \
           SELECT row_to_json(h)::text AS r FROM stage_latency_hourly h WHERE hour >= '{from}' AND hour < '{to}' \
           UNION ALL SELECT row_to_json(a)::text FROM ticker_activity_hourly a \
           WHERE hour >= '{from}' AND hour < '{to}') t"
    );
    assert!(count(&url, &analytics_minutes).await > 0);
    let hours_before = checksum(&url, &analytics_hours).await;
    assert!(hours_before.is_some());

    // Dry run: says what would leave, changes nothing.
    let dry = admin(
        &url,
        dir.path(),
        &["--json", "retention", "run", "--dry-run"],
    )
    .await;
    let dry = succeeded(&dry);
    assert_eq!(dry["days"][0]["day"], day.to_string());
    assert_eq!(dry["days"][0]["events"], SIGNALS as i64 * 5);
    assert_eq!(checksums(&url, day).await, before);

    let run = admin(&url, dir.path(), &["--json", "retention", "run", "--yes"]).await;
    let outcome = succeeded(&run);
    assert_eq!(outcome["days"][0]["day"], day.to_string());
    assert_eq!(
        outcome["days"][0]["detach"], "concurrently in 1 attempt(s)",
        "{outcome}"
    );
    assert_eq!(outcome["days"][0]["signals_archived"], SIGNALS);
    assert_eq!(outcome["signals_deleted"], SIGNALS);

    // Gone from the live tables: partition, events, claims, signals, minute
    // rollups; the hourly and daily rollups of the day are still there.
    let partitions = admin(&url, dir.path(), &["--json", "partitions", "list"]).await;
    assert!(
        !partitions.stdout.contains(&format!("\"{day}\"")),
        "{}",
        partitions.stdout
    );
    let signal_list = ids
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(",");
    for table in ["signal_events", "signal_event_ids", "signals"] {
        assert_eq!(
            count(
                &url,
                &format!("SELECT count(*) AS n FROM {table} WHERE signal_id IN ({signal_list})")
            )
            .await,
            0,
            "{table}"
        );
    }
    assert_eq!(count(&url, &minutes).await, 0);
    assert_eq!(count(&url, &analytics_minutes).await, 0);
    assert_eq!(checksum(&url, &analytics_hours).await, hours_before);
    let after = checksums(&url, day).await;
    assert_eq!(after[2], before[2], "hourly/daily rollups changed");
    assert!(
        dir.path()
            .join(format!("signal_events/day={day}/manifest.json"))
            .exists()
    );
    let check = admin(&url, dir.path(), &["check"]).await;
    assert_eq!(
        check.code, 0,
        "retention left inconsistencies: {}",
        check.stdout
    );

    // Restore: every row as it was.
    let restored = admin(
        &url,
        dir.path(),
        &["--json", "restore", &format!("--day={day}")],
    )
    .await;
    assert_eq!(restored.code, 0, "{restored:?}");
    let after = checksums(&url, day).await;
    assert_eq!(after, before, "restored rows differ");
    // The restored day is behind the retention horizon: the refresher takes
    // its dirty keys without recomputing the kept rollups or the dropped
    // minutes.
    wait_rollups(&app).await;
    assert_eq!(checksums(&url, day).await[2], before[2]);
    assert_eq!(count(&url, &minutes).await, 0);
    integration_tests::analytics::refresh_analytics(&app).await;
    assert_eq!(count(&url, &analytics_minutes).await, 0);
    assert_eq!(checksum(&url, &analytics_hours).await, hours_before);
    // The reader serves the restored history.
    app.wait_replica().await;
    let timeline = app
        .reader
        .clone()
        .get_signal(pb::GetSignalRequest {
            signal_id: ids[3].clone(),
            consistency_token: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(timeline.events.len(), 5);
    assert_eq!(timeline.events[4].http_status, 502);

    // Restoring a day that is live again is refused.
    let again = admin(&url, dir.path(), &["restore", &format!("--day={day}")]).await;
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("live events"), "{}", again.stderr);

    // It leaves again with the next run, reusing the identical archive.
    let manifest = std::fs::read(
        dir.path()
            .join(format!("signal_events/day={day}/manifest.json")),
    )
    .unwrap();
    let rerun = admin(&url, dir.path(), &["retention", "run", "--yes"]).await;
    assert_eq!(rerun.code, 0, "{rerun:?}");
    assert_eq!(
        count(
            &url,
            &format!("SELECT count(*) AS n FROM signals WHERE signal_id IN ({signal_list})")
        )
        .await,
        0
    );
    let manifest_after = std::fs::read(
        dir.path()
            .join(format!("signal_events/day={day}/manifest.json")),
    )
    .unwrap();
    let events_sha = |m: &[u8]| {
        let m: serde_json::Value = serde_json::from_slice(m).unwrap();
        m["parts"][0]["content_sha256"].clone()
    };
    assert_eq!(events_sha(&manifest), events_sha(&manifest_after));
}

#[derive(QueryableByName)]
struct Starts {
    #[diesel(sql_type = Text)]
    signal_id: String,
    #[diesel(sql_type = Integer)]
    processing_starts: i32,
    #[diesel(sql_type = Integer)]
    forwarding_starts: i32,
}

/// `(signal_id, processing_starts, forwarding_starts)` of `ids`, by id.
async fn start_counters(url: &str, ids: &[String]) -> Vec<(String, i32, i32)> {
    let list = ids
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(",");
    let mut conn = connect(url).await;
    let rows: Vec<Starts> = diesel::sql_query(format!(
        "SELECT signal_id::text AS signal_id, processing_starts, forwarding_starts \
         FROM signals WHERE signal_id IN ({list}) ORDER BY signal_id"
    ))
    .load(&mut conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|s| (s.signal_id, s.processing_starts, s.forwarding_starts))
        .collect()
}

/// `line` (one row as `row_to_json` renders it: no spaces, the key never
/// first) without `"key":<integer>`. Cut out of the text rather than
/// re-serialized, so every other value stays byte for byte what the archive
/// holds (serde_json would round numerics through f64).
fn without_key(line: &str, key: &str) -> String {
    let needle = format!(",\"{key}\":");
    let start = line
        .find(&needle)
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    let value = &line[start + needle.len()..];
    let digits = value.find(|c: char| !c.is_ascii_digit()).unwrap();
    assert!(digits > 0, "{key} is not an integer in {line}");
    format!("{}{}", &line[..start], &value[digits..])
}

/// An archive written before signals had start counters (its signal rows
/// lack the columns) restores them counted from the restored events, so
/// retry counting carries on from the right number.
#[tokio::test]
async fn an_archive_older_than_the_start_counters_restores_them_counted() {
    let day = old_day();
    let (app, ids) = app_with_old_day(day).await;
    let url = app.primary_url.clone();
    let dir = tempfile::tempdir().unwrap();
    // Every signal of the day was processed once; retries make the counts
    // differ between signals, so zeros or a count on the wrong row fail.
    let at = |i: usize, seconds: i64| {
        Some(
            midnight(day)
                + TimeDelta::hours(9)
                + TimeDelta::minutes(i as i64 * 7)
                + TimeDelta::seconds(seconds),
        )
    };
    app.writer
        .clone()
        .record_batch(pb::RecordBatchRequest {
            signals: vec![],
            events: vec![
                new_event(&ids[0], S::Processing, L::WorkerProcessing, at(0, 1)),
                new_event(&ids[0], S::Forwarding, L::WorkerForwarding, at(0, 2)),
                new_event(&ids[3], S::Forwarding, L::WorkerForwarding, at(3, 1)),
                new_event(&ids[3], S::Forwarding, L::WorkerForwarding, at(3, 2)),
            ],
        })
        .await
        .unwrap();
    wait_rollups(&app).await;
    let before = start_counters(&url, &ids).await;
    assert_eq!(before.len(), SIGNALS);
    let of = |id: &str| {
        before
            .iter()
            .find(|s| s.0 == id)
            .map(|s| (s.1, s.2))
            .unwrap()
    };
    assert_eq!(of(&ids[0]), (2, 1));
    assert_eq!(of(&ids[3]), (1, 2));
    assert_eq!(of(&ids[1]), (1, 0));

    let run = admin(&url, dir.path(), &["retention", "run", "--yes"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(start_counters(&url, &ids).await.is_empty());

    // Back to the old format: every part holding signals without the
    // counters, its checksums redone so that it verifies, and the schema
    // version the one before the counters.
    let archive = Archive::open(dir.path().to_str().unwrap()).unwrap();
    let mut manifest = archive.manifest(day).await.unwrap().unwrap();
    let mut rewritten = 0;
    for part in manifest
        .parts
        .iter_mut()
        .filter(|p| matches!(p.kind, PartKind::Signals | PartKind::SignalsPurged))
    {
        let lines = archive.read_part(day, part).await.unwrap();
        let mut writer = PartWriter::new(part.kind).unwrap();
        for line in lines.iter() {
            let old: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(
                old.get("processing_starts").is_some() && old.get("forwarding_starts").is_some(),
                "{line}"
            );
            let stripped =
                without_key(&without_key(line, "processing_starts"), "forwarding_starts");
            let new: serde_json::Value = serde_json::from_str(&stripped).unwrap();
            assert!(
                new.get("processing_starts").is_none() && new.get("forwarding_starts").is_none(),
                "{stripped}"
            );
            assert_eq!(
                new.as_object().unwrap().len() + 2,
                old.as_object().unwrap().len()
            );
            writer.push(&stripped, None).unwrap();
            rewritten += 1;
        }
        let buf = writer.finish().unwrap();
        assert_eq!(buf.part.rows, part.rows);
        std::fs::write(
            dir.path()
                .join(format!("signal_events/day={day}/{}", part.file)),
            &buf.data,
        )
        .unwrap();
        *part = Part {
            min_ts: part.min_ts,
            max_ts: part.max_ts,
            ..buf.part
        };
    }
    assert!(rewritten >= SIGNALS, "{rewritten} signal rows rewritten");
    let known: Vec<String> = audit_migrations::known()
        .iter()
        .map(|v| v.replace('-', ""))
        .collect();
    let counters = known
        .iter()
        .position(|v| v.starts_with("20261206000100"))
        .unwrap();
    manifest.schema_version = known[counters - 1].clone();
    archive.put_manifest(&manifest).await.unwrap();

    let restored = admin(
        &url,
        dir.path(),
        &["--json", "restore", &format!("--day={day}")],
    )
    .await;
    let restored = succeeded(&restored);
    assert_eq!(restored["signals_inserted"], SIGNALS);
    assert_eq!(start_counters(&url, &ids).await, before);
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_lost() {
    let day = old_day();
    let (app, _ids) = app_with_old_day(day).await;
    let url = app.primary_url.clone();
    let dir = tempfile::tempdir().unwrap();
    let before = checksums(&url, day).await;

    for (args, message) in [
        (vec!["retention", "run"], "without --yes"),
        (
            vec!["retention", "run", "--yes", "--raw-events=12h"],
            "whole days",
        ),
        (
            vec!["retention", "run", "--yes", "--raw-events=0"],
            "at least 1 day",
        ),
        (
            vec![
                "retention",
                "run",
                "--yes",
                "--raw-events=30",
                "--signals=20",
            ],
            "signals must be kept at least as long",
        ),
        (
            vec!["retention", "set", "raw_events", "0"],
            "at least 1 day",
        ),
    ] {
        let output = admin(&url, dir.path(), &args).await;
        assert_eq!(output.code, 2, "{args:?}: {output:?}");
        assert!(
            output.stderr.contains(message),
            "{args:?}: {}",
            output.stderr
        );
    }
    assert_eq!(checksums(&url, day).await, before);

    // A default partition put back (e.g. by reverting its migration): no
    // concurrent detach is possible, and retention will not fall back to
    // one that locks writers out.
    let mut owner = connect(&url).await;
    owner
        .batch_execute("CREATE TABLE signal_events_default PARTITION OF signal_events DEFAULT")
        .await
        .unwrap();
    let refused = admin(&url, dir.path(), &["retention", "run", "--yes"]).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("default partition")
            && refused
                .stderr
                .contains("2026-12-05-000100_no_default_partition"),
        "{}",
        refused.stderr
    );
    assert_eq!(checksums(&url, day).await, before);
    owner
        .batch_execute("DROP TABLE signal_events_default")
        .await
        .unwrap();

    // A second run while one is in progress: refused at once, nothing done.
    let pool = audit_db::build_pool(&audit_db::PoolConfig {
        name: "admin-test".into(),
        url: url.clone(),
        min_idle: 0,
        max_size: 2,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(30),
        application_name: "admin-test".into(),
        read_only: false,
        test_on_checkout: false,
    });
    let turn = with_job_lock(&pool, Job::Retention, async || {
        Ok::<_, audit_db::DbError>(admin(&url, dir.path(), &["retention", "run", "--yes"]).await)
    })
    .await
    .unwrap();
    let Turn::Ran(second) = turn else {
        panic!("lock not taken")
    };
    assert_eq!(second.code, 2, "{second:?}");
    assert!(
        second.stderr.contains("another retention run"),
        "{}",
        second.stderr
    );
    assert_eq!(checksums(&url, day).await, before);

    // Policy set through the CLI is what a run uses.
    let set = admin(&url, dir.path(), &["retention", "set", "raw_events", "60d"]).await;
    assert_eq!(set.code, 0, "{set:?}");
    let show = admin(&url, dir.path(), &["--json", "retention", "show"]).await;
    assert!(show.stdout.contains(r#""keep_days":60"#), "{}", show.stdout);

    // A day never archived.
    let never = day - TimeDelta::days(1);
    let output = admin(&url, dir.path(), &["restore", &format!("--day={never}")]).await;
    assert_eq!(output.code, 2);
    assert!(
        output.stderr.contains("never archived"),
        "{}",
        output.stderr
    );

    // Archive and drop the day, then damage the archive: restores refuse
    // before writing anything.
    let run = admin(&url, dir.path(), &["retention", "run", "--yes"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let events_file = dir
        .path()
        .join(format!("signal_events/day={day}/events.jsonl.zst"));
    let mut bytes = std::fs::read(&events_file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&events_file, &bytes).unwrap();
    let corrupt = admin(&url, dir.path(), &["restore", &format!("--day={day}")]).await;
    assert_eq!(corrupt.code, 2, "{corrupt:?}");
    assert!(
        corrupt.stderr.contains("checksum mismatch"),
        "{}",
        corrupt.stderr
    );
    let events_of_day = format!(
        "SELECT count(*) AS n FROM signal_events WHERE ts >= '{}' AND ts < '{}'",
        midnight(day),
        midnight(day + TimeDelta::days(1))
    );
    assert_eq!(count(&url, &events_of_day).await, 0);
    bytes[middle] ^= 0x55;
    std::fs::write(&events_file, &bytes).unwrap();

    let signals_file = dir
        .path()
        .join(format!("signal_events/day={day}/signals.jsonl.zst"));
    let saved = std::fs::read(&signals_file).unwrap();
    std::fs::remove_file(&signals_file).unwrap();
    let missing = admin(&url, dir.path(), &["restore", &format!("--day={day}")]).await;
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(
        missing.stderr.contains("file is missing"),
        "{}",
        missing.stderr
    );
    assert_eq!(count(&url, &events_of_day).await, 0);

    // Repaired, the archive restores every row.
    std::fs::write(&signals_file, saved).unwrap();
    let restored = admin(&url, dir.path(), &["restore", &format!("--day={day}")]).await;
    assert_eq!(restored.code, 0, "{restored:?}");
    assert_eq!(checksums(&url, day).await, before);
}

#[tokio::test]
async fn archive_writes_a_live_day_without_dropping_it() {
    let day = old_day();
    let (app, _ids) = app_with_old_day(day).await;
    let url = app.primary_url.clone();
    let dir = tempfile::tempdir().unwrap();
    let before = checksums(&url, day).await;
    let output = admin(
        &url,
        dir.path(),
        &["--json", "archive", &format!("--day={day}")],
    )
    .await;
    let archived = succeeded(&output);
    assert_eq!(archived["events"], SIGNALS as i64 * 5);
    assert_eq!(archived["signals"], SIGNALS);
    assert_eq!(checksums(&url, day).await, before);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            dir.path()
                .join(format!("signal_events/day={day}/manifest.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["format"], "signal-audit-archive");
    assert_eq!(
        manifest["schema_version"],
        audit_migrations::known()
            .last()
            .cloned()
            .unwrap()
            .replace('-', "")
    );
    let unknown = admin(&url, dir.path(), &["archive", "--day=2001-01-01"]).await;
    assert_eq!(unknown.code, 2);
}

/// While `DETACH … CONCURRENTLY` waits for a transaction that still reads
/// the table, writers and readers carry on; the detach completes once that
/// transaction ends.
#[tokio::test(flavor = "multi_thread")]
async fn writers_and_readers_carry_on_while_a_detach_waits() {
    let day = old_day();
    let (app, ids) = app_with_old_day(day).await;
    let url = app.primary_url.clone();
    let dir = tempfile::tempdir().unwrap();

    // A long report: a transaction that has read signal_events and stays open.
    let mut report = connect(&url).await;
    report
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM signal_events")
        .await
        .unwrap();
    let run = {
        let (url, archive) = (url.clone(), dir.path().to_owned());
        tokio::spawn(async move {
            admin(
                &url,
                &archive,
                &[
                    "--json",
                    "--lock-timeout-ms=60000",
                    "retention",
                    "run",
                    "--yes",
                ],
            )
            .await
        })
    };
    wait_until(
        "the detach waits for the open transaction",
        Duration::from_secs(20),
        Duration::from_millis(20),
        async || {
            (count(
                &url,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'audit-admin' AND wait_event_type = 'Lock' \
                 AND query LIKE '%DETACH PARTITION%CONCURRENTLY%'",
            )
            .await
                == 1)
                .then_some(())
        },
    )
    .await;

    // Meanwhile: a new signal and an event of the day's signals (late, on
    // today), and a read of a signal of the day being detached.
    let (signal, _) = app.record_signal("AAPL").await;
    app.record_event(new_event(&ids[0], S::Processing, L::WorkerProcessing, None))
        .await;
    app.wait_replica().await;
    let read = app
        .reader
        .clone()
        .get_signal(pb::GetSignalRequest {
            signal_id: signal.signal_id.clone(),
            consistency_token: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.events.len(), 1);
    assert!(!run.is_finished(), "the detach did not wait");

    report.batch_execute("COMMIT").await.unwrap();
    let run = run.await.unwrap();
    let outcome = succeeded(&run);
    assert_eq!(outcome["days"][0]["day"], day.to_string());
    assert_eq!(outcome["days"][0]["events"], SIGNALS as i64 * 5);
    assert_eq!(outcome["days"][0]["detach"], "concurrently in 1 attempt(s)");
}

/// A detach that gave up in its second phase leaves the partition "pending
/// detach" (CONCURRENTLY is then refused): the run fails saying so, nothing
/// is lost, and the next run completes it with `DETACH … FINALIZE`.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_detach_is_finalized_by_the_next_run() {
    let day = old_day();
    let (app, _ids) = app_with_old_day(day).await;
    let url = app.primary_url.clone();
    let dir = tempfile::tempdir().unwrap();
    let before = checksums(&url, day).await;

    let mut report = connect(&url).await;
    report
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM signal_events")
        .await
        .unwrap();
    let stopped = admin(
        &url,
        dir.path(),
        &[
            "--lock-timeout-ms=300",
            "--lock-retries=2",
            "retention",
            "run",
            "--yes",
        ],
    )
    .await;
    assert_eq!(stopped.code, 2, "{stopped:?}");
    assert!(
        stopped.stderr.contains("lock timeout") && stopped.stderr.contains("next run resumes"),
        "{}",
        stopped.stderr
    );
    let pending = "SELECT count(*) AS n FROM pg_inherits \
                   WHERE inhparent = 'signal_events'::regclass AND inhdetachpending";
    assert_eq!(count(&url, pending).await, 1);
    // Writers are not held up by the pending detach.
    app.record_signal("AAPL").await;
    report.batch_execute("COMMIT").await.unwrap();

    let resumed = admin(&url, dir.path(), &["--json", "retention", "run", "--yes"]).await;
    let outcome = succeeded(&resumed);
    assert_eq!(outcome["days"][0]["day"], day.to_string());
    assert_eq!(outcome["days"][0]["events"], SIGNALS as i64 * 5);
    assert!(
        outcome["days"][0]["detach"]
            .as_str()
            .unwrap()
            .starts_with("finalized"),
        "{outcome}"
    );
    assert_eq!(count(&url, pending).await, 0);

    // Every row of the day is in its archive.
    let restored = admin(&url, dir.path(), &["restore", &format!("--day={day}")]).await;
    assert_eq!(restored.code, 0, "{restored:?}");
    assert_eq!(checksums(&url, day).await[..2], before[..2]);
}

/// moto's S3 server (the AWS API mock, from PyPI's `moto[server]`;
/// scripts/install-deps.sh installs it) on a loopback port; killed when
/// dropped.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    async fn start(bucket: &str) -> Self {
        let port = integration_tests::free_port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "python3 -m moto.server: {e} (scripts/install-deps.sh installs moto[server])"
                )
            });
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        wait_until(
            "moto's S3 server accepts connections",
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
        // CreateBucket: moto's server does not check signatures.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream
            .write_all(
                format!(
                    "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "CreateBucket: {answer}");
        server
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `audit-admin` as a process, with the S3 store's credentials and
/// endpoint in its environment (the way the chart's CronJob passes them).
async fn admin_with_s3(url: &str, s3: &S3Server, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_admin-process"))
        .arg(format!("--database-url={url}"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", &s3.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .await
        .unwrap()
}

/// A day archived to an S3-compatible store (`s3://`, through
/// object_store's S3 client), dropped, and restored row for row.
#[tokio::test(flavor = "multi_thread")]
async fn a_day_round_trips_through_an_s3_compatible_store() {
    let day = old_day();
    let (app, ids) = app_with_old_day(day).await;
    let url = app.primary_url.clone();
    let before = checksums(&url, day).await;
    let s3 = S3Server::start("audit-archive").await;
    let archive = "--archive-url=s3://audit-archive/signal-audit";

    let run = admin_with_s3(&url, &s3, &["--json", "retention", "run", "--yes", archive]).await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(outcome["days"][0]["day"], day.to_string());
    assert_eq!(outcome["days"][0]["events"], SIGNALS as i64 * 5);
    assert_eq!(
        outcome["days"][0]["archive"],
        format!("s3://audit-archive/signal-audit/signal_events/day={day}/manifest.json")
    );
    assert_eq!(
        count(
            &url,
            &format!(
                "SELECT count(*) AS n FROM signals WHERE signal_id = '{}'",
                ids[0]
            )
        )
        .await,
        0
    );

    let restored = admin_with_s3(&url, &s3, &["restore", &format!("--day={day}"), archive]).await;
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert_eq!(checksums(&url, day).await, before);
}
